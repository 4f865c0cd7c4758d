"""``%CSP.WebSocket``: the base class of every WebSocket server class, IRIS names kept.

A reader of the IRIS tutorial should recognise every line, so the public surface keeps
IRIS's PascalCase (and only it does)::

    class Server(WebSocket):
        CLASS_NAME = "Chat.Server"          # served at /csp/user/Chat.Server.cls

        async def OnPreServer(self):        # read self.request; choose the mode
            self.SharedConnection = 1
        async def Server(self):             # Read/Write until the client closes
            while True:
                data = await self.Read(timeout=1)
                ...
        async def OnPostServer(self):       # runs exactly once, after the socket ends
            ...

Methods are coroutines. Errors are raised, not returned: :mod:`appserver.errors` lists
them with their IRIS codes (``Read`` raises 7950 on timeout and 7951 on client close).
An instance made with ``Class()`` has no socket until ``await OpenServer(id)``, exactly
like ``##class(Chat.Server).%New()`` followed by ``OpenServer``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import parse_qs

import trio

from appserver.context import current_runtime
from appserver.errors import NotBound, OpenServerError, PrivateSocket
from appserver.port import PortPhase
from appserver.registry import Lookup, parse_wsid
from store.api import StoreUnavailable

if TYPE_CHECKING:
    from appserver.port import SocketPort
    from store.api import Store

__all__ = [
    "DEFAULT_READ_SIZE",
    "DEFAULT_READ_TIMEOUT_S",
    "HandshakeRequest",
    "WebSocket",
    "run_post_server",
]

log = logging.getLogger(__name__)

#: ``Read``'s default and fallback ``len`` (IRIS: 32656 characters).
DEFAULT_READ_SIZE = 32656
#: ``Read``'s default timeout (IRIS: 86400 seconds).
DEFAULT_READ_TIMEOUT_S = 86400.0


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """The browser's upgrade request, for ``OnPreServer`` (IRIS: ``%request``)."""

    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    client_address: str = ""
    params: dict[str, list[str]] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, path: str, query: str, headers: tuple[tuple[str, str], ...],
              client_address: str) -> HandshakeRequest:
        """A request with its query string parsed."""
        params = parse_qs(query, keep_blank_values=True)
        lowered = tuple((name.lower(), value) for name, value in headers)
        return cls(path, query, lowered, client_address, params)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter (IRIS: ``%request.Data(name, 1)``)."""
        values = self.params.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        """A request header's value (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the browser offers (``Sec-WebSocket-Protocol``), in order."""
        offered = [value for key, value in self.headers if key == "sec-websocket-protocol"]
        return [p.strip() for value in offered for p in value.split(",") if p.strip()]


