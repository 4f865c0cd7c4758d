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
A store that cannot be reached is not a crash: OnPreServer's handshake is refused with
503, and a ``Server()`` it stops closes its socket with 1013 (try again later), so the
page comes back and catches up once the store is.
The port's phases (:mod:`appserver.port`) enforce it.

A private socket needs a worker that serves nothing else. The gateway sends handshakes
to an empty worker when it has one, so the handshake worker normally keeps the socket.
When it already serves other sockets, the socket moves instead: the worker sends its
attributes to the gateway (``Handoff``), which opens a dedicated link and hands them to
a fresh worker (``Adopt``); OnPreServer is never run twice. The attributes travel as
JSON, so they must be JSON values.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import trio

from appserver.csp import HandshakeRequest, WebSocket, run_post_server
from appserver.errors import ClientClosed, HandshakeRejected, WebSocketError
from appserver.port import SocketPort
from gateway.link.driver import Link
from gateway.link.events import (
    Accept,
    Adopt,
    Close,
    Handoff,
    Open,
    Reject,
    Resume,
    SocketStatus,
)
from store.api import StoreUnavailable

if TYPE_CHECKING:
    from appserver.runtime import WorkerRuntime

__all__ = [
    "SHUTDOWN_GRACE_S",
    "adopt_socket",
    "after_server",
    "finish_orphan",
    "resume_socket",
    "run_server",
    "serve_resumed",
    "serve_socket",
    "stop_serving",
]

log = logging.getLogger(__name__)

#: How long OnPostServer may run while the worker shuts down.
SHUTDOWN_GRACE_S = 2.0


def _new_port(runtime: WorkerRuntime, link: Link, event: Open) -> SocketPort | None:
    cls = runtime.classes.get(event.class_name)
    if cls is None:
        link.send(Reject(event.wsid, 404, f"no server class {event.class_name}"))
        return None
    instance = cls()
    port = SocketPort(event.wsid, link, instance)
    instance.bind(port)
    instance.GWClientAddress = link.gateway_id
    instance.request = HandshakeRequest.build(event.path, event.query, event.headers,
                                              event.client_address)
    # The gateway announced the socket (with its CSPSESSIONID, if it passed the gateway's
    # check) before sending Open, so the Registry has it.
    instance.SessionId = runtime.registry.session(event.wsid)
    runtime.ports[event.wsid] = port
    return port


def _drop(runtime: WorkerRuntime, port: SocketPort) -> None:
    port.dropped()
    runtime.forget_port(port)


async def serve_socket(runtime: WorkerRuntime, link: Link, event: Open) -> None:
    """Take one handshake: OnPreServer, answer the gateway, start or run Server()."""
    port = _new_port(runtime, link, event)
    if port is None:
        return
    instance = port.instance
    try:
        await instance.OnPreServer()
    except HandshakeRejected as exc:
        _drop(runtime, port)
        link.send(Reject(event.wsid, exc.status, exc.body))
        return
    except StoreUnavailable as exc:
        log.warning("wsid=%s refused: %s", event.wsid, exc)
        _drop(runtime, port)
        link.send(Reject(event.wsid, 503, "the app server's store is unavailable; "
                                          "try again later"))
        return
    except Exception:
        log.exception("wsid=%s %s.OnPreServer() failed", event.wsid, type(instance).__name__)
        _drop(runtime, port)
        link.send(Reject(event.wsid, 500, f"{type(instance).__name__}.OnPreServer failed; "
                                          "the app server's log has the details"))
        return
    instance.fix_mode()
    if not event.shared_allowed and instance.SharedConnection:
        # IRIS: with the gateway's Registry disabled, a shared request runs private.
        log.info("wsid=%s: the gateway allows no shared sockets; running private",
                 event.wsid)
        instance.force_private()
    if port.closed:  # the gateway gave up on the handshake meanwhile
        _drop(runtime, port)
        return
    request = instance.request
    if instance.subprotocol and (request is None
                                 or instance.subprotocol not in request.subprotocols):
        log.error("wsid=%s: OnPreServer chose the subprotocol %r, which the browser did "
                  "not offer", event.wsid, instance.subprotocol)
        _drop(runtime, port)
        link.send(Reject(event.wsid, 500, f"{type(instance).__name__}.OnPreServer chose a "
                                          "subprotocol the browser did not offer"))
        return
    shared = bool(instance.SharedConnection)
    if not shared and len(runtime.ports) > 1:
        _hand_off(runtime, link, port)
        return
    _accept(runtime, link, port, shared)
    log.debug("wsid=%s accepted (%s) by %s", event.wsid, "shared" if shared else "private",
              type(instance).__name__)
    if shared:
        # IRIS runs a shared socket's Server() detached from the handshake's %request;
        # dropping it here also keeps an idle socket's memory small.
        instance.request = None
    del event, request  # an idle socket's task holds its port alone
    # Server() runs in this task step's wake: its first writes (the chat's Status) leave
    # with the Accept, in one send, and reach the browser with the 101.
    await run_server(runtime, port)


