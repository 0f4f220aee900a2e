"""pymysql through the proxy (session pooling): what an application using pymysql relies on
works unchanged, and server errors reach it exactly as the server sent them (compared with
the same statement run directly against the private server)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT, COMMAND

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
    app_account.execute(f"DROP TABLE IF EXISTS test.{T}_crud, test.{T}_big, test.{T}_infile")
    app_account.execute(
        f"CREATE TABLE test.{T}_crud (id INT PRIMARY KEY, name VARCHAR(50), "
        "amount DECIMAL(10,2), born DATE, data BLOB, note TEXT) CHARSET utf8mb4"
    )
    app_account.execute(f"CREATE TABLE test.{T}_big (id INT PRIMARY KEY, b LONGBLOB)")
    app_account.execute(
        f"CREATE TABLE test.{T}_infile (id INT PRIMARY KEY, s VARCHAR(20), n INT NULL)"
    )
    app_account.execute(f"DROP PROCEDURE IF EXISTS test.{T}_proc")
    app_account.execute(
        f"CREATE PROCEDURE test.{T}_proc(IN n INT) BEGIN "
        "SELECT n AS a; SELECT n + 1 AS b, 'two' AS c; SELECT 'three' AS d UNION SELECT 'four'; "
        "END"
    )


# -- connecting ----------------------------------------------------------------------------


def test_connect_with_default_database_starts_in_that_database(proxy):
    with _open(proxy.port, database="test") as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("test",)


def test_connect_without_default_database_has_none_and_use_selects_one(proxy):
    with _open(proxy.port, database=None) as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
        with pytest.raises(pymysql.err.OperationalError) as e:
            cur.execute("SELECT * FROM some_table")
        assert e.value.args[0] == 1046  # No database selected
        cur.execute("USE mysql")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("mysql",)


def test_wrong_password_is_refused_with_1045_and_the_servers_message(proxy, mariadb):
    with pytest.raises(pymysql.err.OperationalError) as via_proxy:
        _open(proxy.port, password="wrong")
    with pytest.raises(pymysql.err.OperationalError) as direct:
        _open(mariadb.port, password="wrong")
    assert via_proxy.value.args[0] == 1045
    assert via_proxy.value.args == direct.value.args


def test_unknown_database_is_refused_with_1049_and_the_servers_message(proxy, mariadb):
    with pytest.raises(pymysql.err.OperationalError) as via_proxy:
        _open(proxy.port, database="no_such_db_pymysql")
    with pytest.raises(pymysql.err.OperationalError) as direct:
        _open(mariadb.port, database="no_such_db_pymysql")
    assert via_proxy.value.args[0] == 1049
    assert via_proxy.value.args == direct.value.args


# -- queries -------------------------------------------------------------------------------


def test_crud_insert_select_update_delete(conn, tables):
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM {T}_crud")
        n = cur.executemany(
            f"INSERT INTO {T}_crud (id, name, amount, born, data, note) VALUES (%s,%s,%s,%s,%s,%s)",
            [
                (1, "alice", "12.50", "1990-01-02", b"\x00\x01\xff", "a"),
                (2, "bob", "0.99", "2000-12-31", b"", "b"),
            ],
        )
        assert n == 2
        cur.execute(
            f"SELECT id, name, CAST(amount AS CHAR), CAST(born AS CHAR), data FROM {T}_crud ORDER BY id"
        )
        assert cur.fetchall() == (
            (1, "alice", "12.50", "1990-01-02", b"\x00\x01\xff"),
            (2, "bob", "0.99", "2000-12-31", b""),
        )
        assert cur.execute(f"UPDATE {T}_crud SET name = %s WHERE id = %s", ("carol", 2)) == 1
        cur.execute(f"SELECT name FROM {T}_crud WHERE id = 2")
        assert cur.fetchone() == ("carol",)
        assert cur.execute(f"DELETE FROM {T}_crud WHERE id = 1") == 1
        cur.execute(f"SELECT COUNT(*) FROM {T}_crud")
        assert cur.fetchone() == (1,)


def test_nulls_round_trip_in_every_column_and_as_parameters(conn, tables):
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM {T}_crud")
        cur.execute(
            f"INSERT INTO {T}_crud VALUES (%s,%s,%s,%s,%s,%s)", (7, None, None, None, None, None)
        )
        cur.execute(f"SELECT name, amount, born, data, note FROM {T}_crud WHERE id = 7")
        assert cur.fetchone() == (None, None, None, None, None)
        cur.execute("SELECT NULL, 1, NULL, '', NULL")
        assert cur.fetchone() == (None, 1, None, "", None)


def test_utf8mb4_emoji_round_trip_is_byte_exact(conn, tables):
    text = "emoji 😀🐍🚀 ünïcödé 漢字 𝄞"
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM {T}_crud")
        cur.execute(f"INSERT INTO {T}_crud (id, name, note) VALUES (1, %s, %s)", (text[:50], text))
        cur.execute(f"SELECT name, note, CHAR_LENGTH(note), LENGTH(note) FROM {T}_crud")
        assert cur.fetchone() == (text, text, len(text), len(text.encode()))
        cur.execute("SELECT %s", ("🦄",))
        assert cur.fetchone() == ("🦄",)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM no_such_table_pymysql",  # 1146 42S02
        "SELEC 1",  # 1064 42000
        "SELECT no_such_column FROM mysql.user",  # 1054 42S22
        "INSERT INTO client_pymysql_crud (id) VALUES (1), (1)",  # 1062 23000
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom 💥', MYSQL_ERRNO = 1644",
    ],
)
def test_server_error_passes_through_with_the_same_code_and_message(proxy, mariadb, tables, sql):
    def run(port: int) -> tuple[Any, ...]:
        with _open(port) as c, c.cursor() as cur:
            cur.execute(f"DELETE FROM {T}_crud")
            with pytest.raises(pymysql.err.MySQLError) as e:
                cur.execute(sql)
            cur.execute("SELECT 1")  # the connection is still usable
            assert cur.fetchone() == (1,)
            return type(e.value), e.value.args

    via_proxy = run(proxy.port)
    assert via_proxy == run(mariadb.port)
    assert via_proxy[1][0] in (1146, 1064, 1054, 1062, 1644)


def test_server_error_sqlstate_is_relayed_unchanged(conn):
    # pymysql does not expose the SQLSTATE; read the raw ERR packet instead
    conn._execute_command(COMMAND.COM_QUERY, "SELECT * FROM no_such_table_pymysql")
    header = conn._read_bytes(4)
    pkt = conn._read_bytes(int.from_bytes(header[:3], "little"))
    assert pkt[0] == 0xFF
    assert struct.unpack("<H", pkt[1:3])[0] == 1146
    assert pkt[3:9] == b"#42S02"
    assert b"no_such_table_pymysql" in pkt[9:]


def test_multi_statement_query_returns_every_result_in_order(proxy, tables):
    with _open(proxy.port, client_flag=CLIENT.MULTI_STATEMENTS) as c, c.cursor() as cur:
        cur.execute(
            f"DELETE FROM {T}_crud; INSERT INTO {T}_crud (id, name) VALUES (1, 'x'), (2, 'y'); "
            f"SELECT id, name FROM {T}_crud ORDER BY id; SELECT 'done'"
        )
        results = []
        while True:
            results.append((cur.rowcount, tuple(cur.fetchall())))
            if not cur.nextset():
                break
        assert [r[1] for r in results] == [(), (), ((1, "x"), (2, "y")), (("done",),)]
        assert results[1][0] == 2  # affected rows of the INSERT
        cur.execute("SELECT 42")  # nothing left over from the multi-statement
        assert cur.fetchone() == (42,)


def test_multi_statement_query_with_an_error_stops_there_and_reports_it(proxy):
    with _open(proxy.port, client_flag=CLIENT.MULTI_STATEMENTS) as c, c.cursor() as cur:
        cur.execute("SELECT 1; SELECT * FROM no_such_table_pymysql; SELECT 3")
        assert cur.fetchall() == ((1,),)
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.nextset()
        assert e.value.args[0] == 1146
        cur.execute("SELECT 4")
        assert cur.fetchone() == (4,)


def test_stored_procedure_returns_several_result_sets(conn, tables):
    with conn.cursor() as cur:
        cur.callproc(f"{T}_proc", (5,))
        sets = [tuple(cur.fetchall())]
        while cur.nextset():
            sets.append(tuple(cur.fetchall()))
        # three SELECTs, then the CALL's own final OK (an empty result)
        assert sets[:3] == [((5,),), ((6, "two"),), (("three",), ("four",))]
        assert sets[3:] == [()]
        cur.execute("SELECT 'after'")
        assert cur.fetchone() == ("after",)


# -- big packets and LOCAL INFILE ----------------------------------------------------------


def test_row_larger_than_16mib_round_trips_in_both_directions(proxy, tables):
    blob = os.urandom(1 << 20) * 17 + b"tail"  # 17 MiB + 4: two wire packets each way
    with _open(proxy.port, max_allowed_packet=64 << 20) as c, c.cursor() as cur:
        cur.execute(f"DELETE FROM {T}_big")
        cur.execute(f"INSERT INTO {T}_big VALUES (1, %s)", (blob,))
        cur.execute(f"SELECT LENGTH(b), MD5(b) = MD5(%s) FROM {T}_big WHERE id = 1", (blob,))
        assert cur.fetchone() == (len(blob), 1)
        cur.execute(f"SELECT id, b, 'after' FROM {T}_big WHERE id = 1")
        row = cur.fetchone()
        assert row[0] == 1 and row[2] == "after"
        assert len(row[1]) == len(blob) and row[1] == blob
        cur.execute(f"DELETE FROM {T}_big")
        cur.execute("SELECT 'still in sync'")
        assert cur.fetchone() == ("still in sync",)


def test_load_data_local_infile_loads_the_clients_file(proxy, tables, tmp_path: Path):
    path = tmp_path / "rows.tsv"
    rows = [(i, f"name-{i}😀", "\\N" if i % 3 == 0 else str(i * 10)) for i in range(1, 2001)]
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows), encoding="utf-8")
    with _open(proxy.port, local_infile=True) as c, c.cursor() as cur:
        cur.execute(f"DELETE FROM {T}_infile")
        n = cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {T}_infile CHARACTER SET utf8mb4", (str(path),)
        )
        assert n == 2000
        cur.execute(f"SELECT COUNT(*), CAST(SUM(n IS NULL) AS INT), MAX(id) FROM {T}_infile")
        assert cur.fetchone() == (2000, 666, 2000)
        cur.execute(f"SELECT s, n FROM {T}_infile WHERE id IN (3, 4) ORDER BY id")
        assert cur.fetchall() == (("name-3😀", None), ("name-4😀", 40))


def test_load_data_local_infile_of_a_missing_file_fails_cleanly(proxy, tables, tmp_path: Path):
    with _open(proxy.port, local_infile=True) as c, c.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {T}_infile", (str(tmp_path / "missing"),)
            )
        cur.execute("SELECT 'usable'")
        assert cur.fetchone() == ("usable",)


# -- other commands ------------------------------------------------------------------------


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
    if not hasattr(conn, "_execute_command") or not hasattr(conn, "_read_packet"):
        pytest.skip("pymysql exposes no way to send COM_FIELD_LIST")
    assert _field_list(conn, f"{T}_crud") == [b"id", b"name", b"amount", b"born", b"data", b"note"]
    with conn.cursor() as cur:
        cur.execute("SELECT 'in sync'")
        assert cur.fetchone() == ("in sync",)


def test_ping_answers_on_a_live_connection(conn):
    conn.ping(reconnect=False)
    conn.ping(reconnect=False)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_select_db_switches_the_default_database(proxy):
    with _open(proxy.port, database=None) as c, c.cursor() as cur:
        c.select_db("mysql")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("mysql",)
        c.select_db("test")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("test",)
        with pytest.raises(pymysql.err.OperationalError) as e:
            c.select_db("no_such_db_pymysql")
        assert e.value.args[0] == 1049
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("test",)


@pytest.mark.skipif(
    not hasattr(pymysql.connections.Connection, "change_user"),
    reason="pymysql has no COM_CHANGE_USER API",
)
def test_change_user_reauthenticates(conn):  # pragma: no cover - pymysql lacks it today
    conn.change_user(APP_USER, APP_PASSWORD, "test")
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith(APP_USER + "@")


def test_use_without_a_default_database_does_not_leak_to_the_next_client(proxy_factory):
    # Regression: the proxy did not notice `USE db` (a COM_QUERY), believed the released
    # upstream connection had no schema and skipped the COM_CHANGE_USER that clears it.
    p = proxy_factory(upstream={"max_connections": 1})  # the next client gets the same one
    with _open(p.port, database=None) as c, c.cursor() as cur:
        cur.execute("USE mysql")
        first = c.thread_id()
    with _open(p.port, database=None) as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
    with _open(p.port, database="test") as c, c.cursor() as cur:
        cur.execute("USE mysql")
    with _open(p.port, database=None) as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
    assert first
