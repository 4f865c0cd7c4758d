"""The app server's /metrics: workers busy and idle, sockets, and the store's commits.

Each worker reports its counters to the supervisor once a second over the control
socket; the supervisor's collector sums them at scrape time, and prometheus-client
renders them (one registry per process).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import h11
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gateway.link.httpserver import Response, serve_http

if TYPE_CHECKING:
    from appserver.supervisor import Supervisor

__all__ = ["SupervisorCollector", "metrics_registry", "reachability", "serve_metrics"]


class SupervisorCollector:
    """The supervisor's view of its workers, summed at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        """The samples of one scrape."""
        supervisor = self.supervisor
        workers = [w for w in supervisor.workers.values() if w.alive]
        busy = sum(1 for w in workers if w.links)
        counters = ("commits", "commits_on_loop", "writes", "commit_seconds", "checkpoints",
                    "checkpoint_seconds", "sweeps")
        totals = dict.fromkeys(("sockets", *counters), 0.0)
        for worker in workers:
            for key in totals:
                totals[key] += worker.stats.get(key, 0)
        # counters include the departed
        for key in counters:
            totals[key] += supervisor.departed.get(key, 0)
        states = GaugeMetricFamily("wsgate_appserver_workers",
                                   "Worker processes, busy (serving a link) or idle.",
                                   labels=["state"])
        states.add_metric(["busy"], busy)
        states.add_metric(["idle"], len(workers) - busy)
        yield states
        yield GaugeMetricFamily("wsgate_appserver_workers_max",
                                "Most worker processes (--max-workers).",
                                value=supervisor.config.max_workers)
        yield GaugeMetricFamily("wsgate_appserver_sockets",
                                "Sockets whose server class runs on a worker.",
                                value=totals["sockets"])
        yield CounterMetricFamily("wsgate_appserver_worker_restarts",
                                  "Workers that exited unexpectedly.",
                                  value=supervisor.restarts)
        yield SummaryMetricFamily("wsgate_appserver_store_commit_seconds",
                                  "Time spent in store commits (group commits: one may hold "
                                  "many writes).", count_value=int(totals["commits"]),
                                  sum_value=totals["commit_seconds"])
        yield CounterMetricFamily("wsgate_appserver_store_commits_on_loop",
                                  "Commits made on a worker's event loop (the write lock "
                                  "was free); the others waited for it in the store's "
                                  "thread.", value=totals["commits_on_loop"])
        yield SummaryMetricFamily("wsgate_appserver_store_checkpoint_seconds",
                                  "WAL checkpoints, each in a worker's store thread.",
                                  count_value=int(totals["checkpoints"]),
                                  sum_value=totals["checkpoint_seconds"])
        yield CounterMetricFamily("wsgate_appserver_store_writes",
                                  "Writes committed to the store.", value=totals["writes"])
        yield CounterMetricFamily("wsgate_appserver_lease_sweeps",
                                  "Sweeps for the sockets of gateways whose lease lapsed "
                                  "(appserver/leases.py).", value=totals["sweeps"])
        up = reachability(supervisor)
        yield GaugeMetricFamily("wsgate_appserver_store_up",
                                "1 while every worker's last store call reached the store.",
                                value=up["store"])
        if "bus" in up:
            yield GaugeMetricFamily("wsgate_appserver_bus_up",
                                    "1 while every worker reaches the bus to other nodes.",
                                    value=up["bus"])


def reachability(supervisor: Supervisor) -> dict[str, int]:
    """Whether the workers reach the store (and the bus, when there are nodes): 1 when
    every worker's last report says so, else 0."""
    workers = [w for w in supervisor.workers.values() if w.alive]
    up = {"store": min((int(w.stats.get("store_up", 1)) for w in workers), default=1)}
    if supervisor.config.bus_url:
        up["bus"] = min((int(w.stats.get("bus_up", 0)) for w in workers), default=1)
    return up


def metrics_registry(supervisor: Supervisor) -> CollectorRegistry:
    """This process's metrics registry: the supervisor's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(supervisor))
    return registry


async def serve_metrics(supervisor: Supervisor, registry: CollectorRegistry,
                        sock: socket.socket, client: str) -> None:
    """Serve /metrics (and /healthz) on one connection."""

    def route(request: h11.Request) -> Response:
        path = request.target.split(b"?", 1)[0]
        if path == b"/metrics":
            return Response(200, generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4)
        if path == b"/healthz":
            ready = sum(1 for w in supervisor.workers.values() if w.alive)
            up = reachability(supervisor)
            # degraded: the workers serve their sockets, but a store or bus call fails
            status = "ok" if all(up.values()) else "degraded"
            return Response.json(200 if ready else 503, {
                "status": status if ready else "starting", "workers": ready,
                **{name: "up" if value else "down" for name, value in up.items()}})
        return Response.text(404, "not found: try /metrics")

    await serve_http(sock, client, route)
