"""``wsgate run`` takes the gateway's and the app server's flags and passes on what it
was given, each to the process that uses it, and nothing else."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from gateway import run
from gateway.cli import build_parser
from gateway.link.flags import APPSERVER_FLAGS, GATEWAY_FLAGS, Flag

#: Flags of each child that ``wsgate run`` sets itself (or has no use for).
SET_BY_RUN = {
    "gateway": {"--appserver", "--pool", "--name", "--secret-file", "--bus",
                "--exit-with-parent", "--host", "--port", "--drain-timeout",
                "--link-heartbeat", "--log-level", "--help"},
    "appserver": {"--listen", "--bus", "--id", "--secret-file", "--exit-with-parent",
                  "--workers", "--db", "--store", "--link-heartbeat", "--log-level",
                  "--help"},
}
TABLES = {"gateway": GATEWAY_FLAGS, "appserver": APPSERVER_FLAGS}


def _flags(command: str) -> set[str]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name for action in sub.choices[command]._actions for name in action.option_strings
            if name.startswith("--")}


def _given(flag: Flag) -> list[str]:
    """Command-line words giving ``flag`` a value other than its default."""
    if flag.choices is not None:
        return [flag.name, next(c for c in flag.choices if c != flag.default)]
    if flag.repeat:
        return [flag.name, "first", flag.name, "second"]
    if flag.type is int:
        return [flag.name, str((flag.default or 0) + 7)]
    if flag.type is float:
        return [flag.name, str((flag.default or 0.0) + 2.5)]
    return [flag.name, f"given{flag.name}"]


def _children(argv: list[str]) -> tuple[argparse.Namespace, dict[str, list[str]]]:
    args = build_parser("run").parse_args(["run", *argv])
    return args, {"appserver": run._appserver_command(args),
                  "gateway": run._gateway_command(args, "127.0.0.1:9")}


def _parsed(command: list[str]) -> dict[str, Any]:
    """What the child makes of its command line (after ``python -m gateway.cli``)."""
    return vars(build_parser(command[3]).parse_args(command[3:]))


@pytest.mark.parametrize("child", ["gateway", "appserver"])
def test_every_flag_of_a_child_is_a_flag_of_run(child: str) -> None:
    """A flag added to the gateway or the app server is one ``wsgate run`` takes too,
    unless run sets it itself."""
    missing = _flags(child) - SET_BY_RUN[child] - _flags("run")
    assert missing == set()
    assert {flag.name for flag in TABLES[child]} == _flags(child) - SET_BY_RUN[child]


def test_run_passes_on_every_flag_it_was_given() -> None:
    argv = [word for table in TABLES.values() for flag in table for word in _given(flag)]
    argv += ["--workers", "3", "--store", "redis://127.0.0.1:1/0", "--link-heartbeat", "0.5",
             "--drain-timeout", "4", "--db", "chat.db", "--host", "127.0.0.2", "--port", "0"]
    args, commands = _children(argv)
    for child, table in TABLES.items():
        got = _parsed(commands[child])
        for flag in table:
            assert got[flag.attr] == getattr(args, flag.attr), flag.name
            assert got[flag.attr] not in (None, [], flag.default), flag.name
        assert got["link_heartbeat"] == 0.5
    gateway, appserver = _parsed(commands["gateway"]), _parsed(commands["appserver"])
    assert (gateway["pool"], appserver["workers"]) == (3, 3)
    assert (gateway["bus"], appserver["store"]) == ("redis://127.0.0.1:1/0",) * 2
    assert (gateway["host"], gateway["port"], gateway["drain_timeout"]) == ("127.0.0.2", 0, 4)
    assert appserver["db"] == "chat.db"
    assert gateway["exit_with_parent"]
    assert appserver["exit_with_parent"]
    assert gateway["allowed_origin"] == ["first", "second"]


def test_run_passes_on_nothing_it_was_not_given() -> None:
    """Flags left out reach no child, so each child's own default applies."""
    _, commands = _children([])
    for child, table in TABLES.items():
        assert not {flag.name for flag in table} & set(commands[child])
        defaults = _parsed([*commands[child][:4], *(
            ["--appserver", "127.0.0.1:9"] if child == "gateway" else [])])
        got = _parsed(commands[child])
        for flag in table:
            assert got[flag.attr] == defaults[flag.attr] == (
                [] if flag.repeat else flag.default), flag.name