def _accept(runtime: WorkerRuntime, link: Link, port: SocketPort, shared: bool) -> None:
    """Tell the gateway the socket is accepted; the Registry here knows it at once (the
    gateway announces an opened socket to the other workers only)."""
    port.accepted(shared)
    runtime.registry.update(port.wsid, SocketStatus.SHARED if shared else SocketStatus.PRIVATE)
    instance = port.instance
    state = instance.encoded_state()
    link.send(Accept(port.wsid, shared, bool(instance.BinaryData), state,
                     instance.subprotocol))
    _register(runtime, port, state)


def _hand_off(runtime: WorkerRuntime, link: Link, port: SocketPort) -> None:
    """A private socket on a worker that serves others: move it with its attributes."""
    _drop(runtime, port)
    try:
        # JSON, not pickle: link frames are authenticated but not signed, and decoding
        # them must never run code.
        state = json.dumps(port.instance.moved_state()).encode()
    except (TypeError, ValueError) as exc:
        log.error("wsid=%s: cannot move the private socket: the attributes OnPreServer "
                  "set are not JSON values (%s)", port.wsid, exc)
        link.send(Reject(port.wsid, 500, "a private socket could not move to a dedicated "
                                         "worker; the app server's log has the details"))
        return
    log.info("wsid=%s private, but this worker serves %d other sockets: handing it off",
             port.wsid, len(runtime.ports))
    link.send(Handoff(port.wsid, state))


async def adopt_socket(runtime: WorkerRuntime, link: Link, event: Adopt) -> None:
    """Take over a handed-off private socket: restore it and run Server() here."""
    port = _new_port(runtime, link, event.open)
    if port is None:
        return
    instance: WebSocket = port.instance
    try:
        instance.restore_state(json.loads(event.state))
    except Exception:
        log.exception("wsid=%s: cannot restore a handed-off socket", event.open.wsid)
        _drop(runtime, port)
        link.send(Reject(event.open.wsid, 500, "the private socket could not be restored"))
        return
    instance.fix_mode()
    _accept(runtime, link, port, False)
    await run_server(runtime, port)


def _register(runtime: WorkerRuntime, port: SocketPort, state: bytes) -> None:
    """Put an accepted socket in the store's registry, in the background (the handshake
    does not wait for it; only a gateway dying within it would miss it)."""

    async def register() -> None:
        try:
            await runtime.store.register_socket(port.wsid, port.link.gateway_id,
                                                type(port.instance).csp_name(),
                                                state.decode())
        except StoreUnavailable as exc:
            log.warning("wsid=%s not in the registry: %s", port.wsid, exc)

    runtime.nursery.start_soon(register)


def _restored(runtime: WorkerRuntime, gateway_id: str, wsid: str, class_name: str,
              state: bytes | str) -> WebSocket | None:
    """A new instance of the socket's class with the state its first worker had."""
    cls = runtime.classes.get(class_name)
    if cls is None:
        log.error("wsid=%s: cannot resume: no server class %s here", wsid, class_name)
        return None
    instance = cls()
    try:
        instance.restore_state(json.loads(state) if state else {}, resumed=True)
    except Exception:
        log.exception("wsid=%s: cannot restore the resumed socket's state", wsid)
        return None
    instance.WebSocketID = wsid
    instance.GWClientAddress = gateway_id
    instance.SessionId = runtime.registry.session(wsid)
    instance.fix_mode()
    return instance


def resume_socket(runtime: WorkerRuntime, link: Link, event: Resume) -> SocketPort | None:
    """Take over a shared socket whose worker is gone: its Server() runs again here.

    Called at once when the Resume arrives, so that the port exists before the
    unacknowledged messages that follow it; the caller starts Server().
    """
    instance = _restored(runtime, link.gateway_id, event.wsid, event.class_name, event.state)
    if instance is None:
        link.send(Close(event.wsid, 1011, "the app server could not resume the socket"))
        return None
    port = SocketPort(event.wsid, link, instance)
    instance.bind(port)
    port.accepted(True)
    runtime.ports[event.wsid] = port
    log.info("wsid=%s resumed here (%s)", event.wsid, event.class_name)
    return port


