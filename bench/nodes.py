"""Many nodes on one machine: redis-server, N ``wsgate run`` nodes on it, nginx in front.

``python -m bench.nodes --nodes 2 --workers 1`` starts the topology of docs/scaling.md
(each node a gateway and an app server with its workers, all on the one Redis as store
and bus; nginx with examples/nginx/wsgate.conf, round robin over the gateways), prints
``wsgate nodes: chat ready at http://127.0.0.1:PORT/ (...)`` and runs until SIGTERM or
Ctrl-C, then stops nginx, the nodes and Redis, in that order, by PID. The benchmark
starts it as the ``wsgate-nodes`` system: every process of the topology is below this
one, so its CPU and memory are counted like any other system's.

The configuration helpers (:func:`render_nginx`, :func:`nginx_main`,
:func:`redis_command`) are what the tests of many nodes run too (tests/nginx_server.py,
tests/redis_server.py): the benchmark and the tests run one topology.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.launch import free_port, start, stop, wait_line, wait_port

__all__ = ["NGINX_EXAMPLE", "free_port", "nginx_main", "redis_command", "render_nginx"]

NGINX_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nginx" / "wsgate.conf"
_NODE_READY = re.compile(r"chat ready at (\S+) ")

_NGINX_MAIN = """\
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
worker_rlimit_nofile 65536;
events {{ worker_connections 65536; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/wsgate.conf;
}}
"""


def render_nginx(example: str, port: int, upstreams: Sequence[int]) -> str:
    """examples/nginx/wsgate.conf with ``port`` to listen on and gateways on
    ``upstreams`` (127.0.0.1), and nothing else changed."""
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"
                      for p in upstreams)
    text, count = re.subn(r"(upstream wsgate_gateways \{\n(?:    #.*\n)*)"
                          r"(?:    server .*\n)+", lambda m: m[1] + servers, example)
    if count != 1:
        raise ValueError("the nginx example has no upstream block to fill")
    text, count = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{port};", text)
    if count != 1:
        raise ValueError("the nginx example has no listen line to fill")
    return text


def nginx_main(directory: Path, port: int, upstreams: Sequence[int], *,
               workers: int = 1) -> list[str]:
    """Write an nginx of its own into ``directory`` (its main file, the example with
    these ports, its temp directories); return the command that runs it."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    (directory / "wsgate.conf").write_text(
        render_nginx(NGINX_EXAMPLE.read_text(), port, upstreams))
    # As root, nginx's worker would switch to nobody, who cannot write this directory.
    user = "user root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        _NGINX_MAIN.format(dir=directory, user=user, workers=workers))
    return [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e",
            str(directory / "error.log")]


def redis_command(directory: Path, port: int) -> list[str]:
    """A redis-server on 127.0.0.1:``port`` keeping its data in ``directory``
    (append-only file, every write synced: a restart loses nothing)."""
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    return [redis, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes"]


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(nodes: int, workers: int, directory: Path, log_level: str) -> int:
    """Start the topology, print its URL, serve until a signal, stop it."""
    started: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        redis_port = free_port()
        (directory / "redis").mkdir(parents=True, exist_ok=True)
        redis = start(redis_command(directory / "redis", redis_port), directory, "redis")
        started.append(redis)
        wait_port(redis_port, redis, "redis-server")
        store = f"redis://127.0.0.1:{redis_port}/0"
        wsgate = shutil.which("wsgate", path=os.path.dirname(sys.executable)) or "wsgate"
        ports = []
        for n in range(nodes):
            node = start([wsgate, "run", "--host", "127.0.0.1", "--port", "0",
                           "--workers", str(workers), "--store", store,
                           "--max-connect-rate", "0", "--log-level", log_level],
                          directory, f"node{n}")
            started.append(node)
            url = wait_line(node, directory / f"node{n}.log", _NODE_READY)[1]
            ports.append(int(url.rstrip("/").rsplit(":", 1)[1]))
        port = free_port()
        (directory / "nginx").mkdir(parents=True, exist_ok=True)
        nginx = start(nginx_main(directory / "nginx", port, ports), directory, "nginx")
        started.append(nginx)
        wait_port(port, nginx, "nginx")
        print(f"wsgate nodes: chat ready at http://127.0.0.1:{port}/ ({nodes} nodes on "
              f"{store}, gateways {ports})", flush=True)
        while all(p.poll() is None for p in started):
            time.sleep(0.2)
        print("wsgate nodes: a process exited: stopping", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(started):  # nginx, the nodes, then Redis
            stop(process)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.nodes``."""
    parser = argparse.ArgumentParser(prog="python -m bench.nodes",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="workers per node")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the processes keep their files (default a temp dir)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.workers < 1:
        parser.error("--nodes and --workers must be at least 1")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="wsgate-nodes-"))
    return run(args.nodes, args.workers, directory, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
