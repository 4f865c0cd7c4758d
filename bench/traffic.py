"""What a load generator's open sockets do during a scenario: broadcast, drain, echo.

Each is a :class:`Task`: a command carried out over many turns of the load generator's
loop (:mod:`bench.loadgen`). The loop calls :meth:`Task.tick` every turn (to send what
fell due), :meth:`Task.received` after a socket's bytes were counted, and
:meth:`Task.done` every few milliseconds; when it is done, or its deadline passes, the
loop sends the coordinator :meth:`Task.report`.

Chat messages carry their own send time: the text is ``b:<sender>:<seq>:<ns>``, with
``time.monotonic_ns()`` as the sender read it, so any socket of any process can time
its delivery (CLOCK_MONOTONIC is one clock for the whole machine).
"""

from __future__ import annotations

import base64
import time
from array import array
from collections.abc import Callable
from typing import Any

from bench.client import ClientSocket, Phase, encode_frame

__all__ = ["Broadcast", "Drain", "Echo", "Task"]

_NS_PER_S = 1_000_000_000
#: A task with no deadline of its own ends when it is done.
NO_DEADLINE_NS = 2**62

#: Latency samples one report carries at most; more are thinned evenly (every k-th,
#: in arrival order), which keeps the percentiles while bounding pipe and sort costs.
MAX_REPORTED_SAMPLES = 500_000

Message = dict[str, Any]
Send = Callable[[ClientSocket, bytes], None]


