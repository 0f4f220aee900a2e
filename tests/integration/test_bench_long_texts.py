"""bench/long_texts.py in its smoke mode, so the script cannot rot: a light client alone,
then beside a client sending long statements the gate cannot clear, through the proxy.
No latency is asserted (a 1-second phase on a shared machine says nothing); what must hold
is that both clients' statements all succeed. Figures: docs/performance.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "long_texts.py"


def test_smoke_run_serves_both_clients_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "long.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "MariaDB not available" in proc.stderr and not os.environ.get("CI"):
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT: ok" in proc.stdout
    report = json.loads(out.read_text())
    assert report["errors"] == []
    alone, beside = report["runs"]
    assert not alone["heavy"] and beside["heavy"]
    assert alone["light_statements"] > 0 and beside["light_statements"] > 0
    assert beside["heavy_statements"] > 0
    # over frontend.classification.OFFLOAD_MIN, so the thread path is the one exercised
    assert report["settings"]["text_bytes"] > 64 * 1024
