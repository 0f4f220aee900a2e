"""The SQL admin console (issue 9): a user named in ``[admin] users`` connects through the
proxy's own port to the database ``tainted_proxy`` and reads SHOW POOLS / SESSIONS /
SERVERS / TAINTS / SETTINGS / STATS / CONFIG, from the mariadb CLI, pymysql and
mysql-connector (pure), while a workload runs: a transaction-mode client pinned by
GET_LOCK, one that left an idle connection with time_zone=+05:30, a session-mode client.
Anyone else asking for ``tainted_proxy`` is refused (1044); other statements get 1064."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBServer
from tainted_proxy.testing.proxy import ProxyThread

from .conftest import start_proxy

CLI = shutil.which("mariadb") or shutil.which("mysql")
LOGIN = f"tp_console_{os.getpid()}"  # the transaction-mode user's upstream login
LOGIN_PASSWORD = "tp-console-secret"
USERS: dict[str, dict[str, Any]] = {
    "app": {
        "password": "app-secret",
        "pool_mode": "transaction",
        "upstream_user": LOGIN,
        "upstream_password": LOGIN_PASSWORD,
    },
    "plain": {
        "password": "plain-secret",
        "upstream_user": "app",
        "upstream_password": "app-secret",
    },
    "ops": {"password": "ops-secret", "upstream_user": "app", "upstream_password": "app-secret"},
}
PASSWORDS = {name: u["password"] for name, u in USERS.items()}
LOCK = "tp_console_lock"


class Workload:
    def __init__(self, p: ProxyThread) -> None:
        self.p = p
        self.conns: list[pymysql.Connection] = []

    def connect(self, user: str, **kw: Any) -> pymysql.Connection:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.p.port,
            user=user,
            password=PASSWORDS[user],
            database="test",
            autocommit=True,
            connect_timeout=10,
            read_timeout=30,
            **kw,
        )
        self.conns.append(conn)
        return conn


@pytest.fixture(scope="module")
def console(app_account: MariaDBServer) -> Iterator[Workload]:
    app_account.create_user(LOGIN, LOGIN_PASSWORD)
    p = start_proxy(app_account, users=USERS, admin={"users": ["ops"]})
    w = Workload(p)
    try:
        with w.connect("app").cursor() as cur:  # pinned: holds its connection
            cur.execute("SELECT GET_LOCK(%s, 5)", (LOCK,))
            w.pinner_id = w.conns[-1].thread_id()  # type: ignore[attr-defined]
        with w.connect("app").cursor() as cur:  # leaves a connection idle with its settings
            cur.execute("SET time_zone = '+05:30'")
            cur.execute("SELECT 1")
        with w.connect("plain").cursor() as cur:  # session mode: holds one for the session
            cur.execute("SELECT 1")
        yield w
    finally:
        for conn in w.conns:
            conn.close()
        p.stop()


def cli(
    p: ProxyThread, sql: str, user: str = "ops", database: str = "tainted_proxy"
) -> subprocess.CompletedProcess[str]:
    assert CLI is not None
    cmd = [CLI, "--no-defaults", "-h127.0.0.1", f"-P{p.port}", f"-u{user}"]
    cmd += [f"-p{PASSWORDS[user]}", "--batch", "--connect-timeout=10", "-D", database, "-e", sql]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def cli_rows(p: ProxyThread, sql: str) -> list[dict[str, str]]:
    """The CLI's --batch output of one result set as dicts (tab-separated, header first;
    nothing at all for an empty result set)."""
    r = cli(p, sql)
    assert r.returncode == 0, r.stderr
    if not r.stdout:
        return []
    header, *lines = r.stdout.splitlines()
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines]


def console_pymysql(p: ProxyThread, **kw: Any) -> pymysql.Connection:
    args: dict[str, Any] = dict(
        host="127.0.0.1",
        port=p.port,
        user="ops",
        password="ops-secret",
        database="tainted_proxy",
        connect_timeout=10,
        read_timeout=10,
    )
    return pymysql.connect(**{**args, **kw})


needs_cli = pytest.mark.skipif(CLI is None, reason="the mariadb command-line client is missing")


@needs_cli
def test_cli_show_pools_like(console: Workload) -> None:
    every = cli_rows(console.p, "SHOW POOLS")
    assert sorted(r["upstream_user"] for r in every) == sorted(["app", LOGIN])
    (pool,) = cli_rows(console.p, "SHOW POOLS LIKE 'tp%'")
    assert pool["upstream_user"] == LOGIN
    assert pool["users"] == "app" and pool["modes"] == "transaction"
    assert pool["pinned"] == "1" and pool["upstream_in_use"] == "1"
    assert pool["upstream_idle"] == "1" and pool["subpools"] == "2"
    assert cli_rows(console.p, "SHOW POOLS LIKE 'TP\\_CONSOLE\\_%'") == [pool]  # \_ and case
    assert cli_rows(console.p, "SHOW POOLS LIKE 'tp'") == []  # the whole value


@needs_cli
def test_cli_views_show_the_workload(console: Workload) -> None:
    p = console.p
    sessions = {int(r["id"]): r for r in cli_rows(p, "SHOW SESSIONS")}
    pinner = sessions[console.pinner_id]  # type: ignore[attr-defined]
    assert pinner["user"] == "app" and pinner["mode"] == "transaction"
    assert pinner["state"] == "holding" and "GET_LOCK" in pinner["pin"]
    assert LOCK in pinner["pin_objects"] and pinner["program"] == "pymysql"
    (me,) = [r for r in sessions.values() if r["user"] == "ops"]
    assert me["mode"] == "admin" and me["statement"] == "SHOW SESSIONS"

    (taint,) = cli_rows(p, "SHOW TAINTS LIKE '%get\\_lock%'")
    assert taint["fingerprint"] == "SELECT GET_LOCK(?, ?)" and taint["user"] == "app"
    assert taint["count"] == "1" and "RELEASE_LOCK" in taint["hint"]

    servers = cli_rows(p, f"SHOW SERVERS LIKE '{LOGIN}'")
    assert sorted(s["state"] for s in servers) == ["idle", "in use"]
    (held,) = [s for s in servers if s["state"] == "in use"]
    assert held["client_id"] == str(console.pinner_id)  # type: ignore[attr-defined]
    assert held["thread_id"] == pinner["upstream_thread_id"]

    (tz,) = cli_rows(p, "SHOW SETTINGS LIKE '%time_zone=+05:30%'")
    assert tz == {
        "upstream_user": LOGIN,
        "settings": "time_zone=+05:30; schema=test",
        "connections": "1",
        "in_use": "0",
        "idle": "1",
    }

    stats = {r["name"]: r["value"] for r in cli_rows(p, "SHOW STATS")}
    assert stats["pinned"] == "1" and stats["pins.advisory lock (GET_LOCK)"] == "1"
    assert stats["upstream_connections"] == "3"
    assert cli_rows(p, "SHOW STATS LIKE 'pool.opened'") == [{"name": "pool.opened", "value": "3"}]

    config = cli(p, "SHOW CONFIG")
    assert config.returncode == 0
    assert "secret" not in config.stdout  # no password, plain or hashed
    passwords = cli_rows(p, "SHOW CONFIG LIKE 'users.%.password'")
    assert passwords == [{"name": f"users.{u}.password", "value": "(set)"} for u in USERS]
    assert cli_rows(p, "SHOW CONFIG LIKE 'admin.users'") == [
        {"name": "admin.users", "value": "ops"}
    ]


@needs_cli
def test_cli_refuses_other_statements_clearly(console: Workload) -> None:
    r = cli(console.p, "SELECT * FROM mysql.user")
    assert r.returncode == 1
    assert "ERROR 1064 (42000)" in r.stderr
    assert "unsupported statement 'SELECT * FROM mysql.user'" in r.stderr
    assert "SHOW POOLS|SESSIONS|SERVERS|TAINTS|SETTINGS|STATS|CONFIG [LIKE 'pattern']" in r.stderr


@needs_cli
def test_non_admin_is_refused(console: Workload) -> None:
    r = cli(console.p, "SHOW POOLS", user="plain")
    assert r.returncode == 1
    assert (
        "ERROR 1044 (42000): Access denied for user 'plain'@'127.0.0.1' to database "
        "'tainted_proxy'" in r.stderr
    )
    with pytest.raises(pymysql.err.OperationalError) as e:
        console_pymysql(console.p, user="app", password="app-secret")
    assert e.value.args[0] == 1044


def test_pymysql(console: Workload) -> None:
    conn = console_pymysql(console.p)  # sends SET AUTOCOMMIT = 0 (autocommit=False)
    try:
        cur = conn.cursor(pymysql.cursors.DictCursor)
        cur.execute("SELECT @@version_comment LIMIT 1")
        assert cur.fetchall() == [{"@@version_comment": "tainted-proxy admin console"}]
        cur.execute("SELECT DATABASE(), @@autocommit, @@session.max_allowed_packet AS m")
        assert cur.fetchall() == [{"DATABASE()": "tainted_proxy", "@@autocommit": 0, "m": 64 << 20}]
        cur.execute("show sessions like %s", ("app",))
        rows = cur.fetchall()
        assert len(rows) == 2 and {r["user"] for r in rows} == {"app"}
        assert {type(r["id"]) for r in rows} == {int}
        conn.commit()
        conn.rollback()
        conn.ping(reconnect=False)
        conn.select_db("tainted_proxy")
        with pytest.raises(pymysql.err.OperationalError) as e:
            conn.select_db("test")
        assert e.value.args[0] == 1049
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.execute("SHOW PROCESSLIST")
        assert e.value.args[0] == 1064 and "SHOW HELP" in e.value.args[1]
        cur.execute("SHOW TAINTS;")  # the connection goes on after an error
        assert [r["reason"] for r in cur.fetchall()] == ["advisory lock (GET_LOCK)"]
    finally:
        conn.close()


def test_mysql_connector_pure(console: Workload) -> None:
    mysql_connector = pytest.importorskip("mysql.connector")
    conn = mysql_connector.connect(
        host="127.0.0.1",
        port=console.p.port,
        user="ops",
        password="ops-secret",
        database="tainted_proxy",
        use_pure=True,
        connection_timeout=10,
    )
    try:
        assert conn.is_connected()
        cur = conn.cursor()
        cur.execute("SHOW SERVERS")
        names = [d[0] for d in cur.description]
        assert names[:3] == ["thread_id", "upstream_user", "state"]
        rows = cur.fetchall()
        assert len(rows) == 3 and all(isinstance(r[0], int) for r in rows)
        cur.execute("SHOW VARIABLES LIKE 'max\\_allowed%'")
        assert cur.fetchall() == [("max_allowed_packet", str(64 << 20))]
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchall() == [(conn.connection_id,)]
        with pytest.raises(mysql_connector.errors.ProgrammingError) as e:
            cur.execute("DELETE FROM sessions")
        assert e.value.errno == 1064 and "SHOW POOLS" in e.value.msg
        with pytest.raises(mysql_connector.errors.Error) as e:
            conn.cursor(prepared=True).execute("SHOW POOLS")
        assert e.value.errno == 1047 and "COM_STMT_PREPARE" in e.value.msg
        cur.execute("SHOW POOLS LIKE 'nobody%'")
        assert cur.fetchall() == []
    finally:
        conn.close()


def test_admin_user_without_the_console_database_is_a_proxy_user(console: Workload) -> None:
    conn = console.connect("ops")
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE(), @@version_comment LIKE '%tainted-proxy admin%'")
        assert cur.fetchall() == (("test", 0),)
    conn.close()
    console.conns.remove(conn)
