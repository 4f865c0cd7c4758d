"""A socket's life on its worker: OnPreServer, the mode, Server, OnPostServer.

IRIS's ``%CSP.WebSocket.Page()`` in trio terms. The worker that takes the handshake
runs ``OnPreServer`` and answers the gateway with the mode it chose. Then:

* shared (``SharedConnection = 1``): ``Server()`` becomes a task of the worker and the
  handshake is done, so the worker takes the next handshake at once. ``Server()`` may
  return with the socket still open; later messages go to ``OnClientMessage`` when the
  class defines it, or wait for a ``Read``.
* private (``SharedConnection = 0``): the handshake task itself runs ``Server()``; its
  return closes the browser socket (1000).

``OnPostServer`` runs exactly once, after the socket has ended: when the client closes,
when ``Server()`` crashes (1011), or inside ``EndServer`` (on the worker that called it).
"""

from __future__ import annotations

import logging

import trio

from appserver.errors import ClientClosed, WebSocketError
from appserver.port import SocketPort
from appserver.runtime import SHUTDOWN_GRACE_S, WorkerRuntime
from appserver.websocket import HandshakeRequest
from gateway.frames import Accept, Close, Open, Reject
from gateway.links import Link

__all__ = ["after_server", "run_server", "serve_socket"]

log = logging.getLogger(__name__)


def _session_id(request: HandshakeRequest) -> str:
    for part in (request.header("cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "CSPSESSIONID":
            return value
    return ""


async def serve_socket(runtime: WorkerRuntime, link: Link, event: Open) -> None:
    """Take one handshake: OnPreServer, answer the gateway, start or run Server()."""
    cls = runtime.classes.get(event.class_name)
    if cls is None:
        link.send(Reject(event.wsid, 404, f"no server class {event.class_name}"))
        return
    instance = cls()
    port = SocketPort(event.wsid, link, instance)
    instance.bind(port)
    instance.GWClientAddress = link.gateway_id
    instance.request = HandshakeRequest.build(event.path, event.query, event.headers,
                                              event.client_address)
    instance.SessionId = _session_id(instance.request)
    runtime.ports[event.wsid] = port
    try:
        await instance.OnPreServer()
    except Exception:
        log.exception("wsid=%s %s.OnPreServer() failed", event.wsid, cls.__name__)
        runtime.ports.pop(event.wsid, None)
        link.send(Reject(event.wsid, 500, f"{cls.__name__}.OnPreServer failed; the app "
                                          "server's log has the details"))
        return
    instance.fix_mode()
    port.shared = bool(instance.SharedConnection)
    if port.closed:  # the gateway gave up on the handshake meanwhile
        runtime.ports.pop(event.wsid, None)
        return
    link.send(Accept(event.wsid, port.shared, bool(instance.BinaryData)))
    log.debug("wsid=%s accepted (%s) by %s", event.wsid,
              "shared" if port.shared else "private", cls.__name__)
    if port.shared:
        runtime.nursery.start_soon(run_server, runtime, port)
    else:
        await run_server(runtime, port)


async def run_server(runtime: WorkerRuntime, port: SocketPort) -> None:
    """Run Server() and what follows its return (see the module docstring)."""
    instance = port.instance
    code, reason = 1000, ""
    try:
        await instance.Server()
    except ClientClosed:
        pass
    except trio.Cancelled:
        port.server_done = True
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_GRACE_S):
            await _finish(runtime, port)
        raise
    except Exception as exc:
        if isinstance(exc, WebSocketError) and port.closed:
            pass  # a write to a socket that closed under it: an ordinary end
        else:
            log.exception("wsid=%s Server() failed", port.wsid)
            code, reason = 1011, "server error"
    port.server_done = True
    if (port.shared is False or code == 1011) and not port.closed:
        # Private: Server()'s return closes the socket. Either mode: a crash does.
        port.link.send(Close(port.wsid, code, reason))
        runtime.registry.mark_closed(port.wsid)
        port.mark_closed(code)
    after_server(runtime, port)


def after_server(runtime: WorkerRuntime, port: SocketPort) -> None:
    """Server() has returned and something happened: pump it to OnClientMessage/finish.

    Called when Server() returns, and for each message or close that arrives after.
    One pump task per socket at a time keeps OnClientMessage calls in order, the
    close notification last.
    """
    if port.dispatching:
        return  # the running pump sees the new message or the close
    has_handler = hasattr(port.instance, "OnClientMessage")
    if not port.closed and not (port.inbox and has_handler):
        return  # an open socket with nothing to hand over: it waits for OpenServer
    port.dispatching = True
    runtime.nursery.start_soon(_pump, runtime, port)


async def _pump(runtime: WorkerRuntime, port: SocketPort) -> None:
    handler = getattr(port.instance, "OnClientMessage", None)
    try:
        while handler is not None and port.inbox:
            item = port.inbox.popleft()
            port.inbox_bytes -= len(item)
            try:
                await handler(item, 0)
            except Exception:
                log.exception("wsid=%s OnClientMessage() failed", port.wsid)
        if port.closed:
            if handler is not None and port.shared and not port.ended:
                try:
                    await handler("", 1)
                except Exception:
                    log.exception("wsid=%s OnClientMessage() failed", port.wsid)
            await _finish(runtime, port)
    finally:
        port.dispatching = False


async def _finish(runtime: WorkerRuntime, port: SocketPort) -> None:
    runtime.ports.pop(port.wsid, None)
    if port.post_server_done or port.ended:
        return
    port.post_server_done = True
    await runtime.run_post_server(port.instance)
