"""bench/soak.py (issue 10) runs in CI with a short duration: ORM, pinning and
prepared-statement clients through the proxy (a real subprocess) while the database is killed
and started again and client sockets are shut down at random. It must exit 0 with no
session-state violation and the server never seeing more of the proxy's upstream connections
than the cap. A 10-minute run's figures are in docs/operations.md, "Soak"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def test_a_short_soak_with_one_database_restart_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cap = 4
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--seconds",
            "7",
            "--restart-every",
            "3",
            "--clients",
            "9",
            "--cap",
            str(cap),
            "--seed",
            "7",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert "RESULT: ok" in proc.stdout
    assert report["violations"] == 0, report["violation_samples"]
    # every sample: the pool keeps a closed connection's slot until the server let go
    assert 0 < report["peak_upstream_connections"] <= cap, report["over_cap_snapshots"]
    assert report["processlist_samples"] > 0
    assert report["statements"] > 0
    assert set(report["iterations"]) == {"orm", "pin", "ps"}, report["iterations"]
    assert report["restarts"] >= 1
    assert report["proxy_alive"] and report["proxy_healthy_after"]
    assert report["proxy_log"]["tracebacks"] == 0
    rss = report["proxy_rss_kb"]
    assert rss["start"] and rss["end"]
    # the outage is seen by the clients (1105 while the database is down, or sessions ended)
    assert report["errors_by_kind"]
