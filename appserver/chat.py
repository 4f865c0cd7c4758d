"""``Chat.Server``: the IRIS WebSocket tutorial's chat, ported method by method.

Served at ``/csp/user/Chat.Server.cls``. The methods keep the tutorial's names and
order (OnPreServer, Server, StatusUpdate, ProcessMessage, SendData, AddUser,
RemoveUser, HandleError, BroadCast); the store's tables replace the ``^Chat.*``
globals. The tutorial's defects are fixed, each marked ``Fix:`` below and listed in
docs/differences.md.

Wire shapes (as in the tutorial):

* client -> server: ``{"Message": base64(text), "Author": alias}`` or ``{"User": alias}``;
  a chat message may carry (an addition) ``"Cid"``, the page's own id for it, random
  and unique: the page sends it again after a reconnection until it has seen it come
  back, and the store keeps it once
* server -> client: ``{"Type": "Status", "Message": ..., "WSID": id}`` once, to that
  socket; ``{"Message", "Author", "Type": "Chat", "Sent": "YYYY-MM-DD HH:MM:SS"}`` to
  every socket of the room, the sender included (with its ``Id``, and its ``Cid`` if
  it had one); ``{"Type": "userlist", "Users":
  [{"User": alias}, ...]}`` in join order; and (an addition) ``{"Type": "Error",
  "Message": why}`` to a socket whose input was refused, or whose message could not be
  stored (the store was unreachable: nothing was sent, the sender may send it again),
  with the refused message's ``Cid`` if it had one.

Both IRIS modes, chosen per socket in OnPreServer: the handshake's ``?mode=shared`` or
``?mode=private``, else the app server's ``--mode`` (default shared). A shared socket
gets new messages pushed by ``SendData``: one group write per gateway (the room's
group), or with ``--set fanout=per-socket`` the tutorial's loop of
``OpenServer(id).Write``. IRIS refuses
``OpenServer`` on a private socket, so a private socket's ``Server()`` delivers new
messages itself, by polling the store on each ``Read`` timeout (one second, as in the
tutorial). Shared and private sockets of one room chat with each other.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import time
from typing import Any

import trio

from appserver.context import current_runtime
from appserver.csp import DEFAULT_READ_TIMEOUT_S, WebSocket
from appserver.errors import (
    ClientClosed,
    HandshakeRejected,
    PrivateSocket,
    ReadTimeout,
    WebSocketError,
)
from store.api import ChatMessage, StoreUnavailable

__all__ = ["ChatServer"]

log = logging.getLogger(__name__)

#: The tutorial's ``Read(.size, .sc, 1)``: a one-second read timeout (``--set
#: read-timeout=S`` changes it; private sockets poll the store at this interval).
READ_TIMEOUT_S = 1.0
MODES = ("shared", "private")
#: How often (per room and worker) group mode looks for stale connection rows.
SWEEP_INTERVAL_S = 10.0
#: (worker pid, room) -> when that worker last swept the room.
_last_sweep: dict[tuple[int, str], float] = {}
MAX_ALIAS_CHARS = 64
#: A page's id for one of its messages: what the page makes (32 hex digits) and room
#: for other clients' own schemes.
_CID = re.compile(r"[A-Za-z0-9_-]{8,64}")
#: How long OnPostServer keeps trying a store it cannot reach.
POST_SERVER_RETRY_S = 60.0
STATUS_TEXT = "status update, this shouldn't be processed as message"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _now() -> str:
    """``$ZDATETIME($HOROLOG, 3)``: local time as YYYY-MM-DD HH:MM:SS."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _json(value: dict[str, Any]) -> str:
    """``%ToJSON()``: compact, UTF-8, keys in insertion order."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def chat_event(row: ChatMessage) -> dict[str, Any]:
    """ProcessMessage's stamping: a stored message as every socket receives it."""
    stored = json.loads(row.raw)
    # Fix: only Message and Author are relayed, so a client cannot forge other keys.
    # Sent is when the message was stored: the same for pushed and polled deliveries.
    # Id (an addition): the message's number in its room, what ?since= counts.
    # Cid (an addition): the sender's page stops sending it again when it sees it here.
    event = {"Message": stored["Message"], "Author": stored.get("Author", "unknown"),
             "Type": "Chat", "Sent": row.sent, "Id": row.seq}
    if isinstance(stored.get("Cid"), str):
        event["Cid"] = stored["Cid"]
    return event


def _is_cid(value: object) -> bool:
    return isinstance(value, str) and _CID.fullmatch(value) is not None


