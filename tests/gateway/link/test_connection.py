"""The link protocol, sans-I/O: frames, the handshake, and what garbage does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.link.codec import PREAUTH_MAX_FRAME_BYTES, decode_body, encode_frame
from gateway.link.connection import PROTOCOL_VERSION, LinkConnection, LinkState, Role
from gateway.link.errors import LinkAuthError, LinkProtocolError, LinkUsageError
from gateway.link.events import (
    Accept,
    Ack,
    Adopt,
    Challenge,
    Close,
    Data,
    Done,
    End,
    Ended,
    Event,
    FrameType,
    Group,
    Handoff,
    Heartbeat,
    Hello,
    Open,
    Refused,
    Reject,
    Resume,
    SocketState,
    SocketStatus,
    Welcome,
    Write,
    WriteGroup,
    WriteMany,
)

SECRET = b"s3cret-for-tests"

GATEWAY_TO_WORKER: list[Event] = [
    Open("gw.a1-1", "user/Chat.Server", "/csp/user/Chat.Server.cls", "room=x&mode=shared",
         (("host", "localhost"), ("cookie", "a=b")), "127.0.0.1"),
    Data("gw.a1-1", False, "Grüße, 你好".encode(), seq=1),
    Data("gw.a1-1", False, b"again", seq=0xFFFFFFFF),
    Data("gw.a1-1", True, bytes(range(256))),
    Data("gw.a1-1", True, b""),
    Close("gw.a1-1", 1001, "going away", ended=False),
    Close("gw.a1-2", 1000, "", ended=True),
    Heartbeat(7),
    Heartbeat(8, reply=True),
    SocketState("gw.a1-3", SocketStatus.PRIVATE),
    SocketState("gw.a1-4", SocketStatus.SHARED, "CSPSESSION1"),
    Adopt(Open("gw.a1-5", "user/Chat.Server", "/csp/user/Chat.Server.cls", "mode=private",
               (), "127.0.0.1", shared_allowed=False), b"\x80\x05state"),
    Ended(42, first=True),
    Ended(43, first=False),
    Resume("gw.a1-6", "user/Chat.Server", b'{"room": "x"}', binary=True),
    Resume("gw.a1-7", "user/Chat.Server", b"", ended=True, close_code=1011),
]
WORKER_TO_GATEWAY: list[Event] = [
    Accept("gw.a1-1", shared=True),
    Accept("gw.a1-2", shared=False, binary=True, state=b'{"room": "default"}'),
    Accept("gw.a1-3", shared=True, subprotocol="chat.v2"),
    Ack("gw.a1-1", 12),
    Done("gw.a1-2"),
    Reject("gw.a1-3", 503, "busy, try later"),
    Write("gw.a1-1", False, b'{"Type":"Chat"}'),
    Write("gw.a1-1", True, b"\x00\xff"),
    Write("gw.a1-1", False, b'{"Id":3}', group="chat:default", seq=3),
    Close("gw.a1-1", 1011, "server error"),
    Heartbeat(1),
    End(9, "gw.a1-1", 1000, "bye"),
    Handoff("gw.a1-5", b"\x80\x05pickled"),
    Group("gw.a1-1", "chat:default"),
    Group("gw.a1-1", "chat:default", join=False),
    Group("gw.a1-1", "chat:default", since=41),
    Group("gw.a1-1", "chat:default", since=0),
    Group("gw.a1-1", "chat:default#users", since=3, latest=True),
    WriteGroup("chat:default", False, b'{"Type":"Chat"}'),
    WriteGroup("chat:default", False, b'{"Id":42}', seq=42),
    WriteMany(("gw.a1-1", "gw.a1-2", "gw.a1-30"), True, b"\x01\x02"),
    WriteMany((), False, b""),
]
HANDSHAKE: list[Event] = [
    Challenge(PROTOCOL_VERSION, b"n" * 32),
    Hello(PROTOCOL_VERSION, "gw.a1", b"c" * 32, b"p" * 32),
    Welcome(7, 1234, "as", ("user/Chat.Server", "user/Echo.Server"), b"q" * 32),
    Refused("busy: all 3 workers serve links", busy=True),
]


def open_pair() -> tuple[LinkConnection, LinkConnection]:
    """A gateway and an app-server connection that completed the handshake."""
    gateway = LinkConnection(Role.GATEWAY, secret=SECRET)
    server = LinkConnection(Role.APPSERVER, secret=SECRET)
    gateway.receive_data(server.initiate())
    assert isinstance(gateway.next_event(), Challenge)
    server.receive_data(gateway.send(Hello(PROTOCOL_VERSION, "gw.a1")))
    hello = server.next_event()
    assert isinstance(hello, Hello)
    assert hello.gateway_id == "gw.a1"
    gateway.receive_data(server.send(Welcome(5, 99, "as", ("user/Chat.Server",))))
    welcome = gateway.next_event()
    assert isinstance(welcome, Welcome)
    assert welcome.worker_pid == 99
    assert gateway.state is server.state is LinkState.OPEN
    assert gateway.link_id == server.link_id == 5
    return gateway, server


@pytest.mark.parametrize("event", GATEWAY_TO_WORKER + WORKER_TO_GATEWAY + HANDSHAKE,
                         ids=lambda e: type(e).__name__)
def test_every_frame_type_round_trips(event: Event) -> None:
    """encode_frame then decode_body gives back an equal event, for every frame type."""
    frame = encode_frame(event)
    length = int.from_bytes(frame[:4], "big")
    assert length == len(frame) - 4
    assert decode_body(frame[4], frame[5:]) == event


def test_every_frame_type_is_covered() -> None:
    """The round-trip cases above exercise every frame type the protocol defines."""
    covered = {encode_frame(e)[4] for e in GATEWAY_TO_WORKER + WORKER_TO_GATEWAY + HANDSHAKE}
    assert covered == {int(t) for t in FrameType}


def test_stream_whole_byte_by_byte_and_with_trailing_bytes() -> None:
    """A stream of frames decodes the same whole, one byte at a time, and split anywhere;
    bytes after the last whole frame wait for more."""
    gateway, server = open_pair()
    stream = b"".join(gateway.send(e) for e in GATEWAY_TO_WORKER)

    server.receive_data(stream)
    assert list(server.events()) == GATEWAY_TO_WORKER

    _, one_by_one = open_pair()
    got: list[Event] = []
    for i in range(len(stream)):
        one_by_one.receive_data(stream[i : i + 1])
        got.extend(one_by_one.events())
    assert got == GATEWAY_TO_WORKER

    _, trailing = open_pair()
    partial = gateway.send(Data("gw.a1-9", False, b"tail"))
    trailing.receive_data(stream + partial[:7])
    assert list(trailing.events()) == GATEWAY_TO_WORKER
    assert trailing.buffered == 7
    trailing.receive_data(partial[7:])
    assert list(trailing.events()) == [Data("gw.a1-9", False, b"tail")]


def test_worker_to_gateway_stream() -> None:
    """The gateway decodes every frame a worker may send."""
    gateway, server = open_pair()
    gateway.receive_data(b"".join(server.send(e) for e in WORKER_TO_GATEWAY))
    assert list(gateway.events()) == WORKER_TO_GATEWAY


def test_wrong_secret_fails_both_ways() -> None:
    """A gateway with the wrong secret is refused; a server with the wrong one is caught."""
    gateway = LinkConnection(Role.GATEWAY, secret=b"wrong")
    server = LinkConnection(Role.APPSERVER, secret=SECRET)
    gateway.receive_data(server.initiate())
    gateway.next_event()
    server.receive_data(gateway.send(Hello(PROTOCOL_VERSION, "gw.x")))
    with pytest.raises(LinkAuthError) as excinfo:
        server.next_event()
    assert "wrong secret" in excinfo.value.reason
    assert SECRET.decode() not in excinfo.value.reason
    assert server.state is LinkState.REFUSING
    assert server.next_event() is None
    gateway.receive_data(server.refuse("authentication failed"))
    assert server.state is LinkState.CLOSED
    assert gateway.next_event() == Refused("authentication failed")
    with pytest.raises(LinkUsageError):
        server.refuse("twice")

    gateway = LinkConnection(Role.GATEWAY, secret=SECRET)
    impostor = LinkConnection(Role.APPSERVER, secret=b"wrong")
    gateway.receive_data(impostor.initiate())
    gateway.next_event()
    hello = gateway.send(Hello(PROTOCOL_VERSION, "gw.x"))
    # The impostor cannot verify the Hello, but it can try to welcome anyway.
    impostor.receive_data(hello)
    with pytest.raises(LinkAuthError):
        impostor.next_event()
    forged = encode_frame(Welcome(1, 1, "as", (), b"\0" * 32))
    gateway.receive_data(forged)
    with pytest.raises(LinkAuthError):
        gateway.next_event()


def test_replayed_hello_fails_against_a_new_challenge() -> None:
    """A Hello captured from one handshake does not authenticate another."""
    gateway = LinkConnection(Role.GATEWAY, secret=SECRET)
    first = LinkConnection(Role.APPSERVER, secret=SECRET)
    gateway.receive_data(first.initiate())
    gateway.next_event()
    captured = gateway.send(Hello(PROTOCOL_VERSION, "gw.a1"))
    second = LinkConnection(Role.APPSERVER, secret=SECRET)
    second.initiate()
    second.receive_data(captured)
    with pytest.raises(LinkAuthError):
        second.next_event()


def test_traffic_before_authentication_is_refused() -> None:
    """Socket traffic before the handshake is a protocol error, as is an oversized frame."""
    server = LinkConnection(Role.APPSERVER, secret=SECRET)
    server.initiate()
    server.receive_data(encode_frame(Data("gw.a1-1", False, b"hi")))
    with pytest.raises(LinkProtocolError, match="unexpected DATA"):
        server.next_event()

    server = LinkConnection(Role.APPSERVER, secret=SECRET)
    server.initiate()
    server.receive_data((PREAUTH_MAX_FRAME_BYTES + 1).to_bytes(4, "big") + b"\x02")
    with pytest.raises(LinkProtocolError, match="exceeds the limit"):
        server.next_event()


def test_open_link_limits_and_directions() -> None:
    """An open link refuses frames above its limit and frames from the wrong side."""
    gateway = LinkConnection.adopted(Role.GATEWAY, gateway_id="gw.a1", link_id=1,
                                     max_frame_bytes=1000)
    gateway.receive_data(encode_frame(Write("gw.a1-1", False, b"x" * 1000)))
    with pytest.raises(LinkProtocolError, match="exceeds the limit of 1000"):
        gateway.next_event()

    gateway = LinkConnection.adopted(Role.GATEWAY, gateway_id="gw.a1", link_id=1)
    gateway.receive_data(encode_frame(Open("w-1", "user/X", "/", "", (), "")))
    with pytest.raises(LinkProtocolError, match="unexpected OPEN"):
        gateway.next_event()
    assert gateway.next_event() is None  # closed: nothing more comes out

    worker = LinkConnection.adopted(Role.APPSERVER, gateway_id="gw.a1", link_id=1)
    with pytest.raises(LinkUsageError):
        worker.send(Open("w-1", "user/X", "/", "", (), ""))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\x00\x00\x00", "empty frame"),
        (b"\x00\x00\x00\x01\x7f", "unknown frame type 0x7f"),
        (b"\x00\x00\x00\x02\x13\x00", "truncated DATA"),
        (b"\x00\x00\x00\x08\x13\x05\x00\x00\x00\x01\x01a", "unknown flag bits"),
        (b"\x00\x00\x00\x04\x16\x00\x00\x00", "truncated HEARTBEAT"),
        (b"\x00\x00\x00\x07\x16\x00\x00\x00\x01\x00\x00", "trailing bytes"),
        (b"\x00\x00\x00\x04\x17\x01\xff\x00", "invalid UTF-8"),
        (b"\x00\x00\x00\x05\x17\x01a\x09\x00", "unknown socket status 9"),
    ],
)
def test_malformed_frames_give_the_documented_error(frame: bytes, reason: str) -> None:
    """Each kind of malformed frame raises LinkProtocolError with a readable reason."""
    worker = LinkConnection.adopted(Role.APPSERVER, gateway_id="gw.a1", link_id=1)
    worker.receive_data(frame)
    with pytest.raises(LinkProtocolError, match=reason):
        worker.next_event()


def test_a_write_with_unknown_flags_is_a_protocol_error() -> None:
    """A WRITE frame with flag bits the protocol does not define ends the link."""
    gateway = LinkConnection.adopted(Role.GATEWAY, gateway_id="gw.a1", link_id=1)
    gateway.receive_data(b"\x00\x00\x00\x04\x14\x04\x01a")
    with pytest.raises(LinkProtocolError, match="unknown flag bits in WRITE"):
        gateway.next_event()


def test_eof_in_the_middle_of_a_frame() -> None:
    """A peer that hangs up mid-frame is a protocol error; at a boundary it is EOF."""
    worker = LinkConnection.adopted(Role.APPSERVER, gateway_id="gw.a1", link_id=1)
    worker.receive_data(encode_frame(Heartbeat(1))[:6])
    worker.receive_data(b"")
    with pytest.raises(LinkProtocolError, match="middle of a frame"):
        worker.next_event()

    worker = LinkConnection.adopted(Role.APPSERVER, gateway_id="gw.a1", link_id=1)
    worker.receive_data(encode_frame(Heartbeat(1)))
    worker.receive_data(b"")
    assert worker.next_event() == Heartbeat(1)
    assert worker.eof


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from([Role.GATEWAY, Role.APPSERVER]),
       st.booleans())
def test_arbitrary_bytes_give_events_or_the_protocol_error(
    data: bytes, role: Role, authenticated: bool
) -> None:
    """Any bytes, to either side, authenticated or not: events or LinkProtocolError."""
    if authenticated:
        conn = LinkConnection.adopted(role, gateway_id="gw.a1", link_id=1)
    else:
        conn = LinkConnection(role, secret=SECRET)
        if role is Role.APPSERVER:
            conn.initiate()
    conn.receive_data(data)
    error: LinkProtocolError | None = None
    try:
        events = list(conn.events())
    except LinkProtocolError as exc:
        error, events = exc, []
    assert all(isinstance(event, Event) for event in events)
    if error is not None:
        assert error.reason
        assert conn.state in (LinkState.CLOSED, LinkState.REFUSING)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(GATEWAY_TO_WORKER), max_size=12), st.data())
def test_random_chunking_preserves_events(events: list[Event], data: st.DataObject) -> None:
    """However the stream is cut, the same events come out in the same order."""
    gateway, server = open_pair()
    stream = b"".join(gateway.send(e) for e in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    got: list[Event] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        if cut > start:  # b"" would mean EOF
            server.receive_data(stream[start:cut])
            got.extend(server.events())
            start = cut
    assert got == events
