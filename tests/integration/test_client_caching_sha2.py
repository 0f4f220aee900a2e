"""Clients log in to the proxy with caching_sha2_password (MySQL 8.4/9 clients' default; they
disable mysql_native_password): the fast path against the proxy's SHA256(SHA256(password)),
never full authentication. Real clients (mysql-connector-python pure and C extension, pymysql)
log in and run statements in session and transaction pooling; a raw client pins the packets
and their sequence ids; a user configured with a ``*HEX`` native hash is switched to native."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from tainted_proxy.testing.proxy import ProxyThread
from tainted_proxy.wire.auth import caching_sha2_response, native_password_hash
from tainted_proxy.wire.constants import (
    CLIENT_CONNECT_WITH_DB,
    CLIENT_LONG_PASSWORD,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_TRANSACTIONS,
)
from tainted_proxy.wire.packets import AuthSwitchRequest, HandshakeResponse41, HandshakeV10

mysql_connector = pytest.importorskip("mysql.connector")
from mysql.connector import errors as myerrors  # noqa: E402

from .conftest import packet, read_packet  # noqa: E402
from .test_client_mysql_connector import IMPLEMENTATIONS  # noqa: E402

pytestmark = pytest.mark.integration

APP_USER, APP_PASSWORD = "app", "app-secret"  # the MariaDB account of conftest's app_account
SHA2 = "caching_sha2_password"
MODES = ["session", "transaction"]
T = "client_caching_sha2"


def users(mode: str) -> dict[str, dict[str, Any]]:
    """``app`` (plain text), ``hashed`` (a native hash only), ``nopw`` (empty password): all
    log in upstream as the MariaDB account ``app``."""
    upstream = {"pool_mode": mode, "upstream_user": APP_USER, "upstream_password": APP_PASSWORD}
    return {
        APP_USER: {"password": APP_PASSWORD, "pool_mode": mode},
        "hashed": {"password": native_password_hash(APP_PASSWORD), **upstream},
        "nopw": {"password": "", **upstream},
    }


def start(proxy_factory: Callable[..., ProxyThread], mode: str, **proxy: Any) -> ProxyThread:
    return proxy_factory(users=users(mode), proxy=proxy or None)


def connector(port: int, use_pure: bool, user: str = APP_USER, password: str = APP_PASSWORD) -> Any:
    return mysql_connector.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        database="test",
        auth_plugin=SHA2,
        use_pure=use_pure,
        autocommit=True,
        connection_timeout=10,
    )


def connector_error(port: int, use_pure: bool, user: str, password: str) -> tuple[int, str]:
    with pytest.raises(myerrors.Error) as e:
        connector(port, use_pure, user, password)
    return e.value.errno, e.value.sqlstate


def prove_session(conn: Any) -> None:
    """Statements and a transaction run through the logged-in session."""
    cur = conn.cursor()
    cur.execute("SELECT CURRENT_USER()")
    assert [tuple(r) for r in cur.fetchall()] == [(f"{APP_USER}@%",)]
    cur.execute(f"CREATE TABLE IF NOT EXISTS {T} (id INT PRIMARY KEY)")
    cur.execute("BEGIN")
    cur.execute(f"INSERT INTO {T} VALUES (1) ON DUPLICATE KEY UPDATE id = id")
    cur.execute(f"SELECT COUNT(*) FROM {T} WHERE id = 1")
    assert [tuple(r) for r in cur.fetchall()] == [(1,)]
    cur.execute("COMMIT")
    cur.close()


def login_and_prove(
    port: int, use_pure: bool, user: str = APP_USER, password: str = APP_PASSWORD
) -> None:
    conn = connector(port, use_pure, user, password)
    try:
        prove_session(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_connector_logs_in_with_caching_sha2_and_runs_statements(proxy_factory, mode, use_pure):
    p = start(proxy_factory, mode)
    login_and_prove(p.port, use_pure)


@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_connector_wrong_password_and_unknown_user_get_1045(proxy_factory, use_pure):
    p = start(proxy_factory, "session")
    assert connector_error(p.port, use_pure, APP_USER, "wrong") == (1045, "28000")
    assert connector_error(p.port, use_pure, "nobody", "whatever") == (1045, "28000")
    assert connector_error(p.port, use_pure, APP_USER, "") == (1045, "28000")
    assert connector_error(p.port, use_pure, "nopw", "not-empty") == (1045, "28000")


@pytest.mark.parametrize("use_pure", IMPLEMENTATIONS)
def test_connector_empty_password_user_logs_in(proxy_factory, use_pure):
    p = start(proxy_factory, "transaction")
    login_and_prove(p.port, use_pure, "nopw", "")


@pytest.mark.parametrize("mode", MODES)
def test_hashed_user_is_switched_to_native(proxy_factory, mode):
    # pure Python only: the C extension's libmysqlclient 9 has no mysql_native_password
    # plugin, so a hash-only user cannot log in with it (documented in configuration.md)
    p = start(proxy_factory, mode)
    login_and_prove(p.port, True, "hashed")
    assert connector_error(p.port, True, "hashed", "wrong") == (1045, "28000")


@pytest.mark.parametrize("mode", MODES)
def test_pymysql_answers_a_caching_sha2_greeting(proxy_factory, mode):
    """proxy.default_auth_plugin = caching_sha2_password: pymysql answers the greeting's
    plugin, so it logs in with caching_sha2 without a switch (and via the native switch for
    the hash-only user)."""
    p = start(proxy_factory, mode, default_auth_plugin=SHA2)
    for user in (APP_USER, "hashed"):
        conn = pymysql.connect(
            host="127.0.0.1", port=p.port, user=user, password=APP_PASSWORD, database="test"
        )
        try:
            assert conn._auth_plugin_name == SHA2  # what the greeting named
            prove_session(conn)
        finally:
            conn.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(host="127.0.0.1", port=p.port, user=APP_USER, password="wrong")
    assert e.value.args[0] == 1045


# -- the packets, by hand --------------------------------------------------------------------


class Raw:
    """A socket speaking just the login packets, recording the sequence ids."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        seq, payload = self.read()
        assert seq == 0
        self.greeting = HandshakeV10.decode(payload)
        self.scramble = self.greeting.auth_data[:20]

    def read(self) -> tuple[int, bytes]:
        return read_packet(self.sock)

    def send(self, payload: bytes, seq: int) -> None:
        self.sock.sendall(packet(payload, seq))

    def login(self, response: bytes, user: str = APP_USER) -> None:
        caps = (
            CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_TRANSACTIONS
            | CLIENT_LONG_PASSWORD
        )
        resp = HandshakeResponse41(
            capabilities=caps,
            max_packet=1 << 24,
            charset=45,
            username=user,
            auth_response=response,
            database="test",
            auth_plugin=SHA2,
        )
        self.send(resp.encode(), 1)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(proxy_factory) -> Callable[[], Raw]:
    p = start(proxy_factory, "session")
    opened: list[Raw] = []

    def make() -> Raw:
        opened.append(Raw(p.port))
        return opened[-1]

    yield make
    for r in opened:
        r.close()


