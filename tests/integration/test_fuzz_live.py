"""The live fuzzer (bench/fuzz_live.py) with a small bound: hostile raw-TCP clients (mutated
handshakes, truncated / oversized / out-of-sequence packets, random commands, invalid UTF-8
and token-soup SQL) against a transaction-mode proxy, while well-behaved clients run a
checked workload. The proxy (``tainted-proxy serve``, its own process) must stay up, the
bystanders must see no error, and nothing may reach the listener's ``unexpected error``
catch-all. The longer run's figures are in
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
    assert r["proxy_alive_at_end"]
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


def test_out_of_sequence_command_is_logged_as_the_clients_bad_input(fuzz_live, mariadb) -> None:
    import logging

    from tainted_proxy.testing.proxy import ProxyThread

    fuzz_live.setup_server(mariadb)
    watch = fuzz_live.LogWatch()
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.levelname} {record.name} {record.getMessage()}")

    keep = Keep()
    logger = logging.getLogger("tainted_proxy")
    old = logger.level
    logger.addHandler(watch)
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    p = ProxyThread(fuzz_live.proxy_config(mariadb)).start()
    try:
        w = fuzz_live.Worker(p.port, 1, 5.0)
        s = w.login()
        # the reproducing input: an unclassified statement, sequence id 5
        s.sendall(fuzz_live.packet(b"\x03SELEC 1", 5))
        _seq, answer = fuzz_live.read_packet(s)
        assert answer[:1] == b"\xff"
        # the same client goes on: its next statement meets the dropped upstream connection
        s.sendall(fuzz_live.packet(b"\x03SELECT 1", 0))
        w.first_answer(s)
        s.close()
        assert fuzz_live.final_check(p.port) is None
    finally:
        p.stop()
        logger.removeHandler(watch)
        logger.removeHandler(keep)
        logger.setLevel(old)
    assert not [r for r in records if "session_lost" in r], records
    assert [r for r in records if "sequence" in r.lower()], records


def test_out_of_sequence_handshake_response_is_refused(fuzz_live, mariadb) -> None:
    from tainted_proxy.testing.proxy import ProxyThread

    fuzz_live.setup_server(mariadb)
    p = ProxyThread(fuzz_live.proxy_config(mariadb)).start()
    try:
        w = fuzz_live.Worker(p.port, 1, 5.0)
        s, greeting = w.connect()
        # the reproducing input: a valid login packet, sequence id 3
        s.sendall(fuzz_live.packet(w.handshake_response(greeting), 3))
        outcome = w.first_answer(s)
        s.close()
        assert fuzz_live.final_check(p.port) is None
    finally:
        p.stop()
    assert outcome in ("error", "disconnect"), outcome


def test_proxy_log_file_is_read_for_unexpected_errors(fuzz_live, tmp_path) -> None:
    # the proxy runs as `tainted-proxy serve`: its findings come from its log file
    log = tmp_path / "proxy.log"
    log.write_text(
        "2026-12-07 03:29:24,779 INFO tainted_proxy.login: event=login_failed client=5\n"
        "2026-12-07 03:29:24,780 ERROR tainted_proxy.frontend.listener: client 7: "
        "unexpected error\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "KeyError: 3\n"
        "2026-12-07 03:29:24,781 ERROR tainted_proxy.relay: event=other\n"
        "Traceback (most recent call last):\n"
        "ValueError\n"
        "2026-12-07 03:29:24,782 WARNING tainted_proxy: event=shutdown sessions=0\n"
    )
    watch = fuzz_live.LogWatch()
    watch.read_file(str(log))
    assert watch.counts["tainted_proxy.login:INFO"] == 1
    assert watch.counts["tainted_proxy.frontend.listener:ERROR"] == 1
    assert watch.tracebacks == 2
    assert len(watch.unexpected) == 2
    assert "client 7: unexpected error" in watch.unexpected[0]
    assert "KeyError: 3" in watch.unexpected[0]
    assert "event=other" in watch.unexpected[1]
