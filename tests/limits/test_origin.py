"""Origin (cross-site WebSocket hijacking, RFC 6455 section 10.2): a page of another
origin gets 403 unless --allowed-origin lists it; the gateway's own pages and clients
that send no Origin are let in."""

from __future__ import annotations

import trio

from tests.conftest import StartRun
from tests.limits.raw import OP_TEXT, client_frame, metric, refused, upgraded
from tests.support import System

ECHO = "/csp/user/Echo.Server.cls"


async def _accepted(system: System, origin: str | None) -> None:
    """An upgrade with ``Origin: origin`` (none if None) opens a working socket."""
    headers = [] if origin is None else [("Origin", origin)]
    async with upgraded(system.port, ECHO, headers) as (head, client):
        assert head.status == 101, (origin, head.raw)
        await client.send(client_frame(OP_TEXT, b"hello"))
        assert await client.frame() == (True, OP_TEXT, b"hello")


async def _refused(system: System, origin: str) -> str:
    """An upgrade with ``Origin: origin`` gets 403; its body."""
    head, body = await refused(system.port, ECHO, [("Origin", origin)])
    assert head.status == 403, (origin, head.raw)
    return body


async def test_by_default_only_the_gateways_own_origin_and_no_origin_get_in(
    start_run: StartRun,
) -> None:
    """By default: another host's origin (or another port's) gets 403 with a body that
    says why and how to allow it; the gateway's own origin and no Origin get in."""
    system = start_run(workers=1)
    own = f"http://127.0.0.1:{system.port}"
    with trio.fail_after(30):
        body = await _refused(system, "http://evil.example")
        assert "http://evil.example" in body
        assert "--allowed-origin" in body
        await _refused(system, f"http://127.0.0.1:{system.port + 1}")
        await _refused(system, f"http://localhost:{system.port}")
        await _refused(system, "null")  # a sandboxed page, or a file:// one
        await _accepted(system, own)
        await _accepted(system, None)
        assert await metric(system.port, "wsgate_gateway_sockets_refused_origin_total") == 4
        assert await metric(system.port, "wsgate_gateway_sockets_opened_total") == 2


async def test_allowed_origin_lets_that_origin_in_and_no_other(start_run: StartRun) -> None:
    """With --allowed-origin https://example.com that origin gets in (so does the
    gateway's own); another one, even of the same site over http, gets 403."""
    system = start_run("--allowed-origin", "https://example.com", workers=1)
    with trio.fail_after(30):
        await _accepted(system, "https://example.com")
        await _accepted(system, f"http://127.0.0.1:{system.port}")
        await _refused(system, "https://other.example")
        await _refused(system, "http://example.com")
        await _refused(system, "https://example.com.evil.example")


async def test_a_star_allows_any_origin(start_run: StartRun) -> None:
    """With --allowed-origin '*' an upgrade from any origin gets in."""
    system = start_run("--allowed-origin", "*", workers=1)
    with trio.fail_after(30):
        for origin in ("http://evil.example", "null", "https://a.b:1"):
            await _accepted(system, origin)
        assert await metric(system.port, "wsgate_gateway_sockets_refused_origin_total") == 0
