"""KILL through the proxy only ever reaches the client's own sessions (issue #2, item 7)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import pymysql
import pytest

OTHER = {"password": "o", "upstream_user": "app", "upstream_password": "app-secret"}
TWO_USERS = {"app": {"password": "app-secret"}, "other": OTHER}


class Background:
    """Run one query on a connection in a thread; ``join`` returns (result, error, seconds)."""

    def __init__(self, conn: pymysql.connections.Connection, sql: str) -> None:
        self.conn = conn
        self.sql = sql
        self.result: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.started.wait(5)

    def _run(self) -> None:
        t0 = time.monotonic()
        self.started.set()
        try:
            with self.conn.cursor() as cur:
                cur.execute(self.sql)
                self.result = cur.fetchall()
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            self.seconds = time.monotonic() - t0

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.sql!r} still running after {timeout}s"


def wait_until_running(observer, sql_fragment: str, timeout: float = 5.0) -> None:
    """Poll the server's processlist (via a direct root connection) until a query runs.
    The polling query itself contains the fragment: it must not count itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = observer.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
            (f"%{sql_fragment}%",),
        )
        if rows[0][0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"{sql_fragment!r} never showed up in the processlist")


def test_connection_id_is_the_id_the_client_got_in_the_handshake(proxy, connect):
    with connect(proxy) as c, c.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchone() == (c.thread_id(),)
        cur.execute("select connection_id() AS me")
        assert cur.fetchone() == (c.thread_id(),)
        assert [d[0] for d in cur.description] == ["me"]
    with connect(proxy) as c2, c2.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchone() == (c2.thread_id(),)
        assert c2.thread_id() != c.thread_id()


def test_kill_query_stops_own_long_query_while_another_clients_query_keeps_running(
    proxy, connect, mariadb
):
    victim = connect(proxy)
    bystander = connect(proxy)
    killer = connect(proxy)
    try:
        long_q = Background(victim, "SELECT SLEEP(30) AS kill_me_long")
        other_q = Background(bystander, "SELECT SLEEP(2) AS keep_me_running")
        wait_until_running(mariadb, "kill_me_long")
        wait_until_running(mariadb, "keep_me_running")
        t0 = time.monotonic()
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {victim.thread_id()}")
        long_q.join(10)
        assert long_q.seconds < 10
        assert time.monotonic() - t0 < 5
        # MariaDB answers an interrupted SLEEP() with 1 (or ERR 1317 on some versions)
        if long_q.error is not None:
            assert isinstance(long_q.error, pymysql.err.OperationalError)
            assert long_q.error.args[0] == 1317
        else:
            assert long_q.result == ((1,),)
        # the bystander was not touched: its SLEEP ran to the end and returned 0
        other_q.join(10)
        assert other_q.error is None
        assert other_q.result == ((0,),)
        assert other_q.seconds >= 1.9
        # KILL QUERY leaves the killed session usable
        with victim.cursor() as cur:
            cur.execute("SELECT 'still here'")
            assert cur.fetchone() == ("still here",)
    finally:
        for c in (victim, bystander, killer):
            c.close()


def test_kill_query_of_own_idle_session_is_a_harmless_ok(proxy, connect):
    with connect(proxy) as a, connect(proxy) as b:
        with b.cursor() as cur:
            cur.execute(f"KILL QUERY {a.thread_id()}")
            cur.execute(f"KILL QUERY {b.thread_id()}")
        with a.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)


def test_kill_of_another_proxy_users_session_is_refused_with_1094(proxy_factory, connect):
    p = proxy_factory(users=TWO_USERS)
    with connect(p) as app_conn, connect(p, user="other", password="o") as other_conn:
        busy = Background(app_conn, "SELECT SLEEP(1) AS not_yours")
        with other_conn.cursor() as cur:
            for sql in (
                f"KILL QUERY {app_conn.thread_id()}",
                f"KILL {app_conn.thread_id()}",
                f"KILL CONNECTION {app_conn.thread_id()}",
            ):
                with pytest.raises(pymysql.err.OperationalError) as e:
                    cur.execute(sql)
                assert e.value.args[0] == 1094, sql
            # COM_PROCESS_KILL (pymysql's kill() sends KILL n; the binary command is
            # exercised by the handler that shares the same check)
            with pytest.raises(pymysql.err.OperationalError) as e:
                other_conn.kill(app_conn.thread_id())
            assert e.value.args[0] == 1094
        busy.join(10)
        assert busy.error is None and busy.result == ((0,),)
        with app_conn.cursor() as cur:
            cur.execute("SELECT 'alive'")
            assert cur.fetchone() == ("alive",)


def com_process_kill(conn: pymysql.connections.Connection, target: int) -> bytes:
    """Send the binary COM_PROCESS_KILL on a logged-in connection; return the reply."""
    sock = conn._sock
    sock.settimeout(5)
    payload = b"\x0c" + struct.pack("<I", target)
    sock.sendall(len(payload).to_bytes(3, "little") + b"\x00" + payload)
    header = sock.recv(4, socket.MSG_WAITALL)
    return sock.recv(int.from_bytes(header[:3], "little"), socket.MSG_WAITALL)


