"""The gateway's HTTP side: the page, /healthz, /status, .cls without upgrade, safety."""

from __future__ import annotations

import ipaddress
import itertools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from appserver.classes import load_classes
from appserver.config import AppServerConfig
from appserver.supervisor import ProcessHandle, Supervisor
from gateway.config import GatewayConfig
from gateway.gateway import Gateway
from store.migrations import migrate_file
from tests.chatting import exchange, http_get, open_raw
from tests.harness import SECRET, InProcessWorker, running
from tests.support import open_ws

_pids = itertools.count(800_001)


async def test_page_and_assets(tmp_path: Path) -> None:
    """/ serves the chat page; its CSS and JS come with their content types."""
    with trio.fail_after(30):
        async with running(tmp_path) as h:
            page = await http_get(h.port, "/")
            assert page.status == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert b'<h3 id="headline">CHAT </h3>' in page.body
            assert "connect-src 'self'" in page.headers["content-security-policy"]
            for path, kind in (("/chat.js", "text/javascript"), ("/chat.css", "text/css")):
                asset = await http_get(h.port, path)
                assert asset.status == 200
                assert asset.headers["content-type"].startswith(kind)
                assert asset.body
                assert asset.body != page.body


@pytest.mark.parametrize("path", [
    "/../pyproject.toml", "/%2e%2e/pyproject.toml", "/..%2fpyproject.toml", "/client/",
    "/__init__.py", "/etc/passwd", "//etc/passwd", "/chat.js/", "/nope.html",
])
async def test_nothing_outside_the_page_is_served(tmp_path: Path, path: str) -> None:
    """Paths outside client/, source files and directories all get 404."""
    with trio.fail_after(30):
        async with running(tmp_path) as h:
            response = await exchange(h.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 404 ")
    assert b"[tool" not in response
    assert b"root:" not in response
    assert b"import" not in response


async def test_healthz_and_status(tmp_path: Path) -> None:
    """/healthz is 200 with JSON once linked; /status lists links, worker PIDs, modes."""
    with trio.fail_after(30):
        async with running(tmp_path) as h:
            health = await http_get(h.port, "/healthz")
            assert health.status == 200
            assert json.loads(health.body)["status"] == "ok"
            assert json.loads(health.body)["links"] == 1
            reply = await http_get(h.port, "/status")
            assert reply.status == 200
            assert reply.headers["content-type"] == "application/json"
            status = json.loads(reply.body)
            assert status["gateway"].startswith("gw.")
            assert status["gateway"] == h.gateway.id
            (link,) = status["links"]
            assert link["mode"] == "shared"
            # In process, a worker's pid is the harness's number for it: the pid /status
            # shows must be that of a worker that runs, as the supervisor knows it.
            assert link["worker_pid"] in h.workers
            assert h.workers[link["worker_pid"]].returncode is None
            assert link["worker_pid"] in h.supervisor.workers
            html = await http_get(h.port, "/status?format=html")
            assert html.status == 200
            assert html.headers["content-type"].startswith("text/html")
            assert str(link["worker_pid"]).encode() in html.body


async def test_plain_get_of_a_class_is_426(tmp_path: Path) -> None:
    """A plain GET of a .cls endpoint says how to open it (426, Upgrade: websocket)."""
    with trio.fail_after(30):
        async with running(tmp_path) as h:
            reply = await http_get(h.port, "/csp/user/Chat.Server.cls")
            assert reply.status == 426
            assert reply.headers["upgrade"] == "websocket"
            assert b"WebSocket endpoint" in reply.body
            missing = await http_get(h.port, "/csp/user/Missing.cls")
            assert missing.status == 404
            assert b"Missing" in missing.body


async def test_methods_keepalive_and_bad_requests(tmp_path: Path) -> None:
    """HEAD has no body, POST is 405, two requests share a connection, junk is 400."""
    with trio.fail_after(30):
        async with running(tmp_path) as h:
            response = await exchange(h.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert body == b""
            post = await exchange(h.port, b"POST / HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 0\r\n\r\n")
            assert post.startswith(b"HTTP/1.1 405 ")
            two = await exchange(h.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                         b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert two.count(b"HTTP/1.1 200 ") == 2
            junk = await exchange(h.port, b"\x16\x03\x01 not http\r\n\r\n")
            assert junk.startswith(b"HTTP/1.1 400 ")


async def test_status_is_refused_to_clients_not_allowed(tmp_path: Path) -> None:
    """/status and /metrics answer 403 to a client outside the status allow list."""
    with trio.fail_after(30):
        async with running(tmp_path,
                           status_allow=(ipaddress.ip_network("10.0.0.0/8"),)) as h:
            for path in ("/status", "/status?format=html", "/metrics"):
                reply = await http_get(h.port, path)
                assert reply.status == 403
                assert b"--status-allow" in reply.body
                assert h.gateway.id.encode() not in reply.body
            assert (await http_get(h.port, "/healthz")).status == 200


@asynccontextmanager
async def _gateway_before_appserver(
    tmp_path: Path, **gateway: object,
) -> AsyncIterator[tuple[Gateway, int, trio.Nursery, socket.socket]]:
    """A gateway whose app server address is bound but not listening (so every link
    attempt is refused); the caller starts the supervisor there."""
    with socket.socket() as appserver_socket:
        appserver_socket.bind(("127.0.0.1", 0))
        config = GatewayConfig(appserver=appserver_socket.getsockname()[:2], secret=SECRET,
                               port=0, pool=2, **gateway)  # type: ignore[arg-type]
        gw = Gateway(config)
        async with trio.open_nursery() as workers:
            async with trio.open_nursery() as servers:
                _, port = await servers.start(gw.serve)
                yield gw, port, workers, appserver_socket
                servers.cancel_scope.cancel()
            workers.cancel_scope.cancel()


async def _start_worker(nursery: trio.Nursery, config: str,
                        control: socket.socket) -> ProcessHandle:
    """The supervisor's StartWorker, for workers run as tasks of this process."""
    worker = InProcessWorker(next(_pids))
    worker.runtime = await nursery.start(worker.run, json.loads(config), control.dup())
    return worker


@pytest.fixture
def idle_jump_clock() -> trio.testing.MockClock:
    """A mock clock that jumps only after 10 ms of real idleness, so that a store call
    running in a thread (the workers renew the gateway's lease when it links) finishes
    before virtual time moves on; ``autojump_clock`` would jump at once."""
    return trio.testing.MockClock(autojump_threshold=0.01)


async def test_healthz_is_503_until_the_app_server_is_up(
    tmp_path: Path, idle_jump_clock: trio.testing.MockClock,
) -> None:
    """A gateway whose app server is not up answers 503 (and an upgrade 503 after the
    queue timeout); once the app server listens, it links, answers 200 and admits
    sockets."""
    # The mock clock skips the queue timeout and the link retries' back-off.
    db = tmp_path / "a.db"
    migrate_file(str(db))
    with trio.fail_after(60):
        async with _gateway_before_appserver(tmp_path, queue_timeout_s=10.0) as (
                gw, port, workers, appserver_socket):
            health = await http_get(port, "/healthz")
            assert health.status == 503
            assert json.loads(health.body)["status"] == "starting"
            assert json.loads(health.body)["links"] == 0
            waited_from = trio.current_time()
            status, body = await open_raw(port)
            assert status == 503  # after waiting the queue timeout
            assert b"not linked yet" in body
            assert trio.current_time() - waited_from >= gw.config.queue_timeout_s

            appserver_socket.listen()
            listener = appserver_socket.dup()  # the supervisor closes the one it serves
            listener.setblocking(False)
            config = AppServerConfig(secret=SECRET, host="127.0.0.1", port=0, workers=2,
                                     max_workers=8, idle_timeout_s=60.0, db=str(db),
                                     apps=(), settings={"mode": "shared"},
                                     appserver_id="as")
            supervisor = Supervisor(config, tuple(sorted(load_classes())),
                                    start_worker=partial(_start_worker, workers))
            async with trio.open_nursery() as appserver:
                await appserver.start(partial(supervisor.serve, listener=listener))
                while len(gw.links.pool_links) < 2:  # noqa: ASYNC110 - other tasks link
                    await trio.sleep(0.01)
                health = await http_get(port, "/healthz")
                assert health.status == 200
                assert json.loads(health.body)["status"] == "ok"
                assert json.loads(health.body)["links"] == 2
                url = f"ws://127.0.0.1:{port}/csp/user/Echo.Server.cls"
                async with open_ws(url) as ws:
                    await ws.send_message("linked")
                    assert await ws.get_message() == "linked"
                appserver.cancel_scope.cancel()
