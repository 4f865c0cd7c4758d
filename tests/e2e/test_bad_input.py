"""Bad input on the link port, across real processes: refused, logged, costs nothing else.

Bad input from browsers (chat input, oversized messages, unknown classes) is proved in
one process in ``tests/gateway/test_limits.py``. What needs the real processes is here:
the app server's own link port, its log, and secrets that must never reach a log.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from gateway.link.connection import PROTOCOL_VERSION, LinkConnection, Role
from gateway.link.events import Challenge, Hello, Refused
from tests.chatting import bystanders
from tests.conftest import StartRun
from tests.support import WSGATE, Process, System


def _link_port(system: System) -> tuple[str, int]:
    status = system.status()
    host, port = status["appserver"].rsplit(":", 1)
    return host, int(port)


async def test_wrong_secret_is_refused_and_logged_without_the_secret(
    start_split: StartRun, secret_file: Path, tmp_path: Path
) -> None:
    """A link presenting the wrong secret is refused; the log says so and holds no
    secret; a gateway with the wrong secret never becomes healthy."""
    system = start_split(workers=2)
    host, port = _link_port(system)
    wrong = b"not-the-secret-" + os.urandom(8).hex().encode()

    conn = LinkConnection(Role.GATEWAY, secret=wrong)
    with socket.create_connection((host, port), timeout=10) as sock:
        conn.receive_data(sock.recv(4096))
        assert isinstance(conn.next_event(), Challenge)
        sock.sendall(conn.send(Hello(PROTOCOL_VERSION, "intruder")))
        conn.receive_data(sock.recv(4096))
        refused = conn.next_event()
    assert isinstance(refused, Refused)
    assert refused.reason == "authentication failed"

    bad_secret = tmp_path / "wrong.secret"
    bad_secret.write_bytes(wrong)
    rogue = Process([WSGATE, "gateway", "--port", "0", "--appserver", f"{host}:{port}",
                     "--secret-file", str(bad_secret), "--name", "rogue"],
                    log_path=tmp_path / "rogue.log")
    try:
        rogue_url = rogue.wait_for_line(r"serving (http://\S+) ")[1]
        rogue_system = System(rogue_url, system.db)
        with trio.fail_after(30):
            async with bystanders(system):
                while "refused: authentication failed" not in rogue.log():  # noqa: ASYNC110
                    await trio.sleep(0.1)  # polling the rogue's log file
                code, _, _ = rogue_system.get("/healthz")
                assert code == 503
    finally:
        assert rogue.stop() == 0

    log = system.processes[0].log()
    assert "link from 127.0.0.1" in log
    assert "gateway 'intruder' failed the challenge (wrong secret)" in log
    everything = log + system.processes[1].log() + rogue.log()
    assert secret_file.read_text().strip() not in everything  # noqa: ASYNC240
    assert wrong.decode() not in everything


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096), b"\xff\xff\xff\xff" * 8],
    ids=["http", "random", "huge-length"],
)
async def test_arbitrary_bytes_on_the_link_port(start_split: StartRun, garbage: bytes) -> None:
    """Bytes that are not a link end that connection with a logged reason; the app
    server and every chat socket carry on."""
    system = start_split(workers=2)
    host, port = _link_port(system)
    with trio.fail_after(60):
        async with bystanders(system):
            for _ in range(3):
                with socket.create_connection((host, port), timeout=10) as sock:
                    sock.recv(4096)  # the challenge
                    sock.sendall(garbage)
                    sock.settimeout(10)
                    while sock.recv(4096):  # the app server hangs up
                        pass
    log = system.processes[0].log()
    assert log.count("link from 127.0.0.1") >= 3
    assert "closed:" in log
    assert system.processes[0].popen.poll() is None
