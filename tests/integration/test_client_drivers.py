"""DB-API drivers through the proxy (session pooling): one suite, run with pymysql, mysqlclient
(MySQLdb, on MariaDB Connector/C) and mysql-connector-python (pure Python and C extension).
What an application relies on works unchanged, and server errors reach it exactly as the
server sent them (compared with the same statement run by the same driver directly against
the private server).

Each driver is reached through a small adapter (``Driver``) for what DB-API leaves open:
connect arguments, error fields, COM_INIT_DB, stored procedure results. What only one driver
can do stays in its own file (test_client_pymysql.py, test_client_mysqlclient.py,
test_client_mysql_connector.py)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from .conftest import have_module

APP_USER, APP_PASSWORD = "app", "app-secret"  # the proxy fixture's user (conftest)
T = "client_drivers"  # table/procedure prefix unique to this file

Rows = tuple[tuple[Any, ...], ...]


def rows(cur: Any) -> Rows:
    """Every row of the current result, as tuples (drivers give tuples or lists of them)."""
    return tuple(tuple(r) for r in cur.fetchall())


class Driver:
    """What the tests need from a driver beyond DB-API."""

    name: str
    Error: type[BaseException] | tuple[type[BaseException], ...]
    #: the driver tells the SQLSTATE of a refused login / of a failed statement
    login_sqlstate = False
    query_sqlstate = False
    #: what follows a procedure's result sets (the CALL's own final OK, if the driver shows it)
    after_call: tuple[Rows, ...] = ((),)

    def open(
        self,
        port: int,
        *,
        database: str | None = "test",
        password: str = APP_PASSWORD,
        autocommit: bool = True,
        multi_statements: bool = False,
        local_infile: bool = False,
    ) -> Any:
        raise NotImplementedError

    def error(self, conn: Any, exc: BaseException) -> tuple[type, int, str | None, str]:
        """``(type, errno, sqlstate or None, message)`` of an error ``conn`` got."""
        return type(exc), exc.args[0], None, exc.args[1]

    def select_db(self, conn: Any, name: str) -> None:  # COM_INIT_DB
        conn.select_db(name)

    def charset(self, conn: Any) -> str:
        return conn.charset

    def ping(self, conn: Any) -> None:
        conn.ping(reconnect=False)

    def server_info(self, conn: Any) -> str:
        return conn.get_server_info()

    def call(self, cur: Any, proc: str, args: tuple[Any, ...]) -> list[Rows]:
        """Every result set of ``CALL proc(args)`` (DB-API ``callproc``)."""
        cur.callproc(proc, args)
        sets = [rows(cur)]
        while cur.nextset():
            sets.append(rows(cur))
        return sets

    def __repr__(self) -> str:
        return self.name


class PyMySQL(Driver):
    name = "pymysql"
    Error = pymysql.MySQLError

    def open(self, port: int, **kw: Any) -> Any:
        from pymysql.constants import CLIENT

        database = kw.pop("database", "test")
        multi = kw.pop("multi_statements", False)
        return pymysql.connect(
            host="127.0.0.1",
            port=port,
            user=APP_USER,
            password=kw.pop("password", APP_PASSWORD),
            database=database,
            charset="utf8mb4",
            autocommit=kw.pop("autocommit", True),
            client_flag=CLIENT.MULTI_STATEMENTS if multi else 0,
            local_infile=kw.pop("local_infile", False),
            max_allowed_packet=64 << 20,  # pymysql's own limit is 16 MiB
            connect_timeout=10,
            read_timeout=60,
            write_timeout=60,
            **kw,
        )


class MySQLdbDriver(Driver):
    name = "mysqlclient"
    query_sqlstate = True

    def __init__(self) -> None:
        import MySQLdb

        self.MySQLdb = MySQLdb
        self.Error = MySQLdb.MySQLError

    def open(self, port: int, **kw: Any) -> Any:
        args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "user": APP_USER,
            "password": kw.pop("password", APP_PASSWORD),
            "charset": "utf8mb4",
            "autocommit": kw.pop("autocommit", True),
            "local_infile": 1 if kw.pop("local_infile", False) else 0,
            "connect_timeout": 10,
            "read_timeout": 60,
            "write_timeout": 60,
        }
        kw.pop("multi_statements", None)  # always on: mysqlclient's default client flags
        database = kw.pop("database", "test")
        if database is not None:
            args["database"] = database
        args.update(kw)
        return self.MySQLdb.connect(**args)

    def error(self, conn: Any, exc: BaseException) -> tuple[type, int, str | None, str]:
        return type(exc), exc.args[0], conn.sqlstate() if conn is not None else None, exc.args[1]

    def charset(self, conn: Any) -> str:
        return conn.character_set_name()

    def ping(self, conn: Any) -> None:
        conn.ping()


class Connector(Driver):
    login_sqlstate = True
    query_sqlstate = True
    after_call = ()  # stored_results() holds the procedure's result sets only

    def __init__(self, use_pure: bool) -> None:
        import mysql.connector
        from mysql.connector import errors

        self.connector = mysql.connector
        self.use_pure = use_pure
        self.name = "connector-pure" if use_pure else "connector-cext"
        self.Error = errors.Error
        if not use_pure:
            # the C extension's nextset() lets the server's ERR out unconverted, as the
            # _mysql_connector exception (with errno, sqlstate and msg all the same)
            import _mysql_connector

            self.Error = (errors.Error, _mysql_connector.MySQLInterfaceError)  # type: ignore[assignment]

    def open(self, port: int, **kw: Any) -> Any:
        args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "user": APP_USER,
            "password": kw.pop("password", APP_PASSWORD),
            "charset": "utf8mb4",
            "collation": "utf8mb4_general_ci",
            "autocommit": kw.pop("autocommit", True),
            "allow_local_infile": kw.pop("local_infile", False),
            "use_pure": self.use_pure,
            "connection_timeout": 10,
        }
        kw.pop("multi_statements", None)  # execute() sends batches as they are
        database = kw.pop("database", "test")
        if database is not None:
            args["database"] = database
        args.update(kw)
        return self.connector.connect(**args)

    def error(self, conn: Any, exc: BaseException) -> tuple[type, int, str | None, str]:
        return type(exc), exc.errno, exc.sqlstate, exc.msg

    def server_info(self, conn: Any) -> str:
        return conn.server_info

    def select_db(self, conn: Any, name: str) -> None:
        conn.cmd_init_db(name)  # (the `database` setter sends USE instead)

    def call(self, cur: Any, proc: str, args: tuple[Any, ...]) -> list[Rows]:
        cur.callproc(proc, args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # stored_results(): 9.x
            return [rows(r) for r in cur.stored_results()]


def _cext_importable() -> bool:
    if not have_module("mysql.connector"):
        return False
    import mysql.connector

    return bool(mysql.connector.HAVE_CEXT)


DRIVERS = [
    pytest.param(PyMySQL, id="pymysql"),
    pytest.param(
        MySQLdbDriver,
        id="mysqlclient",
        marks=pytest.mark.skipif(not have_module("MySQLdb"), reason="mysqlclient not installed"),
    ),
    pytest.param(
        lambda: Connector(use_pure=True),
        id="connector-pure",
        marks=pytest.mark.skipif(
            not have_module("mysql.connector"), reason="mysql-connector not installed"
        ),
    ),
    pytest.param(
        lambda: Connector(use_pure=False),
        id="connector-cext",
        marks=pytest.mark.skipif(
            not _cext_importable(),
            reason="mysql-connector C extension not importable here (_mysql_connector)",
        ),
    ),
]


@pytest.fixture(params=DRIVERS)
def driver(request) -> Driver:
    return request.param()


@pytest.fixture
def conn(proxy, driver) -> Iterator[Any]:
    c = driver.open(proxy.port)
    try:
        yield c
    finally:
        c.close()


def refused(d: Driver, fn: Any, *args: Any, **kw: Any) -> tuple[type, int, str | None, str]:
    """The error ``fn(*args, **kw)`` raises (a login: no connection to ask for more)."""
    with pytest.raises(d.Error) as e:
        fn(*args, **kw)
    return d.error(None, e.value)


def failed(d: Driver, conn: Any, cur: Any, sql: str) -> tuple[type, int, str | None, str]:
    """The error running ``sql`` on ``cur`` raises."""
    with pytest.raises(d.Error) as e:
        cur.execute(sql)
    return d.error(conn, e.value)


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


def test_connect_with_default_database_starts_in_that_database(proxy, driver):
    c = driver.open(proxy.port, database="test")
    try:
        cur = c.cursor()
        cur.execute("SELECT DATABASE()")
        assert rows(cur) == (("test",),)
    finally:
        c.close()


def test_connect_without_default_database_has_none_and_use_or_init_db_picks_one(proxy, driver):
    c = driver.open(proxy.port, database=None)
    try:
        cur = c.cursor()
        cur.execute("SELECT DATABASE()")
        assert rows(cur) == ((None,),)
        assert failed(driver, c, cur, "SELECT * FROM some_table")[1] == 1046  # No database
        cur.execute("USE mysql")  # COM_QUERY
        cur.execute("SELECT DATABASE()")
        assert rows(cur) == (("mysql",),)
        driver.select_db(c, "test")  # COM_INIT_DB
        cur.execute("SELECT DATABASE()")
        assert rows(cur) == (("test",),)
        with pytest.raises(driver.Error) as e:
            driver.select_db(c, "no_such_db_drivers")
        assert driver.error(c, e.value)[1] == 1049
        cur.execute("SELECT DATABASE()")
        assert rows(cur) == (("test",),)
    finally:
        c.close()


def test_wrong_password_is_refused_with_1045_and_the_servers_message(proxy, mariadb, driver):
    via_proxy = refused(driver, driver.open, proxy.port, password="wrong")
    assert via_proxy[1:3] == (1045, "28000" if driver.login_sqlstate else None)
    assert "Access denied" in via_proxy[3]
    assert via_proxy == refused(driver, driver.open, mariadb.port, password="wrong")


def test_unknown_database_is_refused_with_1049_and_the_servers_message(proxy, mariadb, driver):
    via_proxy = refused(driver, driver.open, proxy.port, database="no_such_db_drivers")
    assert via_proxy[1:3] == (1049, "42000" if driver.login_sqlstate else None)
    assert "no_such_db_drivers" in via_proxy[3]
    assert via_proxy == refused(driver, driver.open, mariadb.port, database="no_such_db_drivers")


def test_get_server_info_reports_the_upstream_servers_version(mariadb, driver, conn):
    direct = driver.open(mariadb.port)
    try:
        assert driver.server_info(conn) == driver.server_info(direct)
        assert "MariaDB" in driver.server_info(conn)
    finally:
        direct.close()


# -- queries -------------------------------------------------------------------------------


def test_crud_insert_select_update_delete(conn, tables):
    cur = conn.cursor()
    cur.execute(f"DELETE FROM {T}_crud")
    cur.executemany(
        f"INSERT INTO {T}_crud (id, name, amount, born, data, note) VALUES (%s,%s,%s,%s,%s,%s)",
        [
            (1, "alice", "12.50", "1990-01-02", b"\x00\x01\xff'\\", "a"),
            (2, "bob", "0.99", "2000-12-31", b"", "b"),
        ],
    )
    assert cur.rowcount == 2
    cur.execute(
        f"SELECT id, name, CAST(amount AS CHAR), CAST(born AS CHAR), data FROM {T}_crud ORDER BY id"
    )
    assert rows(cur) == (
        (1, "alice", "12.50", "1990-01-02", b"\x00\x01\xff'\\"),
        (2, "bob", "0.99", "2000-12-31", b""),
    )
    cur.execute(f"UPDATE {T}_crud SET name = %s WHERE id = %s", ("carol", 2))
    assert cur.rowcount == 1
    cur.execute(f"SELECT name FROM {T}_crud WHERE id = 2")
    assert rows(cur) == (("carol",),)
    cur.execute(f"DELETE FROM {T}_crud WHERE id = 1")
    assert cur.rowcount == 1
    cur.execute(f"SELECT id, name FROM {T}_crud")
    assert rows(cur) == ((2, "carol"),)


def test_transaction_rollback_discards_the_changes(proxy, driver, tables):
    c = driver.open(proxy.port, autocommit=False)
    try:
        cur = c.cursor()
        cur.execute(f"DELETE FROM {T}_crud")
        c.commit()
        cur.execute(f"INSERT INTO {T}_crud (id) VALUES (1)")
        cur.execute(f"SELECT COUNT(*) FROM {T}_crud")
        assert rows(cur) == ((1,),)  # the transaction sees its own row ...
        c.rollback()
        cur.execute(f"SELECT COUNT(*) FROM {T}_crud")
        assert rows(cur) == ((0,),)  # ... which the rollback took away
    finally:
        c.close()


def test_nulls_round_trip_in_every_column_and_as_parameters(conn, tables):
    cur = conn.cursor()
    cur.execute(f"DELETE FROM {T}_crud")
    cur.execute(
        f"INSERT INTO {T}_crud VALUES (%s,%s,%s,%s,%s,%s)", (7, None, None, None, None, None)
    )
    cur.execute(f"SELECT name, amount, born, data, note FROM {T}_crud WHERE id = 7")
    assert rows(cur) == ((None, None, None, None, None),)
    cur.execute("SELECT NULL, 1, NULL, '', NULL")
    assert rows(cur) == ((None, 1, None, "", None),)


def test_utf8mb4_emoji_round_trip_is_byte_exact(driver, conn, tables):
    text = "emoji 😀🐍🚀 ünïcödé 漢字 𝄞"
    cur = conn.cursor()
    cur.execute(f"DELETE FROM {T}_crud")
    cur.execute(f"INSERT INTO {T}_crud (id, name, note) VALUES (1, %s, %s)", (text, text))
    cur.execute(f"SELECT name, note, CHAR_LENGTH(note), LENGTH(note) FROM {T}_crud")
    assert rows(cur) == ((text, text, len(text), len(text.encode())),)
    cur.execute("SELECT %s", ("🦄",))
    assert rows(cur) == (("🦄",),)
    assert driver.charset(conn) == "utf8mb4"


@pytest.mark.parametrize(
    ("sql", "code", "sqlstate"),
    [
        ("SELECT * FROM no_such_table_drivers", 1146, "42S02"),
        ("SELEC 1", 1064, "42000"),
        ("SELECT no_such_column FROM mysql.user", 1054, "42S22"),
        (f"INSERT INTO {T}_crud (id) VALUES (1), (1)", 1062, "23000"),
        (
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom 💥', MYSQL_ERRNO = 1644",
            1644,
            "45000",
        ),
    ],
    ids=["1146", "1064", "1054", "1062", "signal-1644"],
)
def test_server_error_passes_through_with_the_same_code_sqlstate_and_message(
    proxy, mariadb, driver, tables, sql, code, sqlstate
):
    def run(port: int) -> tuple[Any, ...]:
        c = driver.open(port)
        try:
            cur = c.cursor()
            cur.execute(f"DELETE FROM {T}_crud")
            err = failed(driver, c, cur, sql)
            cur.execute("SELECT 1")  # the connection is still usable
            assert rows(cur) == ((1,),)
            return err
        finally:
            c.close()

    via_proxy = run(proxy.port)
    assert via_proxy == run(mariadb.port)
    # pymysql does not tell the SQLSTATE: test_client_pymysql.py reads the raw ERR packet
    assert via_proxy[1:3] == (code, sqlstate if driver.query_sqlstate else None)
    if code == 1644:
        assert via_proxy[3].startswith("custom ")  # the server sends the emoji as '?'


def all_results(cur: Any) -> list[Any]:
    """Each result of a batch: its rows, or its affected-row count when it has none."""
    out: list[Any] = []
    while True:
        out.append(rows(cur) if cur.description else cur.rowcount)
        if not cur.nextset():
            return out


def test_multi_statement_query_returns_every_result_in_order(proxy, driver, tables):
    c = driver.open(proxy.port, multi_statements=True)
    try:
        cur = c.cursor()
        cur.execute(
            f"DELETE FROM {T}_crud; INSERT INTO {T}_crud (id, name) VALUES (1, 'x'), (2, 'y'); "
            f"SELECT id, name FROM {T}_crud ORDER BY id; SELECT 'done'"
        )
        results = all_results(cur)
        assert isinstance(results[0], int)  # the DELETE: no result set
        assert results[1:] == [2, ((1, "x"), (2, "y")), (("done",),)]
        cur.execute("SELECT 42")  # nothing left over from the multi-statement
        assert rows(cur) == ((42,),)
    finally:
        c.close()


def test_multi_statement_query_with_an_error_stops_there_and_reports_it(proxy, driver):
    c = driver.open(proxy.port, multi_statements=True)
    try:
        cur = c.cursor()
        got: list[Any] = []
        with pytest.raises(driver.Error) as e:
            cur.execute("SELECT 1; SELECT * FROM no_such_table_drivers; SELECT 3")
            while True:
                got.append(rows(cur))
                cur.nextset()
        assert driver.error(c, e.value)[1] == 1146
        assert got == [((1,),)]  # the first result, then the error; never the third
        cur = c.cursor()
        cur.execute("SELECT 4")
        assert rows(cur) == ((4,),)
    finally:
        c.close()


def test_stored_procedure_returns_several_result_sets(driver, conn, tables):
    cur = conn.cursor()
    sets = driver.call(cur, f"{T}_proc", (5,))
    assert sets == [((5,),), ((6, "two"),), (("three",), ("four",)), *driver.after_call]
    cur = conn.cursor()
    cur.execute("SELECT 'after'")
    assert rows(cur) == (("after",),)


# -- big packets and LOCAL INFILE ----------------------------------------------------------


def test_row_larger_than_16mib_round_trips_in_both_directions(proxy, driver, tables):
    blob = os.urandom(1 << 20) * 17 + b"tail"  # 17 MiB + 4: two wire packets each way
    c = driver.open(proxy.port)
    try:
        cur = c.cursor()
        cur.execute(f"DELETE FROM {T}_big")
        cur.execute(f"INSERT INTO {T}_big VALUES (1, %s)", (blob,))
        cur.execute(f"SELECT LENGTH(b), MD5(b) = MD5(%s) FROM {T}_big WHERE id = 1", (blob,))
        assert rows(cur) == ((len(blob), 1),)
        cur.execute(f"SELECT id, b, 'after' FROM {T}_big WHERE id = 1")
        ((n, back, after),) = rows(cur)
        assert (n, after) == (1, "after")
        assert len(back) == len(blob) and bytes(back) == blob
        cur.execute(f"DELETE FROM {T}_big")
        cur.execute("SELECT 'still in sync'")
        assert rows(cur) == (("still in sync",),)
    finally:
        c.close()


def test_load_data_local_infile_loads_the_clients_file(proxy, driver, tables, tmp_path: Path):
    path = tmp_path / "rows.tsv"
    data = [(i, f"name-{i}😀", "\\N" if i % 3 == 0 else str(i * 10)) for i in range(1, 2001)]
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in data), encoding="utf-8")
    c = driver.open(proxy.port, local_infile=True)
    try:
        cur = c.cursor()
        cur.execute(f"DELETE FROM {T}_infile")
        cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {T}_infile CHARACTER SET utf8mb4", (str(path),)
        )
        assert cur.rowcount == 2000
        cur.execute(f"SELECT COUNT(*), CAST(SUM(n IS NULL) AS INT), MAX(id) FROM {T}_infile")
        assert rows(cur) == ((2000, 666, 2000),)
        cur.execute(f"SELECT s, n FROM {T}_infile WHERE id IN (3, 4) ORDER BY id")
        assert rows(cur) == (("name-3😀", None), ("name-4😀", 40))
    finally:
        c.close()


# Not connector-pure: it raises InterfaceError without sending the server the empty packet
# that ends the file, so its next command (is_connected()'s COM_PING) waits forever, directly
# against the server too.
@pytest.mark.parametrize("driver", [d for d in DRIVERS if d.id != "connector-pure"], indirect=True)
def test_load_data_local_infile_of_a_missing_file_fails_cleanly(
    proxy, driver, tables, tmp_path: Path
):
    c = driver.open(proxy.port, local_infile=True)
    try:
        cur = c.cursor()
        cur.execute(f"DELETE FROM {T}_infile")
        with pytest.raises(driver.Error):
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {T}_infile", (str(tmp_path / "missing"),)
            )
        cur = c.cursor()
        cur.execute(f"SELECT 'usable', COUNT(*) FROM {T}_infile")
        assert rows(cur) == (("usable", 0),)
    finally:
        c.close()


# -- other commands ------------------------------------------------------------------------


def test_ping_answers_on_a_live_connection(driver, conn):
    driver.ping(conn)
    driver.ping(conn)
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert rows(cur) == ((1,),)
