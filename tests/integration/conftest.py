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

from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBServer
from tainted_proxy.testing.proxy import ProxyThread, config_for

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
) -> ProxyThread:
    cfg = config_for(
        srv.host,
        srv.port,
        users=users or DEFAULT_USERS,
        upstream={"max_connections": 20, **(upstream or {})},
        proxy=proxy,
        pool=pool,
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
