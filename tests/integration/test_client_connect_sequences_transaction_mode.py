"""What real clients and ORMs send on connect and around their transactions
(../shared/reference/client-init-statements.md) pins nothing in transaction pooling mode, and
sessions that went through the same connect sequence carry the same settings: once warm, they
are served by the exact sub-pool of those settings, with no SET round trip
(/tmp/notes/design.md: pool.stats.settings_applied / exact_hits).

Each client kind connects twice (round 1, round 2) and runs its per-transaction pattern. The
warm check then alternates the two sessions of the kind: after the first checkout (which may
have to bring a connection to the kind's settings), every checkout must be an exact match.
The connect sequences themselves are not counted there: a fresh session starts from the
login's settings and each ``SET`` moves it on, so the connection it uses is converged at most
once per step whatever the pool holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest

from .conftest import have_module

APP_USER, APP_PASSWORD = "app", "app-secret"
T = "tpseq"  # table prefix unique to this file


HAVE_MYSQLDB = have_module("MySQLdb")
HAVE_CONNECTOR = have_module("mysql.connector")
HAVE_SQLALCHEMY = have_module("sqlalchemy")
if HAVE_CONNECTOR:
    import mysql.connector

    HAVE_CEXT = bool(mysql.connector.HAVE_CEXT)
else:  # pragma: no cover - the test extra installs it
    HAVE_CEXT = False


def run(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """One statement on any DB-API connection (pymysql, MySQLdb, mysql-connector)."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        if getattr(cur, "with_rows", cur.description is not None):
            return [tuple(r) for r in cur.fetchall()]
        return []
    finally:
        cur.close()


def dbapi_args(port: int, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": APP_USER,
        "password": APP_PASSWORD,
        "database": "test",
        "charset": "utf8mb4",
        "connect_timeout": 10,
    }
    args.update(kw)
    return args


# -- the clients ----------------------------------------------------------------------------


def pymysql_open(port: int, **kw: Any) -> Any:
    return pymysql.connect(**dbapi_args(port, **kw))


def mysqldb_open(port: int, **kw: Any) -> Any:
    import MySQLdb

    return MySQLdb.connect(**dbapi_args(port, **kw))


def connector_open(port: int, use_pure: bool) -> Any:
    # autocommit left at the library default (off): SET @@session.autocommit = OFF /
    # set autocommit=0, after SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'
    return mysql.connector.connect(
        host="127.0.0.1",
        port=port,
        user=APP_USER,
        password=APP_PASSWORD,
        database="test",
        charset="utf8mb4",
        collation="utf8mb4_general_ci",
        use_pure=use_pure,
        connection_timeout=10,
    )


def dbapi_transaction(conn: Any) -> None:
    """DB-API with autocommit off: the first statement opens the transaction, commit()."""
    assert run(conn, f"SELECT COUNT(*) FROM {T}_rows") == [(3,)]
    run(conn, f"UPDATE {T}_rows SET n = n + 1 WHERE id = 1")
    conn.commit()
    conn.rollback()  # PyMySQL / SQLAlchemy send ROLLBACK even when nothing happened


def autocommit_statements(conn: Any) -> None:
    assert run(conn, f"SELECT COUNT(*) FROM {T}_rows") == [(3,)]
    run(conn, f"UPDATE {T}_rows SET n = n + 1 WHERE id = 2")


