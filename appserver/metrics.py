"""The app server's /metrics: workers busy and idle, sockets, and the store's commits.

Each worker reports its counters to the supervisor once a second over the control
socket; the supervisor serves them, summed, in the Prometheus text format.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import h11

from gateway.link.httpserver import Response, serve_http

if TYPE_CHECKING:
    from appserver.supervisor import Supervisor

__all__ = ["render_metrics", "serve_metrics"]


def render_metrics(supervisor: Supervisor) -> str:
    """Prometheus text exposition of the supervisor's view of its workers."""
    workers = [w for w in supervisor.workers.values() if w.alive]
    busy = sum(1 for w in workers if w.links)
    totals = {"sockets": 0.0, "commits": 0.0, "writes": 0.0, "commit_seconds": 0.0}
    for worker in workers:
        for key in totals:
            totals[key] += worker.stats.get(key, 0)
    for key in ("commits", "writes", "commit_seconds"):  # counters include the departed
        totals[key] += supervisor.departed.get(key, 0)
    lines = [
        "# HELP wsgate_appserver_workers Worker processes, busy (serving a link) or idle.",
        "# TYPE wsgate_appserver_workers gauge",
        f'wsgate_appserver_workers{{state="busy"}} {busy}',
        f'wsgate_appserver_workers{{state="idle"}} {len(workers) - busy}',
        "# HELP wsgate_appserver_workers_max Most worker processes (--max-workers).",
        "# TYPE wsgate_appserver_workers_max gauge",
        f"wsgate_appserver_workers_max {supervisor.config.max_workers}",
        "# HELP wsgate_appserver_sockets Sockets whose server class runs on a worker.",
        "# TYPE wsgate_appserver_sockets gauge",
        f"wsgate_appserver_sockets {totals['sockets']:.0f}",
        "# HELP wsgate_appserver_worker_restarts_total Workers that exited unexpectedly.",
        "# TYPE wsgate_appserver_worker_restarts_total counter",
        f"wsgate_appserver_worker_restarts_total {supervisor.restarts}",
        "# HELP wsgate_appserver_store_commit_seconds Time spent in store commits "
        "(group commits: one may hold many writes).",
        "# TYPE wsgate_appserver_store_commit_seconds summary",
        f"wsgate_appserver_store_commit_seconds_sum {totals['commit_seconds']:.6f}",
        f"wsgate_appserver_store_commit_seconds_count {totals['commits']:.0f}",
        "# HELP wsgate_appserver_store_writes_total Writes committed to the store.",
        "# TYPE wsgate_appserver_store_writes_total counter",
        f"wsgate_appserver_store_writes_total {totals['writes']:.0f}",
    ]
    return "\n".join(lines) + "\n"


async def serve_metrics(supervisor: Supervisor, sock: socket.socket, client: str) -> None:
    """Serve /metrics (and /healthz) on one connection."""

    def route(request: h11.Request) -> Response:
        path = request.target.split(b"?", 1)[0]
        if path == b"/metrics":
            return Response(200, render_metrics(supervisor).encode(),
                            "text/plain; version=0.0.4; charset=utf-8")
        if path == b"/healthz":
            ready = sum(1 for w in supervisor.workers.values() if w.alive)
            return Response.json(200 if ready else 503, {"workers": ready})
        return Response.text(404, "not found: try /metrics")

    await serve_http(sock, client, route)
