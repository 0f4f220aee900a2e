"""The private MariaDB fixtures work: connect, restart, crash, settings."""

from __future__ import annotations

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBNotFound, MariaDBServer, MariaDBStartError

ER_CON_COUNT_ERROR = 1040
ER_ACCESS_DENIED_ERROR = 1045


def test_connect(mariadb: MariaDBServer) -> None:
    assert mariadb.running and mariadb.host == "127.0.0.1" and mariadb.port != 3306
    assert "MariaDB" in mariadb.version
    assert mariadb.execute("SELECT DATABASE(), CURRENT_USER(), @@port") == [
        ("test", "root@127.0.0.1", mariadb.port)
    ]
    plugins = mariadb.execute("SELECT DISTINCT plugin FROM mysql.user WHERE user = 'root'")
    assert plugins == [("mysql_native_password",)]
    # The Unix socket works too.
    conn = mariadb.connect(host=None, port=0, unix_socket=str(mariadb.socket_path))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone() == ("root@localhost",)


def test_create_user(mariadb: MariaDBServer) -> None:
    mariadb.create_user("fixture_u", "s3cret", grants="SELECT ON test.*")
    conn = mariadb.connect(user="fixture_u", password="s3cret")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone() == ("fixture_u@%",)
    with pytest.raises(pymysql.err.OperationalError) as ei:
        mariadb.connect(user="fixture_u", password="wrong")
    assert ei.value.args[0] == ER_ACCESS_DENIED_ERROR


def test_restart_keeps_data_and_port(mariadb_factory) -> None:
    srv = mariadb_factory()
    srv.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    srv.execute("INSERT INTO t VALUES (1), (2)")
    port, pid = srv.port, srv.pid
    srv.restart()
    assert srv.port == port and srv.pid != pid
    assert srv.execute("SELECT id FROM t ORDER BY id") == [(1,), (2,)]
    assert "Shutdown complete" in srv.error_log.read_text()


def test_kill_then_restart(mariadb_factory) -> None:
    srv = mariadb_factory()
    srv.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    srv.execute("INSERT INTO t VALUES (42)")
    conn = srv.connect()
    srv.kill()
    assert not srv.running and srv.pid is None
    with pytest.raises(pymysql.err.OperationalError):
        conn.ping(reconnect=False)
    with pytest.raises(pymysql.err.OperationalError):
        srv.connect(connect_timeout=2)
    srv.restart()
    assert srv.execute("SELECT id FROM t") == [(42,)]


def test_max_connections_and_extra_args(mariadb_factory) -> None:
    srv = mariadb_factory(max_connections=10, extra_args=["--wait-timeout=7"])
    assert srv.execute("SELECT @@max_connections, @@wait_timeout") == [(10, 7)]
    # Users without SUPER/CONNECTION ADMIN get exactly max_connections connections.
    srv.create_user("limited", "pw", grants="SELECT ON test.*")
    conns = [srv.connect(user="limited", password="pw") for _ in range(10)]
    try:
        with pytest.raises(pymysql.err.OperationalError) as ei:
            srv.connect(user="limited", password="pw")
        assert ei.value.args[0] == ER_CON_COUNT_ERROR
    finally:
        for c in conns:
            c.close()


def test_max_connections_minimum() -> None:
    with pytest.raises(ValueError, match="minimum is 10"):
        MariaDBServer(max_connections=5)


def test_missing_binary_says_how_to_install() -> None:
    with pytest.raises(MariaDBNotFound, match=r"apt-get install -y mariadb-server"):
        MariaDBServer(mariadbd="/nonexistent/mariadbd").start()


def test_start_failure_shows_error_log(mariadb_factory) -> None:
    with pytest.raises(MariaDBStartError, match=r"unknown variable 'no-such-option=1'"):
        mariadb_factory(extra_args=["--no-such-option=1"])
