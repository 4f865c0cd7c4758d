"""What the gateway does when a worker, or the whole app server, goes away.

The gateway holds the browsers' sockets, so the code behind it can crash and restart
without the browsers noticing:

* A **shared** socket whose worker is gone stays open (``DETACHED``). What the browser
  sends meanwhile is kept with the messages its worker never acknowledged. When a pool
  link is up, another worker resumes the socket (``Resume``: the state its first
  worker reported, then every unacknowledged message again, in order); its
  ``Server()`` runs again there, not ``OnPreServer``.
* A **private** socket ends with its worker: it is closed with 1011 when the rest of
  the app server is still there (a worker crashed), 1012 when no link is (the app
  server is restarting).
* Either way, a socket whose worker is gone without having run its ``OnPostServer``
  (closed while detached, private, or closed and its OnPostServer not done yet: the
  worker says ``Done`` when it has run it) is an *orphan*: the next worker that can is
  sent ``Resume(ended=True)`` and runs that OnPostServer for it (the chat: the user
  leaves the list). A worker lost while running an OnPostServer leaves it unfinished:
  it was claimed in the store before it began, so no other worker runs it again (at
  most once; the chat's is short, and idempotent).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from gateway.browser import BrowserSocket, Phase
from gateway.link.events import Data, Resume

if TYPE_CHECKING:
    from gateway.gateway import Gateway
    from gateway.pool import GatewayLink

__all__ = ["PRIVATE_LOSS_GRACE_S", "REATTACH_DELAY_S", "Recovery"]

log = logging.getLogger(__name__)

#: After a link comes up, how long to wait for the others before spreading the detached
#: sockets over the pool (links come back together after an app-server restart).
REATTACH_DELAY_S = 0.2
#: How long a private socket whose link dropped waits to learn whether the whole app
#: server went (1012) or one worker crashed (1011).
PRIVATE_LOSS_GRACE_S = 0.5


class Recovery:
    """The gateway's detached sockets and orphaned OnPostServer duties."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        #: Sockets whose worker is gone, by id: to resume, or (closed) to finish.
        self.orphans: dict[str, BrowserSocket] = {}
        self._private_lost: list[BrowserSocket] = []
        self._wakeup = trio.Event()

    @property
    def detached(self) -> int:
        """How many open sockets wait for a worker."""
        return sum(1 for bs in self.orphans.values() if bs.phase is Phase.DETACHED)

    def worker_lost(self, link: GatewayLink) -> None:
        """``link``'s worker is gone: detach its shared sockets, end its private one."""
        for wsid, owed in link.owed.items():  # closed, its OnPostServer not run yet
            self.orphans[wsid] = owed
        link.owed.clear()
        for wsid in list(link.sockets):
            bs = self.gw.table.get(wsid)
            if bs is None:
                continue
            if bs.phase is Phase.CONNECTING:
                bs.leave_home()
                bs.answered(None)  # no answer will come: the handshake fails (502)
            elif bs.phase is Phase.OPEN and bs.shared:
                bs.detach()
                self.orphans[wsid] = bs
                self.gw.stats["sockets_detached"] += 1
            else:  # private, or closing: its OnPostServer is nobody's now
                bs.leave_home()
                if bs.ws is not None:
                    self.orphans[wsid] = bs
                if bs.phase is Phase.OPEN:
                    self._private_lost.append(bs)
        link.sockets.clear()
        if self.orphans or self._private_lost:
            log.warning("link %d lost: %d sockets wait for another worker", link.id,
                        len(self.orphans))
        self.wake()

    def wake(self) -> None:
        """Something changed (a link came up, sockets were orphaned): look again."""
        self._wakeup.set()

    async def run(self) -> None:
        """Resume detached sockets and hand out orphaned duties, whenever a link is up."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            if self._private_lost:
                await trio.sleep(PRIVATE_LOSS_GRACE_S)
                self._close_private()
            if not self.orphans:
                continue
            await trio.sleep(REATTACH_DELAY_S)
            self._resume_all()

    def _close_private(self) -> None:
        restarting = not self.gw.links.pool_links
        code, reason = ((1012, "the app server is restarting") if restarting
                        else (1011, "app server worker lost"))
        for bs in self._private_lost:
            bs.close(code, reason)
        self._private_lost.clear()

    def _resume_all(self) -> None:
        for wsid, bs in list(self.orphans.items()):
            link = self.gw.links.pick()
            if link is None:
                return  # no pool link: the next link_up wakes us
            del self.orphans[wsid]
            if bs.phase is Phase.DETACHED:
                self._resume(bs, link)
            else:
                link.send(Resume(bs.wsid, bs.class_name, bs.state, bs.binary, ended=True,
                                 close_code=bs.close_code))
                link.owed[wsid] = bs  # until its worker says Done
                self.gw.stats["post_server_handed_over"] += 1

    def _resume(self, bs: BrowserSocket, link: GatewayLink) -> None:
        unacked = bs.attach(link)
        link.send(Resume(bs.wsid, bs.class_name, bs.state, bs.binary))
        for seq, binary, payload in unacked:
            link.send(Data(bs.wsid, binary, payload, seq))
        self.gw.stats["sockets_resumed"] += 1
        self.gw.stats["messages_redelivered"] += len(unacked)
        log.info("wsid=%s resumed on link %d (worker pid %d), %d messages again", bs.wsid,
                 link.id, link.worker_pid, len(unacked))
