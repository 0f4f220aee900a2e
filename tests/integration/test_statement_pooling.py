"""Statement pooling (issue #4, /tmp/notes/design.md): like transaction pooling, but a
statement that would open a multi-statement transaction (BEGIN, START TRANSACTION, XA START,
SET autocommit=0) is refused before it reaches the server with ERR 1235 / 42000
"tainted-proxy: transactions are not allowed in statement pooling mode (user 'app'): use
pool_mode = "transaction"". The session stays usable and nothing is left on the server.

mysql-connector is used where the SQLSTATE matters (PyMySQL and mysqlclient drop it).
"""

from __future__ import annotations

import gc
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from .conftest import have_module, open_trx, q

T = "tpstmt"
REFUSED = [
    "BEGIN",
    "begin work",
    "START TRANSACTION",
    "START TRANSACTION READ ONLY",
    "start transaction with consistent snapshot, read write",
    "/* app */ BEGIN",
    "SET autocommit=0",
    "SET @@session.autocommit = OFF",
    "set autocommit = 0",
    "SET SESSION autocommit = 0",
    "XA START 'tpstmt_xa'",
]


def assert_refusal(code: int, message: str) -> None:
    assert code == 1235, (code, message)
    assert "statement pooling mode" in message, message
    assert "transaction" in message, message


@pytest.fixture(scope="module")
def table(app_account) -> Any:
    app_account.execute(f"DROP TABLE IF EXISTS test.{T}_rows")
    app_account.execute(
        f"CREATE TABLE test.{T}_rows (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB"
    )
    return app_account


@pytest.fixture
def stmt_proxy(pooling_proxy) -> Any:
    return pooling_proxy("statement", max_connections=2)


@pytest.mark.skipif(not have_module("mysql.connector"), reason="mysql-connector missing")
@pytest.mark.parametrize("sql", REFUSED)
def test_statement_that_opens_a_transaction_is_refused_with_1235_42000_and_leaves_nothing(
    stmt_proxy, table, session_state, sql
):
    import mysql.connector
    from mysql.connector import errors

    p = stmt_proxy
    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=p.port,
        user="app",
        password="app-secret",
        database="test",
        autocommit=True,
        use_pure=True,
        connection_timeout=10,
    )
    try:
        cur = conn.cursor()
        with pytest.raises(errors.Error) as e:
            cur.execute(sql)
        assert e.value.sqlstate == "42000", e.value
        assert_refusal(e.value.errno, e.value.msg)
        assert "user 'app'" in e.value.msg
        assert 'pool_mode = "transaction"' in e.value.msg
        # still usable, still autocommit, and nothing open anywhere
        cur.execute("SELECT @@autocommit, 1")
        assert cur.fetchall() == [(1, 1)]
        cur.execute(f"INSERT INTO {T}_rows (v) VALUES (1)")
        assert session_state(p, conn.connection_id) == (None, False)
        assert open_trx(table, p.upstream_user) == 0
        assert table.execute("XA RECOVER") == []
        cur.close()
    finally:
        conn.close()


def test_refused_statement_never_reaches_the_server(stmt_proxy, connect, table):
    """A refused SET also assigning a user variable leaves the variable unset: the server
    never ran it (the proxy refuses it whole, it does not strip the autocommit part)."""
    p = stmt_proxy
    with connect(p, autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS) as c:
        with pytest.raises(pymysql.MySQLError) as e:
            q(c, "SET @tpstmt_reached = 1, autocommit = 0")
        assert_refusal(*e.value.args)
        assert q(c, "SELECT @tpstmt_reached, @@autocommit") == ((None, 1),)
        # the client may send batches: this one runs whole (both results come back) ...
        cur = c.cursor()
        cur.execute("SELECT 1; SELECT 2")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == ((2,),)
        assert not cur.nextset()
        cur.close()
        # ... but one opening a transaction is refused, even as a batch head or tail
        for batch in (
            f"BEGIN; INSERT INTO {T}_rows (v) VALUES (99)",
            f"INSERT INTO {T}_rows (v) VALUES (99); START TRANSACTION",
        ):
            with pytest.raises(pymysql.MySQLError) as e:
                q(c, batch)
            assert_refusal(*e.value.args)
            assert q(c, "SELECT @@in_transaction, @@autocommit") == ((0, 1),)
    assert table.execute(f"SELECT COUNT(*) FROM test.{T}_rows WHERE v = 99") == [(0,)]
    assert open_trx(table, p.upstream_user) == 0


