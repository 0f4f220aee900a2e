"""The live fuzzer (bench/fuzz_live.py) with a small bound: hostile raw-TCP clients (mutated
handshakes, truncated / oversized / out-of-sequence packets, random commands, invalid UTF-8
and token-soup SQL) against a transaction-mode proxy, while well-behaved clients run a
checked workload. The proxy must stay up, the bystanders must see no error, and nothing may
reach the listener's ``unexpected error`` catch-all. The longer run's figures are in
docs/operations.md, "Fuzzing"."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

INPUTS = 3000
MAX_SECONDS = 15.0


@pytest.fixture(scope="module")
def fuzz_live():
    # spawned worker processes import the module by name: they inherit this sys.path
    sys.path.insert(0, str(BENCH))
    try:
        import fuzz_live

        yield fuzz_live
    finally:
        sys.path.remove(str(BENCH))


def test_live_fuzz_keeps_proxy_and_bystanders_alive(
    fuzz_live, mariadb_factory, record_property
) -> None:
    srv = mariadb_factory(max_connections=200, extra_args=fuzz_live.SERVER_ARGS)
    r = fuzz_live.run(
        INPUTS,
        seed=12345,
        concurrency=2,
        bystanders=2,
        chunk=250,
        progress=False,
        max_seconds=MAX_SECONDS,
        server=srv,
    )
    print("\n" + fuzz_live.report(r))
    record_property("fuzz_inputs", r["inputs"])
    assert r["worker_crashes"] == []
    assert r["final_check_error"] is None, "the proxy no longer accepts a new login"
    assert r["bystander_error_count"] == 0, r["bystander_errors"]
    assert r["bystander_statements"] > 0
    assert r["unexpected_error_lines"] == []
    # the bound is by count and by time; on a slow machine the time ends it first
    assert r["inputs"] >= 200, f"only {r['inputs']} inputs tried"
    # every kind of input got answered one way or another, and the hostile ones were refused
    assert r["outcomes"].get("error", 0) > 0
    assert r["outcomes"].get("disconnect", 0) > 0
    assert r["passed"]
