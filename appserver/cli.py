"""``wsgate appserver``: the IRIS instance (a supervisor and its worker processes)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from functools import partial

from appserver.config import AppServerConfig
from gateway.link.flags import APPSERVER_FLAGS, add_flags
from gateway.link.process import (
    SecretError,
    configure_logging,
    listen_error,
    load_secret,
    parse_hostport,
    watch_parent,
)
from store.engine import is_redis

__all__ = ["add_arguments", "run_appserver"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``wsgate appserver`` flags."""
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                        help="where gateways link to (default 127.0.0.1:0, a free port)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes started at once (default 2)")
    parser.add_argument("--link-heartbeat", type=float, default=5.0, metavar="S",
                        help="heartbeat period of the links; a gateway silent for three "
                             "periods is dead (default 5)")
    parser.add_argument("--db", default="wsgate.db", metavar="PATH",
                        help="SQLite store shared by the workers (default ./wsgate.db)")
    parser.add_argument("--store", default="", metavar="URL",
                        help="a Redis store shared by many nodes, redis://HOST:PORT/DB "
                             "(default: the SQLite --db)")
    parser.add_argument("--bus", default=None, metavar="URL",
                        help="the Redis through which writes reach other nodes' gateways, "
                             "redis://HOST:PORT/DB (default: the --store Redis, if any; "
                             "'off' for none)")
    add_flags(parser, APPSERVER_FLAGS)  # the ones wsgate run takes too
    parser.add_argument("--id", default="as", dest="appserver_id",
                        help="this app server's name, shown in the gateway's /status")
    parser.add_argument("--secret-file", metavar="PATH",
                        help="the link secret (default: $WSGATE_SECRET)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="exit when the parent process does (used by wsgate run)")


def _settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE")
        settings[name] = value
    return settings


def _store_url(value: str) -> str:
    if value and not is_redis(value):
        raise ValueError(f"--store {value!r}: expected redis://HOST:PORT/DB (a SQLite file "
                         "is --db PATH)")
    return value


def _bus_url(value: str | None, store: str) -> str:
    if value is None:
        return store if is_redis(store) else ""
    if value == "off":
        return ""
    if not is_redis(value):
        raise ValueError(f"--bus {value!r}: expected redis://HOST:PORT/DB, or off")
    return value


def build_config(args: argparse.Namespace) -> AppServerConfig:
    """Check the flags and turn them into a config; raise ValueError with the reason."""
    host, port = parse_hostport(args.listen)
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    max_workers = args.max_workers if args.max_workers is not None else max(8, args.workers)
    if max_workers < args.workers:
        raise ValueError("--max-workers must be at least --workers")
    if args.node_ttl <= 0:
        raise ValueError("--node-ttl must be above 0")
    if args.link_heartbeat <= 0:
        raise ValueError("--link-heartbeat must be above 0")
    return AppServerConfig(
        secret=load_secret(args.secret_file), host=host, port=port, workers=args.workers,
        max_workers=max_workers, idle_timeout_s=args.idle_timeout, node_ttl_s=args.node_ttl,
        link_heartbeat_s=args.link_heartbeat,
        db=os.path.abspath(args.db), store_url=_store_url(args.store),
        bus_url=_bus_url(args.bus, args.store),
        apps=tuple(args.app),
        settings={"mode": args.mode, **_settings(args.settings)},
        appserver_id=args.appserver_id,
        log_level=args.log_level,
    )


async def _serve(config: AppServerConfig, class_names: tuple[str, ...],
                 exit_with_parent: bool, listener: socket.socket,
                 metrics: socket.socket | None) -> None:
    import trio

    from appserver.supervisor import Supervisor

    supervisor = Supervisor(config, class_names)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(partial(supervisor.serve, listener=listener))
            if metrics is not None:  # printed first: `listening on` is the ready line
                m_host, m_port = await nursery.start(supervisor.serve_metrics, metrics)
                print(f"wsgate appserver: metrics at http://{m_host}:{m_port}/metrics",
                      flush=True)
            print(f"wsgate appserver: listening on {host}:{port} ({config.workers} workers, "
                  f"store {config.store})", flush=True)
            if exit_with_parent:
                nursery.start_soon(watch_parent, nursery.cancel_scope)
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def run_appserver(args: argparse.Namespace) -> int:
    """``wsgate appserver``."""
    configure_logging(args.log_level)
    # --app modules are found from the working directory, as gunicorn and uvicorn do;
    # workers start with `python -m`, which puts it on their path too.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import trio

    from appserver.classes import ClassLoadError, load_classes
    from gateway.link.net import listen_tcp
    from store.migrations import migrate_file

    try:
        config = build_config(args)
        classes = load_classes(config.apps)
        metrics = None if args.metrics == "off" else parse_hostport(args.metrics)
    except (ValueError, SecretError, ClassLoadError) as exc:
        print(f"wsgate appserver: {exc}", flush=True)
        return 2
    # Bound before trio starts, so that a busy port is one line, not a traceback.
    listeners: list[socket.socket] = []
    for host, port in [(config.host, config.port), *([metrics] if metrics else [])]:
        try:
            listeners.append(listen_tcp(host, port))
        except OSError as exc:
            for bound in listeners:
                bound.close()
            print(f"wsgate: {listen_error(host, port, exc)}", flush=True)
            return 2
    if not config.store_url:
        migrate_file(config.db)  # once, before any worker opens the file
    trio.run(_serve, config, tuple(sorted(classes)), args.exit_with_parent, listeners[0],
             listeners[1] if metrics else None)
    return 0