def test_com_process_kill_only_reaches_the_clients_own_sessions(proxy_factory, connect):
    p = proxy_factory(users=TWO_USERS)
    with connect(p) as app_conn, connect(p, user="other", password="o") as other_conn:
        reply = com_process_kill(other_conn, app_conn.thread_id())
        assert reply[:1] == b"\xff" and struct.unpack("<H", reply[1:3])[0] == 1094
        with app_conn.cursor() as cur:
            cur.execute("SELECT 'untouched'")
            assert cur.fetchone() == ("untouched",)
        with connect(p) as app2:
            assert com_process_kill(app2, app_conn.thread_id())[:1] == b"\x00"
            with app2.cursor() as cur:
                cur.execute("SELECT 'killer still fine'")
                assert cur.fetchone() == ("killer still fine",)
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            with app_conn.cursor() as cur:
                cur.execute("SELECT 1")


def test_kill_of_a_server_thread_that_is_not_ours_is_refused_and_leaves_it_alive(
    proxy, connect, mariadb
):
    direct = mariadb.connect()
    try:
        with direct.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            root_id = cur.fetchone()[0]
        with connect(proxy) as c, c.cursor() as cur:
            for sql in (f"KILL {root_id}", f"KILL QUERY {root_id}", f"KILL CONNECTION {root_id}"):
                with pytest.raises(pymysql.err.OperationalError) as e:
                    cur.execute(sql)
                assert e.value.args[0] == 1094, sql
                assert str(root_id) in e.value.args[1]
            # an id nobody has
            with pytest.raises(pymysql.err.OperationalError) as e:
                cur.execute("KILL 987654321")
            assert e.value.args[0] == 1094
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        with direct.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            assert cur.fetchone() == (root_id,)
    finally:
        direct.close()


def test_kill_connection_of_own_other_idle_session_closes_it(proxy, connect):
    victim = connect(proxy, read_timeout=10)
    try:
        with connect(proxy) as killer, killer.cursor() as cur:
            cur.execute(f"KILL CONNECTION {victim.thread_id()}")
            cur.execute("SELECT 'killer ok'")
            assert cur.fetchone() == ("killer ok",)
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            with victim.cursor() as cur:
                cur.execute("SELECT 1")
    finally:
        victim.close()
    # the proxy keeps serving
    with connect(proxy) as c, c.cursor() as cur:
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)


def test_kill_connection_of_own_busy_session_ends_its_query_and_the_session(
    proxy, connect, mariadb
):
    victim = connect(proxy, read_timeout=20)
    try:
        q = Background(victim, "SELECT SLEEP(30) AS kill_my_connection")
        wait_until_running(mariadb, "kill_my_connection")
        with connect(proxy) as killer, killer.cursor() as cur:
            cur.execute(f"KILL {victim.thread_id()}")
        q.join(10)
        assert q.seconds < 10
        assert q.error is not None  # the query did not complete normally
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            with victim.cursor() as cur:
                cur.execute("SELECT 1")
    finally:
        victim.close()
    with connect(proxy) as c, c.cursor() as cur:
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)


def test_kill_of_own_session_ends_it_with_1927(proxy, connect):
    c = connect(proxy, read_timeout=10)
    try:
        with pytest.raises(pymysql.err.OperationalError) as e:
            with c.cursor() as cur:
                cur.execute(f"KILL {c.thread_id()}")
        assert e.value.args[0] == 1927
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            with c.cursor() as cur:
                cur.execute("SELECT 1")
    finally:
        c.close()


@pytest.mark.parametrize(
    "sql",
    ["KILL USER app", "KILL USER 'app'@'%'", "KILL HARD USER root", "KILL QUERY ID 1"],
)
def test_kill_user_and_other_forms_are_refused(proxy, connect, sql):
    with connect(proxy) as c, c.cursor() as cur:
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.NotSupportedError)) as e:
            cur.execute(sql)
        # KILL QUERY ID names a query id, which the proxy cannot map: 1235 not supported
        assert e.value.args[0] == (1235 if "QUERY ID" in sql else 1095)
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


@pytest.mark.parametrize(
    "template",
    [
        "/*x*/ KILL {tid}",
        "-- c\nKILL {tid}",
        "DO 1; KILL {tid}",
        "PREPARE s FROM 'KILL {tid}'",
        "EXECUTE IMMEDIATE 'KILL {tid}'",
    ],
)
def test_kill_hidden_behind_comments_batches_or_dynamic_sql_never_reaches_the_server(
    proxy, connect, mariadb, template
):
    direct = mariadb.connect()
    try:
        with direct.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (tid,) = cur.fetchone()
        flags = pymysql.constants.CLIENT.MULTI_STATEMENTS
        with connect(proxy, client_flag=flags) as c, c.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as e:
                cur.execute(template.format(tid=tid))
            assert e.value.args[0] in (1094, 1095)
        with direct.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        direct.close()
