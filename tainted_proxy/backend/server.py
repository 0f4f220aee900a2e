"""One upstream (server) connection: connect, authenticate, run the proxy's own commands,
reset for reuse.

Relaying client traffic does not go through here byte by byte: the frontend drives
``conn``/``buf``/``tracker`` directly on the hot path. This module owns everything the
proxy itself says to the server.
"""

from __future__ import annotations

import itertools
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

import trio

from tainted_proxy.net import Conn, ConnectionClosed, TlsConn, open_tcp, open_unix
from tainted_proxy.state.settings import EMPTY, TRACKING_SQL, Baseline, Settings, settings_sql
from tainted_proxy.state.sql_prepared import ConnSqlStatements
from tainted_proxy.state.values import FOUND_ROWS
from tainted_proxy.wire import auth as wauth
from tainted_proxy.wire.buffer import PacketBuffer, join_payload
from tainted_proxy.wire.codec import frame
from tainted_proxy.wire.constants import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_IGNORE_SPACE,
    CLIENT_INTERACTIVE,
    CLIENT_LONG_FLAG,
    CLIENT_LONG_PASSWORD,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    CLIENT_TRANSACTIONS,
    COM_INIT_DB,
    COM_QUERY,
    COM_RESET_CONNECTION,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_NO_BACKSLASH_ESCAPES,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import (
    AuthSwitchRequest,
    ChangeUser,
    ErrPacket,
    HandshakeResponse41,
    HandshakeV10,
    OkPacket,
    SslRequest,
    com_init_db,
    com_query,
    com_quit,
    com_reset_connection,
)
from tainted_proxy.wire.response import ResponseTracker

# What the proxy always asks of the server, whatever the client asked.
REQUIRED_CAPS = (
    CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_TRANSACTIONS
    | CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
)

_serial = itertools.count(1)


class UpstreamError(Exception):
    """The upstream server could not be reached, refused us, or broke the protocol."""

    def __init__(self, message: str, err: ErrPacket | None = None) -> None:
        super().__init__(message)
        self.err = err


class UpstreamMisconfigured(UpstreamError):
    """The upstream answered, and the configuration cannot work with it (TLS required by
    the proxy and not offered, the proxy's login refused): retrying will not help."""


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where and how to connect (resolved from the configuration)."""

    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str = ""
    connect_timeout: float = 5.0
    tls: str = "disabled"  # disabled | preferred | required | verify_ca | verify_identity
    tls_ca: str = ""

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls == "disabled":
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca or None)
        if self.tls in ("preferred", "required"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.tls == "verify_ca":
            ctx.check_hostname = False
        return ctx


# MariaDB's COM_RESET_CONNECTION and COM_CHANGE_USER keep the SHOW PROFILES history (other
# sessions' SQL text), and a reset of a profiling session reads @@profiling = 0 but goes
# on profiling: empty the history and switch profiling off first (measured on 10.11)
_CLEAR_PROFILES = (
    b"SET SESSION profiling = 1, profiling_history_size = 0",
    b"DO 0",
    b"SET SESSION profiling = 0",
)


class PendingValues(Protocol):
    """A session whose last statement's values are still only on a connection."""

    def values_lost(self) -> None: ...


