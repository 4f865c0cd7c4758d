"""The layering rules of STYLE.md, proved by reading the code: no import cycle, the app
server builds on the link alone, and the link's core is sans-I/O."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "appserver", "store", "client", "bench")
#: The link's sans-I/O core: neither trio nor socket, not even indirectly.
SANS_IO = ("gateway.link", "gateway.link.events", "gateway.link.codec",
           "gateway.link.connection", "gateway.link.errors")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(name: str, path: Path) -> list[str]:
    """Every module name ``name`` imports, at module level or inside a function;
    imports under ``if TYPE_CHECKING:`` are skipped (they never run)."""
    parts = name.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]  # relative imports start from the module's package
    found: list[str] = []

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test):
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.extend(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append(module)
            found.extend(f"{module}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text(), str(path)))
    return found


def _resolve(imported: str) -> str | None:
    """The project module an import refers to (``a.b.Name`` -> ``a.b``), or None."""
    while imported and imported not in MODULES:
        imported = imported.rpartition(".")[0]
    return imported or None


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {_resolve(i) for i in _imported_names(name, path)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_scan_sees_imports_inside_functions_and_skips_type_checking(
    tmp_path: Path,
) -> None:
    """The scanner finds a cycle through a function-level import and a relative one,
    and ignores imports made only under TYPE_CHECKING (so a clean result means
    something)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import gateway.gateway\n"
        "def f():\n    from gateway.link import codec\n"
        "    if TYPE_CHECKING:\n        import gateway.routes\n"
        "    from .pool import GatewayLink\n")
    names = set(_imported_names("gateway.probe", probe))
    assert {"gateway.link.codec", "gateway.pool.GatewayLink"} <= names
    assert not names & {"gateway.gateway", "gateway.routes"}


def test_no_import_cycles_anywhere() -> None:
    """No two project modules import each other, directly or around a loop, counting
    imports inside functions."""
    assert cycles(import_graph()) == []


def test_the_app_server_imports_only_the_link_of_the_gateway() -> None:
    """appserver/ depends on gateway.link and on nothing else of gateway/."""
    wrong = {
        module: sorted(t for t in targets
                       if t.startswith("gateway") and not t.startswith("gateway.link"))
        for module, targets in import_graph().items() if module.startswith("appserver")
    }
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_link_core_imports_no_io_module_of_the_project() -> None:
    """The sans-I/O modules of the link import only each other within the project."""
    graph = import_graph()
    for module in SANS_IO:
        assert graph[module] <= set(SANS_IO), (module, graph[module])


@pytest.mark.parametrize("module", SANS_IO)
def test_the_link_core_imports_neither_trio_nor_socket(module: str) -> None:
    """Importing each sans-I/O module of the link pulls in neither trio nor socket."""
    code = (f"import sys; import {module}; "
            "bad = {'trio', 'socket'} & set(sys.modules); "
            "sys.exit(f'imported {bad}' if bad else 0)")
    # Without the test run's coverage, which starts itself in every subprocess (and
    # imports socket) when COVERAGE_PROCESS_CONFIG is set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr or result.stdout