class WebSocket:
    """Base class of WebSocket server classes; see the module docstring."""

    #: The CSP application's namespace in the URL: /csp/<NAMESPACE>/<CLASS_NAME>.cls
    NAMESPACE: ClassVar[str] = "user"
    #: The class's name in the URL; by default ``<module's last part>.<class name>``.
    CLASS_NAME: ClassVar[str | None] = None

    def __init__(self) -> None:
        #: Unique id of the socket, assigned by the gateway (names the gateway).
        self.WebSocketID = ""
        #: 1 (or True): binary frames; 0: UTF-8 text frames. Set it before writing binary.
        self.BinaryData: int = 0
        #: 1 when the last Read reached the end of the current message.
        self.AtEnd: int = 1
        #: The CSP session id (the CSPSESSIONID cookie, when the browser sent one).
        self.SessionId = ""
        #: The gateway that holds the socket (its id): where writes are routed.
        self.GWClientAddress = ""
        #: The upgrade request, for OnPreServer. None on OpenServer instances, and in a
        #: shared socket's Server(), which runs detached from it (as in IRIS).
        self.request: HandshakeRequest | None = None
        #: The subprotocol OnPreServer chose among ``request.subprotocols`` ("" for
        #: none; a wsgate addition: IRIS has no API for it). The gateway answers with it.
        self.subprotocol = ""
        self._shared: int = 0
        self._mode_fixed = False
        self._resumed = False
        self._port: SocketPort | None = None

    @classmethod
    def csp_name(cls) -> str:
        """The key the gateway routes by: ``<namespace>/<Package.Class>``."""
        name = cls.CLASS_NAME or f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}"
        return f"{cls.NAMESPACE.lower()}/{name}"

    # --- SharedConnection: only OnPreServer may choose -----------------------------------

    @property
    def SharedConnection(self) -> int:
        """1: shared (async) pool; 0: a private link and worker. Set in OnPreServer."""
        return self._shared

    @SharedConnection.setter
    def SharedConnection(self, value: int) -> None:
        if self._mode_fixed:
            log.warning("wsid=%s: SharedConnection set after OnPreServer has no effect",
                        self.WebSocketID)
            return
        self._shared = 1 if value else 0

    def fix_mode(self) -> None:
        """Called by the worker right after OnPreServer: later sets are ignored."""
        self._mode_fixed = True

    def force_private(self) -> None:
        """The gateway allows no shared sockets (its Registry is disabled): run private."""
        self._shared = 0

    # --- the callbacks a server class overrides ----------------------------------------

    async def OnPreServer(self) -> None:
        """Runs before the socket opens; choose ``SharedConnection`` here."""

    async def Server(self) -> None:
        """The socket's main body. Required."""
        raise NotImplementedError(f"{type(self).__name__} must define Server()")

    async def OnPostServer(self) -> None:
        """Runs exactly once after the socket has ended (also after Server() crashed)."""

    # --- the store, for server classes that keep state ---------------------------------

    @property
    def store(self) -> Store:
        """The app server's store (:class:`store.api.Store`: SQLite or Redis)."""
        return current_runtime().store

    @property
    def settings(self) -> dict[str, str]:
        """The app server's ``--set NAME=VALUE`` options (the chat reads ``mode``)."""
        return current_runtime().settings

    # --- the socket operations ---------------------------------------------------------

    async def Read(
        self,
        size: int = DEFAULT_READ_SIZE,
        timeout: float = DEFAULT_READ_TIMEOUT_S,  # noqa: ASYNC109 - IRIS's signature
    ) -> str | bytes:
        """The next message, or its next piece of at most ``size`` characters.

        ``AtEnd`` is 0 while pieces of the current message remain. Text comes back as
        ``str`` and binary frames as ``bytes`` (text too when ``BinaryData`` is set).
        Raises :class:`~appserver.errors.ReadTimeout` (7950) after ``timeout`` seconds
        without data, :class:`~appserver.errors.ClientClosed` (7951) once the client
        has closed and everything it sent has been read.
        """
        port = self._port
        if port is None:
            raise NotBound(self._unbound_reason("Read"), wsid=self.WebSocketID)
        if size < 1:
            size = DEFAULT_READ_SIZE
        try:
            item = await port.take(timeout)
        except Exception:
            self.AtEnd = 1
            raise
        if self.BinaryData and isinstance(item, str):
            item = item.encode()
        if len(item) > size:
            port.push_back(item[size:])
            self.AtEnd = 0
            return item[:size]
        self.AtEnd = 1
        return item

    async def Write(self, data: str | bytes) -> None:
        """Send one message: a text frame, or binary for ``bytes`` or with ``BinaryData``."""
        if not self.WebSocketID:
            raise NotBound("Write needs a socket: call it from Server() or after OpenServer",
                           wsid="")
        if isinstance(data, str):
            binary, payload = bool(self.BinaryData), data.encode()
        else:
            binary, payload = True, bytes(data)
        await current_runtime().write(self.WebSocketID, binary, payload, self._port)

    async def EndServer(self) -> None:
        """Close the browser socket, run ``OnPostServer`` (once), forget the socket."""
        if not self.WebSocketID:
            raise NotBound("EndServer needs a socket: call it from Server() or after "
                           "OpenServer", wsid="")
        port = self._port
        if port is not None and port.phase in (PortPhase.SERVING_ENDED, PortPhase.DONE):
            return  # ended already
        # The gateway answers "first" to exactly one EndServer of a socket, whichever
        # worker asked; the home port, told so, never reaches its own OnPostServer.
        if await current_runtime().end(self.WebSocketID, port):
            await run_post_server(self)

    async def OpenServer(self, websocket_id: str) -> None:
        """Attach this instance to an existing shared socket, from any worker."""
        if not websocket_id:
            raise OpenServerError("OpenServer needs a WebSocketID; it was given an empty one")
        parsed = parse_wsid(websocket_id)
        if parsed is None:
            raise OpenServerError(f"{websocket_id!r} is not a WebSocketID "
                                  "(expected <gateway>-<n>)", wsid=websocket_id)
        runtime = current_runtime()
        port = runtime.ports.get(websocket_id)
        state = runtime.registry.lookup(websocket_id)
        if (port is not None and port.private) or state is Lookup.PRIVATE:
            raise PrivateSocket(
                f"socket {websocket_id} is private (SharedConnection = 0); OpenServer "
                "only opens shared sockets", wsid=websocket_id)
        if (port is not None and port.closed) or state is Lookup.CLOSED:
            raise OpenServerError(f"socket {websocket_id} is closed", wsid=websocket_id)
        self.WebSocketID = websocket_id
        self.GWClientAddress = parsed[0]
        self.SessionId = runtime.registry.session(websocket_id)
        self._shared = 1
        self._mode_fixed = True
        self._port = port

    # --- groups: the fast path of a broadcast (a wsgate addition, so PEP 8 names) ------

    async def join_group(self, name: str, *, since: int | None = None,
                         latest: bool = False) -> None:
        """Put this socket in a named group held by its gateway.

        ``since``: the last message of the group's sequence this socket has seen (0:
        none yet); the gateway delivers sequenced messages from the next one on, in
        order, once each. Without it, from whichever sequenced message comes first.
        ``latest``: the group's sequenced messages are versions of a state (the chat's
        user list): each member gets only a version newer than the last it got.
        """
        self._require_socket("join_group")
        current_runtime().group(self.WebSocketID, self._port, name, join=True, since=since,
                                latest=latest)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def leave_group(self, name: str) -> None:
        """Take this socket out of a group."""
        self._require_socket("leave_group")
        current_runtime().group(self.WebSocketID, self._port, name, join=False)
        await trio.lowlevel.checkpoint_if_cancelled()

    @staticmethod
    async def write_group(name: str, data: str | bytes, *, binary: bool = False,
                          seq: int = 0) -> None:
        """Send one message to every shared socket of a group, on every gateway this
        worker is linked to.

        It costs one link frame per gateway, however many sockets the group has;
        each gateway encodes the WebSocket frame once and queues it on every member.
        Private sockets in the group are skipped (as OpenServer would refuse them).
        With ``seq`` (the message's number in the group's sequence: 1, 2, ...), every
        member gets the group's messages in that order and once each, even when a
        crash made a worker send one again.
        """
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await current_runtime().write_group(name, binary or isinstance(data, bytes), payload,
                                            seq)

    async def write_sequenced(self, name: str, seq: int, data: str | bytes) -> None:
        """Send this socket message ``seq`` of group ``name``'s sequence (one it
        missed): the gateway delivers it in the group's order, and not at all if the
        socket has it already."""
        if not self.WebSocketID:
            raise NotBound("write_sequenced needs a socket", wsid="")
        binary, payload = (bool(self.BinaryData), data.encode()) if isinstance(data, str) \
            else (True, bytes(data))
        await current_runtime().write(self.WebSocketID, binary, payload, self._port,
                                      group=name, seq=seq)

    @staticmethod
    async def write_many(websocket_ids: list[str], data: str | bytes, *,
                         binary: bool = False) -> None:
        """Send one message to each listed shared socket: one frame per gateway."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await current_runtime().write_many(websocket_ids, binary or isinstance(data, bytes),
                                           payload)

    # --- crash recovery (wsgate additions) ----------------------------------------------

    @property
    def resumed(self) -> bool:
        """True on an instance that took over a socket after its first worker was lost:
        its ``Server()`` runs again, OnPreServer does not; the attributes OnPreServer set
        are restored (as JSON values)."""
        return self._resumed

    @property
    def message_id(self) -> str:
        """The id of the message ``Read`` returned last, ``<WebSocketID>:<n>``: the same
        when a crash makes the message arrive again, so a store can refuse it twice."""
        return self._port.message_id if self._port is not None else ""

    def _require_socket(self, what: str) -> None:
        if not self.WebSocketID:
            raise NotBound(f"{what} needs a socket: call it from OnPreServer, Server() or "
                           "after OpenServer", wsid="")

    # --- wiring used by the worker ------------------------------------------------------

    def bind(self, port: SocketPort) -> None:
        """Attach the instance that serves a socket to its port (the worker does this)."""
        self._port = port
        self.WebSocketID = port.wsid

    #: Attributes the framework owns: not carried when a socket moves to another worker.
    _NOT_MOVED = frozenset({"_port", "request", "_resumed"})

    def moved_state(self) -> dict[str, object]:
        """The instance's attributes, for a private socket moving to a dedicated worker.

        They travel as JSON, so OnPreServer of a class that may run private should set
        only JSON values (str, int, float, bool, None, lists and dicts of them).
        """
        return {k: v for k, v in vars(self).items() if k not in self._NOT_MOVED}

    def restore_state(self, state: dict[str, object], *, resumed: bool = False) -> None:
        """Take the attributes a handed-off (or resumed) instance had after OnPreServer."""
        vars(self).update({k: v for k, v in state.items() if k not in self._NOT_MOVED})
        self._resumed = resumed

    def encoded_state(self) -> bytes:
        """:meth:`moved_state` as JSON (``b""`` when an attribute is not a JSON value:
        then a resumed instance starts from its class's defaults)."""
        try:
            return json.dumps(self.moved_state()).encode()
        except (TypeError, ValueError) as exc:
            log.warning("wsid=%s: the attributes are not JSON values (%s): a worker that "
                        "resumes the socket will not have them", self.WebSocketID, exc)
            return b""

    def _unbound_reason(self, what: str) -> str:
        if not self.WebSocketID:
            return f"{what} needs a socket: call it from Server() or after OpenServer"
        return (f"{what} of socket {self.WebSocketID}: its messages arrive on another "
                "worker; Read works on the worker that serves the socket")


async def run_post_server(instance: WebSocket) -> bool:
    """Run ``instance.OnPostServer()`` once per socket, logging (never raising) what it
    raises; False if it ran elsewhere already.

    The store's registry is claimed first, so that a worker and a sweep (or two
    workers) never both run it; then the socket's gateway is told it ran (until then
    the gateway counts the duty as this worker's, and hands it on if this one is lost).
    """
    runtime = current_runtime()
    wsid = instance.WebSocketID
    try:
        claimed = await runtime.store.claim_socket(wsid)
    except StoreUnavailable as exc:
        log.warning("wsid=%s: cannot claim its OnPostServer (%s): running it", wsid, exc)
        claimed = True
    if claimed:
        try:
            await instance.OnPostServer()
        except Exception:
            log.exception("wsid=%s OnPostServer() failed", wsid)
    else:
        log.info("wsid=%s: its OnPostServer ran elsewhere already", wsid)
    runtime.post_server_ran(wsid, instance._port)
    return claimed