class ServerConn:
    """An authenticated upstream connection and what the proxy knows of its state."""

    __slots__ = (
        "serial",
        "conn",
        "buf",
        "tracker",
        "thread_id",
        "server_version",
        "capabilities",
        "handshake_charset",
        "charset",
        "schema",
        "user",
        "key",
        "status",
        "created_at",
        "last_used",
        "checked_at",
        "broken",
        "mariadb",
        "kills_in_flight",
        "_password",
        "_scramble",
        "_plugin",
        "secure",
        "home_schema",
        "options_changed",
        "default_role",
        "settings",
        "tracking",
        "statements",
        "values_owner",
        "insert_id",
        "diagnostics_clean",
        "pending_for",
        "pseudo_thread_id",
        "sql_statements",
        "foreign",
        "user_vars_of",
        "_poller",
    )

    def __init__(self, conn: Conn | TlsConn, capabilities: int, user: str) -> None:
        self.serial = next(_serial)
        self.conn = conn
        self.buf = PacketBuffer()
        self.capabilities = capabilities
        self.tracker = ResponseTracker(bool(capabilities & CLIENT_DEPRECATE_EOF))
        self.thread_id = 0
        self.server_version = ""
        self.handshake_charset = 0
        self.charset = 0
        self.schema: str | None = None
        self.user = user
        self.key: object = None
        self.status = SERVER_STATUS_AUTOCOMMIT
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        # when the pool's health check last found it alive (pool.health_check_idle)
        self.checked_at = self.created_at
        self.broken = False
        self.mariadb = False
        # a KILL aimed at this connection's thread is on its way: never reuse it
        self.kills_in_flight = 0
        self._password = ""
        self._scramble = b""
        self._plugin = "mysql_native_password"
        self.secure = False
        # the database of the login this connection last served: resets restore it
        self.home_schema: str | None = None
        # COM_SET_OPTION was relayed: it survives COM_RESET_CONNECTION and COM_CHANGE_USER
        self.options_changed = False
        # the role active after login; MariaDB keeps SET ROLE across both resets
        self.default_role: str | None = None
        # transaction pooling: the session variables this connection carries that differ
        # from a fresh one (as the server reported them), and whether the proxy's
        # session trackers are on (every reset turns them off)
        self.settings: Settings = EMPTY
        self.tracking = False
        # binary prepared statements cached on this connection (backend.statements)
        self.statements: object = None
        # the per-statement values (state.values) on this connection are those of
        # (client id, statement number) of a session; None after any statement of the
        # proxy's own, which changes ROW_COUNT() and FOUND_ROWS()
        self.values_owner: tuple[int, int] | None = None
        # LAST_INSERT_ID() here, when the proxy knows it
        self.insert_id: int | None = 0
        # the diagnostics area is known to be empty (no session's warnings or errors)
        self.diagnostics_clean = True
        # values that outlive a statement (LAST_INSERT_ID(), FOUND_ROWS(), the
        # diagnostics) still as a session before the current holder left them
        # (state.values names; cleared one by one as the holder's statements set them)
        self.foreign: set[str] = set()
        # the session whose user variables were set here: only a reset removes a user
        # variable (SET @v = NULL leaves it, typed, in information_schema.USER_VARIABLES)
        self.user_vars_of: int | None = None
        self._poller: select.poll | None = None
        # the session whose per-statement values this idle connection still holds
        # unread: whoever takes the connection next reads them for it first
        self.pending_for: PendingValues | None = None
        # the client id CONNECTION_ID() returns here (SET pseudo_thread_id), if set
        self.pseudo_thread_id: int | None = None
        # SQL-level prepared statements held here (state.sql_prepared.ConnSqlStatements)
        self.sql_statements: ConnSqlStatements = ConnSqlStatements()

    def __repr__(self) -> str:
        return f"<ServerConn #{self.serial} thread={self.thread_id} user={self.user}>"

    # -- packet I/O for the proxy's own exchanges -----------------------------------
    async def read_packet(self) -> tuple[int, bytes]:
        """One whole logical packet (fragments joined)."""
        buf = self.buf
        while True:
            got = buf.logical_packet_size()
            if got is not None and got[1]:
                size = got[0]
                seq = buf.data[3]
                payload = join_payload(buf.data, size)
                buf.consume(size)
                return seq, payload
            await self.conn.recv_into(buf)

    async def send_payload(self, payload: bytes, seq: int) -> None:
        data, _ = frame(payload, seq)
        await self.conn.send_all(data)

    async def command_ok(self, payload: bytes) -> OkPacket:
        """Send one command of the proxy's own and return its OK (UpstreamError on ERR)."""
        await self.send_payload(payload, 0)
        return await self._read_ok(payload[0])

    async def _read_ok(self, command: int) -> OkPacket:
        _seq, resp = await self.read_packet()
        if resp[:1] == b"\xff":
            err = ErrPacket.decode(resp)
            raise UpstreamError(
                f"upstream error {err.code} on command {command}: {err.message}", err
            )
        if resp[:1] not in (b"\x00", b"\xfe"):
            raise ProtocolError(f"unexpected response to command {command}")
        ok = OkPacket.decode(resp, self.capabilities)
        self.status = ok.status
        return ok

    async def init_db(self, payload: bytes) -> bytes:
        """Relay one COM_INIT_DB payload; return the server's response payload (OK or
        ERR) and remember the schema when it was selected."""
        await self.send_payload(payload, 0)
        _seq, resp = await self.read_packet()
        if resp[:1] == b"\x00":
            self.schema = payload[1:].decode("utf-8", "surrogateescape")
        return resp

    async def query_rows(self, sql: str) -> list[list[bytes | None]]:
        """Run a query of the proxy's own and return its text rows (small results only)."""
        await self.send_payload(com_query(sql.encode()), 0)
        return await self._read_rows()

    async def query_many(self, queries: list[bytes]) -> list[list[list[bytes | None]] | None]:
        """Run queries of the proxy's own, pipelined in one write; the text rows of
        each (None for one that failed). The diagnostics area then holds whatever the
        last one left."""
        await self.conn.send_all(b"".join(frame(com_query(q), 0)[0] for q in queries))
        self.values_owner = None
        out: list[list[list[bytes | None]] | None] = []
        for _ in queries:
            try:
                out.append(await self._read_rows())
            except UpstreamError:
                self.diagnostics_clean = False
                out.append(None)
        return out

    async def _read_rows(self) -> list[list[bytes | None]]:
        tracker = self.tracker
        tracker.start(COM_QUERY)
        packets: list[bytes] = []
        while True:
            _seq, payload = await self.read_packet()
            packets.append(payload)
            data, _ = frame(payload, 0)
            tracker.scan(data, len(data))
            if tracker.done:
                break
        if tracker.error:
            err = ErrPacket.decode(packets[-1])
            raise UpstreamError(f"upstream error {err.code}: {err.message}", err)
        self.status = tracker.status
        return _text_rows(packets, bool(self.capabilities & CLIENT_DEPRECATE_EOF))

    # -- reuse ---------------------------------------------------------------------
    async def reset(self, schema: str | None) -> None:
        """COM_RESET_CONNECTION, then re-select ``schema``: MariaDB keeps the current
        database across a reset, and returns charset to the handshake's. Pipelined in
        one write (one round trip's latency)."""
        if schema is None:
            # Only COM_CHANGE_USER gets back to "no database selected", and ``self.schema``
            # may say None while a database is selected: a client's `USE db` (COM_QUERY) is
            # not tracked. Trusting it leaked the previous client's schema to the next one.
            # change_user costs the same single round trip as the reset.
            await self.change_user(None)
            return
        tracking = self.tracking
        msgs = [frame(com_reset_connection(), 0)[0], frame(com_init_db(schema), 0)[0]]
        if self.mariadb:
            msgs[:0] = [frame(com_query(q), 0)[0] for q in _CLEAR_PROFILES]
        if self.mariadb:
            msgs.append(frame(com_query(self._set_role_sql()), 0)[0])
        restore = self._capability_sql()
        if restore:
            msgs.append(frame(com_query(restore), 0)[0])
        if tracking:
            msgs.append(frame(com_query(TRACKING_SQL), 0)[0])
        await self.conn.send_all(b"".join(msgs))
        if self.mariadb:
            for _ in _CLEAR_PROFILES:
                await self._read_ok(COM_QUERY)
        await self._read_ok(COM_RESET_CONNECTION)
        self._forget_session()
        self.charset = self.handshake_charset
        await self._read_ok(COM_INIT_DB)
        if self.mariadb:
            await self._read_ok(COM_QUERY)
        if restore:
            await self._read_ok(COM_QUERY)
        if tracking:
            await self._read_ok(COM_QUERY)
            self.tracking = True
        self.schema = schema
        self.status = SERVER_STATUS_AUTOCOMMIT
        self._forget_session()

    def _capability_sql(self) -> bytes:
        """What the login's capability flags put in the session and a reset takes away:
        CLIENT_IGNORE_SPACE adds IGNORE_SPACE to sql_mode, CLIENT_INTERACTIVE makes
        wait_timeout the interactive_timeout (measured on MariaDB 10.11)."""
        parts = []
        if self.capabilities & CLIENT_IGNORE_SPACE:
            parts.append(b"sql_mode = CONCAT(@@sql_mode, ',IGNORE_SPACE')")
        if self.capabilities & CLIENT_INTERACTIVE:
            parts.append(b"wait_timeout = @@global.interactive_timeout")
        return b"SET SESSION " + b", ".join(parts) if parts else b""

    def _forget_session(self) -> None:
        """After COM_RESET_CONNECTION / COM_CHANGE_USER: the server dropped every
        setting, statement, per-statement value and the trackers."""
        self.settings = EMPTY
        self.tracking = False
        self.values_owner = None
        self.insert_id = 0
        self.diagnostics_clean = True
        # (COM_RESET_CONNECTION keeps FOUND_ROWS(), measured on MariaDB 10.11)
        self.foreign = {FOUND_ROWS}
        self.user_vars_of = None
        self.pseudo_thread_id = None
        self.sql_statements.clear()
        forget = getattr(self.statements, "forget_all", None)
        if forget is not None:
            forget()

    def carries(self, settings: Settings, schema: str | None) -> bool:
        """True when ``converge(settings, schema, ...)`` would have nothing to do."""
        return self.tracking and self.settings == settings and self.schema == schema

    async def converge(
        self,
        settings: Settings,
        schema: str | None,
        baseline: Baseline,
    ) -> bool:
        """Bring this connection to ``settings`` and ``schema`` with the trackers on:
        one ``SET SESSION`` with only the differences and a COM_INIT_DB, pipelined in
        one write. True when a round trip was needed. On ERR the connection's
        state is unknown: UpstreamError, and the caller must discard it."""
        if schema is None and self.schema is not None:
            # only COM_CHANGE_USER gets back to "no database selected"
            await self.change_user(None)
        parts: list[bytes] = []
        if not self.tracking:
            parts.append(TRACKING_SQL[len(b"SET SESSION ") :])
        diff = settings_sql(
            self.settings,
            settings,
            baseline,
            no_backslash_escapes=bool(self.status & SERVER_STATUS_NO_BACKSLASH_ESCAPES),
        )
        if diff is not None:
            head = b"SET SESSION " if diff.startswith(b"SET SESSION ") else b"SET "
            parts.append(diff[len(head) :])
        use_db = schema is not None and schema != self.schema
        msgs: list[bytes] = []
        if parts:
            body = b", ".join(parts)
            head = b"SET " if body.startswith(b"@") else b"SET SESSION "
            msgs.append(frame(com_query(head + body), 0)[0])
        if use_db:
            assert schema is not None
            msgs.append(frame(com_init_db(schema), 0)[0])
        if not msgs:
            return False
        await self.conn.send_all(b"".join(msgs))
        self.values_owner = None  # a SET makes ROW_COUNT() 0
        # read every response even after an ERR: pipelined answers must not be left behind
        first_error: UpstreamError | None = None
        if parts:
            try:
                await self._read_ok(COM_QUERY)
            except UpstreamError as exc:
                first_error = exc
        if use_db:
            try:
                await self._read_ok(COM_INIT_DB)
            except UpstreamError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        self.tracking = True
        self.settings = settings
        self.schema = schema
        return True

    def _set_role_sql(self) -> bytes:
        role = self.default_role
        if role is None:
            return b"SET ROLE NONE"
        return b"SET ROLE `" + role.replace("`", "``").encode("utf-8", "surrogateescape") + b"`"

    async def change_user(self, database: str | None) -> None:
        """COM_CHANGE_USER to the same login: a full reset that also sets the schema
        (or clears it: the only way to get back to "no database selected")."""
        payload = ChangeUser(
            username=self.user,
            auth_response=_auth_response(self._plugin, self._password, self._scramble),
            database=database,
            charset=self.handshake_charset,
            auth_plugin=self._plugin,
            attributes={},
        ).encode(self.capabilities)
        tracking = self.tracking
        if self.mariadb:
            for q in _CLEAR_PROFILES:  # COM_CHANGE_USER keeps them too (see reset)
                await self.command_ok(com_query(q))
        await self.send_payload(payload, 0)
        await self._auth_exchange(self._plugin, self._scramble, after_change_user=True)
        self._forget_session()
        if self.mariadb:
            await self.command_ok(com_query(self._set_role_sql()))
        restore = self._capability_sql()
        if restore:
            await self.command_ok(com_query(restore))
        if tracking:
            await self.command_ok(com_query(TRACKING_SQL))
            self.tracking = True
        self.charset = self.handshake_charset
        self.schema = database
        self.status = SERVER_STATUS_AUTOCOMMIT

    async def _auth_exchange(
        self, plugin: str, scramble: bytes, after_change_user: bool = False
    ) -> None:
        """Answer the server's auth switches / more-data requests until OK or ERR."""
        password = self._password
        while True:
            seq, payload = await self.read_packet()
            seq = (seq + 1) & 0xFF
            head = payload[:1]
            if head == b"\x00":
                self._plugin = plugin
                self._scramble = scramble
                return
            if head == b"\xff":
                err = ErrPacket.decode(payload)
                what = "change user" if after_change_user else "login"
                raise UpstreamError(
                    f"upstream {what} as {self.user!r} failed: {err.code} {err.message}", err
                )
            if head == b"\xfe":
                sw = AuthSwitchRequest.decode(payload)
                plugin = sw.plugin
                scramble = sw.data
                await self.send_payload(_auth_response(plugin, password, scramble), seq)
            elif head == b"\x01":
                more = payload[1:]
                if plugin == "caching_sha2_password" and more == b"\x03":
                    continue  # fast auth succeeded; the OK follows
                if plugin == "caching_sha2_password" and more == b"\x04":
                    if self.secure:
                        await self.send_payload(password.encode() + b"\x00", seq)
                    else:
                        await self.send_payload(b"\x02", seq)  # ask for the RSA public key
                    continue
                if plugin in ("caching_sha2_password", "sha256_password") and more.startswith(
                    b"-----BEGIN"
                ):
                    await self.send_payload(
                        wauth.rsa_encrypt_password(password, scramble, more), seq
                    )
                    continue
                raise UpstreamError(f"unsupported auth exchange for plugin {plugin!r}")
            else:
                raise UpstreamError("unexpected packet during upstream authentication")

    def idle_alive(self) -> bool:
        """For a connection between commands (idle in the pool): False when the server
        closed it (restart, crash, wait_timeout, KILL) or sent something unsolicited
        (the ERR MariaDB sends before closing). One poll(2) with a zero timeout, no round
        trip: without it the next client would log in on a dead connection and lose its
        first query. (A poll object per connection: a quarter of the cost of a
        MSG_PEEK recv, which raises BlockingIOError in the normal case.)"""
        if self.broken or self.buf.end:
            return False
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.conn.sock, select.POLLIN | select.POLLPRI)
        try:
            # readable (EOF, unsolicited bytes), or POLLHUP / POLLERR / POLLNVAL
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def quit_nowait(self) -> bool:
        """Start closing without blocking: COM_QUIT (plain sockets; best effort) and a
        half-close, so the server ends the session. True when the server may still count
        this connection (wait for ``wait_server_gone``, then ``close``); False when the
        socket is already dead (EOF, reset, or closed by us): there is nothing to wait
        for. Either way the connection is unusable from now on."""
        self._retire()
        conn = self.conn
        if conn.closed:
            return False
        sock = conn.sock
        if _drain_to_eof(sock):
            return False
        if not conn.is_tls:
            # a TLS connection cannot say COM_QUIT without awaiting the TLS layer: it
            # gets only the half-close (the server logs an aborted connection)
            try:
                sock.send(_QUIT_FRAME, socket.MSG_DONTWAIT)
            except OSError:
                pass  # a full send buffer: the half-close alone ends the session
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True

    async def wait_server_gone(self) -> None:
        """After ``quit_nowait``: return once the server has closed its side (EOF or
        reset), discarding whatever it still sends (an abandoned result, TLS records).
        MariaDB closes the socket when it ends the session, so until then it counts
        the connection against its max_connections."""
        sock = self.conn.sock
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError, ValueError):
                return  # closed by us meanwhile (the pool shutting down)
            if _drain_to_eof(sock):
                return

    def close(self) -> None:
        self._retire()
        self.conn.close()

    def _retire(self) -> None:
        self.broken = True
        owner, self.pending_for = self.pending_for, None
        if owner is not None:
            owner.values_lost()


