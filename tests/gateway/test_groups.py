"""gateway.groups.SocketGroup on its own: who gets a group's messages, in what order, once.

The members are fakes that record the frames queued on them (a group only needs a
socket's ``shared``, ``wsid``, ``last_activity``, ``queue`` and its send buffer's
``pending`` and ``limit``); a frame is the message's number as text and a ``;``, so a
member's frames, one queued at a time or several in one piece, read as the sequence
it received.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.groups import HOLD_S, SocketGroup


class FakeOut:
    """A send buffer as a group sees it: what waits, and the bound."""

    def __init__(self, limit: int) -> None:
        self.pending = 0
        self.limit = limit


class FakeSocket:
    """A group member that records what is queued on it."""

    def __init__(self, wsid: str, *, shared: bool = True, limit: int = 1 << 20) -> None:
        self.wsid = wsid
        self.shared = shared
        self.last_activity = -1.0
        self.frames: list[bytes] = []
        self.shared_only: list[bool] = []
        self.out = FakeOut(limit)

    def queue(self, frame: bytes, *, shared_only: bool = False) -> bool:
        """Record the frame; a fake socket is never too slow."""
        self.frames.append(frame)
        self.shared_only.append(shared_only)
        return True

    @property
    def got(self) -> list[int]:
        """The numbers of the messages received, in order."""
        return [int(n) for frame in self.frames for n in frame.split(b";") if n]


def frame(seq: int) -> bytes:
    """Message ``seq``'s frame."""
    return b"%d;" % seq


def member(group: SocketGroup, wsid: str, since: int | None = 0, *,
           shared: bool = True, limit: int = 1 << 20) -> Any:
    """A new fake socket that joined ``group`` having seen up to ``since``."""
    bs = FakeSocket(wsid, shared=shared, limit=limit)
    group.join(bs, since)  # type: ignore[arg-type]
    return bs


def write(group: SocketGroup, *seqs: int, now: float = 0.0) -> tuple[int, set[Any]]:
    """Group-write messages ``seqs`` in that order; (how many were queued, the dirty set)."""
    dirty: set[Any] = set()
    sent = sum(group.write(frame(seq), seq, now, dirty) for seq in seqs)
    return sent, dirty


def test_unsequenced_write_reaches_every_shared_member_and_skips_private_ones() -> None:
    """An unsequenced write is queued once on each shared member (marked shared-only,
    activity stamped, socket marked dirty) and never on a private member."""
    group = SocketGroup("room")
    a, b = member(group, "gw-1"), member(group, "gw-2")
    private = member(group, "gw-3", shared=False)
    dirty: set[Any] = set()
    assert group.write(b"hello", 0, 7.5, dirty) == 2
    assert group.write(b"again", 0, 8.0, dirty) == 2
    for bs in (a, b):
        assert bs.frames == [b"hello", b"again"]
        assert bs.shared_only == [True, True]
        assert bs.last_activity == 8.0
    assert dirty == {a, b}
    assert private.frames == []
    assert private.last_activity == -1.0
    # Sequenced writes skip private members too.
    assert write(group, 1)[0] == 2
    assert private.frames == []


def test_sequenced_writes_sent_out_of_order_arrive_in_order_once_each() -> None:
    """Messages 4, 2, 3 are held until 1 fills the gap; each member then gets 1..4 in
    order, and a message sent again afterwards is dropped."""
    group = SocketGroup("room")
    a, b = member(group, "gw-1"), member(group, "gw-2")
    assert write(group, 4, 2, 3) == (0, set())
    assert group.holding
    assert a.frames == b.frames == []
    sent, dirty = write(group, 1)
    assert sent == 8  # 1, and the three it released, on each of the two members
    assert dirty == {a, b}
    assert not group.holding
    assert write(group, 2, 4, 1)[0] == 0  # sent again (a crash): dropped
    assert write(group, 5)[0] == 2
    assert a.got == b.got == [1, 2, 3, 4, 5]


def test_a_message_below_the_cursor_is_a_duplicate_and_dropped() -> None:
    """A member that joined having seen up to 5 drops 5 and 3 (duplicates), neither
    delivered nor held, and gets 6."""
    group = SocketGroup("room")
    bs = member(group, "gw-1", since=5)
    assert write(group, 5, 3) == (0, set())
    assert not group.holding
    assert write(group, 6)[0] == 1
    assert bs.got == [6]


