"""The pool against a real MariaDB: the server never counts more of the proxy's
connections than ``upstream.max_connections`` while the pool closes and opens connections
(a closed connection keeps its slot until the server has let go of it), and idle
connections the server killed are found by the janitor's health check
(``pool.health_check_idle``) before a client needs them."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from tainted_proxy.testing.mariadb import MariaDBServer

from .conftest import UpstreamSampler, connect, q, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class _CountSampler(UpstreamSampler):
    """One root connection sampling, as fast as it can, the server's own counts: the
    login's threads in PROCESSLIST and Threads_connected (which includes this sampler);
    at the end, the server's high-water mark since the start (Max_used_connections)."""

    def __init__(self, srv: MariaDBServer, login: str) -> None:
        super().__init__(srv, login, interval=0)
        self.peak_threads_connected = 0
        self.max_used_connections = 0
        self._ready = threading.Event()

    def _run(self) -> None:
        try:
            conn = self.srv.connect(read_timeout=10, autocommit=True)
            try:
                with conn.cursor() as cur:
                    # Max_used_connections := the connections open now (the proxy's and this one)
                    cur.execute("FLUSH STATUS")
                    self._ready.set()
                    while not self._stop.is_set():
                        cur.execute(
                            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                            (self.login,),
                        )
                        self.peak = max(self.peak, int(cur.fetchone()[0]))
                        cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                        n = int(cur.fetchone()[1])
                        self.peak_threads_connected = max(self.peak_threads_connected, n)
                        self.samples += 1
                    cur.execute("SHOW GLOBAL STATUS LIKE 'Max_used_connections'")
                    self.max_used_connections = int(cur.fetchone()[1])
            finally:
                conn.close()
        except BaseException as exc:  # reported by __exit__
            self.error = exc
            self._ready.set()

    def __enter__(self) -> _CountSampler:
        super().__enter__()
        self._ready.wait(10)
        return self


def pool_call(p: Any, fn: Any) -> Any:
    return p.call(lambda: fn(p.proxy.pool))


def test_closing_and_opening_connections_never_exceeds_the_cap_on_the_server(
    pooling_proxy, mariadb_factory
) -> None:
    """Clients of three protocol-capability sets (three pool keys) take turns on two
    upstream connections: nearly every checkout closes an idle connection of another key
    and opens one of its own. The server, sampled as fast as one connection can, never
    counts more than two of the proxy's connections, and its own high-water mark
    (Max_used_connections, this sampler included) never passes cap + 1."""
    srv = mariadb_factory()
    cap = 2
    p = pooling_proxy("transaction", server=srv, max_connections=cap, checkout_timeout=20)
    flags = (0, CLIENT.FOUND_ROWS, CLIENT.IGNORE_SPACE)
    clients = [connect(p, autocommit=True, client_flag=f) for f in flags for _ in range(2)]
    deadline = time.monotonic() + 6.0
    errors: list[BaseException] = []
    done = [0]

    def work(c: pymysql.connections.Connection) -> None:
        try:
            while time.monotonic() < deadline:
                assert q(c, "SELECT 1") == ((1,),)
                done[0] += 1
        except BaseException as exc:
            errors.append(exc)

    closed_before = pool_call(p, lambda pool: pool.stats.closed)
    try:
        with _CountSampler(srv, p.upstream_user) as sampler:
            threads = [threading.Thread(target=work, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    finally:
        for c in clients:
            c.close()
    closed = pool_call(p, lambda pool: pool.stats.closed) - closed_before
    print(
        f"statements {done[0]}, connections closed {closed}, samples {sampler.samples}, "
        f"peak processlist {sampler.peak}, peak Threads_connected "
        f"{sampler.peak_threads_connected} (sampler included), Max_used_connections "
        f"{sampler.max_used_connections} (sampler included)"
    )
    assert not errors, errors[:3]
    assert closed > 100, "the workload should churn connections"
    assert sampler.samples > 100
    assert sampler.peak <= cap
    assert sampler.peak_threads_connected <= cap + 1
    assert sampler.max_used_connections <= cap + 1


def test_idle_connections_killed_by_the_server_are_found_by_the_health_check(
    pooling_proxy, caplog
) -> None:
    """Three idle upstream connections; the server KILLs two of them (from a root
    connection). Within the check interval the janitor finds both (the pool's idle count
    drops to one, one log line each) without any client asking, and a client then runs
    statements on the pool without an error."""
    caplog.set_level(logging.WARNING, logger="tainted_proxy.pool")
    p = pooling_proxy("transaction", max_connections=3, pool={"health_check_idle": 1})
    srv = p.server
    clients = [connect(p, autocommit=True) for _ in range(3)]
    try:
        # three at once in transactions: three upstream connections, all idle after
        for c in clients:
            q(c, "BEGIN")
            q(c, "SELECT 1")
        for c in clients:
            q(c, "COMMIT")
        wait_until(lambda: pool_call(p, lambda pool: pool.idle_count) == 3, what="3 idle")
        ids = [
            int(r[0])
            for r in srv.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s ORDER BY ID",
                (p.upstream_user,),
            )
        ]
        assert len(ids) == 3
        for thread_id in ids[:2]:
            srv.execute(f"KILL CONNECTION {thread_id}")
        killed_at = time.monotonic()
        wait_until(
            lambda: pool_call(p, lambda pool: pool.idle_count) == 1,
            timeout=4.0,
            what="the janitor closes the two killed connections",
        )
        found_after = time.monotonic() - killed_at
        dead = [
            r.getMessage() for r in caplog.records if "event=upstream_dead_idle" in r.getMessage()
        ]
        assert len(dead) == 2, dead
        assert {int(m.split("upstream_thread=")[1].split()[0]) for m in dead} == set(ids[:2])
        assert pool_call(p, lambda pool: (pool.total, pool.stats.dead_idle)) == (1, 2)
        print(f"both killed connections found {found_after:.2f} s after the KILL")
        # every client works, on the surviving connection and on new ones
        for c in clients:
            q(c, "BEGIN")
            assert q(c, "SELECT 1") == ((1,),)
        for c in clients:
            q(c, "COMMIT")
    finally:
        for c in clients:
            c.close()
