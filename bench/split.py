"""One node as two commands, whose gateway can be restarted: the reconnect storm's system.

``python -m bench.split --workers 2`` starts ``wsgate appserver`` and ``wsgate gateway``
(what ``wsgate run`` starts, as separate commands), prints ``wsgate split: chat ready at
http://127.0.0.1:PORT/ (...)``, and serves until SIGTERM. On SIGUSR1 it restarts the
gateway on the same port: SIGTERM (the gateway closes every browser socket with 1001,
in batches, and exits), then a new gateway process, which links to the app server
again; it prints ``wsgate split: gateway restarted`` once the new one serves. Every
process is below this one, so the benchmark counts all of them.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench.launch import free_port, start, stop, wait_line

__all__ = ["main"]

_APPSERVER_READY = re.compile(r"listening on (\S+) ")
_GATEWAY_READY = re.compile(r"serving (http://\S+) ")


class _Restart(Exception):
    """SIGUSR1: restart the gateway."""


def _restart(signum: int, frame: FrameType | None) -> None:
    raise _Restart


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(workers: int, directory: Path, log_level: str) -> int:
    """Start the app server and the gateway; restart the gateway on SIGUSR1."""
    wsgate = shutil.which("wsgate", path=os.path.dirname(sys.executable)) or "wsgate"
    env_secret = secrets.token_hex(32)
    os.environ["WSGATE_SECRET"] = env_secret  # the children's link secret
    appserver = start([wsgate, "appserver", "--listen", "127.0.0.1:0", "--workers",
                       str(workers), "--db", str(directory / "bench.db"),
                       "--log-level", log_level], directory, "appserver")
    gateway: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        address = wait_line(appserver, directory / "appserver.log", _APPSERVER_READY)[1]
        port = free_port()
        command = [wsgate, "gateway", "--host", "127.0.0.1", "--port", str(port),
                   "--appserver", address, "--pool", str(workers), "--name", "split",
                   "--max-connect-rate", "0", "--log-level", log_level]
        log = directory / "gateway.log"
        gateway = start(command, directory, "gateway")
        url = wait_line(gateway, log, _GATEWAY_READY)[1]
        print(f"wsgate split: chat ready at {url} (app server {address})", flush=True)
        signal.signal(signal.SIGUSR1, _restart)
        while True:
            try:
                while appserver.poll() is None and gateway.poll() is None:
                    time.sleep(0.1)
                print("wsgate split: a process exited: stopping", flush=True)
                return 1
            except _Restart:
                stop(gateway)
                size = log.stat().st_size
                gateway = start(command, directory, "gateway")
                wait_line(gateway, log, _GATEWAY_READY, after=size)
                print("wsgate split: gateway restarted", flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if gateway is not None:
            stop(gateway)
        stop(appserver)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.split``."""
    parser = argparse.ArgumentParser(prog="python -m bench.split",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the processes keep their files (default a temp dir)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="wsgate-split-"))
    return run(args.workers, directory, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