async def finish_orphan(runtime: WorkerRuntime, gateway_id: str, wsid: str, class_name: str,
                        state: bytes | str) -> bool:
    """Run the OnPostServer of a socket whose worker (or gateway) went without running
    it (a gateway hands it over with ``Resume(ended=True)``; a sweep, for a gateway
    whose lease lapsed); False if it was claimed elsewhere already."""
    instance = _restored(runtime, gateway_id, wsid, class_name, state)
    if instance is None:
        return False
    log.info("wsid=%s: running its OnPostServer for the worker that is gone", wsid)
    return await run_post_server(instance)


async def serve_resumed(runtime: WorkerRuntime, port: SocketPort) -> None:
    """Run a resumed socket's Server(), unless its session ended meanwhile (its
    OnPostServer was claimed: a sweep found its gateway gone): then close it."""
    try:
        ended = await runtime.store.socket_claimed(port.wsid)
    except StoreUnavailable:
        ended = False  # it lives on: a sweep that finds it later claims it first
    if not ended:
        await run_server(runtime, port)
        return
    log.info("wsid=%s: its session ended while its gateway was away: closing it", port.wsid)
    port.link.send(Close(port.wsid, 1001, "the session ended while the gateway was away"))
    runtime.registry.mark_closed(port.wsid)
    port.mark_closed(1001, ended=True)
    port.server_returned()
    runtime.forget_port(port)
    runtime.post_server_ran(port.wsid, port)


async def run_server(runtime: WorkerRuntime, port: SocketPort) -> None:
    """Run Server() and what follows its return (see the module docstring)."""
    instance = port.instance
    code, reason = 1000, ""
    try:
        with port.scope:
            await instance.Server()
        if port.detached:  # the link went: another worker resumes it, or finishes it
            port.server_returned()
            runtime.forget_port(port)
            return
        port.acknowledge()
    except ClientClosed:
        pass
    except trio.Cancelled:
        # The worker is torn down (past its stop's grace): the socket's gateway resumes
        # it elsewhere, or hands its OnPostServer to another worker.
        runtime.forget_port(port)
        raise
    except StoreUnavailable as exc:
        # Not the class's fault: the page may come back later (1013) and catch up.
        log.warning("wsid=%s Server() stopped: %s", port.wsid, exc)
        code, reason = 1013, "try again later: the store is unavailable"
    except Exception as exc:
        if isinstance(exc, WebSocketError) and port.closed:
            pass  # a write to a socket that closed under it: an ordinary end
        else:
            log.exception("wsid=%s Server() failed", port.wsid)
            code, reason = 1011, "server error"
    if (not port.shared or code != 1000) and not port.closed:
        # Private: Server()'s return closes the socket. Either mode: a crash does.
        port.link.send(Close(port.wsid, code, reason))
        runtime.registry.mark_closed(port.wsid)
        port.mark_closed(code)
    port.server_returned()
    after_server(runtime, port)


async def stop_serving(runtime: WorkerRuntime) -> None:
    """The worker is stopping (SIGTERM): take no new socket; leave every open shared
    socket to its gateway, which resumes it on another worker (no OnPostServer: the
    socket lives on); end private sockets here (1012) with their OnPostServer; let due
    OnPostServers run. Returns once no socket is left (the caller bounds the wait)."""
    runtime.stopping = True
    for port in list(runtime.ports.values()):
        if port.private and not port.closed:
            # The gateway closes it with 1012; ended: this worker runs its OnPostServer.
            port.link.send(Close(port.wsid, 1012, "the app server is restarting", ended=True))
            runtime.registry.mark_closed(port.wsid)
            port.mark_closed(1012)
            port.scope.cancel()
        elif port.detach() and not port.serving:
            runtime.forget_port(port)
    await runtime.wait_no_ports()
    for link in list(runtime.links.values()):  # the acks and closes queued last
        await link.wait_below(0)


def after_server(runtime: WorkerRuntime, port: SocketPort) -> None:
    """Server() has returned and something happened: pump it to OnClientMessage/finish.

    Called when Server() returns, and for each message or close that arrives after.
    """
    if port.done:
        runtime.forget_port(port)
    elif port.wants_pump():
        runtime.nursery.start_soon(_pump, runtime, port)


async def _pump(runtime: WorkerRuntime, port: SocketPort) -> None:
    await port.pump(run_post_server)
    if port.done:
        runtime.forget_port(port)
