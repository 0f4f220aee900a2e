"""Binary prepared statements (COM_STMT_*) in transaction pooling never pin a session: the
proxy hands out its own statement ids and prepares lazily on whichever upstream connection
executes them (tainted_proxy/frontend/prepared.py, /tmp/notes/design.md).

Real clients through a proxy whose user ``app`` has ``pool_mode = "transaction"`` and a small
``upstream.max_connections``, in front of a real MariaDB: mysql-connector ``cursor(prepared=True)``
(pure Python, and the C extension, which goes through libmysqlclient), and a raw protocol
client for what drivers do not expose (executes without types after the first, cursors and
COM_STMT_FETCH, COM_STMT_RESET, unknown ids).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tainted_proxy.state import pins as pinreasons
from tainted_proxy.wire.auth import native_password_response
from tainted_proxy.wire.codec import read_lenenc_bytes, read_lenenc_int, write_lenenc_bytes
from tainted_proxy.wire.constants import (
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_LONG_FLAG,
    CLIENT_LONG_PASSWORD,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_TRANSACTIONS,
    SERVER_STATUS_CURSOR_EXISTS,
    SERVER_STATUS_LAST_ROW_SENT,
)
from tainted_proxy.wire.packets import HandshakeResponse41, HandshakeV10

try:
    import mysql.connector as mysql_connector
except ImportError:  # pragma: no cover - the test extra installs it
    mysql_connector = None

T = "tpps"  # prefix of every table this file creates
OTHER_DB = f"{T}_other"
USERS = {"app": {"password": "app-secret", "pool_mode": "transaction"}}

IMPLS = [
    pytest.param(
        True,
        id="pure",
        marks=pytest.mark.skipif(mysql_connector is None, reason="mysql-connector missing"),
    ),
    pytest.param(
        False,
        id="cext",
        marks=pytest.mark.skipif(
            mysql_connector is None or not mysql_connector.HAVE_CEXT,
            reason="mysql-connector C extension not importable",
        ),
    ),
]


@pytest.fixture(scope="module")
def tables(app_account: Any) -> Any:
    srv = app_account
    srv.execute(f"DROP TABLE IF EXISTS test.{T}_kv, test.{T}_log")
    srv.execute(f"CREATE TABLE test.{T}_kv (id INT PRIMARY KEY, v VARCHAR(20))")
    srv.execute(
        f"INSERT INTO test.{T}_kv VALUES " + ",".join(f"({i}, 'row{i}')" for i in range(1, 21))
    )
    srv.execute(
        f"CREATE TABLE test.{T}_log (id INT AUTO_INCREMENT PRIMARY KEY, who INT, n INT, "
        "s VARCHAR(40), f DOUBLE, d DATE)"
    )
    srv.execute(f"CREATE DATABASE IF NOT EXISTS {OTHER_DB}")
    srv.execute(f"CREATE OR REPLACE TABLE {OTHER_DB}.{T}_kv (id INT PRIMARY KEY, v VARCHAR(20))")
    srv.execute(f"INSERT INTO {OTHER_DB}.{T}_kv VALUES (1, 'other1'), (2, 'other2')")
    yield srv
    srv.execute(f"DROP TABLE IF EXISTS test.{T}_kv, test.{T}_log")
    srv.execute(f"DROP DATABASE IF EXISTS {OTHER_DB}")


def start(proxy_factory: Callable[..., Any], cap: int = 2, cache: int | None = None) -> Any:
    pool = {"prepared_statement_cache": cache} if cache is not None else None
    return proxy_factory(users=USERS, upstream={"max_connections": cap}, pool=pool)


def open_connector(p: Any, use_pure: bool, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": p.port,
        "user": "app",
        "password": "app-secret",
        "database": "test",
        "charset": "utf8mb4",
        "collation": "utf8mb4_general_ci",
        "autocommit": True,
        "use_pure": use_pure,
        "connection_timeout": 10,
    }
    args.update(kw)
    return mysql_connector.connect(**args)


def run(cur: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    cur.execute(sql, params)
    return [tuple(r) for r in cur.fetchall()] if cur.with_rows else []


def session_state(p: Any, client_id: int) -> tuple[str | None, bool]:
    def read() -> tuple[str | None, bool]:
        s = p.proxy.sessions[client_id]
        return s.pin_reason, s.up is not None

    return p.call(read)


def assert_never_pinned_by_prepared(p: Any) -> None:
    pins = p.call(lambda: dict(p.proxy.stats.pins))
    # the reason binary statements pinned with before they were virtualized
    assert "binary prepared statement (until COM_STMT_CLOSE)" not in pins, pins
    assert not any("prepared statement" in r and "SQL" not in r for r in pins), pins


def no_session_pinned(p: Any) -> None:
    states = p.call(
        lambda: [(s.id, s.pin_reason, s.up is not None) for s in p.proxy.sessions.values()]
    )
    assert all(reason is None and not holds for _, reason, holds in states), states


def prepared_stmt_count(srv: Any) -> int:
    return int(srv.execute("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")[0][1])


def server_prepares(srv: Any) -> int:
    return int(srv.execute("SHOW GLOBAL STATUS LIKE 'Com_stmt_prepare'")[0][1])


def expect_errno(code: int, fn: Callable[[], Any]) -> None:
    with pytest.raises(mysql_connector.Error) as info:
        fn()
    assert info.value.errno == code, info.value


# -- a raw protocol client -----------------------------------------------------------------

LONGLONG, DOUBLE, DATE, VAR_STRING = 8, 5, 10, 253
LONG_DATA = object()  # a parameter value sent with COM_STMT_SEND_LONG_DATA


class RawError(Exception):
    def __init__(self, payload: bytes) -> None:
        self.code = struct.unpack_from("<H", payload, 1)[0]
        self.message = payload[9:].decode(errors="replace")
        super().__init__(f"{self.code} {self.message}")


class RawClient:
    """Just enough of the client protocol to drive COM_STMT_* by hand (string results)."""

    def __init__(self, port: int, *, deprecate_eof: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.deprecate_eof = deprecate_eof
        _, payload = self.read()
        hs = HandshakeV10.decode(payload)
        self.id = hs.connection_id
        caps = (
            CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_TRANSACTIONS
            | CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | (CLIENT_DEPRECATE_EOF if deprecate_eof else 0)
        )
        resp = HandshakeResponse41(
            capabilities=caps,
            max_packet=1 << 24,
            charset=45,
            username="app",
            auth_response=native_password_response("app-secret", hs.auth_data[:20]),
            database="test",
            auth_plugin="mysql_native_password",
        ).encode()
        self.sock.sendall(len(resp).to_bytes(3, "little") + b"\x01" + resp)
        _, ok = self.read()
        assert ok[:1] == b"\x00", ok

    def close(self) -> None:
        self.sock.close()

    def read(self) -> tuple[int, bytes]:
        head = self._exact(4)
        return head[3], self._exact(int.from_bytes(head[:3], "little"))

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("proxy closed the connection")
            out += chunk
        return out

    def send(self, payload: bytes) -> None:
        self.sock.sendall(len(payload).to_bytes(3, "little") + b"\x00" + payload)

    def ok_or_raise(self) -> bytes:
        _, p = self.read()
        if p[:1] == b"\xff":
            raise RawError(p)
        assert p[:1] == b"\x00", p
        return p

    def query(self, sql: str) -> None:
        self.send(b"\x03" + sql.encode())
        self.ok_or_raise()

    def prepare(self, sql: str) -> tuple[int, int]:
        """(statement id, number of parameters)."""
        self.send(b"\x16" + sql.encode())
        _, ok = self.read()
        if ok[:1] == b"\xff":
            raise RawError(ok)
        sid, columns, params = struct.unpack_from("<IHH", ok, 1)
        for count in (params, columns):
            for _ in range(count):
                self.read()
            if count and not self.deprecate_eof:
                _, eof = self.read()
                assert eof[:1] == b"\xfe"
        return sid, params

    def execute(
        self,
        sid: int,
        params: list[tuple[int, Any]],
        *,
        types: bool = True,
        cursor: bool = False,
    ) -> tuple[list[list[str | None]], int]:
        """(rows, status); rows of a cursor come with fetch()."""
        out = bytearray(b"\x17" + struct.pack("<IBI", sid, 1 if cursor else 0, 1))
        if params:
            bitmap = bytearray((len(params) + 7) // 8)
            for i, (_, v) in enumerate(params):
                if v is None:
                    bitmap[i // 8] |= 1 << (i % 8)
            out += bitmap
            out.append(1 if types else 0)
            if types:
                for t, _ in params:
                    out += struct.pack("<H", t)
            for t, v in params:
                if v is not None and v is not LONG_DATA:
                    out += _encode(t, v)
        self.send(bytes(out))
        return self._result()

    def fetch(self, sid: int, rows: int) -> tuple[list[list[str | None]], int]:
        self.send(b"\x1c" + struct.pack("<II", sid, rows))
        return self._rows(None)

    def reset(self, sid: int) -> None:
        self.send(b"\x1a" + struct.pack("<I", sid))
        self.ok_or_raise()

    def close_stmt(self, sid: int) -> None:
        self.send(b"\x19" + struct.pack("<I", sid))

    def long_data(self, sid: int, param: int, data: bytes) -> None:
        self.send(b"\x18" + struct.pack("<IH", sid, param) + data)

    def _status(self, p: bytes) -> int:
        if not self.deprecate_eof or len(p) < 7:
            return struct.unpack_from("<H", p, 3)[0]
        _, pos = read_lenenc_int(p, 1)
        _, pos = read_lenenc_int(p, pos)
        return struct.unpack_from("<H", p, pos)[0]

    def _result(self) -> tuple[list[list[str | None]], int]:
        _, first = self.read()
        if first[:1] == b"\xff":
            raise RawError(first)
        if first[:1] == b"\x00":
            return [], self._status_of_ok(first)
        ncols, _ = read_lenenc_int(first, 0)
        assert ncols is not None
        for _ in range(ncols):
            self.read()
        if not self.deprecate_eof:
            _, eof = self.read()
            status = self._status(eof)
            if status & SERVER_STATUS_CURSOR_EXISTS:
                return [], status
        return self._rows(ncols)

    def _status_of_ok(self, p: bytes) -> int:
        _, pos = read_lenenc_int(p, 1)
        _, pos = read_lenenc_int(p, pos)
        return struct.unpack_from("<H", p, pos)[0]

    def _rows(self, ncols: int | None) -> tuple[list[list[str | None]], int]:
        rows: list[list[str | None]] = []
        while True:
            _, p = self.read()
            if p[:1] == b"\xff":
                raise RawError(p)
            if p[:1] == b"\xfe" and len(p) < 0xFFFFFF:
                return rows, self._status(p)
            rows.append(_decode_row(p, ncols or self._last_ncols))
            self._last_ncols = ncols or self._last_ncols

    _last_ncols = 1


def _encode(t: int, v: Any) -> bytes:
    if t == LONGLONG:
        return struct.pack("<q", v)
    if t == DOUBLE:
        return struct.pack("<d", v)
    if t == DATE:
        return bytes((4,)) + struct.pack("<HBB", v.year, v.month, v.day)
    return write_lenenc_bytes(v.encode() if isinstance(v, str) else v)


def _decode_row(p: bytes, ncols: int) -> list[str | None]:
    """A binary row whose columns are all strings."""
    assert p[0] == 0x00
    nbytes = (ncols + 9) // 8
    bitmap = p[1 : 1 + nbytes]
    pos = 1 + nbytes
    row: list[str | None] = []
    for i in range(ncols):
        bit = i + 2
        if bitmap[bit // 8] & (1 << (bit % 8)):
            row.append(None)
            continue
        value, pos = read_lenenc_bytes(p, pos)
        assert value is not None
        row.append(value.decode())
    return row


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("use_pure", IMPLS)
def test_many_clients_share_prepared_statements_over_two_connections(
    proxy_factory, tables, use_pure
):
    """Six clients, each with prepared cursors never closed (one SQL text shared by all, one
    of its own), executed many times in separate autocommit transactions and in explicit
    ones, over two upstream connections: every result is right, nothing gets pinned."""
    p = start(proxy_factory, cap=2)
    errors: list[BaseException] = []
    conns = [open_connector(p, use_pure) for _ in range(6)]

    shared_sql = f"SELECT v, ? + 1 FROM {T}_kv WHERE id = ?"
    insert_sql = f"INSERT INTO {T}_log (who, n) VALUES (?, ?)"

    def client(i: int) -> None:
        conn = conns[i]
        # the same str object each time: the cursors keep their statement (never closed)
        own_sql = f"SELECT CONCAT(?, '-{i}'), ? * {i + 1}"
        try:
            shared = conn.cursor(prepared=True)
            own = conn.cursor(prepared=True)
            insert = conn.cursor(prepared=True)
            for k in range(25):
                key = (i + k) % 20 + 1
                assert run(shared, shared_sql, (k, key)) == [(f"row{key}", k + 1)]
                assert run(own, own_sql, (f"c{k}", k)) == [(f"c{k}-{i}", k * (i + 1))]
                if k % 5 == 0:
                    conn.start_transaction()
                    run(insert, insert_sql, (i, k))
                    assert run(shared, shared_sql, (1, 1)) == [("row1", 2)]
                    conn.commit()
                else:
                    run(insert, insert_sql, (i, k))
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        rows = tables.execute(f"SELECT who, COUNT(*) FROM test.{T}_log GROUP BY who ORDER BY who")
        assert [tuple(r) for r in rows] == [(i, 25) for i in range(6)]
        assert p.call(lambda: p.proxy.pool.stats.peak_open) <= 2
        no_session_pinned(p)
        assert_never_pinned_by_prepared(p)
    finally:
        for c in conns:
            c.close()
        tables.execute(f"DELETE FROM test.{T}_log")


@pytest.mark.parametrize("use_pure", IMPLS)
def test_parameter_types_carried_when_statements_are_prepared_again(
    proxy_factory, tables, use_pure
):
    """One upstream connection caching one statement: two cursors alternate, so each execute
    prepares its statement again upstream; ints, strings, NULLs, floats and dates still
    arrive as the client bound them."""
    p = start(proxy_factory, cap=1, cache=1)
    conn = open_connector(p, use_pure)
    prepares = server_prepares(tables)
    try:
        a = conn.cursor(prepared=True)
        b = conn.cursor(prepared=True)
        sql_a = "SELECT ? + 1, CONCAT('<', ?, '>'), ? IS NULL, ? * 2, DATE_ADD(?, INTERVAL 1 DAY)"
        sql_b = f"SELECT v FROM {T}_kv WHERE id = ?"
        for k in range(8):
            s = None if k % 3 == 0 else f"s{k}"
            got = run(
                a, sql_a, (k, s, None if k % 2 else k, k + 0.25, datetime.date(2024, 1, k + 1))
            )
            ((n, text, isnull, f, d),) = got
            assert n == k + 1
            assert text == (None if s is None else f"<{s}>")
            assert isnull == (1 if k % 2 else 0)
            assert float(f) == (k + 0.25) * 2
            assert str(d) == f"2024-01-{k + 2:02d}"
            assert run(b, sql_b, (k + 1,)) == [(f"row{k + 1}",)]
        # every execute found its statement evicted and prepared it again
        assert server_prepares(tables) - prepares >= 16
        assert session_state(p, conn.connection_id) == (None, False)
        assert_never_pinned_by_prepared(p)
    finally:
        conn.close()


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_types_sent_only_on_first_execute_are_reinserted_by_the_proxy(
    proxy_factory, tables, deprecate_eof
):
    """A client that binds types once (libmysqlclient does) and then executes with
    new_params_bound_flag 0: each time the statement was evicted upstream (cache of one) or
    last bound by another client with other types, the proxy sends the remembered types."""
    p = start(proxy_factory, cap=1, cache=1)
    a = RawClient(p.port, deprecate_eof=deprecate_eof)
    b = RawClient(p.port, deprecate_eof=deprecate_eof)
    sql = "SELECT CONCAT_WS('|', COALESCE(?, 'N'), COALESCE(?, 'N'), COALESCE(?, 'N'), COALESCE(?, 'N'))"
    try:
        sa, n = a.prepare(sql)
        assert n == 4
        other, _ = a.prepare(f"SELECT v FROM {T}_kv WHERE id = ?")
        sb, _ = b.prepare(sql)  # same text: the same upstream statement, other types
        day = datetime.date(2023, 5, 17)
        params_a = [(LONGLONG, 7), (VAR_STRING, "x"), (DOUBLE, 1.5), (DATE, day)]
        rows, _ = a.execute(sa, params_a)
        assert rows == [["7|x|1.5|2023-05-17"]]
        for k in range(6):
            if k % 2 == 0:
                # evicts `sql` from the only connection's cache
                assert a.execute(other, [(LONGLONG, k + 1)])[0] == [[f"row{k + 1}"]]
            else:
                # b binds the shared upstream statement with types of its own
                rows, _ = b.execute(
                    sb, [(VAR_STRING, "b"), (LONGLONG, k), (VAR_STRING, None), (VAR_STRING, "z")]
                )
                assert rows == [[f"b|{k}|N|z"]]
            params = [(LONGLONG, 100 + k), (VAR_STRING, None), (DOUBLE, k + 0.5), (DATE, day)]
            rows, _ = a.execute(sa, params, types=False)
            assert rows == [[f"{100 + k}|N|{k + 0.5}|2023-05-17"]]
        for c in (a, b):
            assert session_state(p, c.id) == (None, False)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("use_pure", IMPLS)
def test_statement_prepared_in_a_transaction_runs_after_commit(proxy_factory, tables, use_pure):
    p = start(proxy_factory, cap=2)
    conn = open_connector(p, use_pure)
    other = open_connector(p, use_pure)
    try:
        conn.start_transaction()
        cur = conn.cursor(prepared=True)
        insert_sql = f"INSERT INTO {T}_log (who, n) VALUES (?, ?)"
        run(cur, insert_sql, (100, 1))
        assert session_state(p, conn.connection_id) == (None, True)  # the transaction holds it
        conn.commit()
        assert session_state(p, conn.connection_id) == (None, False)
        # the other client takes a connection in a transaction of its own
        other.start_transaction()
        run(other.cursor(), f"SELECT COUNT(*) FROM {T}_log")
        for n in range(2, 6):
            run(cur, insert_sql, (100, n))
        other.commit()
        rows = tables.execute(f"SELECT n FROM test.{T}_log WHERE who = 100 ORDER BY n")
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
        no_session_pinned(p)
        assert_never_pinned_by_prepared(p)
    finally:
        conn.close()
        other.close()
        tables.execute(f"DELETE FROM test.{T}_log")


@pytest.mark.parametrize("use_pure", IMPLS)
def test_prepared_select_on_a_temporary_table(proxy_factory, tables, use_pure):
    """The temporary table pins; the statement runs on the pinned connection; dropping the
    table lets it go."""
    p = start(proxy_factory, cap=2)
    conn = open_connector(p, use_pure)
    try:
        text = conn.cursor()
        text.execute(f"CREATE TEMPORARY TABLE {T}_tmp (a INT, b VARCHAR(10))")
        text.execute(f"INSERT INTO {T}_tmp VALUES (1, 'one'), (2, 'two')")
        reason, holds = session_state(p, conn.connection_id)
        assert holds and reason is not None and "temporary" in reason
        cur = conn.cursor(prepared=True)
        select_sql = f"SELECT b FROM {T}_tmp WHERE a = ?"
        for k in (1, 2, 1):
            assert run(cur, select_sql, (k,)) == [("one" if k == 1 else "two",)]
        text.execute(f"DROP TEMPORARY TABLE {T}_tmp")
        assert session_state(p, conn.connection_id) == (None, False)
        assert session_state(p, conn.connection_id) == (None, False)
        assert run(cur, "SELECT ? + 1", (41,)) == [(42,)]
        assert session_state(p, conn.connection_id) == (None, False)
        assert_never_pinned_by_prepared(p)
    finally:
        conn.close()


def test_unknown_statement_ids_get_1243_without_upstream_use(proxy_factory, tables):
    p = start(proxy_factory, cap=2)
    raw = RawClient(p.port)
    try:
        with pytest.raises(RawError) as info:
            raw.execute(4242, [])
        assert info.value.code == 1243
        assert "4242" in info.value.message
        with pytest.raises(RawError) as info:
            raw.reset(4242)
        assert info.value.code == 1243
        with pytest.raises(RawError) as info:
            raw.fetch(4242, 1)
        assert info.value.code == 1243
        raw.close_stmt(4242)  # no answer, no harm
        raw.long_data(4242, 0, b"ignored")  # no answer either
        assert session_state(p, raw.id) == (None, False)
        raw.query("DO 1")
    finally:
        raw.close()


@pytest.mark.parametrize("use_pure", IMPLS)
def test_statement_ids_from_before_reset_connection_get_1243(proxy_factory, tables, use_pure):
    p = start(proxy_factory, cap=2)
    conn = open_connector(p, use_pure)
    try:
        cur = conn.cursor(prepared=True)
        sql = "SELECT ? + 1"
        assert run(cur, sql, (1,)) == [(2,)]
        conn.cmd_reset_connection()
        # the cursor executes its old statement id again: 1243, as from a server
        # (libmysqlclient detaches its statements on reset and refuses them itself)
        with pytest.raises(mysql_connector.Error) as info:
            run(cur, sql, (1,))
        assert info.value.errno == (1243 if use_pure else 2013), info.value
        fresh = conn.cursor(prepared=True)
        assert run(fresh, "SELECT ? * 3", (5,)) == [(15,)]
        assert run(fresh, "SELECT ? * 3", (6,)) == [(18,)]
        no_session_pinned(p)
        assert_never_pinned_by_prepared(p)
    finally:
        conn.close()


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_cursor_pins_until_the_last_row_and_reset_and_close_behave(
    proxy_factory, tables, deprecate_eof
):
    p = start(proxy_factory, cap=2)
    c = RawClient(p.port, deprecate_eof=deprecate_eof)
    other = RawClient(p.port)
    try:
        sid, _ = c.prepare("SELECT CAST(seq AS CHAR) FROM seq_1_to_5 WHERE seq >= ?")
        rows, status = c.execute(sid, [(LONGLONG, 1)], cursor=True)
        assert rows == [] and status & SERVER_STATUS_CURSOR_EXISTS
        assert session_state(p, c.id) == (pinreasons.BINARY_CURSOR, True)
        other.query("DO 1")  # the other connection is free for others
        got: list[str | None] = []
        while True:
            rows, status = c.fetch(sid, 2)
            got += [r[0] for r in rows]
            if status & SERVER_STATUS_LAST_ROW_SENT:
                break
            assert session_state(p, c.id) == (pinreasons.BINARY_CURSOR, True)
        assert got == ["1", "2", "3", "4", "5"]
        assert session_state(p, c.id) == (None, False)
        with pytest.raises(RawError) as info:
            c.fetch(sid, 1)  # no cursor any more
        assert info.value.code == 1421

        # a cursor given up by COM_STMT_RESET
        c.execute(sid, [(LONGLONG, 3)], types=False, cursor=True)
        assert session_state(p, c.id)[0] == pinreasons.BINARY_CURSOR
        assert c.fetch(sid, 1)[0] == [["3"]]
        c.reset(sid)
        assert session_state(p, c.id) == (None, False)
        c.reset(sid)  # nothing upstream: answered by the proxy
        assert c.execute(sid, [(LONGLONG, 4)], types=False)[0] == [["4"], ["5"]]

        # ... and by COM_STMT_CLOSE
        c.execute(sid, [(LONGLONG, 2)], types=False, cursor=True)
        assert session_state(p, c.id)[0] == pinreasons.BINARY_CURSOR
        c.close_stmt(sid)
        c.query("DO 1")
        assert session_state(p, c.id) == (None, False)
        with pytest.raises(RawError) as info:
            c.execute(sid, [(LONGLONG, 2)])
        assert info.value.code == 1243
        assert_never_pinned_by_prepared(p)
    finally:
        c.close()
        other.close()


@pytest.mark.parametrize("use_pure", [pytest.param(True, id="pure", marks=IMPLS[0].marks)])
def test_long_data_pins_until_the_execute(proxy_factory, tables, wait_until, use_pure):
    p = start(proxy_factory, cap=2)
    conn = open_connector(p, use_pure)
    raw = RawClient(p.port)
    try:
        cur = conn.cursor(prepared=True)
        blob = b"0123456789" * 5000
        assert run(cur, "SELECT LENGTH(?), MD5(?)", (io.BytesIO(blob), "x")) == [
            (len(blob), hashlib.md5(b"x").hexdigest())
        ]
        assert session_state(p, conn.connection_id) == (None, False)

        sid, _ = raw.prepare("SELECT CONCAT(?, '!')")
        raw.long_data(sid, 0, b"part1-")
        raw.long_data(sid, 0, b"part2")
        # no answer comes: wait for the proxy to have read it
        wait_until(lambda: session_state(p, raw.id) == (pinreasons.LONG_DATA, True))
        assert raw.execute(sid, [(VAR_STRING, LONG_DATA)])[0] == [["part1-part2!"]]
        assert session_state(p, raw.id) == (None, False)
        assert_never_pinned_by_prepared(p)
    finally:
        raw.close()
        conn.close()


@pytest.mark.parametrize("use_pure", IMPLS)
def test_server_prepared_statement_count_stays_within_the_cache(proxy_factory, tables, use_pure):
    """Clients preparing many different statements never make the server hold more than
    max_connections * prepared_statement_cache of them."""
    cap, cache = 2, 4
    before = prepared_stmt_count(tables)
    p = start(proxy_factory, cap=cap, cache=cache)
    conns = [open_connector(p, use_pure) for _ in range(3)]
    errors: list[BaseException] = []
    peak = [0]

    def client(i: int) -> None:
        try:
            conn = conns[i]
            curs = [conn.cursor(prepared=True) for _ in range(10)]
            for rnd in range(3):
                for j, cur in enumerate(curs):
                    assert run(cur, f"SELECT ? + {j} /* {i} */", (rnd,)) == [(rnd + j,)]
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], prepared_stmt_count(tables) - before)
            threads[0].join(0.01)
        for t in threads:
            t.join(30)
        assert not errors, errors
        peak[0] = max(peak[0], prepared_stmt_count(tables) - before)
        assert 0 < peak[0] <= cap * cache
        no_session_pinned(p)
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("use_pure", IMPLS)
def test_statement_prepared_again_under_its_own_schema_and_sql_mode(
    proxy_factory, tables, use_pure
):
    """A statement evicted upstream is prepared again under the schema and sql_mode it was
    prepared under, even after the client moved to another schema and sql_mode."""
    p = start(proxy_factory, cap=1, cache=1)
    conn = open_connector(p, use_pure)
    try:
        text = conn.cursor()
        text.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
        quoted = conn.cursor(prepared=True)
        quoted_sql = f'SELECT "v" FROM {T}_kv WHERE id = ?'  # a column under ANSI_QUOTES
        assert run(quoted, quoted_sql, (1,)) == [("row1",)]
        text.execute("SET SESSION sql_mode = REPLACE(@@sql_mode, 'ANSI_QUOTES', '')")
        plain = conn.cursor(prepared=True)
        plain_sql = f"SELECT v FROM {T}_kv WHERE id = ?"
        assert run(plain, plain_sql, (2,)) == [("row2",)]  # evicts quoted_sql
        assert run(quoted, quoted_sql, (2,)) == [("row2",)]  # its sql_mode only, evicts plain
        assert session_state(p, conn.connection_id) == (None, False)
        text.execute(f"USE {OTHER_DB}")
        other = conn.cursor(prepared=True)
        assert run(other, plain_sql, (1,)) == [("other1",)]  # evicts the test one
        for k in (1, 2):
            assert run(quoted, quoted_sql, (k,)) == [(f"row{k}",)]
            assert run(plain, plain_sql, (k,)) == [(f"row{k}",)]
            assert run(other, plain_sql, (k,)) == [(f"other{k}",)]
        # and the session's own schema and sql_mode are unchanged
        text.execute("SELECT DATABASE(), @@sql_mode LIKE '%ANSI_QUOTES%'")
        assert text.fetchall() == [(OTHER_DB, 0)]
        assert session_state(p, conn.connection_id) == (None, False)
        assert_never_pinned_by_prepared(p)
    finally:
        conn.close()
