"""Admission: the global cap on upstream connections, the checkout timeout and its error,
and what clients see when the upstream server restarts or dies. Never a hang."""

from __future__ import annotations

import threading
import time

import pymysql
import pytest

LIMITED = {"upstream": {"max_connections": 2}, "pool": {"checkout_timeout": 1}}


@pytest.fixture
def server(mariadb_factory):
    return mariadb_factory()


@pytest.fixture
def limited(server, proxy_factory):
    return proxy_factory(server=server, **LIMITED)


def app_threads(srv) -> int:
    """Connections the proxy has open on the server (the proxy logs in as app)."""
    rows = srv.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'")
    return int(rows[0][0])


class Sampler:
    """Watch the server's processlist in the background; ``peak`` = most app connections."""

    def __init__(self, srv) -> None:
        self.srv = srv
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = self.srv.connect(read_timeout=5)
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'"
                    )
                    self.peak = max(self.peak, int(cur.fetchone()[0]))
                    self.samples += 1
                    time.sleep(0.005)
        finally:
            conn.close()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def close(*conns) -> None:
    for c in conns:
        if c.open:
            c.close()


def leave_idle_connections(p, connect, n: int) -> None:
    """Have ``n`` clients log in at once and leave: ``n`` upstream connections end up idle
    in the pool (after their background reset)."""
    conns = [connect(p) for _ in range(n)]
    for c in conns:
        query(c)
    close(*conns)
    pool = p.proxy.pool
    deadline = time.monotonic() + 5
    while p.call(lambda: pool.idle_count) < n:
        assert time.monotonic() < deadline, "connections never came back to the pool"
        time.sleep(0.01)


def query(conn, sql: str = "SELECT 1"):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_third_client_over_the_cap_gets_1040_with_the_reason_within_the_timeout(limited, connect):
    a, b = connect(limited), connect(limited)
    try:
        assert query(a) == query(b) == ((1,),)
        t0 = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as e:
            connect(limited)
        waited = time.monotonic() - t0
        assert 0.8 <= waited < 2.5, waited
        code, message = e.value.args
        assert code == 1040
        assert e.value.sqlstate == "08004"
        assert "Too many connections" in message
        assert "within 1s" in message and "2/2" in message, message
        # the two sessions were not disturbed
        assert query(a, "SELECT 'a'") == (("a",),)
        assert query(b, "SELECT 'b'") == (("b",),)
    finally:
        close(a, b)


def test_when_a_session_ends_the_next_client_gets_in(limited, connect):
    a, b = connect(limited), connect(limited)
    try:
        with pytest.raises(pymysql.err.OperationalError):
            connect(limited)
        a.close()
        c = connect(limited)
        try:
            assert query(c, "SELECT 'c'") == (("c",),)
        finally:
            c.close()
    finally:
        close(a, b)


def test_a_waiting_client_gets_the_connection_released_during_its_wait(
    server, proxy_factory, connect
):
    p = proxy_factory(server=server, upstream={"max_connections": 2}, pool={"checkout_timeout": 5})
    a, b = connect(p), connect(p)
    result: dict[str, object] = {}

    def third() -> None:
        t0 = time.monotonic()
        try:
            with connect(p) as c:
                result["rows"] = query(c, "SELECT 'third'")
        except Exception as exc:  # reported below
            result["error"] = exc
        result["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=third, daemon=True)
    try:
        t.start()
        time.sleep(0.5)
        assert t.is_alive()  # still waiting for a slot
        a.close()
        t.join(5)
        assert not t.is_alive()
        assert result.get("rows") == (("third",),), result
        assert 0.4 < result["seconds"] < 4  # type: ignore[operator]
    finally:
        close(a, b)


def test_the_server_never_sees_more_upstream_connections_than_the_cap(server, limited, connect):
    outcomes: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            with connect(limited, read_timeout=10) as c:
                query(c, "SELECT SLEEP(0.1)")
                query(c, f"SELECT {i}")
            outcome = "ok"
        except pymysql.err.OperationalError as exc:
            outcome = f"err {exc.args[0]}"
        with lock:
            outcomes.append(outcome)

    with Sampler(server) as sampler:
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert not any(t.is_alive() for t in threads)
    assert sampler.samples > 5
    assert 1 <= sampler.peak <= 2, sampler.peak
    assert limited.call(lambda: limited.proxy.pool.stats.peak_open) <= 2
    assert outcomes.count("ok") >= 2
    assert set(outcomes) <= {"ok", "err 1040"}, outcomes
    assert app_threads(server) <= 2


def test_server_restart_errors_existing_sessions_and_new_sessions_work(
    server, proxy_factory, connect
):
    p = proxy_factory(server=server, upstream={"max_connections": 4}, pool={"checkout_timeout": 2})
    leave_idle_connections(p, connect, 2)
    held = [connect(p, read_timeout=10, write_timeout=10) for _ in range(2)]
    try:
        leave_idle_connections(p, connect, 2)  # the held ones took the first two
        for c in held:
            assert query(c) == ((1,),)
        server.restart()
        for c in held:
            t0 = time.monotonic()
            with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
                query(c)
            assert time.monotonic() - t0 < 5
        # new sessions work: none of them inherits a connection to the old server
        for i in range(4):
            with connect(p, read_timeout=10) as c:
                assert query(c, f"SELECT {i}") == ((i,),)
    finally:
        close(*held)


def test_killed_server_gives_new_clients_a_clear_error_not_a_hang(server, proxy_factory, connect):
    p = proxy_factory(server=server, upstream={"connect_timeout": 2}, pool={"checkout_timeout": 2})
    held = connect(p, read_timeout=10, write_timeout=10)
    leave_idle_connections(p, connect, 2)
    try:
        server.kill()
        for _ in range(3):  # the first ones would find the dead idle connections
            t0 = time.monotonic()
            with pytest.raises(pymysql.err.OperationalError) as e:
                connect(p, read_timeout=10)
            assert time.monotonic() - t0 < 5
            code, message = e.value.args
            assert code == 1105, (
                e.value.args
            )  # a server code: see frontend.session.upstream_unavailable
            assert "cannot connect to upstream" in message, message
            assert f":{server.port}" in message
        # the session that was open when the server died gets an error too
        t0 = time.monotonic()
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            query(held)
        assert time.monotonic() - t0 < 5
    finally:
        close(held)
    # once the server is back, so is the service
    server.start()
    with connect(p) as c:
        assert query(c, "SELECT 'back'") == (("back",),)
