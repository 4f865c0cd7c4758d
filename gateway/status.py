"""The Web Gateway's System Status (JSON for tools, HTML for people) and its metrics
(through prometheus-client: one registry per process, read at scrape time)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from gateway.gateway import Gateway

__all__ = [
    "GatewayCollector",
    "metrics_registry",
    "render_status_html",
    "status_snapshot",
]


def status_snapshot(gw: Gateway) -> dict[str, Any]:
    """Links, the worker behind each, its mode and the sockets on it; socket counts."""
    now = trio.current_time()
    links = [
        {
            "link": link.id,
            "worker_pid": link.worker_pid,
            "appserver": link.appserver_id,
            "mode": link.mode,
            "sockets": sorted(link.sockets, key=_id_order),
            "frames_in": link.frames_in,
            "frames_out": link.frames_out,
            "queued_bytes": link.out.pending,
            "up_s": round(now - link.since, 1),
        }
        for link in sorted(gw.links.all_links(), key=lambda link: link.id)
    ]
    sockets = list(gw.table)
    modes = {bs.wsid: bs.mode if bs.ws is not None else "handshaking" for bs in sockets}
    return {
        "gateway": gw.id,
        "appserver": "{}:{}".format(*gw.config.appserver),
        "pool": gw.config.pool,
        "links": links,
        "sockets": {
            "total": len(sockets),
            "shared": sum(1 for bs in sockets if bs.shared and bs.ws is not None),
            "private": sum(1 for bs in sockets if not bs.shared and bs.ws is not None),
            "handshaking": sum(1 for bs in sockets if bs.ws is None),
            "parked": len(gw.parking),
        },
        "socket_modes": dict(sorted(modes.items(), key=lambda item: _id_order(item[0]))),
    }


def _id_order(wsid: str) -> tuple[str, int]:
    prefix, _, number = wsid.rpartition("-")
    return (prefix, int(number) if number.isdigit() else 0)


def render_status_html(snapshot: dict[str, Any]) -> str:
    """The System Status as a small HTML page."""
    rows = "".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            link["link"], link["worker_pid"], html.escape(link["mode"]),
            len(link["sockets"]), html.escape(", ".join(link["sockets"][:50])),
        )
        for link in snapshot["links"]
    )
    counts = snapshot["sockets"]
    return (
        "<!doctype html><meta charset=utf-8><title>wsgate status</title>"
        "<style>body{font:14px sans-serif;margin:2em}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd;text-align:left}</style>"
        f"<h1>Gateway {html.escape(snapshot['gateway'])}</h1>"
        f"<p>App server {html.escape(snapshot['appserver'])}; "
        f"{counts['total']} sockets ({counts['shared']} shared, {counts['private']} private)</p>"
        "<table><tr><th>Link</th><th>Worker PID</th><th>Mode</th><th>Sockets</th>"
        f"<th>Socket ids</th></tr>{rows}</table>"
    )


class GatewayCollector:
    """The gateway's metrics, read from its counters and its table at scrape time (the
    send path only bumps plain counters)."""

    #: Counter names (``wsgate_gateway_<name>_total``) and their help.
    COUNTERS: ClassVar[dict[str, str]] = {
        "frames_in": "Messages received from browsers.",
        "frames_out": "Messages sent to browsers.",
        "bytes_in": "Bytes received from browsers.",
        "bytes_out": "Payload bytes sent to browsers.",
        "sockets_opened": "Browser sockets opened.",
        "sockets_closed": "Browser sockets closed.",
        "sockets_dropped": "Browser sockets dropped as too slow.",
        "sockets_refused_busy": "Handshakes answered 503: no worker free in time.",
        "sockets_timed_out": "Sockets closed by the session timeout.",
        "messages_too_big": "Sockets closed with 1009 for an oversized message.",
        "writes_dropped": "Writes for sockets that were gone or not the writer's.",
        "sockets_detached": "Shared sockets whose worker was lost (kept open).",
        "sockets_resumed": "Detached sockets taken over by another worker.",
        "messages_redelivered": "Browser messages sent again to the worker that resumed "
                                "their socket (they were not acknowledged).",
        "post_server_handed_over": "OnPostServer duties of lost workers run by another.",
        "sockets_over_hold": "Sockets closed with 1013: too much sent and not acknowledged.",
        "sockets_ping_timeout": "Sockets closed with 1001: no answer to ping.",
        "sequence_gaps_given_up": "Sequenced group messages given up after waiting.",
        "protocol_errors": "Sockets closed with 1002 or 1007: a browser broke RFC 6455.",
        "sockets_refused_origin": "Upgrades refused with 403: a page of another origin.",
        "sockets_refused_full": "Upgrades refused with 503: --max-sockets reached.",
        "connections_rate_limited": "Connections answered 429: --max-connect-rate "
                                    "reached for their address.",
    }

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self) -> Iterator[Metric]:
        """The samples of one scrape."""
        snapshot = status_snapshot(self.gw)
        counts = snapshot["sockets"]
        sockets = GaugeMetricFamily("wsgate_gateway_sockets", "Open browser sockets by mode.",
                                    labels=["mode"])
        for mode in ("shared", "private", "handshaking"):
            sockets.add_metric([mode], counts[mode])
        yield sockets
        yield GaugeMetricFamily("wsgate_gateway_links", "Links to app-server workers that are up.",
                                value=len(snapshot["links"]))
        queued = GaugeMetricFamily("wsgate_gateway_link_queued_bytes",
                                   "Bytes queued towards each worker.",
                                   labels=["link", "worker_pid"])
        for link in snapshot["links"]:
            queued.add_metric([str(link["link"]), str(link["worker_pid"])],
                              link["queued_bytes"])
        yield queued
        bus = self.gw.bus
        yield GaugeMetricFamily("wsgate_gateway_bus_up", "1 while the bus to other nodes "
                                "(Redis) is reachable; 0 while not, or with no bus.",
                                value=1 if bus is not None and bus.up else 0)
        yield CounterMetricFamily("wsgate_gateway_bus_frames", "Frames received from other "
                                  "nodes over the bus.", value=bus.frames if bus else 0)
        parking = self.gw.parking
        yield GaugeMetricFamily("wsgate_gateway_sockets_parked", "Open sockets without a "
                                "reader task until the browser sends again.",
                                value=len(parking))
        yield CounterMetricFamily("wsgate_gateway_socket_parks", "Times a socket was parked.",
                                  value=parking.parks)
        yield CounterMetricFamily("wsgate_gateway_socket_wakes", "Times a parked socket got "
                                  "its reader back.", value=parking.wakes)
        for key, help_text in self.COUNTERS.items():
            yield CounterMetricFamily(f"wsgate_gateway_{key}", help_text,
                                      value=self.gw.stats[key])


def metrics_registry(gw: Gateway) -> CollectorRegistry:
    """This process's metrics registry: the gateway's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gw))
    return registry
