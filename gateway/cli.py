"""The ``wsgate`` command: ``run``, ``gateway`` and ``appserver``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import signal
import socket
import sys
from argparse import ArgumentParser as ArgParser
from collections.abc import Callable
from functools import partial

from gateway.config import GatewayConfig, new_gateway_id
from gateway.link.codec import MAX_PAYLOAD_BYTES
from gateway.link.flags import GATEWAY_FLAGS, add_flags
from gateway.link.process import (
    SecretError,
    configure_logging,
    listen_error,
    load_secret,
    parse_hostport,
    raise_file_limit,
    watch_parent,
)

__all__ = ["main"]

log = logging.getLogger(__name__)

def _add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to serve browsers on")
    parser.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    parser.add_argument("--appserver", required=True, metavar="HOST:PORT",
                        help="the app server to link to")
    parser.add_argument("--pool", type=int, default=2, metavar="N",
                        help="links kept to the app server (default 2)")
    parser.add_argument("--name", default="gw",
                        help="prefix of this gateway's id; WebSocketIDs start with it")
    parser.add_argument("--secret-file", metavar="PATH",
                        help="the link secret (default: $WSGATE_SECRET)")
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                        help="on SIGTERM, how long closing every browser socket (1001) "
                             "may take before the gateway exits (default 10)")
    parser.add_argument("--link-heartbeat", type=float, default=5.0, metavar="S",
                        help="heartbeat period of the links; a worker silent for three "
                             "periods is dead and its sockets move on (default 5)")
    parser.add_argument("--bus", default="", metavar="URL",
                        help="the Redis of many nodes, redis://HOST:PORT/DB: other nodes' "
                             "writes for this gateway's sockets arrive through it")
    add_flags(parser, GATEWAY_FLAGS)  # the ones wsgate run takes too
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="exit when the parent process does (used by wsgate run)")


def _gateway_config(args: argparse.Namespace) -> GatewayConfig:
    if args.pool < 1:
        raise ValueError("--pool must be at least 1")
    if not 1 <= args.max_message_bytes <= MAX_PAYLOAD_BYTES:
        raise ValueError(f"--max-message-bytes must be between 1 and {MAX_PAYLOAD_BYTES} "
                         "(what one link frame carries)")
    if args.max_queued_bytes < 1 or args.max_held_bytes < 1:
        raise ValueError("--max-queued-bytes and --max-held-bytes must be at least 1")
    if args.bus and not args.bus.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"--bus {args.bus!r}: expected redis://HOST:PORT/DB")
    if args.keyfile and not args.certfile:
        raise ValueError("--keyfile needs --certfile")
    if args.max_sockets < 1:
        raise ValueError("--max-sockets must be at least 1")
    if args.max_connect_rate < 0:
        raise ValueError("--max-connect-rate must be 0 (no limit) or more")
    if args.park_after < 0:
        raise ValueError("--park-after must be 0 (only until a socket first speaks) or more")
    for origin in args.allowed_origin:
        if origin != "*" and not re.match(r"^(https?)://[^/\s]+$", origin):
            raise ValueError(f"--allowed-origin {origin!r}: expected scheme://host[:port] "
                             "(no path), or *")
    for flag in ("ping_interval", "ping_timeout", "drain_timeout", "link_heartbeat",
                 "handshake_timeout"):
        if getattr(args, flag) < 0 or (flag != "ping_interval" and getattr(args, flag) == 0):
            raise ValueError(f"--{flag.replace('_', '-')} must be above 0")
    config = GatewayConfig(
        appserver=parse_hostport(args.appserver), secret=load_secret(args.secret_file),
        host=args.host, port=args.port, pool=args.pool,
        gateway_id=new_gateway_id(args.name), max_message_bytes=args.max_message_bytes,
        socket_buffer_bytes=args.max_queued_bytes, hold_bytes=args.max_held_bytes,
        ping_interval_s=args.ping_interval, ping_timeout_s=args.ping_timeout,
        drain_timeout_s=args.drain_timeout, link_heartbeat_s=args.link_heartbeat,
        max_sockets=args.max_sockets, max_connect_rate=args.max_connect_rate,
        handshake_timeout_s=args.handshake_timeout, park_after_s=args.park_after,
        allowed_origins=frozenset(args.allowed_origin), certfile=args.certfile,
        bus_url=args.bus,
        keyfile=args.keyfile,
        queue_timeout_s=args.queue_timeout, response_timeout_s=args.response_timeout,
        session_timeout_s=args.session_timeout,
        registry_enabled=args.registry_methods == "enabled",
    )
    if args.status_allow:
        config.status_allow = tuple(ipaddress.ip_network(c, strict=False)
                                    for c in args.status_allow)
    return config


async def _serve_gateway(config: GatewayConfig, listener: socket.socket,
                         exit_with_parent: bool) -> None:
    import trio

    from gateway.gateway import Gateway

    gateway = Gateway(config)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(partial(gateway.serve, listener=listener))
            shown = f"[{host}]" if ":" in host else host
            scheme = "https" if config.certfile else "http"
            print(f"wsgate gateway: serving {scheme}://{shown}:{port}/ (gateway {gateway.id}, "
                  f"app server {config.appserver[0]}:{config.appserver[1]})", flush=True)
            if exit_with_parent:
                nursery.start_soon(watch_parent, nursery.cancel_scope)
            async for signum in signals:
                log.info("%s: closing %d sockets with 1001, then stopping",
                         signal.Signals(signum).name, len(gateway.table))
                await gateway.drain(config.drain_timeout_s)
                nursery.cancel_scope.cancel()
                break


def run_gateway(args: argparse.Namespace) -> int:
    """``wsgate gateway``."""
    configure_logging(args.log_level)
    raise_file_limit()
    import ssl  # here: `wsgate run`'s launcher imports this module and needs no TLS

    try:
        config = _gateway_config(args)
        config.tls_context()  # a certificate that cannot be used: say so now
    except (ValueError, SecretError) as exc:
        print(f"wsgate gateway: {exc}", flush=True)
        return 2
    except (OSError, ssl.SSLError) as exc:
        print(f"wsgate gateway: cannot use the TLS certificate {args.certfile}: {exc}",
              flush=True)
        return 2
    from gateway.link.net import listen_tcp  # imports trio, which `wsgate run` never needs

    try:  # bound before trio starts, so that a busy port is one line, not a traceback
        listener = listen_tcp(config.host, config.port)
    except OSError as exc:
        print(f"wsgate: {listen_error(config.host, config.port, exc)}", flush=True)
        return 2
    import trio

    trio.run(_serve_gateway, config, listener, args.exit_with_parent)
    return 0


def _commands() -> list[tuple[str, str, Callable[[], Callable[[ArgParser], None]]]]:
    """Each subcommand with its help and (lazily) the function adding its flags, so that
    a process imports only what its own command needs (memory: see docs/benchmarks.md)."""

    def run_flags() -> Callable[[ArgParser], None]:
        from gateway.run import add_arguments
        return add_arguments

    def appserver_flags() -> Callable[[ArgParser], None]:
        from appserver.cli import add_arguments
        return add_arguments

    def bench_flags() -> Callable[[ArgParser], None]:
        from bench.cli import add_arguments
        return add_arguments

    return [
        ("run", "gateway + app server + SQLite on this machine (the quick start)", run_flags),
        ("gateway", "the Web Gateway: holds browser sockets, links to an app server",
         lambda: _add_gateway_arguments),
        ("appserver", "the app server: a supervisor and worker processes", appserver_flags),
        ("bench", "benchmark shared vs private vs single-process servers", bench_flags),
    ]


def build_parser(only: str | None = None) -> ArgParser:
    """The command line; with ``only``, the other subcommands get no flags."""
    parser = ArgParser(
        prog="wsgate",
        description="The IRIS WebSocket architecture in Python: a gateway, an app server "
                    "of worker processes, and the tutorial's chat.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, flags in _commands():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            flags()(command)
            command.add_argument("--log-level", default="INFO",
                                 choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``wsgate`` command; return its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    known = {name for name, _, _ in _commands()}
    args = build_parser(first if first in known else None).parse_args(argv)
    if args.command == "gateway":
        return run_gateway(args)
    if args.command == "appserver":
        from appserver.cli import run_appserver

        return run_appserver(args)
    if args.command == "bench":
        from bench.cli import run as run_bench

        return run_bench(args)
    from gateway.run import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