def test_join_since_n_starts_at_n_plus_one_and_since_none_takes_the_first() -> None:
    """``join(since=4)`` waits for 5 (holding 6 until it comes); ``join(since=None)``
    takes whichever message comes first (6) and is in order from there."""
    group = SocketGroup("room")
    from_four = member(group, "gw-1", since=4)
    first_come = member(group, "gw-2", since=None)
    write(group, 6)
    assert from_four.got == []
    assert first_come.got == [6]
    write(group, 5)  # below first_come's cursor now: a duplicate for it
    assert from_four.got == [5, 6]
    assert first_come.got == [6]
    write(group, 8)
    assert first_come.got == [6]  # held: 7 has not come
    write(group, 7)
    assert from_four.got == [5, 6, 7, 8]
    assert first_come.got == [6, 7, 8]


def test_catching_up_one_by_one_interleaves_with_group_writes() -> None:
    """A member that saw up to 2 is sent history 3..5 by write_one while 6 and 7
    arrive by group write in between: it gets 3..7 in order, once each; a member that
    was up to date gets 6 and 7 at once."""
    group = SocketGroup("room")
    late = member(group, "gw-1", since=2)
    current = member(group, "gw-2", since=5)

    def one(seq: int) -> bool:
        return group.write_one(late, frame(seq), seq, 1.0)

    write(group, 6)  # arrives before the history: held for late
    assert current.got == [6]
    assert late.got == []
    assert one(3)
    write(group, 7)
    assert one(4)
    assert late.got == [3, 4]
    assert one(5)  # fills the gap: 6 and 7 follow it
    assert late.got == [3, 4, 5, 6, 7]
    assert not group.holding
    assert not one(4)  # history sent again: a duplicate
    write(group, 8)
    assert late.got == [3, 4, 5, 6, 7, 8]
    assert current.got == [6, 7, 8]


def test_write_one_ahead_of_the_cursor_is_held_until_its_turn() -> None:
    """History sent out of order by write_one (5 before 4) is held, and goes out in
    order once the gap fills."""
    group = SocketGroup("room")
    bs = member(group, "gw-1", since=3)
    assert not group.write_one(bs, frame(5), 5, 0.0)
    assert bs.got == []
    assert group.write_one(bs, frame(4), 4, 0.0)
    assert bs.got == [4, 5]


def test_expire_gives_up_a_gap_after_hold_s_in_order() -> None:
    """A gap older than HOLD_S is given up: what each member held is queued in order,
    its cursor moves past it (so the missing messages are dropped if they come late),
    and expire returns how many gaps it gave up."""
    group = SocketGroup("room")
    a, b = member(group, "gw-1"), member(group, "gw-2")
    write(group, 4, now=10.0)
    write(group, 3, now=10.5)
    dirty: set[Any] = set()
    assert group.expire(10.0 + HOLD_S, dirty) == 0  # not older than HOLD_S yet
    assert a.frames == b.frames == []
    assert dirty == set()
    assert group.expire(10.0 + HOLD_S + 0.01, dirty) == 2
    assert dirty == {a, b}
    assert a.got == b.got == [3, 4]
    assert not group.holding
    assert group.expire(100.0, set()) == 0
    write(group, 1, 2)  # the lost messages, too late
    write(group, 5)
    assert a.got == b.got == [3, 4, 5]


def test_expire_counts_only_members_holding_long_enough() -> None:
    """A member whose gap is younger than HOLD_S keeps holding when an older gap of
    another member is given up."""
    group = SocketGroup("room")
    old = member(group, "gw-1", since=0)
    write(group, 3, now=0.0)
    young = member(group, "gw-2", since=10)
    write(group, 12, now=HOLD_S)
    assert group.expire(HOLD_S + 0.5, set()) == 1
    assert old.got == [3, 12]
    assert young.got == []
    assert group.holding
    write(group, 11)
    assert young.got == [11, 12]


def test_latest_group_delivers_only_newer_versions_and_never_holds() -> None:
    """In a 'latest' group a member gets version 3 at once (no waiting for 1 and 2), then
    drops an older version that arrives late and the same version again; newer ones
    keep coming; nothing is ever held."""
    group = SocketGroup("users", latest=True)
    bs = member(group, "gw-1", since=0)
    anything = member(group, "gw-2", since=None)
    write(group, 3)
    assert not group.holding
    write(group, 2, 3)
    write(group, 5)
    write(group, 4)
    assert not group.holding
    assert bs.got == anything.got == [3, 5]
    assert not group.write_one(bs, frame(4), 4, 0.0)
    assert group.write_one(bs, frame(6), 6, 0.0)
    assert bs.got == [3, 5, 6]


