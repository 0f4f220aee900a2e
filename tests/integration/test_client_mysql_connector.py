"""mysql-connector-python through the proxy (session pooling), pure Python and C extension:
what only mysql-connector shows here: server-side prepared statements (COM_STMT_PREPARE /
EXECUTE / SEND_LONG_DATA / CLOSE), COM_RESET_CONNECTION and COM_CHANGE_USER; their errors
reach it as the server sent them (compared with the same statement run directly against the
private server). The DB-API behaviour every driver shares (CRUD, NULLs, utf8mb4, errors,
batches, procedures, big rows, LOCAL INFILE, ping, COM_INIT_DB) is tested for both
implementations in test_client_drivers.py."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

mysql_connector = pytest.importorskip("mysql.connector")
from mysql.connector import errors as myerrors  # noqa: E402

APP_USER, APP_PASSWORD = "app", "app-secret"  # the proxy fixture's user (conftest)
T = "client_connector"  # table/procedure prefix unique to this file

IMPLEMENTATIONS = [
    pytest.param(True, id="pure"),
    pytest.param(
        False,
        id="cext",
        marks=pytest.mark.skipif(
            not mysql_connector.HAVE_CEXT,
            reason="mysql-connector C extension not importable here (_mysql_connector)",
        ),
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def use_pure(request) -> bool:
    return request.param


# libmysqlclient 9.x sends COM_CHANGE_USER with caching_sha2_password and an empty response,
# then waits for a switch to caching_sha2_password carrying a scramble (the proxy sends one).
CHANGE_USER_IMPLEMENTATIONS = IMPLEMENTATIONS


def _open(port: int, use_pure: bool, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": APP_USER,
        "password": APP_PASSWORD,
        "database": "test",
        "charset": "utf8mb4",
        "collation": "utf8mb4_general_ci",
        "autocommit": True,
        "use_pure": use_pure,
        "connection_timeout": 10,
    }
    args.update(kw)
    if args["database"] is None:
        del args["database"]
    return mysql_connector.connect(**args)


def _error(fn: Any, *args: Any, **kw: Any) -> tuple[type, int, str | None, str]:
    with pytest.raises(myerrors.Error) as e:
        fn(*args, **kw)
    return type(e.value), e.value.errno, e.value.sqlstate, e.value.msg


@pytest.fixture
def conn(proxy, use_pure) -> Iterator[Any]:
    c = _open(proxy.port, use_pure)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def tables(app_account) -> None:
    app_account.execute(f"DROP TABLE IF EXISTS test.{T}_crud, test.{T}_blob")
    app_account.execute(
        f"CREATE TABLE test.{T}_crud (id INT PRIMARY KEY, name VARCHAR(50), "
        "amount DECIMAL(10,2), born DATE, data BLOB, note TEXT) CHARSET utf8mb4"
    )
    app_account.execute(f"CREATE TABLE test.{T}_blob (id INT PRIMARY KEY, b LONGBLOB)")


# -- server-side prepared statements -------------------------------------------------------


def test_prepared_statement_executes_many_times_with_different_and_null_params(conn, tables):
    cur = conn.cursor(prepared=True)
    cur.execute(f"DELETE FROM {T}_crud")
    insert = f"INSERT INTO {T}_crud (id, name, amount, note) VALUES (?, ?, ?, ?)"
    cur.execute(insert, (1, "alice", "1.50", "😀"))
    cur.execute(insert, (2, None, None, None))  # the same statement, re-executed
    cur.execute(insert, (3, "carol", "3.00", None))
    select = f"SELECT id, name, amount, note FROM {T}_crud WHERE id >= ? ORDER BY id"
    cur.execute(select, (2,))
    rows = cur.fetchall()
    assert [(r[0], r[1], None if r[2] is None else str(r[2]), r[3]) for r in rows] == [
        (2, None, None, None),
        (3, "carol", "3.00", None),
    ]
    cur.execute(select, (1,))
    assert len(cur.fetchall()) == 3
    cur.execute("SELECT ?, ?, ? IS NULL", (None, 7, None))
    assert cur.fetchall() == [(None, 7, 1)]
    cur.close()  # COM_STMT_CLOSE (no response): the connection stays in sync
    cur = conn.cursor()
    cur.execute("SELECT 'in sync'")
    assert cur.fetchall() == [("in sync",)]


def test_prepared_statement_fetchone_reads_rows_one_by_one(conn):
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT seq FROM seq_1_to_5 WHERE seq > ?", (2,))
    assert cur.fetchone() == (3,)
    assert cur.fetchone() == (4,)
    assert cur.fetchall() == [(5,)]
    cur.execute("SELECT seq FROM seq_1_to_3 WHERE seq > ?", (5,))
    assert cur.fetchall() == []


def test_prepared_statement_errors_pass_through(proxy, mariadb, tables, use_pure):
    def run(port: int) -> tuple[Any, ...]:
        c = _open(port, use_pure)
        try:
            cur = c.cursor(prepared=True)
            cur.execute(f"DELETE FROM {T}_crud")
            at_prepare = _error(
                cur.execute, "SELECT * FROM no_such_table_connector WHERE a = ?", (1,)
            )
            cur = c.cursor(prepared=True)
            cur.execute(f"INSERT INTO {T}_crud (id) VALUES (?)", (1,))
            at_execute = _error(cur.execute, f"INSERT INTO {T}_crud (id) VALUES (?)", (1,))
            cur.execute("SELECT ?", (1,))
            assert cur.fetchall() == [(1,)]
            return at_prepare, at_execute
        finally:
            c.close()

    via_proxy = run(proxy.port)
    assert via_proxy == run(mariadb.port)
    assert via_proxy[0][1:3] == (1146, "42S02") and via_proxy[1][1:3] == (1062, "23000")


# The two SEND_LONG_DATA tests run the pure implementation only: the C extension does not
# stream file-like parameters with COM_STMT_SEND_LONG_DATA.


@pytest.fixture
def long_data_calls(monkeypatch) -> list[int]:
    """Counts COM_STMT_SEND_LONG_DATA packets the pure implementation sends (it sends one
    per 128 KiB chunk when a parameter is a file-like object)."""
    from mysql.connector.connection import MySQLConnection

    calls: list[int] = []
    original = MySQLConnection.cmd_stmt_send_long_data

    def counting(self: Any, statement_id: int, param_id: int, data: Any, **kw: Any) -> int:
        sent = original(self, statement_id, param_id, data, **kw)
        calls.append(sent)
        return sent

    monkeypatch.setattr(MySQLConnection, "cmd_stmt_send_long_data", counting)
    return calls


def test_blob_sent_with_send_long_data_round_trips_through_the_binary_protocol(
    proxy, tables, long_data_calls
):
    blob = os.urandom(1 << 20) * 3 + b"tail"  # 25 COM_STMT_SEND_LONG_DATA packets
    c = _open(proxy.port, use_pure=True)
    try:
        cur = c.cursor(prepared=True)
        cur.execute(f"DELETE FROM {T}_blob")
        cur.execute(f"INSERT INTO {T}_blob (id, b) VALUES (?, ?)", (1, io.BytesIO(blob)))
        assert long_data_calls == [len(blob)]
        cur.execute(f"SELECT id, LENGTH(b), b FROM {T}_blob WHERE id = ?", (1,))
        (row,) = cur.fetchall()
        assert row[0] == 1 and row[1] == len(blob) and bytes(row[2]) == blob
    finally:
        c.close()


def test_blob_larger_than_16mib_sent_with_send_long_data_reads_back_intact(
    proxy, tables, long_data_calls
):
    # Read back with the text protocol: connector itself cannot parse a binary-protocol
    # row of 16 MiB or more (IndexError in _parse_binary_values, directly against the
    # server too), so that direction is covered with the text protocol by
    # test_client_drivers.py.
    blob = os.urandom(1 << 20) * 17 + b"tail"
    c = _open(proxy.port, use_pure=True)
    try:
        cur = c.cursor(prepared=True)
        cur.execute(f"DELETE FROM {T}_blob")
        cur.execute(f"INSERT INTO {T}_blob (id, b) VALUES (?, ?)", (2, io.BytesIO(blob)))
        assert long_data_calls == [len(blob)]
        text = c.cursor()
        text.execute(f"SELECT b, 'after' FROM {T}_blob WHERE id = 2")
        (row,) = text.fetchall()
        assert bytes(row[0]) == blob and row[1] == "after"
        text.execute(f"DELETE FROM {T}_blob")
    finally:
        c.close()


# -- COM_RESET_CONNECTION / COM_CHANGE_USER ------------------------------------------------


_SESSION_PROBE = (
    "SELECT @@session.time_zone, @@session.sql_mode, @@session.wait_timeout, @probe_var, DATABASE()"
)


def _dirty(c: Any) -> None:
    cur = c.cursor()
    cur.execute("SET time_zone = '+05:30', sql_mode = 'ANSI', wait_timeout = 123")
    cur.execute("SET @probe_var = 'dirty'")
    cur.execute("CREATE TEMPORARY TABLE probe_tmp (a INT)")
    cur.close()


def _probe(c: Any) -> tuple[Any, ...]:
    cur = c.cursor()
    cur.execute(_SESSION_PROBE)
    (row,) = cur.fetchall()
    with pytest.raises(myerrors.ProgrammingError) as e:
        cur.execute("SELECT * FROM probe_tmp")
    assert e.value.errno == 1146
    return row


def test_cmd_reset_connection_brings_session_variables_back_to_defaults(proxy, mariadb, use_pure):
    def run(port: int) -> tuple[Any, ...]:
        c = _open(port, use_pure)
        try:
            fresh = c.cursor()
            fresh.execute(_SESSION_PROBE)
            (defaults,) = fresh.fetchall()
            _dirty(c)
            assert c.cmd_reset_connection() is True
            after = _probe(c)
            assert after == defaults
            return after
        finally:
            c.close()

    via_proxy = run(proxy.port)
    assert via_proxy[3] is None and via_proxy[4] == "test"
    assert via_proxy == run(mariadb.port)


@pytest.mark.parametrize("use_pure", CHANGE_USER_IMPLEMENTATIONS)
def test_cmd_change_user_to_the_same_user_starts_a_fresh_session(proxy, use_pure):
    c = _open(proxy.port, use_pure)
    try:
        _dirty(c)
        c.cmd_change_user(username=APP_USER, password=APP_PASSWORD, database="mysql")
        tz, mode, _wait, var, db = _probe(c)
        assert (tz, "ANSI" in mode, var, db) == ("SYSTEM", False, None, "mysql")
        cur = c.cursor()
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchall() == [(f"{APP_USER}@%",)]
    finally:
        c.close()


@pytest.mark.parametrize("use_pure", CHANGE_USER_IMPLEMENTATIONS)
def test_cmd_change_user_with_a_wrong_password_is_refused_with_1045(proxy, use_pure):
    c = _open(proxy.port, use_pure)
    try:
        err = _error(c.cmd_change_user, username=APP_USER, password="wrong", database="test")
        assert err[1:3] == (1045, "28000")
    finally:
        c.close()
