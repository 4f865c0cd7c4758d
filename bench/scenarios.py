"""The three scenarios, each run by the fleet of load generators against one system.

* ``idle``: open N chat sockets; connect rate, and the system's memory per socket.
* ``broadcast``: C chat clients in one room, S of them send for D seconds, every
  client (sender included) receives every message. A sender sends R messages/s (open
  loop) or, with R = 0, its next message as soon as its last one came back to it
  (closed loop: the system runs flat out, with bounded queues). Every client checks
  every message: each sender's numbers must arrive in order, with no gap and no
  repeat; what has not arrived when the drain timeout ends is lost. Loss, repeats and
  late arrivals are counted per socket and summed, never netted; latency is the
  receive time minus the send time carried in the message (CLOCK_MONOTONIC is one
  clock for every process of the machine).
* ``echo``: C clients, each doing sequential round trips through the echo class.

Each phase starts on every load generator at once (:meth:`bench.fleet.Fleet.ask`);
:mod:`bench.cost` records what the measured phase cost the load generators, the
system and the machine.
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass
from typing import Any

from bench.cost import read_usage, record_cost
from bench.fleet import Fleet, Message, split
from bench.results import Result, percentiles_ms
from bench.systems import RunningSystem

__all__ = ["CHAT_PATH", "ECHO_PATH", "Load", "run_broadcast", "run_echo", "run_handshake",
           "run_idle", "run_storm"]

CHAT_PATH = "/csp/user/Chat.Server.cls"
ECHO_PATH = "/csp/user/Echo.Server.cls"
#: Phases start this far in the future, so that every load generator has the command.
START_DELAY_NS = 200_000_000
#: After the last socket opened, time for the system to finish its per-socket work.
IDLE_SETTLE_S = 1.0
_NS_PER_S = 1e9
_REPLY_MARGIN_S = 60.0
#: The reconnect storm: handshakes in flight at once over all load generators.
STORM_IN_FLIGHT = 1000


@dataclass(frozen=True, slots=True)
class Load:
    """What the load generators do in one run."""

    clients: int
    senders: int = 10
    #: Messages per second per sender; 0: closed loop, as fast as the system delivers.
    rate_per_s: float = 0.0
    #: Closed loop: how many of its own messages a sender keeps in flight.
    window: int = 1
    duration_s: float = 5.0
    drain_timeout_s: float = 10.0
    #: How many sockets extract latency from what they receive (spread evenly).
    latency_clients: int = 200
    payload_bytes: int = 32
    connect_concurrency: int = 64
    connect_timeout_s: float = 120.0


@dataclass(slots=True)
class _Opened:
    opened: list[int]  # per load generator
    rejected: dict[int, int]
    first_reject_opened: int | None
    seconds: float
    errors: dict[str, int]
    #: Every opened socket's handshake, connect to open (ns).
    handshakes_ns: list[int]
    retries: int
    end_ns: int

    @property
    def total(self) -> int:
        return sum(self.opened)


def _connect(fleet: Fleet, system: RunningSystem, path: str, count: int, load: Load, *,
             wait_status: bool, stop_on_reject: bool = False, in_flight: int | None = None,
             retry: bool = False) -> _Opened:
    """Open ``count`` sockets, spread over the load generators, ``in_flight`` at most
    at once in all (default: ``connect_concurrency`` per load generator); ``retry``:
    try a refused or failed connect again (the server is coming back).

    Private sockets are opened one at a time, from one load generator: each may have
    to wait for the app server to start a worker process for it, and opened together
    they would all wait at once and run into the queue timeout (503).
    """
    host, port = system.address
    path = system.ws_path(path)
    sequential = system.spec.private or in_flight == 1
    agents = 1 if sequential else min(fleet.size, max(count, 1), in_flight or fleet.size)
    parts = split(count, agents)
    concurrency = (split(in_flight, agents) if in_flight is not None
                   else [load.connect_concurrency] * agents)
    messages: list[Message | None] = [
        {"op": "connect", "host": host, "port": port, "path": path, "count": n,
         "concurrency": 1 if sequential else concurrency[i],
         "wait_status": wait_status, "stop_on_reject": stop_on_reject,
         "timeout_s": load.connect_timeout_s, "retry": retry}
        for i, n in enumerate(parts)]
    replies = fleet.ask(messages + [None] * (fleet.size - len(parts)),
                        load.connect_timeout_s + _REPLY_MARGIN_S)
    rejected: dict[int, int] = {}
    errors: dict[str, int] = {}
    for reply in replies:
        for status, n in reply["rejected"].items():
            rejected[status] = rejected.get(status, 0) + n
        for why, n in reply["errors"].items():
            errors[why] = errors.get(why, 0) + n
    seconds = (max(r["end_ns"] for r in replies) - min(r["start_ns"] for r in replies))
    handshakes: list[int] = []
    for reply in replies:
        handshakes.extend(array("q", reply["handshakes"]))
    return _Opened([r["opened"] for r in replies] + [0] * (fleet.size - len(parts)),
                   rejected, replies[0]["first_reject_opened"] if stop_on_reject else None,
                   seconds / _NS_PER_S, errors, handshakes,
                   sum(r["retries"] for r in replies), max(r["end_ns"] for r in replies))


def _base_extra(system: RunningSystem) -> dict[str, Any]:
    spec = system.spec
    extra: dict[str, Any] = {"label": spec.label, "workers": spec.workers}
    if spec.max_workers is not None:
        extra["max_workers"] = spec.max_workers
    return extra


def _close(fleet: Fleet) -> None:
    fleet.ask_all({"op": "close"}, _REPLY_MARGIN_S)


def run_idle(fleet: Fleet, system: RunningSystem, sockets: int, load: Load, *,
             until_refused: bool = False) -> Result:
    """Open ``sockets`` chat sockets and weigh the system with them open.

    ``until_refused`` (private mode) stops at the first refusal, recording how many
    were open then as ``sockets_until_503``.
    """
    extra = _base_extra(system)
    before = system.sample()
    usage = read_usage(fleet)
    try:
        opened = _connect(fleet, system, CHAT_PATH, sockets, load, wait_status=True,
                          stop_on_reject=until_refused)
        record_cost(fleet, usage, system, before, extra)
        time.sleep(IDLE_SETTLE_S)
        after = system.sample()
    finally:
        _close(fleet)
    result = Result("idle", system.spec.name, opened.total)
    extra.update(requested=sockets, connect_s=round(opened.seconds, 3),
                 connect_per_s=(round(opened.total / opened.seconds, 1)
                                if opened.seconds > 0 else None),
                 rejected=opened.rejected, errors=opened.errors)
    if until_refused:  # it stops at the first refusal: count it only if that was a 503
        extra["sockets_until_503"] = (opened.first_reject_opened
                                      if opened.rejected.get(503) else None)
    if after is not None and opened.total:
        result.processes = after.processes
        result.rss_per_socket_kb = round(after.rss_kb / opened.total, 2)
        extra["pss_per_socket_kb"] = round(after.pss_kb / opened.total, 2)
        extra["rss_kb"] = after.rss_kb
        if before is not None:
            extra["rss_before_kb"] = before.rss_kb
            extra["rss_marginal_per_socket_kb"] = round(
                (after.rss_kb - before.rss_kb) / opened.total, 2)
    else:
        extra["rss_marginal_per_socket_kb"] = None
    result.extra = extra
    return result


def run_broadcast(fleet: Fleet, system: RunningSystem, load: Load) -> Result:
    """C chat clients, S senders at R messages/s for D seconds; see the module docstring."""
    extra = _base_extra(system)
    closed = load.rate_per_s <= 0
    extra.update(senders=load.senders, rate_per_s=None if closed else load.rate_per_s,
                 window=load.window if closed else None, duration_s=load.duration_s,
                 offered_per_s=None if closed else load.senders * load.rate_per_s)
    try:
        opened = _connect(fleet, system, CHAT_PATH, load.clients, load, wait_status=True)
        extra.update(connect_errors=opened.errors, rejected=opened.rejected)
        result = Result("broadcast", system.spec.name, opened.total)
        if not opened.total:
            result.extra = extra
            return result
        sut_before, usage = system.sample(), read_usage(fleet)
        start_ns = time.monotonic_ns() + START_DELAY_NS
        per_agent = [min(n, s) for n, s in
                     zip(opened.opened, _spread(load.senders, opened.opened), strict=True)]
        sample_every = max(1, math.ceil(opened.total / max(load.latency_clients, 1)))
        sent = fleet.ask([
            {"op": "broadcast", "senders": list(range(s)), "rate": load.rate_per_s,
             "window": load.window, "duration_s": load.duration_s, "start_ns": start_ns,
             "sample_every": sample_every, "tag": f"a{i}."} if n else None
            for i, (n, s) in enumerate(zip(opened.opened, per_agent, strict=True))],
            load.duration_s + _REPLY_MARGIN_S)
        total_sent = sum(r["sent"] for r in sent)
        deadline_ns = time.monotonic_ns() + int(load.drain_timeout_s * _NS_PER_S)
        per_sender: dict[str, int] = {}
        for reply in sent:
            per_sender.update(reply.get("per_sender", {}))
        drained = fleet.ask([{"op": "drain", "expect": total_sent, "deadline_ns": deadline_ns,
                              "per_sender": per_sender}
                             if n else None for n in opened.opened],
                            load.drain_timeout_s + _REPLY_MARGIN_S)
        sut_after = record_cost(fleet, usage, system, sut_before, extra)
    finally:
        _close(fleet)
    result.processes = sut_after.processes if sut_after is not None else None
    received = sum(r["received"] for r in drained)
    expected = total_sent * sum(r["clients"] for r in drained)
    first_ns = min((r["first_send_ns"] for r in sent if r["sent"]), default=0)
    last_ns = max(r["last_ns"] for r in drained)
    window_s = (last_ns - first_ns) / _NS_PER_S if first_ns and last_ns > first_ns else 0.0
    latencies = _samples(drained)
    result.deliveries_per_s = round(received / window_s, 1) if window_s else None
    result.latency_ms = percentiles_ms(latencies)
    # Per socket and per sender (bench/client.py): a repeat on one socket cannot hide
    # a loss on another.
    result.lost = sum(r["lost"] for r in drained)
    cpu_s = extra.get("sut_cpu_s")
    # Per unit of work: deliveries over the CPU seconds of every process of the system.
    extra["deliveries_per_cpu_s"] = round(received / cpu_s, 1) if cpu_s else None
    extra.update(sent=total_sent, senders=sum(per_agent), expected=expected,
                 received=received, duplicates=sum(r["repeats"] for r in drained),
                 out_of_order=sum(r["out_of_order"] for r in drained),
                 sockets_with_loss=sum(r["sockets_with_loss"] for r in drained),
                 sockets_with_repeats=sum(r["sockets_with_repeats"] for r in drained),
                 sockets_out_of_order=sum(r["sockets_out_of_order"] for r in drained),
                 window_s=round(window_s, 3), latency_samples=len(latencies),
                 drain_timed_out=any(r["timed_out"] for r in drained),
                 still_open=sum(r["still_open"] for r in drained),
                 other_frames=sum(r["other_frames"] for r in drained),
                 errors=_merge(r["errors"] for r in drained))
    result.extra = extra
    return result


def run_echo(fleet: Fleet, system: RunningSystem, load: Load) -> Result:
    """C clients each doing sequential round trips through the echo class for D seconds."""
    extra = _base_extra(system)
    extra.update(duration_s=load.duration_s, payload_bytes=load.payload_bytes)
    try:
        opened = _connect(fleet, system, ECHO_PATH, load.clients, load, wait_status=False)
        extra.update(connect_errors=opened.errors, rejected=opened.rejected)
        result = Result("echo", system.spec.name, opened.total)
        if not opened.total:
            result.extra = extra
            return result
        sut_before, usage = system.sample(), read_usage(fleet)
        start_ns = time.monotonic_ns() + START_DELAY_NS
        echoed = fleet.ask([
            {"op": "echo", "duration_s": load.duration_s, "start_ns": start_ns,
             "drain_s": load.drain_timeout_s, "payload_bytes": load.payload_bytes}
            if n else None for n in opened.opened],
            load.duration_s + load.drain_timeout_s + _REPLY_MARGIN_S)
        sut_after = record_cost(fleet, usage, system, sut_before, extra)
    finally:
        _close(fleet)
    result.processes = sut_after.processes if sut_after is not None else None
    round_trips = sum(r["round_trips"] for r in echoed)
    sent = sum(r["sent"] for r in echoed)
    window_s = (max(r["last_ns"] for r in echoed) - start_ns) / _NS_PER_S
    latencies = _samples(echoed)
    result.round_trips_per_s = round(round_trips / window_s, 1) if window_s > 0 else None
    result.latency_ms = percentiles_ms(latencies)
    result.lost = max(0, sent - round_trips)
    extra.update(sent=sent, round_trips=round_trips,
                 mismatches=sum(r["mismatches"] for r in echoed),
                 window_s=round(window_s, 3),
                 errors=_merge(r["errors"] for r in echoed))
    result.extra = extra
    return result


def _spread(senders: int, opened: list[int]) -> list[int]:
    """Senders over the load generators that have clients, in proportion to them."""
    busy = [i for i, n in enumerate(opened) if n]
    counts = [0] * len(opened)
    for i, n in zip(busy, split(senders, len(busy)), strict=True):
        counts[i] = n
    return counts


def _samples(replies: list[Message]) -> list[int]:
    samples: array[int] = array("q")
    for reply in replies:
        samples.frombytes(reply["latencies"])
    return samples.tolist()


def _merge(counts: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in counts:
        for key, n in part.items():
            merged[key] = merged.get(key, 0) + n
    return merged


def run_handshake(fleet: Fleet, system: RunningSystem, count: int, in_flight: int,
                  load: Load) -> Result:
    """``count`` chat handshakes, ``in_flight`` at once (1: one after another, from one
    load generator); each timed from its TCP connect to its first message (the chat's
    Status: the socket is usable). The sockets stay open until the end."""
    extra = _base_extra(system)
    extra.update(handshakes=count, in_flight=in_flight)
    before, usage = system.sample(), read_usage(fleet)
    try:
        opened = _connect(fleet, system, CHAT_PATH, count, load, wait_status=True,
                          in_flight=in_flight)
        record_cost(fleet, usage, system, before, extra)
    finally:
        _close(fleet)
    result = Result("handshake", system.spec.name, in_flight)
    result.latency_ms = percentiles_ms(opened.handshakes_ns)
    result.lost = count - opened.total
    cpu_s = extra.get("sut_cpu_s")
    extra.update(opened=opened.total, rejected=opened.rejected, errors=opened.errors,
                 handshakes_per_s=(round(opened.total / opened.seconds, 1)
                                   if opened.seconds > 0 else None),
                 handshakes_per_cpu_s=round(opened.total / cpu_s, 1) if cpu_s else None)
    result.extra = extra
    return result


def run_storm(fleet: Fleet, system: RunningSystem, sockets: int, load: Load) -> Result:
    """``sockets`` chat sockets open; the gateway restarts (every socket closed, 1001);
    every client reconnects at once, retrying while the gateway is away, as pages do
    (without their back-off). Measured: seconds from the restart until every socket is
    open again and has its Status."""
    extra = _base_extra(system)
    try:
        first = _connect(fleet, system, CHAT_PATH, sockets, load, wait_status=True)
        before, usage = system.sample(), read_usage(fleet)
        restarted_ns = time.monotonic_ns()
        system.restart_gateway()
        deadline_ns = restarted_ns + int(load.connect_timeout_s * _NS_PER_S)
        closed = fleet.ask_all({"op": "await_closed", "deadline_ns": deadline_ns},
                               load.connect_timeout_s + _REPLY_MARGIN_S)
        _close(fleet)  # forget the closed sockets
        again = _connect(fleet, system, CHAT_PATH, first.total, load, wait_status=True,
                         in_flight=min(first.total, STORM_IN_FLIGHT), retry=True)
        record_cost(fleet, usage, system, before, extra)
    finally:
        _close(fleet)
    result = Result("storm", system.spec.name, first.total)
    result.lost = first.total - again.total
    result.latency_ms = percentiles_ms(again.handshakes_ns)
    all_closed_s = (max(r["closed_ns"] for r in closed) - restarted_ns) / _NS_PER_S
    extra.update(requested=sockets, reopened=again.total, retries=again.retries,
                 still_open_after_restart=sum(r["still_open"] for r in closed),
                 all_closed_s=round(all_closed_s, 3),
                 storm_s=round((again.end_ns - restarted_ns) / _NS_PER_S, 3),
                 errors=again.errors)
    result.extra = extra
    return result
