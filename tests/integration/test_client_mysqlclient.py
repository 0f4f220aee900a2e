"""mysqlclient (MySQLdb, on MariaDB Connector/C) through the proxy (session pooling): what only
mysqlclient shows (COM_SET_OPTION, COM_STATISTICS, COM_CHANGE_USER). The DB-API behaviour
every driver shares (CRUD, NULLs, utf8mb4, errors with SQLSTATE, batches, procedures, big
rows, LOCAL INFILE, ping, COM_INIT_DB, server version) is tested for mysqlclient in
test_client_drivers.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

MySQLdb = pytest.importorskip("MySQLdb")

APP_USER, APP_PASSWORD = "app", "app-secret"  # the proxy fixture's user (conftest)


def _open(port: int, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": APP_USER,
        "password": APP_PASSWORD,
        "database": "test",
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": 10,
        "read_timeout": 60,
        "write_timeout": 60,
    }
    args.update(kw)
    return MySQLdb.connect(**args)


def _error(fn: Any, *args: Any, **kw: Any) -> tuple[type, tuple[Any, ...]]:
    with pytest.raises(MySQLdb.MySQLError) as e:
        fn(*args, **kw)
    return type(e.value), e.value.args


@pytest.fixture
def conn(proxy) -> Iterator[Any]:
    c = _open(proxy.port)
    try:
        yield c
    finally:
        c.close()


def test_set_server_option_turns_multi_statements_off_and_on(conn):
    multi_on, multi_off = 0, 1  # enum_mysql_set_option (COM_SET_OPTION)
    cur = conn.cursor()
    conn.set_server_option(multi_off)
    assert _error(cur.execute, "SELECT 1; SELECT 2")[1][0] == 1064
    conn.set_server_option(multi_on)
    cur.execute("SELECT 1; SELECT 2")
    assert cur.fetchall() == ((1,),)
    assert cur.nextset() and cur.fetchall() == ((2,),)


def test_stat_returns_the_servers_status_line(conn):
    assert conn.stat().startswith("Uptime:")


def test_change_user_reauthenticates_and_starts_a_fresh_session(conn):
    cur = conn.cursor()
    cur.execute("SET @leftover = 1, time_zone = '+01:00'")
    conn.change_user(APP_USER, APP_PASSWORD, "mysql")
    cur = conn.cursor()
    cur.execute("SELECT DATABASE(), CURRENT_USER(), @leftover, @@time_zone")
    assert cur.fetchone() == ("mysql", f"{APP_USER}@%", None, "SYSTEM")
    conn.change_user(APP_USER, APP_PASSWORD)  # no database
    cur = conn.cursor()
    cur.execute("SELECT DATABASE()")
    assert cur.fetchone() == (None,)


def test_change_user_with_a_wrong_password_is_refused_with_1045(conn):
    assert _error(conn.change_user, APP_USER, "wrong", "test")[1][0] == 1045