def _reported(samples: array[int]) -> bytes:
    step = -(-len(samples) // MAX_REPORTED_SAMPLES)  # ceiling division
    return (samples[::step] if step > 1 else samples).tobytes()


class Task:
    """A command carried out over many loop turns; the base does nothing."""

    deadline_ns = NO_DEADLINE_NS

    def wake_ns(self) -> int | None:
        """When :meth:`tick` must next run (None: no sooner than the loop's tick)."""
        return None

    def tick(self, now_ns: int) -> None:
        """Send whatever fell due."""

    def received(self, client: ClientSocket, now_ns: int) -> None:
        """``client`` has just counted what it received."""

    def done(self) -> bool:
        """True once there is nothing more to wait for."""
        raise NotImplementedError

    def report(self, timed_out: bool) -> Message:
        """The reply to the coordinator."""
        raise NotImplementedError


class _Sender:
    """A client that sends chat messages: its next sequence number and when it is due."""

    __slots__ = ("client", "due_ns", "seq")

    def __init__(self, client: ClientSocket, due_ns: int) -> None:
        self.client = client
        self.due_ns = due_ns
        self.seq = 0


class Broadcast(Task):
    """Senders post chat messages, open loop (a rate) or closed loop (a window).

    Every socket counts the chat messages it receives; one in ``sample_every``, and
    every sender, also times them. Done when the senders' time is up; the counting goes
    on in the :class:`Drain` that follows.
    """

    def __init__(self, clients: list[ClientSocket], latencies: array[int], send: Send,
                 message: Message) -> None:
        del latencies[:]
        for number, client in enumerate(clients):
            client.chat = client.own_received = client.other = 0
            client.timed = number % message["sample_every"] == 0
            client.own_id = b""
            client.reset_checks()
        rate, start, tag = message["rate"], message["start_ns"], message["tag"]
        self.send = send
        self.window: int = message["window"]
        #: Open loop: time between two messages of a sender; 0: closed loop.
        self.period_ns = int(_NS_PER_S / rate) if rate > 0 else 0
        chosen = [clients[i] for i in message["senders"] if i < len(clients)]
        self.senders: list[_Sender] = []
        for k, client in enumerate(chosen):
            # A sender times its own messages: the closed loop needs to see them back.
            client.timed = True
            client.own_id = f"{tag}{client.index}".encode()
            # Open loop: senders are staggered over one period, not all due at once.
            self.senders.append(_Sender(client, start + self.period_ns * k // len(chosen)))
        self._all_senders = list(self.senders)  # self.senders empties when time is up
        self.sent = 0
        self.first_send_ns = self.last_send_ns = 0
        self.until_ns = start + int(message["duration_s"] * _NS_PER_S)

    def wake_ns(self) -> int | None:
        """The next open-loop send."""
        if not self.period_ns or not self.senders:
            return None
        return min(sender.due_ns for sender in self.senders)

    def tick(self, now_ns: int) -> None:
        """Send each message that fell due, or that the window allows."""
        if now_ns >= self.until_ns:
            self.senders = []
            return
        for sender in self.senders:
            client = sender.client
            if client.phase is not Phase.OPEN or now_ns < sender.due_ns:
                continue
            if self.period_ns:
                # Open loop: catch up on every send that fell due (the loop may be late).
                while sender.due_ns <= now_ns:
                    self._send_chat(sender)
                    sender.due_ns += self.period_ns
            else:
                while sender.seq - client.own_received < self.window:
                    self._send_chat(sender)

    def _send_chat(self, sender: _Sender) -> None:
        client = sender.client
        send_ns = time.monotonic_ns()
        text = b"b:%s:%d:%d" % (client.own_id, sender.seq, send_ns)
        body = b'{"Message":"%s","Author":"s%d"}' % (base64.b64encode(text), client.index)
        self.send(client, encode_frame(body))
        sender.seq += 1
        self.sent += 1
        self.first_send_ns = self.first_send_ns or send_ns
        self.last_send_ns = send_ns

    def done(self) -> bool:
        """The senders' time is up."""
        return not self.senders

    def report(self, timed_out: bool) -> Message:
        """How many messages were sent (in all and by each sender), and when the first
        and last left."""
        per_sender = {s.client.own_id.decode(): s.seq for s in self._all_senders}
        return {"op": "sent", "sent": self.sent, "first_send_ns": self.first_send_ns,
                "last_send_ns": self.last_send_ns, "per_sender": per_sender}


class Drain(Task):
    """Wait until every socket has received ``expect`` chat messages, or the deadline;
    then report, per socket, what it lacked, got twice or got out of order."""

    def __init__(self, clients: list[ClientSocket], latencies: array[int],
                 message: Message) -> None:
        self.clients = clients
        self.latencies = latencies
        self.expect: int = message["expect"]
        self.deadline_ns = message["deadline_ns"]
        #: sender -> how many messages it sent (every sender of every load generator)
        self.sent = {k.encode(): int(v) for k, v in message.get("per_sender", {}).items()}

    def done(self) -> bool:
        """Every socket has everything."""
        expect = self.expect
        return all(c.chat >= expect for c in self.clients)

    def report(self, timed_out: bool) -> Message:
        """What was received, when the last arrived, what each socket lacked or got
        twice or late (counted per socket, then summed: never netted), and the latency
        samples."""
        clients = self.clients
        lost = [c.lost(self.sent) for c in clients]
        return {"op": "drained", "received": sum(c.chat for c in clients),
                "clients": len(clients),
                "lost": sum(lost), "sockets_with_loss": sum(1 for n in lost if n),
                "repeats": sum(c.repeats for c in clients),
                "sockets_with_repeats": sum(1 for c in clients if c.repeats),
                "out_of_order": sum(c.out_of_order for c in clients),
                "sockets_out_of_order": sum(1 for c in clients if c.out_of_order),
                "still_open": sum(c.phase is Phase.OPEN for c in clients),
                "other_frames": sum(c.other for c in clients),
                "last_ns": max((c.last_ns for c in clients), default=0),
                "latencies": _reported(self.latencies), "timed_out": timed_out}


class Echo(Task):
    """Every socket does sequential round trips until the time is up, then waits for
    its last answer (until the deadline)."""

    def __init__(self, clients: list[ClientSocket], latencies: array[int], send: Send,
                 message: Message) -> None:
        del latencies[:]
        self.clients = clients
        self.latencies = latencies
        self.send = send
        for client in clients:
            client.echoes = client.mismatches = 0
            client.timed = False
            client.echo_expect = None
        self.pad = "." * max(0, message["payload_bytes"] - 24)
        self.sent = 0
        self.start_ns: int = message["start_ns"]
        self.started = False
        self.until_ns = self.start_ns + int(message["duration_s"] * _NS_PER_S)
        self.deadline_ns = self.until_ns + int(message["drain_s"] * _NS_PER_S)

    def wake_ns(self) -> int | None:
        """The start, until it has passed."""
        return None if self.started else self.start_ns

    def tick(self, now_ns: int) -> None:
        """At the start, every socket sends its first message."""
        if not self.started and now_ns >= self.start_ns:
            self.started = True
            for client in self.clients:
                self._send_echo(client)

    def received(self, client: ClientSocket, now_ns: int) -> None:
        """An answer came: send the next message while the time lasts."""
        if self.started and client.echo_expect is None and now_ns < self.until_ns:
            self._send_echo(client)

    def _send_echo(self, client: ClientSocket) -> None:
        if client.phase is not Phase.OPEN:
            return
        payload = f"e:{client.index}:{self.sent}:{self.pad}".encode()
        self.sent += 1
        client.echo_expect = payload
        client.echo_sent_ns = time.monotonic_ns()
        self.send(client, encode_frame(payload))

    def done(self) -> bool:
        """The time is up and no open socket waits for an answer."""
        if time.monotonic_ns() < self.until_ns:
            return False
        return all(c.echo_expect is None or c.phase is not Phase.OPEN for c in self.clients)

    def report(self, timed_out: bool) -> Message:
        """Round trips, what was sent, and the latency samples."""
        clients = self.clients
        for client in clients:
            client.echo_expect = None
        return {"op": "echoed", "sent": self.sent,
                "round_trips": sum(c.echoes for c in clients),
                "mismatches": sum(c.mismatches for c in clients),
                "last_ns": max((c.last_ns for c in clients), default=0),
                "latencies": _reported(self.latencies), "timed_out": timed_out}
