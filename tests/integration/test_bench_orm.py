"""bench/orm.py (issue 11) in its smoke mode, so the script cannot rot: SQLAlchemy and
Django clients (2 processes × 20 operations each) through the proxy in transaction mode and
directly, one round. No throughput ratio is asserted; every operation must succeed, the
proxy must count no error, and its counters must be there to read. The full-size figures
are in docs/benchmarks.md, "ORM workload"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "orm.py"


def test_smoke_run_has_no_errors_and_reads_the_proxy_counters(tmp_path: Path) -> None:
    out = tmp_path / "orm.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
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
    runs = report["runs"]
    assert {(r["kind"], r["target"]) for r in runs} == {
        (k, t) for k in ("sqlalchemy", "django") for t in ("proxy", "direct")
    }
    assert all(r["ops"] == 40 and r["client_errors"] == 0 for r in runs)
    for r in runs:
        if r["target"] == "proxy":
            p = r["proxy"]
            # 2 processes reconnecting every 10 of their 20 operations: 4 sessions
            assert p["sessions"] == 4 and p["proxy_errors"] == 0
            assert p["same_settings"] + p["settings_applied"] + p["reset_applied"] > 0
            assert p["peak_open"] <= report["settings"]["upstream_max_connections"]
    assert report["proxy_log_problems"] == []