def test_autocommit_statements_work_and_are_visible_at_once(stmt_proxy, connect, table):
    p = stmt_proxy
    with connect(p, autocommit=True) as a, connect(p, autocommit=True) as b:
        with a.cursor() as cur:
            cur.execute(f"INSERT INTO {T}_rows (v) VALUES (7)")
            new_id = cur.lastrowid
        assert q(b, f"SELECT v FROM {T}_rows WHERE id = %s", (new_id,)) == ((7,),)
        q(a, f"UPDATE {T}_rows SET v = 8 WHERE id = %s", (new_id,))
        assert q(b, f"SELECT v FROM {T}_rows WHERE id = %s", (new_id,)) == ((8,),)
        # what clients send that does not open a transaction is fine
        q(a, "SET autocommit=1")
        q(a, "set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')")
        q(a, "COMMIT")
        q(a, "ROLLBACK")
        assert q(a, "SELECT @@autocommit, @@sql_mode LIKE '%STRICT_TRANS_TABLES%'") == ((1, 1),)
    assert open_trx(table, p.upstream_user) == 0


DRIVERS = [
    pytest.param("pymysql", id="pymysql"),
    pytest.param(
        "MySQLdb",
        id="mysqlclient",
        marks=pytest.mark.skipif(not have_module("MySQLdb"), reason="mysqlclient not installed"),
    ),
    pytest.param(
        "connector",
        id="connector-pure",
        marks=pytest.mark.skipif(
            not have_module("mysql.connector"), reason="mysql-connector missing"
        ),
    ),
]


@pytest.mark.parametrize("driver", DRIVERS)
def test_default_autocommit_off_clients_get_the_refusal_at_connect(
    stmt_proxy, table, wait_until, driver
):
    """PyMySQL and mysqlclient default to autocommit=False and mysql-connector is told so:
    each sends SET autocommit=0 right after logging in, so connect() itself fails with the
    refusal (PyMySQL: NotSupportedError 1235) -- not a hang, not a half-open session."""
    p = stmt_proxy
    args = {
        "host": "127.0.0.1",
        "port": p.port,
        "user": "app",
        "password": "app-secret",
        "database": "test",
    }
    if driver == "pymysql":
        with pytest.raises(pymysql.err.NotSupportedError) as e:
            pymysql.connect(connect_timeout=10, **args)
        code, message = e.value.args[0], e.value.args[1]
    elif driver == "MySQLdb":
        import MySQLdb

        with pytest.raises(MySQLdb.MySQLError) as e:
            MySQLdb.connect(connect_timeout=10, **args)
        code, message = e.value.args[0], e.value.args[1]
    else:
        import mysql.connector
        from mysql.connector import errors

        with pytest.raises(errors.Error) as e:
            mysql.connector.connect(use_pure=True, autocommit=False, **args)
        code, message = e.value.errno, e.value.msg
        assert e.value.sqlstate == "42000"
    del e  # its traceback holds the half-made connection object
    gc.collect()
    assert_refusal(code, message)
    wait_until(lambda: p.call(lambda: len(p.proxy.sessions)) == 0, 5, "the session ended")
    assert open_trx(table, p.upstream_user) == 0
    # the proxy is fine for the next client
    with pymysql.connect(connect_timeout=10, autocommit=True, **args) as c:
        assert q(c, "SELECT 1") == ((1,),)


def test_a_pinned_session_is_refused_begin_too(stmt_proxy, connect, table):
    c = connect(stmt_proxy, autocommit=True)
    try:
        q(c, "CREATE TEMPORARY TABLE scratch (a int)")  # pins the session
        with pytest.raises(pymysql.err.MySQLError) as exc:
            q(c, "BEGIN")
        assert_refusal(*exc.value.args)
        q(c, "INSERT INTO scratch VALUES (1)")
        assert q(c, "SELECT @@in_transaction, COUNT(*) FROM scratch") == ((0, 1),)
    finally:
        c.close()
