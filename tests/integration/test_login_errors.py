"""A login that cannot get an upstream connection gets a proper ERR packet that every
client library reads (right sequence number, a server error code, a message saying what
failed), in every pool mode."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBServer
from tainted_proxy.testing.proxy import ProxyThread

pytestmark = pytest.mark.integration

CLI = shutil.which("mariadb") or shutil.which("mysql")
MODES = ["session", "transaction", "statement"]


def login_with_pymysql(port: int) -> tuple[int, str]:
    try:
        pymysql.connect(
            host="127.0.0.1", port=port, user="bad", password="bad-pw", connect_timeout=10
        )
    except pymysql.MySQLError as exc:
        return exc.args[0], str(exc.args[1])
    raise AssertionError("login succeeded")


def login_with_mysqlclient(port: int) -> tuple[int, str]:
    MySQLdb = pytest.importorskip("MySQLdb")
    try:
        MySQLdb.connect(
            host="127.0.0.1", port=port, user="bad", password="bad-pw", connect_timeout=10
        )
    except MySQLdb.MySQLError as exc:
        return exc.args[0], str(exc.args[1])
    raise AssertionError("login succeeded")


def login_with_cli(port: int) -> tuple[int, str]:
    if CLI is None:
        pytest.skip("the mariadb CLI is not installed")
    r = subprocess.run(
        [CLI, "--no-defaults", "-h127.0.0.1", f"-P{port}", "-ubad", "-pbad-pw", "-e", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    # ERROR 1045 (28000): message
    head, _, message = r.stderr.strip().partition(": ")
    return int(head.split()[1]), message


CLIENTS: dict[str, Callable[[int], tuple[int, str]]] = {
    "pymysql": login_with_pymysql,
    "mysqlclient": login_with_mysqlclient,
    "mariadb-cli": login_with_cli,
}


def two_user_proxy(
    proxy_factory: Callable[..., ProxyThread], mode: str, bad_upstream: dict[str, Any]
) -> ProxyThread:
    """User ``app`` logs in upstream fine (the start-up check uses it); user ``bad`` has
    the upstream login under test."""
    users = {
        "app": {"password": "app-secret"},
        "bad": {"password": "bad-pw", "pool_mode": mode, **bad_upstream},
    }
    return proxy_factory(users=users)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", CLIENTS)
def test_refused_upstream_login_reaches_the_client_as_access_denied(proxy_factory, mode, client):
    p = two_user_proxy(
        proxy_factory, mode, {"upstream_user": "no_such_login", "upstream_password": "x"}
    )
    code, message = CLIENTS[client](p.port)
    assert code == 1045
    assert "tainted-proxy could not log in to the upstream server" in message
    assert "no_such_login" in message


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_upstream_reaches_the_client_as_a_clear_error(
    proxy_factory, mariadb_factory, app_account: MariaDBServer, mode, client
):
    srv = mariadb_factory()
    srv.create_user("app", "app-secret")
    users = {
        "app": {"password": "app-secret"},
        "bad": {
            "password": "bad-pw",
            "pool_mode": mode,
            "upstream_user": "app",
            "upstream_password": "app-secret",
        },
    }
    p = proxy_factory(server=srv, users=users, upstream={"connect_timeout": 2})
    srv.stop()
    code, message = CLIENTS[client](p.port)
    assert code == 1105
    assert "tainted-proxy: cannot open an upstream connection" in message
