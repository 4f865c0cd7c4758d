"""The worker's Registry: what OpenServer can know about an id without a round trip."""

from __future__ import annotations

from appserver.registry import Lookup, SocketRegistry, parse_wsid
from gateway.link.events import SocketStatus


def test_parse_wsid() -> None:
    """Ids are <gateway>-<n>; anything else is not an id."""
    assert parse_wsid("gw.ab12-17") == ("gw.ab12", 17)
    assert parse_wsid("gw-a-3") == ("gw-a", 3)
    assert parse_wsid("") is None
    assert parse_wsid("nodash") is None
    assert parse_wsid("gw-x") is None


def test_states_follow_the_announcements() -> None:
    """Announced states are returned; a closed id stays closed."""
    reg = SocketRegistry()
    reg.update("g-1", SocketStatus.CONNECTING)
    assert reg.lookup("g-1") is Lookup.CONNECTING
    reg.update("g-1", SocketStatus.SHARED)
    reg.update("g-2", SocketStatus.PRIVATE)
    assert reg.lookup("g-1") is Lookup.SHARED
    assert reg.lookup("g-2") is Lookup.PRIVATE
    reg.update("g-1", SocketStatus.CLOSED)
    assert reg.lookup("g-1") is Lookup.CLOSED
    assert len(reg) == 1


def test_unannounced_ids_are_closed_below_the_highest_and_unknown_above() -> None:
    """Ids are announced in order: a missing lower id closed, a higher one in flight."""
    reg = SocketRegistry()
    reg.update("g-5", SocketStatus.SHARED)
    assert reg.lookup("g-3") is Lookup.CLOSED
    assert reg.lookup("g-6") is Lookup.UNKNOWN
    assert reg.lookup("other-1") is Lookup.UNKNOWN