def _cid_of(data: str | bytes) -> str | None:
    """The valid ``Cid`` of a client message, if it has one (for its Error reply)."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    cid = message.get("Cid") if isinstance(message, dict) else None
    return cid if _is_cid(cid) else None


def _since(value: str | None, default: int) -> int:
    """``?since=N``: the last message number a reconnecting page showed."""
    if value is not None and value.isdigit():
        return int(value)
    return default


def _error(why: str, cid: str | None) -> dict[str, Any]:
    """An Error reply; with the Cid of the message it refuses, if it had one."""
    error = {"Type": "Error", "Message": why}
    if cid is not None:
        error["Cid"] = cid
    return error


def _userlist(users: list[str]) -> dict[str, Any]:
    return {"Type": "userlist", "Users": [{"User": u} for u in users]}


class BadInput(Exception):
    """A client message the chat refuses; the text goes back to the sender."""


class ChatServer(WebSocket):
    """``Class Chat.Server Extends %CSP.WebSocket``."""

    CLASS_NAME = "Chat.Server"

    def __init__(self) -> None:
        super().__init__()
        self.room = "default"
        #: The number of the room's last message this socket has (its page said so
        #: with ?since=, or it was the last one when the socket opened). Private mode
        #: polls from here; shared mode catches up from here.
        self._seen_id = 0
        #: The room's last message when the socket joined: shared mode sends the ones
        #: after _seen_id up to this one (what a reconnecting page missed).
        self._joined_at = 0
        self._users: list[str] = []  # the last user list this socket was sent

    async def OnPreServer(self) -> None:
        """Choose the mode; record the connection (``^Chat.WebSocketConnections``)."""
        request = self.request
        mode = (request.get("mode") if request else None) or self.settings.get("mode",
                                                                               "shared")
        if mode not in MODES:
            raise HandshakeRejected(400, f"mode must be shared or private, not {mode!r}")
        self.SharedConnection = 1 if mode == "shared" else 0
        # Fix: the rooms variant recorded ?room= and never used it; here it scopes
        # broadcasts and the user list.
        self.room = ((request.get("room") if request else None) or "default")[:64]
        if self.WebSocketID:
            joined = await self.store.add_connection(self.WebSocketID, self.room, mode,
                                                     self.GWClientAddress)
            last = self._joined_at = joined.last_message
            self._seen_id = min(_since(request.get("since") if request else None, last), last)
            if self.SharedConnection:
                # From the message after the last one this page has: those up to
                # _joined_at come from Server(), the later ones from the group, in order.
                await self.join_group(self.group_name, since=self._seen_id)
                # The user list is a state: a socket gets only lists newer than its last;
                # it has none yet, so the current one (Server() sends it) is new to it.
                await self.join_group(self.users_group,
                                      since=max(joined.users_version - 1, 0), latest=True)
        else:
            await self.store.log_error("no websocketid defined")

    @property
    def group_name(self) -> str:
        """The gateway group of this socket's room (the fast path of SendData)."""
        return f"chat:{self.room}"

    @property
    def users_group(self) -> str:
        """The gateway group that carries the room's user list (newest wins)."""
        return f"chat:{self.room}#users"

    @property
    def per_socket_fanout(self) -> bool:
        """``--set fanout=per-socket``: SendData loops OpenServer(id).Write as the
        tutorial does, instead of one group write per gateway."""
        return self.settings.get("fanout", "group") == "per-socket"

    @property
    def read_timeout_s(self) -> float:
        """Read's timeout. Private: the tutorial's second (``--set read-timeout=S``),
        the polling interval. Shared: none to speak of, since a timeout does nothing
        there; waking every idle socket each second only costs the worker CPU."""
        if self.SharedConnection:
            return DEFAULT_READ_TIMEOUT_S
        return float(self.settings.get("read-timeout", READ_TIMEOUT_S))

    async def Server(self) -> None:
        """Status to this socket, then read and dispatch until the client closes.

        A resumed socket (its worker was lost) picks up where it was: no second Status,
        no user list it has already; the messages it had not acknowledged arrive again
        and are stored once.
        """
        private = not self.SharedConnection
        if not self.resumed:
            await self._start(private)
        while True:
            try:
                data = await self._read_message()
            except ReadTimeout:
                if private:
                    await self._poll()
                continue
            except ClientClosed:
                return  # OnPostServer takes the user off the list
            try:
                await self.Dispatch(data)
            except BadInput as exc:
                await self._refuse(str(exc), _cid_of(data))
            except StoreUnavailable as exc:
                # Nothing was stored, so nothing was sent: the sender is told (the
                # page shows it, and forgets the line), and may send it again.
                log.warning("wsid=%s message refused: %s", self.WebSocketID, exc)
                await self.Write(_json(_error(f"not sent: {exc}; try again",
                                              _cid_of(data))))
            if private:
                await self._poll()

    async def _start(self, private: bool) -> None:
        """A new socket's first messages: its Status, the user list, what it missed."""
        if private:  # also when the gateway's Registry forced a shared request private
            await self.store.set_connection_mode(self.WebSocketID, "private")
        await self.StatusUpdate(self.WebSocketID)
        # Fix: a new socket gets the current user list (the tutorial's page showed an
        # empty ONLINE USERS until somebody's alias changed).
        version, self._users = await self.store.versioned_userlist(self.room)
        if self._users:
            text = _json(_userlist(self._users))
            if private:
                await self.Write(text)
            else:  # a newer list broadcast meanwhile wins over this one
                await self.write_sequenced(self.users_group, version, text)
        if not private:
            await self._catch_up()

    async def _catch_up(self) -> None:
        """A page that reconnected (``?since=N``) gets the room's messages after N, in
        order, before any new one (the gateway holds the new ones until these are in)."""
        while self._seen_id < self._joined_at:
            rows = await self.store.messages_after(self.room, self._seen_id)
            if not rows:
                break
            for row in rows:
                await self.write_sequenced(self.group_name, row.seq, _json(chat_event(row)))
                self._seen_id = row.seq

    async def OnPostServer(self) -> None:
        """The socket is gone (closed, or its worker was lost): the connection and the
        user leave (exactly once, on whichever worker ends the socket). While the store
        cannot be reached this retries (for up to POST_SERVER_RETRY_S), so that a user
        does not stay on the list because Redis restarted at that moment."""
        delay = 0.1
        deadline = trio.current_time() + POST_SERVER_RETRY_S
        while True:
            try:
                await self.store.remove_connection(self.WebSocketID)
                await self.RemoveUser(self.WebSocketID)
                return
            except StoreUnavailable as exc:
                if trio.current_time() + delay > deadline:
                    log.error("wsid=%s: its user stays on the list: %s", self.WebSocketID,
                              exc)
                    return
                log.info("wsid=%s: OnPostServer waits for the store: %s",
                         self.WebSocketID, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _poll(self) -> None:
        """Private mode: deliver what the store gained since the last poll (none while
        the store cannot be reached: the next poll after it is back catches up)."""
        try:
            rows = await self.store.messages_after(self.room, self._seen_id)
            users = await self.store.userlist(self.room)
        except StoreUnavailable as exc:
            log.debug("wsid=%s: no poll: %s", self.WebSocketID, exc)
            return
        for row in rows:
            await self.Write(_json(chat_event(row)))
            self._seen_id = row.seq
        if users != self._users:
            self._users = users
            await self.Write(_json(_userlist(users)))

    async def _read_message(self) -> str | bytes:
        # Fix: a message longer than Read's size comes in pieces; join them.
        pieces = [await self.Read(timeout=self.read_timeout_s)]
        while not self.AtEnd:
            pieces.append(await self.Read(timeout=self.read_timeout_s))
        if isinstance(pieces[0], bytes):
            return b"".join(p if isinstance(p, bytes) else p.encode() for p in pieces)
        return "".join(p if isinstance(p, str) else p.decode() for p in pieces)

    async def Dispatch(self, data: str | bytes) -> None:
        """The body of the tutorial's ``else`` branch: an alias, or a chat message."""
        if isinstance(data, bytes):
            raise BadInput("binary frames are not part of the chat protocol; send JSON text")
        try:
            message = json.loads(data)
        except ValueError as exc:
            raise BadInput(f"malformed JSON: {exc}") from None
        if not isinstance(message, dict):
            raise BadInput("expected a JSON object")
        # Fix: the tutorial took any text containing "User" as an alias (data["User").
        if "User" in message:
            await self.AddUser(message, self.WebSocketID)
            return
        if "Message" not in message:
            raise BadInput('expected {"Message": base64 text, "Author": name} or '
                           '{"User": name}')
        text, author = message["Message"], message.get("Author", "unknown")
        if not isinstance(text, str):
            raise BadInput("Message must be a base64 string")
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("Message is not valid base64") from None
        if not isinstance(author, str) or len(author) > MAX_ALIAS_CHARS:
            raise BadInput(f"Author must be a name of at most {MAX_ALIAS_CHARS} characters")
        cid = message.get("Cid")
        if cid is not None and not _is_cid(cid):
            raise BadInput("Cid must be 8 to 64 letters, digits, '-' or '_'")
        # The id is the same when the message arrives again: the page's Cid when it sent
        # it again over a new socket (its gateway died before the line was stored, or
        # before the page saw it stored), else message_id, when a worker's crash made
        # the gateway deliver it again. The store keeps it once, and the gateway
        # delivers it once (its Id orders the room).
        stored = await self.store.store_message(
            data, wsid=self.WebSocketID, room=self.room, author=author,
            client_id=f"page:{cid}" if cid is not None else (self.message_id or None))
        if stored.duplicate and stored.row.room != self.room:
            return  # a Cid of another room's message: nothing of this room's to send
        await self.ProcessMessage(stored.row.id, stored.row)

    async def StatusUpdate(self, wsid: str) -> None:
        """Send this socket its id, through OpenServer as the tutorial does."""
        status = _json({"Type": "Status", "Message": _b64(STATUS_TEXT), "WSID": wsid})
        if not self.SharedConnection:  # OpenServer refuses private sockets (IRIS)
            await self.Write(status)
            return
        ws = type(self)()
        await ws.OpenServer(wsid)
        await ws.Write(status)

    async def ProcessMessage(self, mid: int, row: ChatMessage | None = None) -> None:
        """Stamp a stored message with Type and Sent, then send it to the room.

        ``row`` is the stored row when the caller has it, which spares a read.
        """
        if row is None:
            row = await self.store.message(mid)
        if row is not None:
            await self.SendData(chat_event(row), seq=row.seq)

    async def SendData(self, data: dict[str, Any], seq: int = 0,
                       group: str | None = None) -> None:
        """Write ``data`` to every shared connection of the room, the sender included;
        private connections poll the store instead.

        By default one group write per gateway does it (the gateway fans out); with
        ``--set fanout=per-socket``, the tutorial's loop of OpenServer(id).Write. A
        chat message goes with its number in the room (``seq``), so every socket gets
        the room's messages in order and once each; a user list goes to the room's
        users group with its version.
        """
        text = _json(data)
        group = group or self.group_name
        if not self.per_socket_fanout:
            await self.write_group(group, text, seq=seq)
            await self._sweep_stale_connections()
            return
        for c in await self.store.connections(self.room, "shared"):
            ws = type(self)()
            try:
                await ws.OpenServer(c)
            except PrivateSocket:
                continue  # forced private by the gateway after it was recorded: it polls
            except WebSocketError:
                await self.HandleError(c, "open")
                continue  # Fix: the tutorial wrote even after the open failed.
            try:
                if seq:
                    await ws.write_sequenced(group, seq, text)
                else:
                    await ws.Write(text)
            except WebSocketError:
                await self.HandleError(c, "write")

    async def AddUser(self, data: dict[str, Any], wid: str) -> None:
        """Name the user of ``wid`` and send the room its user list."""
        alias = data.get("User")
        if not isinstance(alias, str) or not alias.strip():
            raise BadInput("User must be a non-empty name")
        if len(alias) > MAX_ALIAS_CHARS:
            raise BadInput(f"User must be at most {MAX_ALIAS_CHARS} characters")
        # Fix: a rename replaces the old name (the tutorial appended, keeping both).
        await self.store.set_alias(wid, alias.strip(), self.room)
        await self._send_userlist()

    async def RemoveUser(self, wsid: str) -> None:
        """Take the user of ``wsid`` off the list and tell the room."""
        # Fix: removed by socket, not the first entry with the same name.
        removed = await self.store.remove_user(wsid)
        if removed is not None:
            await self._send_userlist()

    async def HandleError(self, conn: str, kind: str) -> None:
        """Record a failed open (and drop that connection) or a failed write."""
        if kind == "open":
            await self.store.log_error("open failed for", conn, conn)
            await self.store.remove_connection(conn)
        else:
            await self.store.log_error("failed to send data to", conn, conn)

    async def BroadCast(self, text: str = "testmessage") -> None:
        """The tutorial's admin helper: a message from ``system`` to the room."""
        await self.SendData({"Type": "Chat", "Author": "system", "Message": _b64(text),
                             "Sent": _now()})

    async def _sweep_stale_connections(self) -> None:
        """Group mode opens no connection one by one, so the tutorial's HandleError
        "open" branch would never drop a stale row (a socket whose worker died): look
        for them at most every SWEEP_INTERVAL_S per room and worker, the same way."""
        now = time.monotonic()
        key = (current_runtime().pid, self.room)
        if now - _last_sweep.get(key, 0.0) < SWEEP_INTERVAL_S:
            return
        _last_sweep[key] = now
        for c in await self.store.connections(self.room, "shared"):
            try:
                await type(self)().OpenServer(c)
            except PrivateSocket:
                continue
            except WebSocketError:
                await self.HandleError(c, "open")

    async def _send_userlist(self) -> None:
        version, users = await self.store.versioned_userlist(self.room)
        await self.SendData(_userlist(users), seq=version, group=self.users_group)

    async def _refuse(self, why: str, cid: str | None) -> None:
        log.info("wsid=%s bad input: %s", self.WebSocketID, why)
        with contextlib.suppress(StoreUnavailable):  # the app server's log has it
            await self.store.log_error("bad input", why, self.WebSocketID)
        await self.Write(_json(_error(why, cid)))