def test_raw_fast_auth_success_then_ok(raw):
    r = raw()
    assert r.greeting.auth_plugin == "mysql_native_password"  # the default greeting
    r.login(caching_sha2_response(APP_PASSWORD, r.scramble))
    assert r.read() == (2, b"\x01\x03")  # AuthMoreData: fast auth success
    seq, ok = r.read()
    assert (seq, ok[:1]) == (3, b"\x00")


def test_raw_empty_response_gets_a_caching_sha2_switch(raw):
    """libmysqlclient's first response is empty when the greeting named another plugin: the
    proxy sends a switch to caching_sha2_password with the scramble (20 bytes + NUL)."""
    r = raw()
    r.login(b"")
    seq, payload = r.read()
    assert seq == 2 and payload == b"\xfe" + SHA2.encode() + b"\x00" + r.scramble + b"\x00"
    switch = AuthSwitchRequest.decode(payload)
    r.send(caching_sha2_response(APP_PASSWORD, switch.data), 3)
    assert r.read() == (4, b"\x01\x03")
    seq, ok = r.read()
    assert (seq, ok[:1]) == (5, b"\x00")


def test_raw_wrong_response_is_refused_without_full_auth(raw):
    r = raw()
    r.login(caching_sha2_response("wrong", r.scramble))
    seq, err = r.read()  # no AuthMoreData 0x04 (full authentication): an ERR at once
    assert seq == 2 and err[:1] == b"\xff"
    assert int.from_bytes(err[1:3], "little") == 1045 and err[4:9] == b"28000"
    r = raw()
    r.login(b"")
    seq, _switch = r.read()
    r.send(b"", 3)  # an empty password, again
    seq, err = r.read()
    assert seq == 4 and err[:1] == b"\xff"
    assert b"using password: NO" in err