def django_open(port: int) -> Any:
    """Django 5.2's mysql backend on mysqlclient: SET NAMES utf8mb4 and SET autocommit=0
    (the driver), SET autocommit=1, its one probe, then its default isolation level."""
    conn = mysqldb_open(port)
    conn.autocommit(True)  # SET autocommit=1
    run(
        conn,
        "SELECT VERSION(), @@sql_mode, @@default_storage_engine, @@sql_auto_is_null, "
        "@@lower_case_table_names, "
        "CONVERT_TZ('2001-01-01 01:00:00', 'UTC', 'UTC') IS NOT NULL",
    )
    run(conn, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return conn


def django_atomic(conn: Any) -> None:
    """transaction.atomic() with a nested atomic block (savepoint)."""
    conn.autocommit(False)  # SET autocommit=0
    assert run(conn, f"SELECT COUNT(*) FROM {T}_rows") == [(3,)]
    run(conn, "SAVEPOINT `s140_x1`")
    run(conn, f"UPDATE {T}_rows SET n = n + 1 WHERE id = 3")
    run(conn, "RELEASE SAVEPOINT `s140_x1`")
    conn.commit()
    conn.autocommit(True)  # SET autocommit=1
    autocommit_statements(conn)


def connector_j_open(port: int) -> Any:
    """MariaDB Connector/J 2.7's connect statements (pymysql sends them; autocommit=None:
    PyMySQL then sends no SET AUTOCOMMIT of its own)."""
    conn = pymysql_open(port, autocommit=None)
    run(conn, "set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')")
    run(
        conn,
        "SELECT @@max_allowed_packet,@@system_time_zone,@@time_zone,@@auto_increment_increment",
    )
    return conn


def connector_j_transaction(conn: Any) -> None:
    """setAutoCommit(false) ... commit(): COMMIT only because the status flags say so."""
    run(conn, "set autocommit=0")
    assert run(conn, f"SELECT COUNT(*) FROM {T}_rows") == [(3,)]
    run(conn, f"UPDATE {T}_rows SET n = n + 1 WHERE id = 2")
    # PyMySQL keeps the status flags of the last OK packet (not of a result set's EOF)
    assert conn.server_status & 0x0001, "SERVER_STATUS_IN_TRANS must be relayed"
    run(conn, "COMMIT")
    assert not conn.server_status & 0x0001
    run(conn, "set autocommit=1")


def go_open(port: int) -> Any:
    conn = pymysql_open(port, autocommit=None)
    run(conn, "SET NAMES utf8mb4")
    return conn


def start_transaction_commit(conn: Any) -> None:
    """Go database/sql and Node mysql2: START TRANSACTION ... COMMIT."""
    run(conn, "START TRANSACTION")
    assert run(conn, f"SELECT COUNT(*) FROM {T}_rows") == [(3,)]
    run(conn, "COMMIT")
    autocommit_statements(conn)


class Engine:
    """SQLAlchemy 2 with a pool of one connection: the dialect initializes on first connect
    (SET NAMES, SELECT VERSION(), DATABASE(), @@tx_isolation, @@sql_mode,
    @@lower_case_table_names, ROLLBACK); every checkin sends ROLLBACK."""

    def __init__(self, port: int, driver: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(
            f"mysql+{driver}://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{port}/test?charset=utf8mb4",
            pool_size=1,
            max_overflow=0,
        )
        with self.engine.connect() as c:  # opens the pool's connection, dialect init
            c.exec_driver_sql("SELECT 1").all()

    def close(self) -> None:
        self.engine.dispose()


def sqlalchemy_work(e: Engine) -> None:
    from sqlalchemy import text

    with e.engine.begin() as c:  # COMMIT, then ROLLBACK at checkin
        assert c.execute(text(f"SELECT COUNT(*) FROM {T}_rows")).scalar_one() == 3
        nested = c.begin_nested()  # SAVEPOINT sa_savepoint_1
        c.execute(text(f"UPDATE {T}_rows SET n = n + 1 WHERE id = 1"))
        nested.commit()  # RELEASE SAVEPOINT
    with e.engine.connect() as c:
        assert c.execute(text("SELECT 1")).scalar_one() == 1


@dataclass(frozen=True)
class Kind:
    open: Callable[[int], Any]
    work: Callable[[Any], None]


KINDS = {
    "pymysql": Kind(pymysql_open, dbapi_transaction),
    "pymysql-autocommit-peewee": Kind(
        lambda port: pymysql_open(port, autocommit=True), autocommit_statements
    ),
    "mysqlclient": Kind(mysqldb_open, dbapi_transaction),
    "connector-pure": Kind(lambda port: connector_open(port, True), dbapi_transaction),
    "connector-cext": Kind(lambda port: connector_open(port, False), dbapi_transaction),
    "sqlalchemy-pymysql": Kind(lambda port: Engine(port, "pymysql"), sqlalchemy_work),
    "sqlalchemy-mysqlclient": Kind(lambda port: Engine(port, "mysqldb"), sqlalchemy_work),
    "django-mysqlclient": Kind(django_open, django_atomic),
    "connector-j-style": Kind(connector_j_open, connector_j_transaction),
    "go-style": Kind(go_open, start_transaction_commit),
    "node-mysql2-style": Kind(
        lambda port: pymysql_open(port, autocommit=None), start_transaction_commit
    ),
}

NEEDS = {
    "mysqlclient": HAVE_MYSQLDB,
    "connector-pure": HAVE_CONNECTOR,
    "connector-cext": HAVE_CEXT,
    "sqlalchemy-pymysql": HAVE_SQLALCHEMY,
    "sqlalchemy-mysqlclient": HAVE_SQLALCHEMY and HAVE_MYSQLDB,
    "django-mysqlclient": HAVE_MYSQLDB,
}

KIND_PARAMS = [
    pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(not NEEDS.get(name, True), reason="client library missing"),
    )
    for name in KINDS
]


@pytest.fixture(scope="module")
def rows_table(app_account) -> None:
    app_account.execute(f"DROP TABLE IF EXISTS test.{T}_rows")
    app_account.execute(f"CREATE TABLE test.{T}_rows (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
    app_account.execute(f"INSERT INTO test.{T}_rows VALUES (1, 0), (2, 0), (3, 0)")


def pins_now(p: Any) -> list[tuple[int, str | None, bool]]:
    """(session id, pin reason, holds an upstream) of every session pinned or holding."""
    return p.call(
        lambda: [
            (s.id, s.pin_reason, s.up is not None)
            for s in p.proxy.sessions.values()
            if s.pin_reason is not None
        ]
    )


def stats(p: Any) -> tuple[int, int]:
    return p.call(lambda: (p.proxy.pool.stats.settings_applied, p.proxy.pool.stats.exact_hits))


def close(obj: Any) -> None:
    try:
        obj.close()
    except Exception:
        pass


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_connect_sequence_and_transactions_pin_nothing_and_warm_sessions_hit_the_exact_sub_pool(
    pooling_proxy, wait_until, rows_table, kind
):
    k = KINDS[kind]
    p = pooling_proxy(max_connections=4)
    opened: list[Any] = []
    try:
        sessions = []
        for _round in range(2):
            s = k.open(p.port)
            opened.append(s)
            sessions.append(s)
            k.work(s)
            k.work(s)
            assert pins_now(p) == []
            assert p.call(lambda: dict(p.proxy.stats.pins)) == {}
            assert p.call(lambda: p.proxy.stats.pinned_now) == 0
            # nothing holds a connection between transactions
            wait_until(
                lambda: (
                    not p.call(
                        lambda: [s.id for s in p.proxy.sessions.values() if s.up is not None]
                    )
                ),
                5,
                "every session gave its connection back",
            )
        first, second = sessions
        k.work(first)  # may bring a connection to the kind's settings
        applied, hits = stats(p)
        for s in (second, first, second, first):
            k.work(s)
        applied_after, hits_after = stats(p)
        assert applied_after == applied, (
            f"{applied_after - applied} SET round trips between sessions with the same settings"
        )
        assert hits_after >= hits + 4
    finally:
        for s in opened:
            close(s)
