"""bench/suite.py --smoke: every benchmark step runs end to end (a few seconds each), so
the suite cannot rot. No ratio is asserted: performance is read from the suite's own
output (docs/performance.md), never from a timed test."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "bench" / "suite.py"


@pytest.mark.skipif(shutil.which("sysbench") is None, reason="sysbench not installed")
def test_every_benchmark_step_runs_in_smoke_mode(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert set(steps) == {
        "point-text",
        "point-ps",
        "read-only",
        "many-clients",
        "orm",
        "idle",
        "classifier",
    }
    for name, step in steps.items():
        assert step["returncode"] == 0, name
        assert step["results"], name
    point = steps["point-text"]["results"]["summary"]
    assert {r["target"] for r in point} == {"direct", "naive", "transaction", "statement"}
    assert all(r["errors"] == 0 and r["failed_runs"] == 0 for r in point)