def test_latest_group_member_gets_the_version_it_joined_at() -> None:
    """A member that joined a 'latest' group having seen version 4 drops 4 and below and
    takes 5."""
    group = SocketGroup("users", latest=True)
    bs = member(group, "gw-1", since=4)
    write(group, 4, 2)
    assert bs.got == []
    write(group, 5)
    assert bs.got == [5]


def test_leave_drops_the_member_and_what_it_held() -> None:
    """A member that leaves while holding a message gets nothing more, and the group no
    longer holds anything for it."""
    group = SocketGroup("room")
    gone, stays = member(group, "gw-1"), member(group, "gw-2", since=None)
    write(group, 2)
    assert group.holding
    group.leave(gone)  # type: ignore[arg-type]
    assert not group.holding
    assert len(group) == 1
    write(group, 1, 3)
    assert gone.got == []
    assert stays.got == [2, 3]


def run_of(*seqs: int) -> list[tuple[int, bytes]]:
    return [(seq, frame(seq)) for seq in seqs]


def test_a_run_reaches_each_member_in_one_piece_in_order() -> None:
    """write_run of 3, 1, 2: a member at the start of the run gets 1, 2, 3 in one
    queued piece; a private member nothing; all counted."""
    group = SocketGroup("room")
    a, b = member(group, "gw-1"), member(group, "gw-2")
    private = member(group, "gw-3", shared=False)
    dirty: set[Any] = set()
    assert group.write_run(run_of(3, 1, 2), 4.0, dirty) == 6
    assert a.frames == b.frames == [b"1;2;3;"]
    assert (a.last_activity, a.shared_only) == (4.0, [True])
    assert dirty == {a, b}
    assert private.frames == []
    assert group.write_run(run_of(4, 3, 5), 5.0, dirty) == 4  # 3 again: dropped
    assert a.got == b.got == [1, 2, 3, 4, 5]


def test_a_run_goes_one_by_one_to_a_member_behind_or_near_its_limit() -> None:
    """A member that joined at 5 gets 6.. of a run starting at 4 (4, 5 dropped) one at a
    time; one whose buffer cannot take the whole run gets it one message at a time."""
    group = SocketGroup("room")
    late = member(group, "gw-1", since=5)
    tight = member(group, "gw-2", since=3, limit=len(b"4;5;"))
    assert group.write_run(run_of(4, 5, 6, 7), 1.0, set()) == 2 + 4
    assert late.frames == [b"6;", b"7;"]
    assert tight.frames == [b"4;", b"5;", b"6;", b"7;"]


def test_a_run_with_a_gap_holds_what_follows_it() -> None:
    """1, 2 and 4: 4 is held until 3 comes, as with one write at a time."""
    group = SocketGroup("room")
    bs = member(group, "gw-1")
    group.write_run(run_of(1, 2, 4), 1.0, set())
    assert bs.got == [1, 2]
    assert group.holding
    group.write_run(run_of(3), 1.5, set())
    assert bs.got == [1, 2, 3, 4]
    assert not group.holding


@given(st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=6), max_size=6),
       st.lists(st.one_of(st.none(), st.integers(0, 8)), min_size=1, max_size=4),
       st.randoms())
def test_runs_deliver_what_one_write_at_a_time_delivers(
    batches: list[list[int]], joins: list[int | None], rng: random.Random,
) -> None:
    """Whatever the runs, the members and where they joined, write_run leaves every
    member with the messages, and the cursors and holds, that write() one message at
    a time in seq order would."""
    one, many = SocketGroup("one"), SocketGroup("many")
    singles = [member(one, f"gw-{i}", since) for i, since in enumerate(joins)]
    runs = [member(many, f"gw-{i}", since) for i, since in enumerate(joins)]
    for batch in batches:
        rng.shuffle(batch)
        for seq in sorted(set(batch)):
            one.write(frame(seq), seq, 0.0, set())
        many.write_run(run_of(*batch), 0.0, set())
    assert [s.got for s in singles] == [r.got for r in runs]
    assert list(one.members.values()) == list(many.members.values())
    assert one.holding == many.holding
