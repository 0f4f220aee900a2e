"""`tainted-proxy demo` (what `make demo` runs) works and cleans up."""

from __future__ import annotations

import argparse

from tainted_proxy.demo import run_demo


def test_demo_runs_its_workload_without_leaks_and_reports_ok(capsys):
    assert run_demo(argparse.Namespace(clients=4)) == 0
    out = capsys.readouterr().out
    assert "result: OK" in out
    assert "sessions that saw another  0" in out
    assert "cleaned up the throwaway MariaDB" in out
