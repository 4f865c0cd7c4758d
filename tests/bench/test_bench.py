"""``wsgate bench``: a tiny run of every system and scenario, through the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WSGATE = shutil.which("wsgate", path=str(Path(sys.executable).parent)) or "wsgate"
SYSTEMS = {"wsgate-shared", "wsgate-private", "wsgate-nodes", "baseline-trio-websocket",
           "baseline-websockets", "baseline-picows", "baseline-socketify"}
SCENARIOS = {"idle", "broadcast", "echo", "handshake"}
#: Private sockets hold a worker each: no handshake rate; only wsgate-shared has a
#: gateway the benchmark can restart: the reconnect storm.
EXPECTED = ({(system, scenario) for system in SYSTEMS for scenario in SCENARIOS}
            - {("wsgate-private", "handshake")} | {("wsgate-shared", "storm")})
CORE_KEYS = {"scenario", "system", "clients", "deliveries_per_s", "round_trips_per_s",
             "latency_ms", "lost", "rss_per_socket_kb", "processes"}
RUN_TIMEOUT_S = 360


@pytest.mark.slow
def test_quick_bench_measures_every_system_without_loss(tmp_path: Path) -> None:
    """--quick writes the documented JSON for every system and scenario, with deliveries
    and round trips measured and nothing lost."""
    out = tmp_path / "bench.json"
    done = subprocess.run([WSGATE, "bench", "--quick", "--json", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    doc = json.loads(out.read_text())

    assert {"cpu_count", "cpu_model", "memory_total_kb", "python", "kernel", "date"} <= set(
        doc["machine"])
    results = doc["results"]
    assert {(r["system"], r["scenario"]) for r in results} == EXPECTED
    for r in results:
        where = f"{r['scenario']} {r['system']}: {r}"
        assert set(r) >= CORE_KEYS, where
        assert set(r["latency_ms"]) == {"p50", "p95", "p99"}, where
        assert "error" not in r, where
        assert r["clients"] > 0, where
        if r["scenario"] == "idle":
            assert r["rss_per_socket_kb"] > 0, where
            assert r["processes"] >= 1, where
        else:
            assert r["lost"] == 0, where
        if r["scenario"] == "broadcast":
            assert r["deliveries_per_s"] > 0, where
            # checked on every socket, per sender: nothing twice, nothing late
            assert r["duplicates"] == r["out_of_order"] == 0, where
            assert r["sockets_with_loss"] == 0, where
            assert r["received"] == r["expected"] > 0, where
        if r["scenario"] == "echo":
            assert r["round_trips_per_s"] > 0, where
        if r["scenario"] == "handshake":  # every one opened and timed
            assert r["opened"] == r["handshakes"] > 0, where
            assert r["handshakes_per_s"] > 0, where
            assert r["latency_ms"]["p50"] > 0, where
        if r["scenario"] == "storm":  # every socket back after the gateway restart
            assert r["reopened"] == r["clients"] > 0, where
            assert r["storm_s"] > 0, where
            assert r["all_closed_s"] > 0, where
    private_idle = next(r for r in results
                        if r["system"] == "wsgate-private" and r["scenario"] == "idle")
    # Private mode holds a worker per socket: refusals start once the pool is full.
    assert 1 <= private_idle["sockets_until_503"] <= private_idle["max_workers"]
    assert any(ratio["ratio"] for ratio in doc["ratios"])
    # Two nodes: Redis, nginx and both nodes' processes are all counted, and the
    # broadcast is compared with one node's at the same workers.
    idle = {r["system"]: r for r in results if r["scenario"] == "idle"}
    assert idle["wsgate-nodes"]["processes"] > 2 * idle["wsgate-shared"]["processes"]
    assert any(ratio["baseline"] == "wsgate-shared" and ratio["ratio"]
               for ratio in doc["ratios"] if ratio["system"].startswith("wsgate-nodes"))
