"""The database goes away and comes back under pooled sessions.

An autocommit statement in flight gets ERR 1317 (a server code: drivers keep their
connection) and the session goes on: once the database is back, its next statement runs
with its own settings and schema, without any action by the client. A session inside a
transaction or holding a pin gets an error and is disconnected: its state is gone.
"""

from __future__ import annotations

import socket
import threading
import time

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def server(mariadb_factory) -> MariaDBServer:
    return mariadb_factory()


def app_client(p, **kw):
    """The test's pymysql client of the proxy ``p`` (user app, database test, autocommit)."""
    kw.setdefault("read_timeout", 30)
    return pymysql.connect(
        host="127.0.0.1",
        port=p.port,
        user="app",
        password="app-secret",
        database="test",
        autocommit=True,
        **kw,
    )


def q(c, sql):
    with c.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def retry(c, sql, seconds=15.0):
    """Run ``sql`` until the database is back (the client keeps its connection)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return q(c, sql)
        except pymysql.MySQLError as exc:
            if time.monotonic() > deadline:
                raise
            assert exc.args[0] not in (2006, 2013), f"the client's connection was dropped: {exc}"
            time.sleep(0.1)


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_statement_in_flight_gets_an_error_and_the_session_survives_a_restart(
    pooling_proxy, server, mode
):
    p = pooling_proxy(
        mode,
        server=server,
        max_connections=4,
        checkout_timeout=2.0,
        upstream={"connect_timeout": 1},
    )
    c = app_client(p)
    q(c, "SET time_zone = '+05:30'")
    q(c, "SET @carried = 'kept'")
    got: dict[str, object] = {}

    def in_flight() -> None:
        try:
            got["rows"] = q(c, "SELECT SLEEP(5)")
        except pymysql.MySQLError as exc:
            got["error"] = exc.args

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(0.5)
    server.kill()
    t.join(10)
    assert got["error"][0] == 1317, got
    server.start()
    assert retry(c, "SELECT @@time_zone, @carried, DATABASE()") == (("+05:30", "kept", "test"),)
    c.close()


def test_a_session_in_a_transaction_is_told_and_disconnected(pooling_proxy, server):
    p = pooling_proxy(
        "transaction", server=server, max_connections=4, upstream={"connect_timeout": 1}
    )
    c = app_client(p)
    q(c, "CREATE TABLE IF NOT EXISTS r (a INT)")
    q(c, "BEGIN")
    q(c, "INSERT INTO r VALUES (1)")
    server.kill()
    with pytest.raises(pymysql.MySQLError):
        q(c, "INSERT INTO r VALUES (2)")
    with pytest.raises(pymysql.MySQLError):
        q(c, "SELECT 1")
    server.start()
    c.close()


def test_while_the_database_is_down_statements_get_a_server_error_not_2013(pooling_proxy, server):
    p = pooling_proxy(
        "transaction",
        server=server,
        max_connections=4,
        checkout_timeout=1.0,
        upstream={"connect_timeout": 1},
    )
    c = app_client(p)
    q(c, "SET time_zone = '-08:00'")
    server.stop()
    with pytest.raises(pymysql.MySQLError) as e:
        q(c, "SELECT 1")
    assert e.value.args[0] == 1105
    server.start()
    assert retry(c, "SELECT @@time_zone") == (("-08:00",),)
    c.close()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_client_gone_during_a_long_query_has_it_killed_upstream(pooling_proxy, server, mode):
    p = pooling_proxy(mode, server=server, max_connections=4)
    c = app_client(p, read_timeout=None)
    payload = b"\x03SELECT SLEEP(30) AS gone"
    c._sock.sendall(len(payload).to_bytes(3, "little") + b"\x00" + payload)  # no wait

    def running() -> int:
        rows = server.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(30) AS gone%'"
        )
        return int(rows[0][0])

    deadline = time.monotonic() + 5
    while running() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c._sock.shutdown(socket.SHUT_RDWR)  # the client vanishes mid-query (a FIN now:
    c._sock.close()  # pymysql's file object would keep the socket open past close())
    t0 = time.monotonic()
    while running():
        assert time.monotonic() - t0 < 5, "the query kept running upstream"
        time.sleep(0.1)
