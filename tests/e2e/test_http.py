"""The gateway's HTTP side: the page, /healthz, /status, .cls without upgrade, safety."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import StartRun
from tests.support import WSGATE, Process, System


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> System:
    """One chat system shared by the read-only HTTP tests of this module."""
    tmp = tmp_path_factory.mktemp("http")
    process = Process([WSGATE, "run", "--port", "0", "--workers", "1", "--db",
                       str(tmp / "h.db")], log_path=tmp / "run.log")
    system = System(process.wait_for_line(r"chat ready at (http://\S+)")[1], tmp / "h.db",
                    [process])
    system.wait_healthy()
    yield system
    system.stop()


def test_page_and_assets(system: System) -> None:
    """/ serves the chat page; its CSS and JS come with their content types."""
    code, headers, body = system.get("/")
    assert code == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<h3 id="headline">CHAT </h3>' in body
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    for path, kind in (("/chat.js", "text/javascript"), ("/chat.css", "text/css")):
        code, headers, body = system.get(path)
        assert code == 200
        assert headers["Content-Type"].startswith(kind)
        assert body


@pytest.mark.parametrize("path", [
    "/../pyproject.toml", "/%2e%2e/pyproject.toml", "/..%2fpyproject.toml", "/client/",
    "/__init__.py", "/etc/passwd", "//etc/passwd", "/chat.js/", "/nope.html",
])
def test_nothing_outside_the_page_is_served(system: System, path: str) -> None:
    """Paths outside client/, source files and directories all get 404."""
    response = raw_http(system.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 404 ")
    assert b"[tool" not in response
    assert b"root:" not in response


def test_healthz_and_status(system: System) -> None:
    """/healthz is 200 with JSON once linked; /status lists links, worker PIDs, modes."""
    code, _, body = system.get("/healthz")
    assert code == 200
    assert json.loads(body)["status"] == "ok"
    status = system.status()
    assert status["gateway"].startswith("gw.")
    (link,) = status["links"]
    assert link["mode"] == "shared"
    assert link["worker_pid"] > 0
    assert Path(f"/proc/{link['worker_pid']}").exists()
    code, headers, body = system.get("/status?format=html")
    assert code == 200
    assert headers["Content-Type"].startswith("text/html")
    assert str(link["worker_pid"]).encode() in body


def test_plain_get_of_a_class_is_426(system: System) -> None:
    """A plain GET of a .cls endpoint says how to open it (426, Upgrade: websocket)."""
    code, headers, body = system.get("/csp/user/Chat.Server.cls")
    assert code == 426
    assert headers["Upgrade"] == "websocket"
    assert b"WebSocket endpoint" in body
    code, _, _ = system.get("/csp/user/Missing.cls")
    assert code == 404


def test_methods_keepalive_and_bad_requests(system: System) -> None:
    """HEAD has no body, POST is 405, two requests share a connection, junk is 400."""
    response = raw_http(system.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b""
    assert raw_http(system.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                    ).startswith(b"HTTP/1.1 405 ")
    two = raw_http(system.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 ") == 2
    assert raw_http(system.port, b"\x16\x03\x01 not http\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_healthz_is_503_until_the_app_server_is_up(tmp_path: Path, secret_file: Path) -> None:
    """A gateway whose app server is not up answers 503, then 200 once it links."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WSGATE_SECRET"}
    gateway = Process([WSGATE, "gateway", "--port", "0", "--appserver", f"127.0.0.1:{port}",
                       "--secret-file", str(secret_file), "--queue-timeout", "1"],
                      log_path=tmp_path / "gw.log", env=env)
    appserver = None
    try:
        system = System(gateway.wait_for_line(r"serving (http://\S+) ")[1], tmp_path / "a.db",
                        [gateway])
        code, _, body = system.get("/healthz")
        assert code == 503
        assert json.loads(body)["status"] == "starting"
        upgrade = raw_http(system.port, b"GET /csp/user/Chat.Server.cls HTTP/1.1\r\nHost: x"
                           b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert upgrade.startswith(b"HTTP/1.1 503 ")  # after waiting --queue-timeout
        appserver = Process([WSGATE, "appserver", "--listen", f"127.0.0.1:{port}", "--db",
                             str(tmp_path / "a.db"), "--secret-file", str(secret_file)],
                            log_path=tmp_path / "as.log", env=env)
        appserver.wait_for_line("listening on")
        system.wait_healthy(links=2)
    finally:
        assert gateway.stop() == 0
        if appserver is not None:
            assert appserver.stop() == 0


def test_status_is_refused_to_clients_not_allowed(start_split: StartRun) -> None:
    """/status and /metrics answer 403 to a client outside --status-allow."""
    system = start_split("--status-allow", "10.0.0.0/8", workers=1)
    for path in ("/status", "/metrics"):
        code, _, body = system.get(path)
        assert code == 403
        assert b"--status-allow" in body
    assert system.get("/healthz")[0] == 200
