"""mysqlclient (MySQLdb, on MariaDB Connector/C) through the proxy (session pooling): what an
application using it relies on works unchanged, and server errors reach it exactly as the
server sent them (compared with the same statement run directly against the private server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MySQLdb = pytest.importorskip("MySQLdb")
from MySQLdb.constants import CLIENT  # noqa: E402

APP_USER, APP_PASSWORD = "app", "app-secret"  # the proxy fixture's user (conftest)
T = "client_mysqlclient"  # table/procedure prefix unique to this file


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
    if args["database"] is None:
        del args["database"]
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


@pytest.fixture(scope="module")
def tables(app_account) -> None:
    app_account.execute(f"DROP TABLE IF EXISTS test.{T}_crud, test.{T}_infile, test.{T}_big")
    app_account.execute(f"CREATE TABLE test.{T}_big (id INT PRIMARY KEY, b LONGBLOB)")
    app_account.execute(
        f"CREATE TABLE test.{T}_crud (id INT PRIMARY KEY, name VARCHAR(50), "
        "amount DECIMAL(10,2), born DATE, data BLOB, note TEXT) CHARSET utf8mb4"
    )
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
    c = _open(proxy.port, database="test")
    try:
        cur = c.cursor()
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("test",)
    finally:
        c.close()


def test_connect_without_default_database_has_none_and_select_db_picks_one(proxy):
    c = _open(proxy.port, database=None)
    try:
        cur = c.cursor()
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
        assert _error(cur.execute, "SELECT * FROM some_table")[1][0] == 1046
        c.select_db("mysql")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("mysql",)
        assert _error(c.select_db, "no_such_db_mysqlclient")[1][0] == 1049
    finally:
        c.close()


def test_wrong_password_is_refused_with_1045_and_the_servers_message(proxy, mariadb):
    via_proxy = _error(_open, proxy.port, password="wrong")
    assert via_proxy[1][0] == 1045
    assert via_proxy == _error(_open, mariadb.port, password="wrong")


def test_unknown_database_is_refused_with_1049_and_the_servers_message(proxy, mariadb):
    via_proxy = _error(_open, proxy.port, database="no_such_db_mysqlclient")
    assert via_proxy[1][0] == 1049
    assert via_proxy == _error(_open, mariadb.port, database="no_such_db_mysqlclient")


def test_get_server_info_reports_the_upstream_servers_version(proxy, mariadb, conn):
    direct = _open(mariadb.port)
    try:
        assert conn.get_server_info() == direct.get_server_info()
        assert "MariaDB" in conn.get_server_info()
    finally:
        direct.close()


# -- queries -------------------------------------------------------------------------------


def test_crud_insert_select_update_delete(conn, tables):
    cur = conn.cursor()
    cur.execute(f"DELETE FROM {T}_crud")
    n = cur.executemany(
        f"INSERT INTO {T}_crud (id, name, amount, born, data, note) VALUES (%s,%s,%s,%s,%s,%s)",
        [
            (1, "alice", "12.50", "1990-01-02", b"\x00\x01\xff'\\", "a"),
            (2, "bob", "0.99", "2000-12-31", b"", "b"),
        ],
    )
    assert n == 2
    cur.execute(
        f"SELECT id, name, CAST(amount AS CHAR), CAST(born AS CHAR), data FROM {T}_crud ORDER BY id"
    )
    assert cur.fetchall() == (
        (1, "alice", "12.50", "1990-01-02", b"\x00\x01\xff'\\"),
        (2, "bob", "0.99", "2000-12-31", b""),
    )
    assert cur.execute(f"UPDATE {T}_crud SET name = %s WHERE id = %s", ("carol", 2)) == 1
    cur.execute(f"SELECT name FROM {T}_crud WHERE id = 2")
    assert cur.fetchone() == ("carol",)
    assert cur.execute(f"DELETE FROM {T}_crud WHERE id = 1") == 1
    cur.execute(f"SELECT COUNT(*) FROM {T}_crud")
    assert cur.fetchone() == (1,)


def test_transaction_rollback_discards_the_changes(proxy, tables):
    c = _open(proxy.port, autocommit=False)
    try:
        cur = c.cursor()
        cur.execute(f"DELETE FROM {T}_crud")
        c.commit()
        cur.execute(f"INSERT INTO {T}_crud (id) VALUES (1)")
        c.rollback()
        cur.execute(f"SELECT COUNT(*) FROM {T}_crud")
        assert cur.fetchone() == (0,)
    finally:
        c.close()


def test_nulls_round_trip_in_every_column_and_as_parameters(conn, tables):
    cur = conn.cursor()
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
    cur = conn.cursor()
    cur.execute(f"DELETE FROM {T}_crud")
    cur.execute(f"INSERT INTO {T}_crud (id, name, note) VALUES (1, %s, %s)", (text, text))
    cur.execute(f"SELECT name, note, CHAR_LENGTH(note), LENGTH(note) FROM {T}_crud")
    assert cur.fetchone() == (text, text, len(text), len(text.encode()))
    assert conn.character_set_name() == "utf8mb4"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM no_such_table_mysqlclient",  # 1146 42S02
        "SELEC 1",  # 1064 42000
        "SELECT no_such_column FROM mysql.user",  # 1054 42S22
        "INSERT INTO client_mysqlclient_crud (id) VALUES (1), (1)",  # 1062 23000
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom 💥', MYSQL_ERRNO = 1644",
    ],
)
def test_server_error_passes_through_with_the_same_code_sqlstate_and_message(
    proxy, mariadb, tables, sql
):
    def run(port: int) -> tuple[Any, ...]:
        c = _open(port)
        try:
            cur = c.cursor()
            cur.execute(f"DELETE FROM {T}_crud")
            err = _error(cur.execute, sql)
            state = c.sqlstate()
            cur.execute("SELECT 1")  # the connection is still usable
            assert cur.fetchone() == (1,)
            return err, state
        finally:
            c.close()

    via_proxy = run(proxy.port)
    assert via_proxy == run(mariadb.port)
    assert via_proxy[1] in ("42S02", "42000", "42S22", "23000", "45000")


def test_multi_statement_query_returns_every_result_in_order(conn, tables):
    assert conn.client_flag & CLIENT.MULTI_STATEMENTS  # mysqlclient's default
    cur = conn.cursor()
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
    cur.execute("SELECT 42")
    assert cur.fetchone() == (42,)


def test_set_server_option_turns_multi_statements_off_and_on(conn):
    multi_on, multi_off = 0, 1  # enum_mysql_set_option (COM_SET_OPTION)
    cur = conn.cursor()
    conn.set_server_option(multi_off)
    assert _error(cur.execute, "SELECT 1; SELECT 2")[1][0] == 1064
    conn.set_server_option(multi_on)
    cur.execute("SELECT 1; SELECT 2")
    assert cur.fetchall() == ((1,),)
    assert cur.nextset() and cur.fetchall() == ((2,),)


def test_stored_procedure_returns_several_result_sets(conn, tables):
    cur = conn.cursor()
    cur.callproc(f"{T}_proc", (5,))
    sets = [tuple(cur.fetchall())]
    while cur.nextset():
        sets.append(tuple(cur.fetchall()))
    # three SELECTs, then the CALL's own final OK (an empty result)
    assert sets == [((5,),), ((6, "two"),), (("three",), ("four",)), ()]
    cur.execute("SELECT 'after'")
    assert cur.fetchone() == ("after",)


def test_load_data_local_infile_loads_the_clients_file(proxy, tables, tmp_path: Path):
    path = tmp_path / "rows.tsv"
    rows = [(i, f"name-{i}😀", "\\N" if i % 3 == 0 else str(i * 10)) for i in range(1, 2001)]
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows), encoding="utf-8")
    c = _open(proxy.port, local_infile=1)
    try:
        cur = c.cursor()
        cur.execute(f"DELETE FROM {T}_infile")
        n = cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {T}_infile CHARACTER SET utf8mb4", (str(path),)
        )
        assert n == 2000
        cur.execute(f"SELECT COUNT(*), CAST(SUM(n IS NULL) AS INT), MAX(id) FROM {T}_infile")
        assert cur.fetchone() == (2000, 666, 2000)
        cur.execute(f"SELECT s, n FROM {T}_infile WHERE id IN (3, 4) ORDER BY id")
        assert cur.fetchall() == (("name-3😀", None), ("name-4😀", 40))
    finally:
        c.close()


def test_row_larger_than_16mib_round_trips_in_both_directions(proxy, tables):
    blob = os.urandom(1 << 20) * 17 + b"tail"
    c = _open(proxy.port)
    try:
        cur = c.cursor()
        cur.execute(f"DELETE FROM {T}_big")
        cur.execute(f"INSERT INTO {T}_big VALUES (1, %s)", (blob,))
        cur.execute(f"SELECT LENGTH(b), b, 'after' FROM {T}_big")
        n, back, after = cur.fetchone()
        assert (n, after) == (len(blob), "after") and back == blob
        cur.execute(f"DELETE FROM {T}_big")
    finally:
        c.close()


# -- other commands ------------------------------------------------------------------------


def test_ping_answers_on_a_live_connection(conn):
    conn.ping()
    conn.ping()
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)


def test_stat_returns_the_servers_status_line(conn):
    assert conn.stat().startswith("Uptime:")


def test_change_user_reauthenticates_and_starts_a_fresh_session(conn):
    if not hasattr(conn, "change_user"):
        pytest.skip("this MySQLdb has no change_user")
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
    if not hasattr(conn, "change_user"):
        pytest.skip("this MySQLdb has no change_user")
    assert _error(conn.change_user, APP_USER, "wrong", "test")[1][0] == 1045
