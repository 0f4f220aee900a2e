"""SQLAlchemy 2 ORM through the proxy, with the pymysql and mysqlclient drivers: the
dialect initialises exactly as against the server, and the ORM, transactions and a pool of
connections used from several threads work unchanged."""

from __future__ import annotations

import datetime
import decimal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")
from sqlalchemy import (  # noqa: E402
    DateTime,
    Integer,
    Numeric,
    String,
    Text,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402

from .conftest import have_module  # noqa: E402

APP_USER, APP_PASSWORD = "app", "app-secret"  # the proxy fixture's user (conftest)


DRIVERS = [
    pytest.param("pymysql", id="pymysql"),
    pytest.param(
        "mysqldb",
        id="mysqlclient",
        marks=pytest.mark.skipif(not have_module("MySQLdb"), reason="mysqlclient not installed"),
    ),
]


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "client_sqlalchemy_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    note: Mapped[str | None] = mapped_column(Text)
    balance: Mapped[decimal.Decimal | None] = mapped_column(Numeric(12, 2))
    created: Mapped[datetime.datetime | None] = mapped_column(DateTime)


def _url(
    driver: str, port: int, database: str | None = "test", password: str = APP_PASSWORD
) -> str:
    db = f"/{database}" if database else "/"
    return f"mysql+{driver}://{APP_USER}:{password}@127.0.0.1:{port}{db}?charset=utf8mb4"


@pytest.fixture(params=DRIVERS)
def driver(request) -> str:
    return request.param


@pytest.fixture
def engine(proxy, driver) -> Iterator[Any]:
    eng = create_engine(_url(driver, proxy.port), pool_size=5, max_overflow=0, pool_timeout=20)
    Base.metadata.drop_all(eng)
    Base.metadata.create_all(eng)
    try:
        yield eng
    finally:
        Base.metadata.drop_all(eng)
        eng.dispose()


def test_dialect_initialises_through_the_proxy_exactly_as_directly(proxy, mariadb, driver):
    """The dialect's connect-time statements (version, sql_mode, lower_case_table_names,
    isolation level, charset, default schema ...) all run and give the same answers."""

    def probe(port: int) -> tuple[Any, ...]:
        # the first connect runs the dialect's initialize() on the raw DBAPI connection
        # (SELECT VERSION()/version_comment, SHOW VARIABLES LIKE 'sql_mode' and
        # 'lower_case_table_names', the isolation level, DATABASE() ...): compare what it found
        eng = create_engine(_url(driver, port))
        try:
            with eng.connect() as conn:
                d = eng.dialect
                return (
                    d.server_version_info,
                    d.is_mariadb,
                    d._server_ansiquotes,
                    d._casing,
                    d.default_isolation_level,
                    d.default_schema_name,
                    conn.get_isolation_level(),
                    conn.scalar(text("SELECT DATABASE()")),
                )
        finally:
            eng.dispose()

    via_proxy = probe(proxy.port)
    assert via_proxy == probe(mariadb.port)
    assert via_proxy[1] is True and via_proxy[4] == "REPEATABLE READ"
    assert via_proxy[5] == "test" and via_proxy[0] >= (10,)


def test_engine_without_a_default_database_works_with_qualified_names(proxy, driver):
    eng = create_engine(_url(driver, proxy.port, database=None))
    try:
        with eng.connect() as conn:
            assert conn.scalar(text("SELECT DATABASE()")) is None
            assert conn.scalar(text("SELECT COUNT(*) FROM mysql.user")) > 0
    finally:
        eng.dispose()


def test_orm_add_commit_query_update_delete(engine):
    now = datetime.datetime(2024, 5, 6, 7, 8, 9)
    with Session(engine) as s:
        s.add_all(
            [
                Account(
                    name="alice", note="hello 😀", balance=decimal.Decimal("10.50"), created=now
                ),
                Account(name="bob", note=None, balance=None, created=None),
            ]
        )
        s.commit()
    with Session(engine) as s:
        alice = s.scalars(select(Account).where(Account.name == "alice")).one()
        assert (alice.note, alice.balance, alice.created) == (
            "hello 😀",
            decimal.Decimal("10.50"),
            now,
        )
        bob = s.scalars(select(Account).where(Account.name == "bob")).one()
        assert (bob.note, bob.balance, bob.created) == (None, None, None)
        alice.balance = decimal.Decimal("11.00")
        s.delete(bob)
        s.commit()
    with Session(engine) as s:
        rows = s.execute(select(Account.name, Account.balance)).all()
        assert rows == [("alice", decimal.Decimal("11.00"))]


def test_rollback_discards_uncommitted_changes(engine):
    with Session(engine) as s:
        s.add(Account(name="kept"))
        s.commit()
        s.add(Account(name="discarded"))
        s.flush()  # the INSERT reached the server inside the open transaction
        assert s.scalar(select(func.count()).select_from(Account)) == 2
        s.rollback()
        assert s.scalar(select(func.count()).select_from(Account)) == 1
    with Session(engine) as s:
        assert s.scalars(select(Account.name)).all() == ["kept"]


def test_integrity_error_rolls_back_and_the_session_stays_usable(engine):
    with Session(engine) as s:
        s.add(Account(name="dup"))
        s.commit()
        s.add(Account(name="dup"))
        with pytest.raises(IntegrityError) as e:
            s.commit()
        assert e.value.orig.args[0] == 1062
        s.rollback()
        assert s.scalar(select(func.count()).select_from(Account)) == 1


def test_server_errors_surface_as_the_dialects_exceptions(engine):
    with engine.connect() as conn:
        with pytest.raises(ProgrammingError) as e:
            conn.execute(text("SELECT * FROM no_such_table_sqlalchemy"))
        assert e.value.orig.args[0] == 1146
        conn.rollback()
        assert conn.scalar(text("SELECT 1")) == 1


def test_wrong_password_and_unknown_database_are_refused(proxy, driver):
    for url, code in (
        (_url(driver, proxy.port, password="wrong"), 1045),
        (_url(driver, proxy.port, database="no_such_db_sqlalchemy"), 1049),
    ):
        eng = create_engine(url)
        try:
            with pytest.raises(OperationalError) as e:
                eng.connect()
            assert e.value.orig.args[0] == code
        finally:
            eng.dispose()


def test_pool_of_connections_used_from_several_threads(engine):
    n_threads, per_thread = 8, 15
    barrier = threading.Barrier(5, timeout=20)  # pool_size=5: all checked out at once
    held_ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def hold_one() -> None:
        with engine.connect() as conn:
            cid = conn.scalar(text("SELECT CONNECTION_ID()"))
            with lock:
                held_ids.append(cid)
            barrier.wait()

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                with Session(engine) as s:
                    s.add(Account(name=f"t{k}-{i}", note="😀" * (i + 1)))
                    s.commit()
                    assert s.scalar(
                        select(Account.note).where(Account.name == f"t{k}-{i}")
                    ) == "😀" * (i + 1)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    holders = [threading.Thread(target=hold_one) for _ in range(5)]
    for t in holders:
        t.start()
    for t in holders:
        t.join(30)
    assert len(set(held_ids)) == 5  # five different sessions, five different ids

    workers = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not errors, errors
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Account)) == n_threads * per_thread


def test_pool_pre_ping_and_reset_on_return_work(proxy, driver):
    eng = create_engine(_url(driver, proxy.port), pool_size=1, max_overflow=0, pool_pre_ping=True)
    try:
        with eng.connect() as conn:
            conn.execute(text("SET @x = 1"))
            conn.execute(text("BEGIN"))
            first = conn.scalar(text("SELECT CONNECTION_ID()"))
        # returned to SQLAlchemy's pool with a ROLLBACK; the same DBAPI connection (and so
        # the same proxy session) is handed out again after a ping
        with eng.connect() as conn:
            assert conn.scalar(text("SELECT CONNECTION_ID()")) == first
            assert conn.scalar(text("SELECT @x")) == 1
            assert conn.scalar(text("SELECT @@in_transaction")) == 0
    finally:
        eng.dispose()


def test_isolation_level_execution_option_is_applied(engine):
    with engine.connect().execution_options(isolation_level="READ COMMITTED") as conn:
        assert conn.scalar(text("SELECT @@session.tx_isolation")) == "READ-COMMITTED"
    with engine.connect() as conn:  # restored when the connection went back to the pool
        assert conn.scalar(text("SELECT @@session.tx_isolation")) == "REPEATABLE-READ"
