"""Where an idle chat socket's memory goes, by module (tracemalloc).

Runs the real gateway and one worker in this process (tests/harness.py), opens N chat
sockets from a child process that then holds them open, and prints the Python heap that
the N sockets added, per module and per line, divided by N. RSS adds the allocator's
overhead and the kernel's socket buffers on top (docs/benchmarks.md, "Memory").

    .venv/bin/python scripts/memory_breakdown.py [N]     (default 2000)
"""

from __future__ import annotations

import base64
import gc
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import running

_GROUPS = ("/gateway/", "/appserver/", "/store/", "site-packages/trio/",
           "site-packages/wsproto/", "site-packages/h11/")


def _group(filename: str) -> str:
    for key in _GROUPS:
        if key in filename:
            return key.strip("/").replace("site-packages/", "")
    if filename.startswith("<attrs generated methods trio"):
        return "trio (attrs classes)"
    return "other"


def hold(port: int, count: int) -> None:
    """The child: open ``count`` chat sockets, say so, and keep them open."""
    request = ("GET /csp/user/Chat.Server.cls HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n")
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(request.format(port=port, key=key).encode())
        received = b""
        while b"Status" not in received:  # the chat's first message: the socket is open
            received += sock.recv(65536)
        held.append(sock)
    print(f"opened {count}", flush=True)
    time.sleep(3600)


async def measure(count: int) -> None:
    """Open ``count`` sockets against an in-process gateway and worker; print the heap
    they added."""
    async with running(Path(tempfile.mkdtemp()), workers=1) as h:
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        child = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--hold", str(h.port), str(count)],
            stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None
            print((await child.stdout.receive_some(100)).decode().strip())
            await trio.sleep(1)  # the last sockets' Server() reach their Read
            gc.collect()
            diff = tracemalloc.take_snapshot().compare_to(before, "lineno")
        finally:
            child.kill()
        groups: dict[str, int] = {}
        for stat in diff:
            name = _group(stat.traceback[0].filename)
            groups[name] = groups.get(name, 0) + stat.size_diff
        for name, size in sorted(groups.items(), key=lambda item: -item[1]):
            print(f"{name:24s} {size / count:7.0f} B per socket")
        print(f"{'all':24s} {sum(groups.values()) / count:7.0f} B per socket "
              "(Python heap of the gateway and its worker)")
        print("largest lines:")
        for stat in diff[:12]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1].split(os.getcwd() + "/")[-1]
            print(f"  {stat.size_diff / count:6.0f} B  {where}:{frame.lineno}")


def main() -> None:
    """``scripts/memory_breakdown.py [N]``."""
    if sys.argv[1:2] == ["--hold"]:
        hold(int(sys.argv[2]), int(sys.argv[3]))
        return
    trio.run(measure, int(sys.argv[1]) if len(sys.argv) > 1 else 2000)


if __name__ == "__main__":
    main()
