"""--certfile/--keyfile: the page over https and the chat over wss, on one port; plain
HTTP there gets no page, and a client that never starts its TLS handshake is hung up on."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.limits.conftest import StartBare
from tests.limits.raw import connect
from tests.support import CHAT_PATH, ChatClient, System, b64

READY_TIMEOUT_S = 30.0


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with openssl now."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test certificate (and checks the host name)."""
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def tls_system(start_bare: StartBare, certificate: tuple[Path, Path],
               trusting: ssl.SSLContext) -> System:
    """``wsgate run`` with the certificate, once its links are up (over https)."""
    cert, key = certificate
    system = start_bare("--certfile", str(cert), "--keyfile", str(key),
                        "--handshake-timeout", "1")
    assert system.base_url.startswith("https://"), system.base_url
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status, body = _https_get(system, "/healthz", trusting)
        if status == 200 and json.loads(body)["links"] >= 1:
            return system
        assert time.monotonic() < deadline, (status, body)
        time.sleep(0.05)


def _https_get(system: System, path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    request = urllib.request.Request(system.base_url.rstrip("/") + path)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@asynccontextmanager
async def _wss_chat(system: System, context: ssl.SSLContext) -> AsyncIterator[ChatClient]:
    url = system.base_url.replace("https://", "wss://").rstrip("/") + CHAT_PATH
    async with open_websocket_url(url, ssl_context=context) as ws:
        try:
            yield ChatClient(ws)
        finally:  # trio-websocket may leave its stream open (see tests.support.open_ws)
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()


async def test_https_serves_the_page(tls_system: System, trusting: ssl.SSLContext) -> None:
    """GET / over https (the certificate checked) serves the chat page."""
    with trio.fail_after(30):
        status, body = await trio.to_thread.run_sync(_https_get, tls_system, "/", trusting)
    assert status == 200
    assert b"<html" in body.lower()
    assert b"chat" in body.lower()


async def test_a_wss_chat_works_end_to_end(tls_system: System,
                                           trusting: ssl.SSLContext) -> None:
    """Two wss clients chat: each gets its Status, and both get a message one sends."""
    with trio.fail_after(30):
        async with _wss_chat(tls_system, trusting) as one, \
                _wss_chat(tls_system, trusting) as two:
            await one.expect("Status")
            await two.expect("Status")
            await one.say("over TLS", author="one")
            for client in (one, two):
                message = await client.expect("Chat", Message=b64("over TLS"))
                assert message["Author"] == "one"


async def test_plain_http_on_the_tls_port_gets_no_page(tls_system: System,
                                                      trusting: ssl.SSLContext) -> None:
    """A plain-HTTP GET / on the TLS port gets no HTTP response and no page: the
    gateway ends the connection, and goes on serving https."""
    with trio.fail_after(30):
        async with connect(tls_system.port) as client:
            await client.send(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{tls_system.port}\r\n"
                              "\r\n".encode())
            got = await client.until_eof()
        status, _ = await trio.to_thread.run_sync(_https_get, tls_system, "/healthz",
                                                  trusting)
        assert status == 200
    print(f"plain HTTP on the TLS port got {len(got)} bytes back: {got[:16]!r}")
    assert not got.startswith(b"HTTP/")
    assert b"<html" not in got.lower()


async def test_a_client_that_never_starts_tls_is_hung_up_on(tls_system: System,
                                                            trusting: ssl.SSLContext,
                                                            ) -> None:
    """A TCP client that never sends its TLS ClientHello is hung up on after
    --handshake-timeout (1 s), while a wss client is served meanwhile."""
    with trio.fail_after(30):
        async with connect(tls_system.port) as silent:
            started = time.monotonic()
            async with _wss_chat(tls_system, trusting) as meanwhile:
                await meanwhile.expect("Status")
            assert await silent.until_eof() == b""
            waited = time.monotonic() - started
    print(f"a silent TLS client was hung up on after {waited:.2f} s (--handshake-timeout 1)")