_QUIT_FRAME = frame(com_quit(), 0)[0]


def _drain_to_eof(sock: socket.socket, limit: int = 1 << 20) -> bool:
    """Read and drop what the socket holds now, without blocking. True when that ends
    in EOF or an error (the peer is gone); False when the peer is still there (nothing
    more to read yet, or more than ``limit`` bytes pending)."""
    read = 0
    while read < limit:
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        if not data:
            return True
        read += len(data)
    return False


def _text_rows(packets: list[bytes], deprecate_eof: bool) -> list[list[bytes | None]]:
    from tainted_proxy.wire.codec import read_lenenc_bytes, read_lenenc_int

    if not packets or packets[0][:1] == b"\x00":
        return []
    ncols, _ = read_lenenc_int(packets[0], 0)
    assert ncols is not None
    i = 1 + ncols + (0 if deprecate_eof else 1)
    rows: list[list[bytes | None]] = []
    for p in packets[i:]:
        if p[:1] == b"\xfe" and len(p) < 0xFFFFFF:
            break
        pos = 0
        row: list[bytes | None] = []
        for _ in range(ncols):
            val, pos = read_lenenc_bytes(p, pos)
            row.append(val)
        rows.append(row)
    return rows


async def connect(
    target: UpstreamTarget,
    *,
    user: str,
    password: str,
    capabilities: int,
    charset: int,
    database: str | None = None,
    attributes: dict[str, str] | None = None,
) -> ServerConn:
    """Open and authenticate one upstream connection (mysql_native_password,
    caching_sha2_password fast and full path, optional TLS)."""
    try:
        with trio.fail_after(target.connect_timeout):
            return await _connect(
                target,
                user=user,
                password=password,
                capabilities=capabilities,
                charset=charset,
                database=database,
                attributes=attributes or {},
            )
    except trio.TooSlowError as exc:
        raise UpstreamError(
            f"timed out after {target.connect_timeout:g}s connecting to upstream "
            f"{target.unix_socket or f'{target.host}:{target.port}'}"
        ) from exc
    except (OSError, ConnectionClosed) as exc:
        raise UpstreamError(
            f"cannot connect to upstream {target.unix_socket or f'{target.host}:{target.port}'}: {exc}"
        ) from exc


