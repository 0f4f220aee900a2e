"""pymysql through the proxy (session pooling): what only pymysql shows. The DB-API behaviour
every driver shares (CRUD, NULLs, utf8mb4, errors, batches, procedures, big rows, LOCAL
INFILE, ping, COM_INIT_DB) is tested for pymysql in test_client_drivers.py."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from pymysql.constants import COMMAND

APP_USER, APP_PASSWORD = "app", "app-secret"  # the proxy fixture's user (conftest)
T = "client_pymysql"  # table/procedure prefix unique to this file


def _open(port: int, **kw: Any) -> pymysql.connections.Connection:
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
    return pymysql.connect(**args)


@pytest.fixture
def conn(proxy) -> Iterator[pymysql.connections.Connection]:
    c = _open(proxy.port)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def tables(app_account) -> None:
    app_account.execute(f"DROP TABLE IF EXISTS test.{T}_crud")
    app_account.execute(
        f"CREATE TABLE test.{T}_crud (id INT PRIMARY KEY, name VARCHAR(50), "
        "amount DECIMAL(10,2), born DATE, data BLOB, note TEXT) CHARSET utf8mb4"
    )


def test_server_error_sqlstate_is_relayed_unchanged(conn):
    # pymysql does not expose the SQLSTATE; read the raw ERR packet instead
    conn._execute_command(COMMAND.COM_QUERY, "SELECT * FROM no_such_table_pymysql")
    header = conn._read_bytes(4)
    pkt = conn._read_bytes(int.from_bytes(header[:3], "little"))
    assert pkt[0] == 0xFF
    assert struct.unpack("<H", pkt[1:3])[0] == 1146
    assert pkt[3:9] == b"#42S02"
    assert b"no_such_table_pymysql" in pkt[9:]


def _field_list(c: pymysql.connections.Connection, table: str) -> list[bytes]:
    """COM_FIELD_LIST through pymysql's internals (pymysql has no public API for it)."""
    c._execute_command(COMMAND.COM_FIELD_LIST, table + "\0")
    names = []
    while True:
        pkt = c._read_packet()
        if pkt.is_eof_packet():
            return names
        names.append(_column_name(pkt))


def _column_name(pkt: Any) -> bytes:
    pkt.read_length_coded_string()  # catalog
    pkt.read_length_coded_string()  # schema
    pkt.read_length_coded_string()  # table
    pkt.read_length_coded_string()  # org_table
    return pkt.read_length_coded_string()  # name


def test_com_field_list_returns_the_tables_columns(conn, tables):
    assert _field_list(conn, f"{T}_crud") == [b"id", b"name", b"amount", b"born", b"data", b"note"]
    with conn.cursor() as cur:
        cur.execute("SELECT 'in sync'")
        assert cur.fetchone() == ("in sync",)


def test_use_without_a_default_database_does_not_leak_to_the_next_client(pooling_proxy):
    # Regression: the proxy did not notice `USE db` (a COM_QUERY), believed the released
    # upstream connection had no schema and skipped the COM_CHANGE_USER that clears it.
    # One upstream connection, of a login of its own: every client gets that same one.
    p = pooling_proxy("session", max_connections=1)

    def upstream_thread() -> int:
        """The server thread id of the proxy's only connection (its login has no other)."""
        ids = p.server.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (p.upstream_user,)
        )
        assert len(ids) == 1, ids
        return int(ids[0][0])

    with _open(p.port, database=None) as c, c.cursor() as cur:
        cur.execute("USE mysql")
        first = upstream_thread()
    with _open(p.port, database=None) as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
        assert upstream_thread() == first  # the connection USE ran on, cleared
    with _open(p.port, database="test") as c, c.cursor() as cur:
        cur.execute("USE mysql")
        assert upstream_thread() == first
    with _open(p.port, database=None) as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
        assert upstream_thread() == first
