"""`tainted-proxy demo` (what `make demo` runs) works, shows the two-tier pattern in
transaction pooling mode, and cleans up."""

from __future__ import annotations

import argparse
import re

from tainted_proxy import demo
from tainted_proxy.demo import run_demo


def _number(pattern: str, out: str) -> int:
    m = re.search(pattern, out)
    assert m is not None, f"no match for {pattern!r} in:\n{out}"
    return int(m.group(1))


def test_demo_serves_more_clients_than_the_server_allows_without_leaks(capsys):
    assert run_demo(argparse.Namespace()) == 0
    out = capsys.readouterr().out
    assert "result: OK" in out, out
    assert "cleaned up the throwaway MariaDB" in out

    # more client connections than the server's max_connections, all open at once ...
    clients = _number(r"client connections\s+(\d+) opened in total", out)
    at_once = _number(r"(\d+) open at once", out)
    server_max = _number(r"server max_connections = (\d+)", out)
    assert server_max == demo.SERVER_MAX_CONNECTIONS
    assert clients == at_once == demo.PROCESSES * demo.POOL_SIZE
    assert clients > server_max

    # ... served by at most upstream.max_connections upstream connections
    cap = _number(r"peak_open = \d+ \(cap (\d+)\)", out)
    assert cap == demo.UPSTREAM_CAP < server_max
    assert 1 <= _number(r"peak_open = (\d+)", out) <= cap
    assert _number(r"most in PROCESSLIST: (\d+)", out) <= cap
    # the server's own high-water mark, less the demo's one monitoring connection: even
    # while connections are closed and replaced (the pool keeps a slot until the server
    # has let go of the connection that held it)
    assert _number(r"Max_used_connections = (\d+)", out) - 1 <= cap

    # real work happened, temporary tables pinned and every pin was let go
    assert _number(r"work\s+(\d+) transactions", out) > 0
    assert _number(r"(\d+) temporary-table uses", out) > 0
    assert re.search(r"^\s+\d+\s+temporary table$", out, re.MULTILINE), out
    assert re.search(r"app, temporary table, CREATE TEMPORARY TABLE scratch", out), out
    assert _number(r"(\d+) left at the end", out) == 0

    assert "\n0 sessions saw another's state\n" in out
    assert "error:" not in out
