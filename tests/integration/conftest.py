"""Fixtures for tests that run the proxy in front of a private MariaDB.

* ``app_account`` (session): a MariaDB account ``app`` / ``app-secret`` with all privileges
  on the shared ``mariadb`` server; the proxy's default user logs in upstream with it.
* ``proxy`` (module): a session-mode proxy on a free port in front of ``mariadb`` with the
  proxy user ``app`` (password ``app-secret``); ``proxy.port``.
* ``proxy_factory`` (function): ``make(server=mariadb, users=..., upstream=..., proxy=...,
  pool=...) -> ProxyThread`` for tests that need other settings; stopped at teardown.
* ``connect(proxy_thread, **kw)``: a pymysql connection through the proxy as ``app``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBServer
from tainted_proxy.testing.proxy import ProxyThread, config_for
from tainted_proxy.testing.serving import Serving

APP_USER = "app"
APP_PASSWORD = "app-secret"
DEFAULT_USERS: dict[str, dict[str, Any]] = {APP_USER: {"password": APP_PASSWORD}}


def ensure_account(srv: MariaDBServer, user: str = APP_USER, password: str = APP_PASSWORD) -> None:
    srv.execute(f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'")
    srv.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%'")


@pytest.fixture(scope="session")
def app_account(mariadb: MariaDBServer) -> MariaDBServer:
    ensure_account(mariadb)
    return mariadb


def start_proxy(
    srv: MariaDBServer,
    *,
    users: dict[str, dict[str, Any]] | None = None,
    upstream: dict[str, Any] | None = None,
    proxy: dict[str, Any] | None = None,
    pool: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
) -> ProxyThread:
    cfg = config_for(
        srv.host,
        srv.port,
        users=users or DEFAULT_USERS,
        upstream={"max_connections": 20, **(upstream or {})},
        proxy=proxy,
        pool=pool,
        admin=admin,
    )
    return ProxyThread(cfg).start()


@pytest.fixture(scope="module")
def proxy(app_account: MariaDBServer) -> Iterator[ProxyThread]:
    p = start_proxy(app_account)
    try:
        yield p
    finally:
        p.stop()


ProxyFactory = Callable[..., ProxyThread]


@pytest.fixture
def proxy_factory(app_account: MariaDBServer) -> Iterator[ProxyFactory]:
    started: list[ProxyThread] = []

    def make(server: MariaDBServer | None = None, **kw: Any) -> ProxyThread:
        srv = server or app_account
        if server is not None:
            ensure_account(server)
        p = start_proxy(srv, **kw)
        started.append(p)
        return p

    try:
        yield make
    finally:
        for p in started:
            p.stop()


def connect(p: ProxyThread, **kw: Any) -> pymysql.connections.Connection:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": p.port,
        "user": APP_USER,
        "password": APP_PASSWORD,
        "database": "test",
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    args.update(kw)
    return pymysql.connect(**args)


@pytest.fixture(name="connect")
def connect_fixture() -> Callable[..., pymysql.connections.Connection]:
    """``connect(proxy_thread, **pymysql_kwargs)``."""
    return connect


# --------------------------------------------------------------------------------------------
# Transaction and statement pooling (issue #4)
# --------------------------------------------------------------------------------------------
#
# * ``pooling_proxy(mode="transaction", max_connections=2, ...)``: a proxy whose user ``app``
#   (password ``app-secret``) has ``pool_mode = mode`` and logs in upstream with a login of
#   its own, made for this proxy only (``p.upstream_user``), so the server's processlist tells
#   exactly which connections come from it; ``p.server`` is the MariaDB behind it.
# * ``upstream_sampler(server, login)``: ``with`` block sampling the server's processlist in a
#   thread; ``peak`` = most connections of that login seen at once.
# * ``wait_until(predicate, timeout, what)``: poll; fails with ``what`` after ``timeout``.
# * ``session_state(p, client_id)``: ``(pin_reason, holds_upstream)`` of a proxy session.

import itertools  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

_pool_login_ids = itertools.count(1)
POOL_UPSTREAM_PASSWORD = "pool-up-secret"


@pytest.fixture
def pooling_proxy(proxy_factory: ProxyFactory, app_account: MariaDBServer) -> Callable[..., Any]:
    def make(
        mode: str = "transaction",
        *,
        max_connections: int = 2,
        server: MariaDBServer | None = None,
        checkout_timeout: float = 5.0,
        pool: dict[str, Any] | None = None,
        upstream: dict[str, Any] | None = None,
        admin: dict[str, Any] | None = None,
        **user: Any,
    ) -> ProxyThread:
        srv = server or app_account
        login = f"tp_pool_{os.getpid()}_{next(_pool_login_ids)}"
        srv.create_user(login, POOL_UPSTREAM_PASSWORD)
        users = {
            APP_USER: {
                "password": APP_PASSWORD,
                "pool_mode": mode,
                "upstream_user": login,
                "upstream_password": POOL_UPSTREAM_PASSWORD,
                **user,
            }
        }
        p = proxy_factory(
            server=server,
            users=users,
            upstream={"max_connections": max_connections, **(upstream or {})},
            pool={"checkout_timeout": checkout_timeout, **(pool or {})},
            admin=admin,
        )
        p.upstream_user = login  # type: ignore[attr-defined]
        p.server = srv  # type: ignore[attr-defined]
        return p

    return make


def upstream_count(srv: MariaDBServer, login: str) -> int:
    rows = srv.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (login,)
    )
    return int(rows[0][0])


class UpstreamSampler:
    """Sample the server's processlist in a background thread while the ``with`` block runs;
    ``peak`` is the most connections of ``login`` seen at once."""

    def __init__(self, srv: MariaDBServer, login: str, interval: float = 0.002) -> None:
        self.srv = srv
        self.login = login
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream-sampler", daemon=True)

    def _run(self) -> None:
        try:
            conn = self.srv.connect(read_timeout=10)
            try:
                with conn.cursor() as cur:
                    while True:
                        cur.execute(
                            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                            (self.login,),
                        )
                        self.peak = max(self.peak, int(cur.fetchone()[0]))
                        self.samples += 1
                        if self._stop.wait(self.interval):
                            return
            finally:
                conn.close()
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def __enter__(self) -> UpstreamSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None and exc[0] is None:
            raise AssertionError(f"processlist sampler failed: {self.error!r}")


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        time.sleep(0.01)


def session_state(p: ProxyThread, client_id: int) -> tuple[str | None, bool]:
    """``(pin_reason, holds_an_upstream_connection)`` of the proxy session ``client_id``."""

    def read() -> tuple[str | None, bool]:
        s = p.proxy.sessions[client_id]
        return s.pin_reason, s.up is not None

    return p.call(read)


@pytest.fixture(name="upstream_sampler")
def upstream_sampler_fixture() -> type[UpstreamSampler]:
    """``with upstream_sampler(server, login) as s: ...``; then ``s.peak``."""
    return UpstreamSampler


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """``wait_until(predicate, timeout=5.0, what="")``."""
    return wait_until


@pytest.fixture(name="session_state")
def session_state_fixture() -> Callable[[ProxyThread, int], tuple[str | None, bool]]:
    """``session_state(proxy_thread, client_id) -> (pin_reason, holds_upstream)``."""
    return session_state


# -- helpers shared by the pooling test files --------------------------------------------


# -- raw protocol, for tests that write packets by hand --------------------------------------


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_packet(s: socket.socket) -> tuple[int, bytes]:
    """One packet: (sequence id, payload)."""
    header = recv_exact(s, 4)
    length = int.from_bytes(header[:3], "little")
    return header[3], recv_exact(s, length)


def packet(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def have_module(module: str) -> bool:
    """Is this client library installed (tests of it are skipped when not)?"""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def q(conn: Any, sql: str, args: Any = None) -> tuple[tuple[Any, ...], ...]:
    """Run one statement on a DB-API connection (pymysql or MySQLdb); return its rows."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        return tuple(tuple(r) for r in (cur.fetchall() or ()))
    finally:
        cur.close()


def open_trx(srv: MariaDBServer, login: str) -> int:
    """Transactions InnoDB has open on connections of ``login``.  INNODB_TRX is served from
    a cache that InnoDB refreshes only when it was last read more than 0.1 s ago: reading
    it more often would return the same stale snapshot forever, hence the pause."""
    time.sleep(0.12)
    rows = srv.execute(
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
        "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
        "WHERE p.USER = %s",
        (login,),
    )
    return int(rows[0][0])


@pytest.fixture(autouse=True)
def _no_proxy_process_left_behind() -> Iterator[None]:
    """A test that fails before it stops its ``tainted-proxy serve`` process (and its
    workers) would leave them running for the rest of the session."""
    yield
    Serving.stop_all()
