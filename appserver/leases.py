"""The gateways' leases and the sweep, from a worker's side: presence that does not
go stale.

Every open socket is in the store's registry with its gateway, class and state
(:meth:`store.api.Store.register_socket`, written when the socket is accepted), and a
socket's OnPostServer is *claimed* in the store before it runs, so it runs once
whichever worker (or node) gets there first. Each worker renews, every quarter of
``--node-ttl``, the lease of every gateway it is linked to. A gateway that vanished
(killed, its host gone, stopped longer than the ttl) is renewed by nobody: once its
lease lapsed, the next sweep, by any worker, claims its sockets and runs their
OnPostServer (the chat: the users leave the list, and the room hears of it). A socket
its gateway later tries to resume is then closed instead (1001), since its session
ended. A worker that could not reach the store, or has just started, sweeps only after a
whole ttl of reaching it: leases that lapsed while Redis (or the app server) was down
are renewed first by their nodes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from appserver.lifecycle import finish_orphan
from store.api import StoreUnavailable

if TYPE_CHECKING:
    from appserver.runtime import WorkerRuntime

__all__ = ["FINISHED_KEPT_S", "LEASE_SHARE", "NODE_TTL_S", "keep_leases", "lease_s", "renew_now",
           "sweep"]

log = logging.getLogger(__name__)

#: A gateway whose lease was not renewed for this long counts as gone (--node-ttl).
NODE_TTL_S = 15.0
#: A renewal keeps a lease for this share of the ttl (see keep_leases).
LEASE_SHARE = 0.7
#: How long a finished socket stays in the registry (a late resume is refused by it).
FINISHED_KEPT_S = 3600.0


def lease_s(runtime: WorkerRuntime) -> float:
    """How long one renewal keeps a lease: short enough that a gateway's sockets are
    swept within ``--node-ttl`` of its end; long enough that two renewals in a
    row may fail (a quarter of the ttl apart) before it lapses."""
    return runtime.node_ttl_s * LEASE_SHARE


async def keep_leases(runtime: WorkerRuntime) -> None:
    """Renew the leases of this worker's gateways, and sweep lapsed ones, forever.

    A lease lasts LEASE_SHARE of the ttl and is renewed, and lapsed ones swept, every
    quarter of it. A gateway killed just after a renewal is swept at most
    ``(LEASE_SHARE + 0.25) * ttl`` later: within the ttl.
    """
    ttl = runtime.node_ttl_s
    ticks = 0
    # A worker that just started (the app server restarted) sweeps only after a whole
    # ttl too: nobody renewed its gateways' leases while it was away, and they need
    # the time to link again and be renewed before they look gone.
    unreachable_at = trio.current_time()
    while True:
        gateways = sorted({link.gateway_id for link in runtime.links.values() if link.up})
        try:
            now = trio.current_time()
            if gateways:
                await runtime.store.renew_gateways(gateways, lease_s(runtime))
            # After an outage of the store (Redis restarted) every lease may have lapsed
            # meanwhile: sweep only once every live node had a ttl to renew its own.
            if now - unreachable_at >= ttl:
                await sweep(runtime)
                runtime.sweeps += 1
            ticks += 1
            if ticks % 100 == 0:
                await runtime.store.forget_finished(FINISHED_KEPT_S)
        except StoreUnavailable as exc:
            unreachable_at = trio.current_time()
            log.warning("cannot renew the gateways' leases: %s", exc)
        await trio.sleep(ttl / 4)


async def renew_now(runtime: WorkerRuntime, gateway: str) -> None:
    """Renew one gateway's lease at once (a link from it was just adopted: before any of
    its sockets is registered, so none of them looks lapsed)."""
    try:
        await runtime.store.renew_gateways([gateway], lease_s(runtime))
    except StoreUnavailable as exc:
        log.warning("cannot renew gateway %s's lease: %s", gateway, exc)


async def sweep(runtime: WorkerRuntime) -> int:
    """Run the OnPostServer of the open sockets of gateways whose lease lapsed; return
    how many this worker ran (each is claimed first: another worker may be quicker)."""
    ran = 0
    for wsid, gateway, class_name, state in await runtime.store.lapsed_sockets():
        log.warning("wsid=%s: its gateway %s is gone (no lease for %.0f s): running its "
                    "OnPostServer", wsid, gateway, runtime.node_ttl_s)
        if await finish_orphan(runtime, gateway, wsid, class_name, state):
            ran += 1
    return ran