async def _connect(
    target: UpstreamTarget,
    *,
    user: str,
    password: str,
    capabilities: int,
    charset: int,
    database: str | None,
    attributes: dict[str, str],
) -> ServerConn:
    conn: Conn | TlsConn
    if target.unix_socket:
        conn = await open_unix(target.unix_socket)
    else:
        conn = await open_tcp(target.host, target.port)
    try:
        server = ServerConn(conn, 0, user)
        seq, payload = await server.read_packet()
        if payload[:1] == b"\xff":
            err = ErrPacket.decode(payload)
            raise UpstreamError(f"upstream refused the connection: {err.code} {err.message}", err)
        hs = HandshakeV10.decode(payload)
        caps = (capabilities | REQUIRED_CAPS) & (hs.capabilities | CLIENT_LONG_PASSWORD)
        caps &= ~CLIENT_SSL
        if database:
            caps |= CLIENT_CONNECT_WITH_DB
        else:
            caps &= ~CLIENT_CONNECT_WITH_DB
        if attributes and hs.capabilities & CLIENT_CONNECT_ATTRS:
            caps |= CLIENT_CONNECT_ATTRS
        ctx = target.ssl_context()
        tls = False
        seq = (seq + 1) & 0xFF
        if ctx is not None and hs.capabilities & CLIENT_SSL:
            caps |= CLIENT_SSL
            await server.send_payload(SslRequest(caps, 1 << 24, charset, 0).encode(), seq)
            seq = (seq + 1) & 0xFF
            hostname = None if target.tls in ("preferred", "required", "verify_ca") else target.host
            assert isinstance(conn, Conn)
            conn = await conn.start_tls_client(ctx, hostname)
            server.conn = conn
            tls = True
        elif ctx is not None and target.tls != "preferred":
            raise UpstreamMisconfigured(
                "upstream does not support TLS but upstream.tls requires it"
            )
        server.capabilities = caps
        server.tracker = ResponseTracker(bool(caps & CLIENT_DEPRECATE_EOF))
        plugin = hs.auth_plugin or "mysql_native_password"
        scramble = hs.auth_data
        resp = _auth_response(plugin, password, scramble)
        await server.send_payload(
            HandshakeResponse41(
                capabilities=caps,
                max_packet=1 << 24,
                charset=charset,
                username=user,
                auth_response=resp,
                database=database,
                auth_plugin=plugin,
                attributes=attributes,
            ).encode(),
            seq,
        )
        server.secure = tls or bool(target.unix_socket)
        server._password = password
        await server._auth_exchange(plugin, scramble)
        server.thread_id = hs.connection_id
        server.server_version = hs.server_version
        server.mariadb = "MariaDB" in hs.server_version
        server.handshake_charset = charset
        server.charset = charset
        server.schema = database or None
        if server.mariadb:
            # MariaDB keeps SET ROLE across COM_RESET_CONNECTION and COM_CHANGE_USER, so
            # resets must restore the role a fresh login has (the account's default role)
            rows = await server.query_rows("SELECT CURRENT_ROLE()")
            role = rows[0][0] if rows else None
            server.default_role = role.decode("utf-8", "surrogateescape") if role else None
        return server
    except BaseException:
        conn.close()
        raise


def _auth_response(plugin: str, password: str, scramble: bytes) -> bytes:
    if plugin == "mysql_native_password":
        return wauth.native_password_response(password, scramble[:20])
    if plugin == "caching_sha2_password":
        return wauth.caching_sha2_response(password, scramble[:20])
    if plugin == "mysql_clear_password":
        return password.encode() + b"\x00"
    raise UpstreamError(f"upstream asks for unsupported auth plugin {plugin!r}")
