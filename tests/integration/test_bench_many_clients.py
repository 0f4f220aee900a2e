"""bench/many_clients.py (issue 11) in its smoke mode, so the script cannot rot: 50
sysbench clients through a 20-connection transaction pool in front of a 151-connection
MariaDB, then 200 direct logins. No ratio is asserted (a 2-second run on a shared machine
says nothing about throughput); what must hold at any size is: no error, the upstream cap,
and the server refusing what it cannot take. The 2,000-client figures are in
docs/benchmarks.md, "More clients than the server allows"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "many_clients.py"


@pytest.mark.skipif(shutil.which("sysbench") is None, reason="sysbench not installed")
def test_smoke_run_has_no_errors_and_stays_under_the_upstream_cap(tmp_path: Path) -> None:
    out = tmp_path / "many.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--control", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "MariaDB not available" in proc.stderr and not os.environ.get("CI"):
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT: ok" in proc.stdout and "command: " in proc.stdout
    report = json.loads(out.read_text())
    assert report["errors"] == 0
    assert all(r["ok"] and r["errors"] == 0 for r in report["runs"])
    labels = {"proxy × 16", "proxy × 50", "direct × 16", "direct × 50"}
    assert {r["label"] for r in report["runs"]} == labels
    # --control: each target's ratio is to itself at 16 clients
    assert all(len(row["ratio_to_base"]) == 1 for row in report["summary"])
    assert 0 < report["upstream_peak"] <= report["upstream_cap"] == 20
    assert report["proxy_pool_peak_open"] <= 20
    assert report["proxy_stats"]["errors"] == {}
    # 200 logins straight to a 151-connection server (--control raised it for its own runs
    # only): some must be refused with ERR 1040
    assert report["server_max_connections_at_end"] == 151
    direct = report["direct_logins"]
    assert direct["connected"] + direct["refused_1040"] == 200 and direct["refused_1040"] > 0
    assert direct["other_errors"] == {}
