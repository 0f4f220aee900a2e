"""One client session: handshake, then the command loop that relays commands upstream
and responses back, and the commands the proxy answers itself (COM_QUIT,
COM_CHANGE_USER, COM_RESET_CONNECTION, KILL, CONNECTION_ID()).

Session pooling: a session holds one upstream connection from login to logout. When it
ends, the connection is reset and pooled if its state is known (between commands), and
closed otherwise (client vanished mid-result, protocol error, upstream failure).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import trio

from tainted_proxy.backend.server import ServerConn, UpstreamError
from tainted_proxy.frontend import prepared, sql_prepared
from tainted_proxy.frontend.guard import KILL_WORD, KillRequest, Refusal, vet_kill
from tainted_proxy.frontend.handshake import (
    SEMANTIC_CAPABILITIES,
    AuthFailed,
    ClientLogin,
    access_denied,
    client_handshake,
)
from tainted_proxy.frontend.io import ClientIO, PacketTooLarge
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.pool.pool import PoolKey, PoolTimeout
from tainted_proxy.state import answers
from tainted_proxy.state import pins as pinreasons
from tainted_proxy.state import values as statevalues
from tainted_proxy.state.pins import Pins
from tainted_proxy.state.settings import (
    EMPTY,
    IGNORED,
    UNKEYABLE,
    Settings,
    apply_reported,
    carried_user_vars,
    for_charset,
    with_user_vars,
)
from tainted_proxy.state.sql_prepared import SessionSqlStatements
from tainted_proxy.state.values import Outcome, Values
from tainted_proxy.state.verdict import opens_transaction, verdict
from tainted_proxy.taint.classifier import classify_flags
from tainted_proxy.taint.crosscheck import may_call_stored_function
from tainted_proxy.taint.effects import Classification, Effect
from tainted_proxy.taint.fingerprint import fingerprint
from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES
from tainted_proxy.wire import auth as wauth
from tainted_proxy.wire.constants import (
    CLIENT_SESSION_TRACK,
    COM_BINLOG_DUMP,
    COM_BINLOG_DUMP_GTID,
    COM_CHANGE_USER,
    COM_CONNECT,
    COM_CONNECT_OUT,
    COM_DAEMON,
    COM_DEBUG,
    COM_DELAYED_INSERT,
    COM_INIT_DB,
    COM_PING,
    COM_PROCESS_INFO,
    COM_PROCESS_KILL,
    COM_QUERY,
    COM_QUIT,
    COM_REGISTER_SLAVE,
    COM_RESET_CONNECTION,
    COM_SET_OPTION,
    COM_SHUTDOWN,
    COM_SLEEP,
    COM_STMT_BULK_EXECUTE,
    COM_STMT_PREPARE,
    COM_TABLE_DUMP,
    COM_TIME,
    COMMAND_NAMES,
    ER_BAD_DB_ERROR,
    ER_CON_COUNT_ERROR,
    ER_CONNECTION_KILLED,
    ER_NO_SUCH_THREAD,
    ER_PROXY_UPSTREAM,
    ER_UNKNOWN_COM_ERROR,
    ER_UNKNOWN_ERROR,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import (
    AuthSwitchRequest,
    ChangeUser,
    ErrPacket,
    OkPacket,
    SchemaChange,
    StateChange,
    SysVarChange,
    com_init_db,
    com_query,
    com_reset_connection,
    ok_response,
    ok_status,
    parse_session_state,
    strip_session_tracking,
    text_resultset,
)

if TYPE_CHECKING:
    from tainted_proxy.frontend.proxy import Proxy

log = logging.getLogger("tainted_proxy.session")

_UNSUPPORTED = frozenset(
    (
        COM_SLEEP,
        COM_SHUTDOWN,
        COM_PROCESS_INFO,
        COM_CONNECT,
        COM_DEBUG,
        COM_TIME,
        COM_DELAYED_INSERT,
        COM_BINLOG_DUMP,
        COM_TABLE_DUMP,
        COM_CONNECT_OUT,
        COM_REGISTER_SLAVE,
        COM_DAEMON,
        COM_BINLOG_DUMP_GTID,
        COM_STMT_BULK_EXECUTE,
    )
)

# SELECT CONNECTION_ID() is answered with the proxy's id (the one in the greeting).
_CONNECTION_ID_RE = re.compile(
    rb"^\s*SELECT\s+CONNECTION_ID\s*\(\s*\)\s*(?:AS\s+(`[^`]+`|\w+)\s*)?;?\s*$",
    re.IGNORECASE,
)


# the proxy's own exchanges with the server (INIT_DB, RESET, CHANGE_USER, KILL) are short
_OWN_EXCHANGE_TIMEOUT = 30.0

# the largest packet a client may send before it has logged in (see _login)
_MAX_LOGIN_PACKET = 128 * 1024


class SessionEnd(Exception):
    """Stop the session; ``reusable`` says whether the upstream state is known."""

    def __init__(self, reusable: bool) -> None:
        super().__init__()
        self.reusable = reusable


class ClientSession:
    def __init__(self, proxy: Proxy, io: ClientIO, client_id: int) -> None:
        self.proxy = proxy
        self.io = io
        self.id = client_id
        self.login: ClientLogin | None = None
        self.user = ""
        self.up: ServerConn | None = None
        self.busy = False  # a command is being relayed upstream
        self.killed = False
        self.connected_at = time.monotonic()
        self.cancel_scope: trio.CancelScope | None = None
        self.queries = 0
        # transaction/statement pooling (None: session pooling). The session's own
        # state travels with it between upstream connections: its settings vector and
        # schema (while it holds no connection), its pins, and the values of its last
        # statement that the proxy can answer itself.
        self.mode: str | None = None
        self.key: PoolKey | None = None
        self.settings: Settings = EMPTY
        self.schema: str | None = None
        self.status = SERVER_STATUS_AUTOCOMMIT
        self.pins = Pins()
        self.pin_reason: str | None = None
        # what the server keeps about the session's last statement (state.values)
        self.values = Values()
        self.seq = 0  # statements run, the second half of ServerConn.values_owner
        self.last_up: ServerConn | None = None  # the connection it held last
        self.values_ready: trio.Event | None = None  # set when another reads them
        # binary prepared statements, virtualized (frontend.prepared): they never pin
        self.stmts = prepared.SessionStatements()
        # SQL-level PREPARE name FROM '...', virtualized (frontend.sql_prepared)
        self.sql_statements = SessionSqlStatements()
        self._reported: dict[str, str] = {}
        self._reported_schema: str | None = None
        self._schema_changed = False
        self._state_changed = False
        self._last_classification: Classification | None = None
        self._last_sql = b""
        self._reset_on_release = False

    # -- lifecycle ---------------------------------------------------------------
    async def run(self) -> None:
        io = self.io
        reusable = True
        try:
            with trio.CancelScope() as scope:
                self.cancel_scope = scope
                try:
                    if not await self._login():
                        return
                    await self._command_loop()
                except SessionEnd as end:
                    reusable = end.reusable
                except PacketTooLarge:
                    reusable = not self.busy
                    try:
                        await io.send_too_large()
                        await self._drain_client()
                    except ConnectionClosed:
                        pass
                except ConnectionClosed:
                    reusable = not self.busy
                except ProtocolError as exc:
                    log.info("client %s: protocol error: %s", self.id, exc)
                    reusable = False
                    await self._try_error(1, 1158, "08S01", f"tainted-proxy: protocol error: {exc}")
                except trio.TooSlowError:
                    reusable = False
                    await self._try_error(
                        1,
                        ER_PROXY_UPSTREAM,
                        "HY000",
                        "tainted-proxy: the upstream server did not answer in time",
                    )
                except BaseException:
                    reusable = False
                    raise
            if scope.cancelled_caught:
                reusable = reusable and not self.busy
        finally:
            self._drop_upstream(reusable and not self.killed)
            io.conn.close()

    def _drop_upstream(self, reusable: bool) -> None:
        last = self.last_up
        if last is not None and last.pending_for is self:
            last.pending_for = None  # nobody will ask for this session's values
        up, self.up = self.up, None
        if up is None:
            return
        self._set_pin(None)
        self._give_back(up, reusable)

    def _give_back(self, up: ServerConn, reusable: bool) -> None:
        """The one place that decides how a connection this session held returns to the
        pool: closed (unknown state, a KILL on its way, COM_SET_OPTION), reset first
        (session pooling; a transaction, a pin or unread state change in pooled modes), or
        released as it is, to the sub-pool of the settings it carries."""
        pool = self.proxy.pool
        if up.kills_in_flight or up.options_changed or not reusable or self.pins.xa:
            # (an XA transaction: COM_RESET_CONNECTION of a PREPARED one leaves it
            # orphaned with its locks on MariaDB 10.11; closing lets XA RECOVER see it)
            pool.discard(up)
        elif self.mode is None:
            pool.release_for_reset(up, self.proxy.default_schema_for(up))
        elif (
            self._reset_on_release
            or up.status & SERVER_STATUS_IN_TRANS
            or self.pins.reason() is not None
        ):
            # roll back, drop temp tables and locks: the next session starts clean
            self._reset_on_release = False
            pool.release_for_reset(up, up.schema)
        else:
            pool.release(up)

    async def _drain_client(self) -> None:
        """After refusing an oversized packet: read and drop what the client is still
        sending (at most 1 s / 64 MiB) before the socket is closed. Closing with unread
        input sends a RST, and a client still busy writing its packet would then see
        "connection reset" instead of the 1153 ERR just sent."""
        buf = self.io.buf
        buf.end = 0
        drained = 0
        with trio.move_on_after(1):
            while drained < 64 << 20:
                await self.io.conn.recv_into(buf)
                drained += buf.end
                buf.end = 0

    async def _try_error(self, seq: int, code: int, sqlstate: str, message: str) -> None:
        try:
            with trio.move_on_after(1):
                await self.io.send_error(code, sqlstate, message, seq)
        except ConnectionClosed:
            pass

    # -- login -------------------------------------------------------------------
    async def _login(self) -> bool:
        proxy = self.proxy
        io = self.io
        # Before login a client may only make the proxy buffer what a handshake needs (a
        # HandshakeResponse41 is a few KiB; clients cap connection attributes at 64 KiB):
        # otherwise a bare 4-byte header from anyone reserves up to 16 MiB per connection.
        max_packet, io.max_packet = io.max_packet, min(io.max_packet, _MAX_LOGIN_PACKET)
        try:
            with trio.fail_after(proxy.config.proxy.auth_timeout):
                login = await client_handshake(
                    io,
                    connection_id=self.id,
                    server_version=proxy.server_version,
                    ssl_context=proxy.ssl_context,
                    tls_required=proxy.config.proxy.tls_required,
                    lookup_stage2=proxy.password_stage2,
                )
        except AuthFailed as exc:
            proxy.stats.auth_failures += 1
            await self._try_error(2, exc.code, exc.sqlstate, exc.message)
            return False
        except trio.TooSlowError:
            await self._try_error(0, 1043, "08S01", "Bad handshake: timed out")
            return False
        io.max_packet = max_packet
        self.login = login
        self.user = login.user
        if not await self._attach(login, login.next_seq):
            return False
        await io.conn.send_all(
            ok_response(login.capabilities, status=self._status(), seq=login.next_seq)
        )
        return True

    def _status(self) -> int:
        return self.up.status if self.up is not None else self.status

    def _pool_key(self, login: ClientLogin) -> PoolKey:
        up_user, _ = self.proxy.upstream_credentials(login.user)
        caps = login.capabilities & SEMANTIC_CAPABILITIES
        if self.mode is None:
            return PoolKey(up_user, caps)
        # pooled upstreams always report session state, whatever the client asked for
        return PoolKey(up_user, caps | CLIENT_SESSION_TRACK, tracked=True)

    async def _attach(self, login: ClientLogin, seq: int) -> bool:
        """Get an upstream connection for this login and bring it to the login's schema
        and charset. On failure the client gets an ERR (at ``seq``) and False."""
        proxy = self.proxy
        user = proxy.config.user(login.user)
        mode = user.pool_mode if user is not None else "session"
        self.mode = None if mode == "session" else mode
        key = self.key = self._pool_key(login)
        if self.mode is not None:
            return await self._attach_pooled(login, seq)
        up = await self._acquire(key, None, seq)
        if up is None:
            return False
        self.up = up
        try:
            if login.database is not None and up.schema != login.database:
                resp = await up.init_db(com_init_db(login.database))
                if resp[:1] == b"\xff":
                    err = ErrPacket.decode(resp)
                    await self._try_error(seq, err.code, err.sqlstate, err.message)
                    return False
            elif login.database is None and up.schema is not None:
                await up.change_user(None)
            if up.charset != login.charset:
                await self._set_charset(up, login.charset)
            up.home_schema = login.database
            await self._claim_thread_id(up)
        except (UpstreamError, ConnectionClosed, ProtocolError, OSError) as exc:
            self.up = None
            proxy.pool.discard(up)
            await self._try_error(
                seq,
                ER_PROXY_UPSTREAM,
                "HY000",
                f"tainted-proxy: upstream failed during login: {exc}",
            )
            return False
        return True

    async def _claim_thread_id(self, up: ServerConn) -> None:
        """Session pooling: make CONNECTION_ID() return this session's id in any
        statement (SET pseudo_thread_id, when the upstream login may)."""
        settable = self.proxy.thread_id_settable
        if up.pseudo_thread_id == self.id or not settable.get(up.user, True):
            return
        try:
            await up.command_ok(com_query(b"SET SESSION pseudo_thread_id = %d" % self.id))
        except UpstreamError as exc:
            if exc.err is None:
                raise
            settable[up.user] = False
            up.diagnostics_clean = False
            return
        up.pseudo_thread_id = self.id

    async def _acquire(
        self, key: PoolKey, want: tuple[Settings, str | None] | None, seq: int
    ) -> ServerConn | None:
        """A connection from the pool, or None after telling the client why not."""
        got = await self._acquire_or_error(key, want)
        if isinstance(got, ErrPacket):
            await self._try_error(seq, got.code, got.sqlstate, got.message)
            return None
        return got

    async def _acquire_or_error(
        self,
        key: PoolKey,
        want: tuple[Settings, str | None] | None,
        prefer: ServerConn | None = None,
    ) -> ServerConn | ErrPacket:
        """A connection from the pool, or the ERR the client should get instead."""
        proxy = self.proxy
        try:
            return await proxy.pool.acquire(key, proxy.config.pool.checkout_timeout, want, prefer)
        except PoolTimeout as exc:
            proxy.stats.checkout_timeouts += 1
            return ErrPacket(
                ER_CON_COUNT_ERROR, "08004", f"Too many connections: tainted-proxy: {exc}"
            )
        except UpstreamError as exc:
            return upstream_unavailable(exc)
        except (OSError, ConnectionClosed, ProtocolError, trio.TooSlowError) as exc:
            return upstream_unavailable(exc)

    def _login_settings(self, charset: int) -> Settings:
        names = self.proxy.collations.get(charset)
        if names is None:
            return EMPTY
        return for_charset(names[0], names[1], self.proxy.baseline)

    async def _attach_pooled(self, login: ClientLogin, seq: int) -> bool:
        """Transaction/statement pooling: the login's state (its charset, its schema)
        becomes the session's; a connection is checked out once to prove the schema
        exists (ERR 1049 as from the server), then given back at once."""
        self._forget_session_state()
        self.schema = self.pins.schema = login.database
        if not await self._checkout(None, seq, login=True):
            return False
        await self._maybe_release()
        return True

    def _forget_session_state(self) -> None:
        """What a fresh login (or COM_RESET_CONNECTION) has: no pins, no statements,
        the login's charset, autocommit on."""
        assert self.login is not None
        self.pins.clear()
        self.stmts = prepared.SessionStatements()
        self.sql_statements = SessionSqlStatements()
        self.settings = self._login_settings(self.login.charset)
        self.status = SERVER_STATUS_AUTOCOMMIT
        self.values.forget()
        if self.last_up is not None and self.last_up.pending_for is self:
            self.last_up.pending_for = None

    async def _set_charset(self, up: ServerConn, charset: int) -> None:
        names = self.proxy.collations.get(charset)
        if names is None:
            return  # unknown id: leave the connection's charset (as a server would reject)
        cs, coll = names
        await up.command_ok(com_query(f"SET NAMES {cs} COLLATE {coll}".encode()))
        up.charset = charset

    # -- the command loop --------------------------------------------------------
    async def _command_loop(self) -> None:
        io = self.io
        cbuf = io.buf
        proxy = self.proxy
        idle = proxy.config.proxy.client_idle_timeout or None
        while True:
            if idle is None:
                size = await io.wait_packet()
            else:
                with trio.move_on_after(idle) as timer:
                    size = await io.wait_packet()
                if timer.cancelled_caught:
                    await self._try_error(
                        0,
                        4031,
                        "HY000",
                        "The client was disconnected by tainted-proxy because of inactivity (proxy.client_idle_timeout)",
                    )
                    raise SessionEnd(True)
            data = cbuf.data
            if size < 5:
                raise ProtocolError("empty command packet")
            cmd = data[4]
            self.queries += 1
            if cmd == COM_QUERY or cmd == COM_STMT_PREPARE:
                # C-speed pre-checks; only suspicious commands are copied and examined
                if KILL_WORD.search(data, 5, size) is not None or (
                    cmd == COM_QUERY
                    and self.mode is None
                    and bytes(data[5 : min(size, 64)]).lstrip()[:4].upper() == b"SELE"
                    and _CONNECTION_ID_RE.match(bytes(data[5:size]))
                ):
                    payload = bytes(data[4:size])
                    if await self._answered_here(cmd, payload):
                        cbuf.consume(size)
                        await self._maybe_release()
                        continue
            elif cmd == COM_QUIT:
                raise SessionEnd(True)
            elif cmd in _SPECIAL:
                payload = bytes(data[4:size])
                seq = data[3]
                cbuf.consume(size)
                # the proxy's own upstream exchanges: never reuse a connection left
                # mid-exchange, and never wait forever on a stalled server
                self.busy = True
                with trio.fail_after(_OWN_EXCHANGE_TIMEOUT):
                    await _SPECIAL[cmd](self, payload, seq)
                self.busy = False
                await self._maybe_release()
                continue
            elif cmd in _UNSUPPORTED:
                cbuf.consume(size)
                name = COMMAND_NAMES.get(cmd, hex(cmd))
                await io.send_error(
                    ER_UNKNOWN_COM_ERROR,
                    "08S01",
                    f"Unknown command: tainted-proxy does not relay {name}",
                    1,
                )
                continue
            if self.mode is not None:
                await self._pooled_command(cmd, size)
                continue
            if cmd == COM_SET_OPTION and self.up is not None:
                # multi-statements on/off outlives a reset: such a connection is never reused
                self.up.options_changed = True
            await self._relay(cmd, size)
            if self.killed:
                # KILL CONNECTION arrived while this session was busy
                await self._try_error(1, ER_CONNECTION_KILLED, "70100", "Connection was killed")
                raise SessionEnd(False)

    async def _relay(self, cmd: int, size: int) -> None:
        """Forward one command (the first ``size`` bytes of the client buffer) and its
        response. The hot path: no payload copies, one send per read."""
        up = self.up
        if up is None:
            raise SessionEnd(True)
        cbuf = self.io.buf
        self.busy = True
        view = memoryview(cbuf.data)[:size]
        try:
            await up.conn.send_all(view)
        except ConnectionClosed:
            await self._upstream_lost(forwarded=False)
        finally:
            view.release()
            cbuf.consume(size)
        await self._relay_response(up, cmd)

    async def _relay_response(self, up: ServerConn, cmd: int) -> None:
        """Relay the response to ``cmd``, already sent on ``up``, to the client (also
        used by frontend.prepared after sending a rewritten COM_STMT_* itself)."""
        client = self.io.conn
        self.busy = True
        tracker = up.tracker
        tracker.start(cmd)
        pooled = self.mode is not None
        tracker.collect_ok = pooled
        sbuf = up.buf
        forwarded = False
        while True:
            if sbuf.end:
                pos = tracker.scan(sbuf.data, sbuf.end)
                if pos:
                    out = self._track_chunk(sbuf.data, pos, tracker.ok_packets) if pooled else None
                    view = memoryview(sbuf.data)[:pos] if out is None else memoryview(out)
                    try:
                        await client.send_all(view)
                    finally:
                        view.release()
                    forwarded = True
                    sbuf.consume(pos)
                if tracker.needs_client_data:
                    await self._relay_infile(up)
                    continue
            if tracker.done:
                break
            try:
                await up.conn.recv_into(sbuf, wait_first=sbuf.end == 0)
            except ConnectionClosed:
                await self._upstream_lost(forwarded=forwarded or tracker.mid_packet)
        if sbuf.end:
            # bytes past the end of the response: the server and the proxy disagree
            raise SessionEnd(False)
        if not tracker.error:
            up.status = tracker.status
        self.busy = False

    async def _relay_infile(self, up: ServerConn) -> None:
        """LOCAL INFILE: relay the client's file packets until the empty one."""
        io = self.io
        while True:
            size = await io.wait_packet()
            empty = size == 4
            view = memoryview(io.buf.data)[:size]
            try:
                await up.conn.send_all(view)
            except ConnectionClosed:
                view.release()
                await self._upstream_lost(forwarded=True)
            view.release()
            io.buf.consume(size)
            if empty:
                up.tracker.infile_sent()
                return

    async def _upstream_lost(self, forwarded: bool) -> None:
        """The upstream connection broke mid-command: tell the client if it can still
        parse an ERR, then end the session (its server-side state is gone)."""
        self.proxy.stats.upstream_lost += 1
        if not forwarded:
            await self._try_error(
                1,
                ER_PROXY_UPSTREAM,
                "HY000",
                "Lost connection to MySQL server during query (tainted-proxy: the upstream connection closed)",
            )
        self.busy = False
        raise SessionEnd(False)

    # -- transaction and statement pooling ---------------------------------------
    async def _pooled_command(self, cmd: int, size: int) -> None:
        """One command in transaction/statement mode: classify it, answer it here when
        that needs no connection, else check out a connection carrying the session's
        state, relay, learn what changed, and give the connection back when nothing
        holds it (specs/pooling.md)."""
        if cmd in prepared.STMT_COMMANDS:
            await prepared.command(self, cmd, size)  # virtualized: never pins by itself
            return
        io = self.io
        cbuf = io.buf
        c: Classification | None = None
        if cmd == COM_QUERY:
            flags = self._parse_flags()
            sql = self._last_sql = bytes(cbuf.data[5:size])
            c = classify_flags(sql, flags)
            self.seq += 1
            if c is not None:
                if self.mode == "statement" and await self._refused_in_statement_mode(c):
                    cbuf.consume(size)
                    return
                if c.needs and c.statements == 1 and not self._owns_values():
                    read = answers.match(sql)
                    if read is not None and await self._answer_local(read):
                        cbuf.consume(size)
                        await self._maybe_release()
                        return
                if self.up is None and Effect.TX_END in c.effects and _PLAIN_END.match(sql):
                    # no connection held means no transaction open: nothing to end.
                    # (SQLAlchemy rolls back every connection returned to its pool.)
                    cbuf.consume(size)
                    assert self.login is not None
                    await io.conn.send_all(ok_response(self.login.capabilities, status=self.status))
                    return
                if sql_prepared.touches(c):
                    early = sql_prepared.answer_without_connection(self, sql)
                    if early is not None:
                        cbuf.consume(size)
                        await self._answer_sql_prepared(c, sql, early)
                        return
                if c.pin is not None:
                    # users.NAME.max_pinned counts what would really pin (state.verdict:
                    # a literal user variable or PREPARE is carried, never pinned)
                    would = verdict(c, sql.decode("utf-8", "surrogateescape"), self.mode).pins
                    if would is not None and not await self._wait_for_pin_slot(would):
                        cbuf.consume(size)
                        return
        elif cmd == COM_PING and self.up is None:
            cbuf.consume(size)
            assert self.login is not None
            await io.conn.send_all(ok_response(self.login.capabilities, status=self.status))
            return
        elif cmd == COM_SET_OPTION:
            # multi-statements on/off outlives every reset: keep this connection for the
            # session, and never reuse it
            self.pins.pin_sticky(pinreasons.SET_OPTION)
        if self.up is None and not await self._checkout(c, 1):
            cbuf.consume(size)
            return
        up = self.up
        assert up is not None
        if cmd == COM_SET_OPTION:
            up.options_changed = True
        virtual = sql_prepared.touches(c)
        extra_needs: frozenset[str] = frozenset()
        if virtual:
            self.busy = True
            await sql_prepared.before_execute(self, up, self._last_sql)
            self.busy = False
            extra_needs = sql_prepared.needs_of(self, self._last_sql)
        if c is not None and not await self._restore_values(c, extra_needs):
            cbuf.consume(size)
            await self._maybe_release()
            return
        self.begin_response(c, self._last_sql if cmd == COM_QUERY else b"")
        await self._relay(cmd, size)
        if virtual:
            assert c is not None
            sql_prepared.after(self, up, c, self._last_sql, up.tracker.error)
            if sql_prepared.executes_clean_text(self, self._last_sql):
                # the server runs the statement in the schema it was prepared in and
                # switches back, and reports that as a change: nothing else changed
                up.tracker.eof_ssc = False
                if not self._schema_changed or self._reported_schema == up.schema:
                    self._state_changed = self._schema_changed = False
        await self._after_command(cmd, c)
        if self.killed:
            return
        await self._maybe_release()

    def _parse_flags(self) -> int:
        """Lexer flags from the sql_mode the session runs under: its settings vector is
        the server's own report, and stays right after an ERR (the status bits of the
        last OK would not, and a wrong quoting mode hides what a statement does)."""
        settings = self.up.settings if self.up is not None else self.settings
        flags = _FLAGS_BY_SETTINGS.get(settings)
        if flags is None:
            base = self.proxy.baseline.values.get("sql_mode", "")
            mode = dict(settings).get("sql_mode", base)
            flags = (ANSI_QUOTES if "ANSI_QUOTES" in mode else 0) | (
                NO_BACKSLASH_ESCAPES if "NO_BACKSLASH_ESCAPES" in mode else 0
            )
            if len(_FLAGS_BY_SETTINGS) > 4096:
                _FLAGS_BY_SETTINGS.clear()
            _FLAGS_BY_SETTINGS[settings] = flags
        return flags

    def begin_response(self, c: Classification | None, sql: bytes) -> None:
        """What ``_after_command`` learns from the next relayed response starts empty;
        ``c`` / ``sql`` are what the command runs (the taint ledger fingerprints them)."""
        self._reported.clear()
        self._schema_changed = False
        self._state_changed = False
        self._last_classification = c
        self._last_sql = sql

    async def _refused_in_statement_mode(self, c: Classification) -> bool:
        """Statement mode: refuse (ERR 1235, before anything reaches the server) a
        statement that would open a transaction outliving it."""
        if self.mode != "statement" or not opens_transaction(c):
            return False
        self.proxy.stats.refused_in_statement_mode += 1
        await self.io.send_error(
            1235,
            "42000",
            "tainted-proxy: transactions are not allowed in statement pooling mode "
            f"(user '{self.user}'): use pool_mode = \"transaction\"",
            1,
        )
        return True

    async def _checkout(self, c: Classification | None, seq: int, login: bool = False) -> bool:
        """``checkout_or_error``; on failure the client gets the ERR at ``seq`` and False."""
        err = await self.checkout_or_error(c, login)
        if err is None:
            return True
        await self._try_error(seq, err.code, err.sqlstate, err.message)
        return False

    async def checkout_or_error(
        self, c: Classification | None, login: bool = False
    ) -> ErrPacket | None:
        """Get a connection carrying the session's settings and schema (the pool picks
        the exact sub-pool first, else the nearest; ``converge`` applies the rest in one
        round trip). On failure, the ERR the client should get (now, or with the answer
        to a later command: frontend.prepared for COM_STMT_SEND_LONG_DATA)."""
        proxy = self.proxy
        pool = proxy.pool
        assert self.key is not None
        up = await self._acquire_or_error(self.key, (self.settings, self.schema), self.last_up)
        if isinstance(up, ErrPacket):
            return up
        owner = up.pending_for
        if owner is not None:
            up.pending_for = None
            if owner is not self:
                # another session's last values are still only here: read them for it
                await owner.collect_values(up)
        if self.values.pending and owner is not self and self.values_ready is not None:
            # this session's own are being read by whoever took its connection
            await self.values_ready.wait()
        if up.carries(self.settings, self.schema):
            self.up = up  # the exact sub-pool hit: no round trip (and no timer to arm)
            return None
        try:
            with trio.fail_after(_OWN_EXCHANGE_TIMEOUT):
                if await up.converge(self.settings, self.schema, proxy.baseline):
                    pool.stats.settings_applied += 1
        except UpstreamError as exc:
            pool.discard(up)
            err = exc.err
            if err is not None and err.code == ER_BAD_DB_ERROR and self.schema and not login:
                # another session dropped this session's schema: a server keeps such a
                # session usable (USE, qualified names), so go on without a schema
                self.schema = self.pins.schema = None
                return await self.checkout_or_error(c)
            if err is not None:
                return err
            return ErrPacket(ER_PROXY_UPSTREAM, "HY000", f"tainted-proxy: {exc}")
        except (ConnectionClosed, ProtocolError, OSError, trio.TooSlowError) as exc:
            pool.discard(up)
            return ErrPacket(
                ER_PROXY_UPSTREAM,
                "HY000",
                f"tainted-proxy: upstream failed while applying session settings: {exc!r}",
            )
        self.up = up
        return None

    async def _maybe_release(self) -> None:
        """Give the connection back when no transaction and no pin holds it."""
        up = self.up
        if up is None or self.mode is None:
            return
        reason = self.pins.reason()
        self._set_pin(reason)
        if reason is not None or up.status & SERVER_STATUS_IN_TRANS:
            return  # an open transaction holds the connection without being a pin
        self.settings = up.settings
        self.schema = up.schema
        self.status = up.status
        values = self.values
        if values.sequence_state:
            # LASTVAL() state cannot be cleared but by a reset
            values.sequence_state = False
            self._reset_on_release = True
        if values.pending:
            if self._reset_on_release or up.kills_in_flight or up.options_changed:
                await self.collect_values(up)  # the reset would lose them
            else:
                up.pending_for = self  # read by whoever takes the connection next
                self.values_ready = trio.Event()
        self.up = None
        self.last_up = up
        self._give_back(up, True)

    def _owns_values(self) -> bool:
        """The connection this session holds has its last statement's values."""
        up = self.up
        return up is not None and up.values_owner == (self.id, self.seq - 1)

    async def collect_values(self, up: ServerConn) -> None:
        """Read this session's pending values from ``up`` (which holds them) into its
        copy; called by whichever session takes ``up`` next, or before a reset."""
        values = self.values
        queries = values.fetch_queries()
        if queries:
            try:
                with trio.fail_after(_OWN_EXCHANGE_TIMEOUT):
                    values.absorb(await up.query_many(queries))
            except (UpstreamError, ConnectionClosed, ProtocolError, OSError, trio.TooSlowError):
                values.lose_pending()
                up.broken = True
        self._values_collected()

    def values_lost(self) -> None:
        """The connection holding this session's pending values closed unread."""
        self.values.lose_pending()
        self._values_collected()

    def _values_collected(self) -> None:
        ready, self.values_ready = self.values_ready, None
        if ready is not None:
            ready.set()

    async def _answer_local(self, read: answers.LocalRead) -> bool:
        """Answer a plain read of the last statement's values from the session's copy
        (state.answers). False when the copy cannot answer it (the values are still on
        a connection): the statement then runs on that connection."""
        values = self.values
        if values.pending:
            return False
        assert self.login is not None
        if values.lost and _touches(read, values.lost):
            await self.io.send_error(
                1105,
                "HY000",
                "tainted-proxy: the value of the previous statement was lost when its "
                "upstream connection closed",
                1,
            )
            return True
        columns, rows = answers.answer(read, values, self.id)
        values.learn_local(read.select)
        self.proxy.stats.emulated += 1
        await self.io.conn.send_all(
            text_resultset(columns, rows, self.login.capabilities, status=self._status())
        )
        return True

    async def _answer_sql_prepared(
        self, c: Classification, sql: bytes, early: tuple[str, object]
    ) -> None:
        """EXECUTE / DEALLOCATE answered without a connection (frontend.sql_prepared)."""
        assert self.login is not None
        kind, detail = early
        if kind == "error":
            code, state, message = detail  # type: ignore[misc]
            await self.io.send_error(code, state, message, 1)
            self.values.learn(c, sql, Outcome(error=statevalues.Condition("Error", code, message)))
            self.values.pending.discard(statevalues.CONDITIONS)
            self.values.conditions = (statevalues.Condition("Error", code, message),)
        else:
            await self.io.conn.send_all(ok_response(self.login.capabilities, status=self._status()))
            self.values.learn(c, sql, Outcome())
        await self._maybe_release()

    async def _restore_values(
        self, c: Classification, extra_needs: frozenset[str] = frozenset()
    ) -> bool:
        """Before ``c`` runs on the held connection: when it reads values of the previous
        statement that this connection does not have, make the connection give the
        session's own (state.values.restore_plan). False when the client got an ERR
        instead (what it reads cannot be restored)."""
        needs = (c.needs | extra_needs) & _VALUE_NEEDS
        routine = Effect.ROUTINE in c.effects or Effect.UNKNOWN in c.effects
        if not needs and not routine:
            return True
        up = self.up
        assert up is not None
        if up.values_owner == (self.id, self.seq - 1) and (
            Effect.CONNECTION_ID not in needs or up.pseudo_thread_id == self.id
        ):
            return True
        proxy = self.proxy
        plan = self.values.restore_plan(
            needs | _ROUTINE_NEEDS if routine else needs,
            up.insert_id,
            up.diagnostics_clean,
            self.id,
            proxy.thread_id_settable.get(up.user, True),
            best_effort=routine,
        )
        if isinstance(plan, str):
            await self.io.send_error(
                1235,
                "42000",
                f"tainted-proxy: {plan} cannot be read in {self.mode} pooling once the "
                "connection that ran it served another statement; read it alone "
                '(SELECT ROW_COUNT(), SHOW WARNINGS ...) or use pool_mode = "session"',
                1,
            )
            return False
        if not plan:
            return True
        try:
            with trio.fail_after(_OWN_EXCHANGE_TIMEOUT):
                results = await up.query_many(plan)
        except (UpstreamError, ConnectionClosed, ProtocolError, OSError, trio.TooSlowError):
            self.up = None
            proxy.pool.discard(up)
            raise SessionEnd(False) from None
        if any(r is None for r in results):
            if any(q.startswith(b"SET SESSION pseudo_thread_id") for q in plan):
                proxy.thread_id_settable[up.user] = False
                return await self._restore_values(c, extra_needs)
            await self.io.send_error(
                ER_PROXY_UPSTREAM,
                "HY000",
                "tainted-proxy: restoring per-statement values failed",
                1,
            )
            return False
        if Effect.LAST_INSERT_ID in needs:
            up.insert_id = self.values.insert_id
        if any(q.startswith(b"SET SESSION pseudo_thread_id") for q in plan):
            up.pseudo_thread_id = self.id
        if Effect.WARNINGS in needs:
            up.diagnostics_clean = True
        return True

    def _set_pin(self, reason: str | None) -> None:
        """Record the start or the end of a pin (counters, the taint ledger, the
        per-user pinned count that users.NAME.max_pinned caps)."""
        was = self.pin_reason
        if (was is None) == (reason is None):
            self.pin_reason = reason
            return
        proxy = self.proxy
        stats = proxy.stats
        self.pin_reason = reason
        if reason is not None:
            stats.pinned_now += 1
            stats.pins[reason] += 1
            proxy.pinned_by_user[self.user] += 1
            c = self._last_classification
            if c is not None:
                fp = c.fingerprint
            elif self._last_sql:
                fp = fingerprint(self._last_sql)
            else:
                fp = ""
            proxy.ledger[(self.user, reason, fp)] += 1
        else:
            stats.pinned_now -= 1
            proxy.pinned_by_user[self.user] -= 1
            proxy.unpinned.set()
            proxy.unpinned = trio.Event()

    async def _wait_for_pin_slot(self, reason: str) -> bool:
        """users.NAME.max_pinned: before a statement that would pin runs, wait for one of
        the user's pinned connections to be let go; on timeout the client gets ERR 1040
        naming the cap and the reason (and the statement never ran)."""
        proxy = self.proxy
        user = proxy.config.user(self.user)
        cap = user.max_pinned if user is not None else 0
        if not cap or self.pin_reason is not None:
            return True
        timeout = proxy.config.pool.checkout_timeout
        with trio.move_on_after(timeout):
            while proxy.pinned_by_user[self.user] >= cap:
                await proxy.unpinned.wait()
            return True
        proxy.stats.checkout_timeouts += 1
        await self.io.send_error(
            ER_CON_COUNT_ERROR,
            "08004",
            f"Too many connections: tainted-proxy: user '{self.user}' holds "
            f"{proxy.pinned_by_user[self.user]} pinned connections "
            f"(users.{self.user}.max_pinned = {cap}); pin reason: {reason}",
            1,
        )
        return False

    def _track_chunk(
        self, data: bytearray, end: int, ok_packets: list[tuple[int, int]]
    ) -> bytes | None:
        """Read the session-state blocks of the OK packets in ``data[:end]`` (offsets of
        their payloads in ``ok_packets``), and strip them for a client that did not ask
        for CLIENT_SESSION_TRACK. Returns the bytes to forward instead, or None when
        ``data[:end]`` can go as it is."""
        if not ok_packets:
            return None
        up = self.up
        assert up is not None and self.login is not None
        strip = not self.login.capabilities & CLIENT_SESSION_TRACK
        out: bytearray | None = None
        done = 0
        for body, stop in ok_packets:
            view = memoryview(data)[body:stop]
            try:
                status, _ = ok_status(view)
            finally:
                view.release()
            if not status & SERVER_SESSION_STATE_CHANGED:
                continue  # the common case: nothing to read, nothing to strip
            payload = bytes(data[body:stop])
            ok = OkPacket.decode(payload, up.capabilities)
            if ok.session_state:
                for entry in parse_session_state(ok.session_state):
                    if isinstance(entry, SysVarChange):
                        self._reported[entry.name] = entry.value
                    elif isinstance(entry, SchemaChange):
                        self._reported_schema = entry.schema or None
                        self._schema_changed = True
                    elif isinstance(entry, StateChange):
                        self._state_changed = True
            if strip:
                if out is None:
                    out = bytearray()
                new = strip_session_tracking(payload, up.capabilities)
                out += data[done : body - 4]
                out += len(new).to_bytes(3, "little")
                out.append(data[body - 1])
                out += new
                done = stop
        if out is None:
            return None
        out += data[done:end]
        return bytes(out)

    async def _after_command(self, cmd: int, c: Classification | None) -> None:
        """Learn from the finished response: settings and schema the server reported,
        pins the statement took or cleared, the values LAST_INSERT_ID()/ROW_COUNT() of
        this session would return."""
        up = self.up
        assert up is not None
        tracker = up.tracker
        failed = tracker.error
        pins = self.pins
        reported = self._reported
        if reported:
            skip = c.statement_vars if c is not None else frozenset()
            batch = c is not None and c.statements > 1
            changes: dict[str, str] = {}
            for name, value in reported.items():
                if name in IGNORED:
                    continue
                if name in skip:
                    if batch:
                        # a SET STATEMENT's temporary value and a real SET of the same
                        # variable in one batch: which one the report holds is unknown
                        pins.pin_sticky(pinreasons.UNEXPLAINED)
                    continue
                if name in UNKEYABLE:
                    if self.proxy.baseline.values.get(name) != value or name == "timestamp":
                        pins.pin_sticky(f"{pinreasons.UNKEYABLE_VAR} ({name})")
                    continue
                changes[name] = value
            if "character_set_connection" in changes and (
                "collation_connection" not in changes or batch
            ):
                # the tracker never reports the collation a charset change implies, and a
                # batch's reports are merged, so their order is lost
                coll = await self._collation_after(
                    None if batch else c, changes["character_set_connection"]
                )
                if coll is None:
                    pins.pin_sticky(pinreasons.UNEXPLAINED)
                else:
                    changes["collation_connection"] = coll
            elif "collation_connection" in changes:
                # SET collation_connection also sets character_set_connection, unreported
                cs = self.proxy.charset_of_collation.get(changes["collation_connection"])
                if cs is None:
                    pins.pin_sticky(pinreasons.UNEXPLAINED)
                else:
                    changes["character_set_connection"] = cs
            up.settings = apply_reported(up.settings, changes, self.proxy.baseline)
        pins.schema = up.schema  # before this statement (for its temporary tables)
        if self._schema_changed:
            up.schema = self._reported_schema
        if cmd == COM_QUERY:
            carried = carried_user_vars(c) if c is not None and not failed else None
            if carried:
                # literal user variables travel with the session like settings do
                up.settings = with_user_vars(up.settings, carried)
            pins.after_statement(
                c,
                failed=failed,
                state_changed=self._state_changed,
                carried=frozenset(n[1:] for n in carried) if carried else frozenset(),
            )
            pins.schema = up.schema
            if tracker.eof_ssc:
                # the server changed state but a classic EOF carried no detail
                text = self._last_sql
                if c is not None and c.statement_vars and c.statements == 1:
                    # SET STATEMENT v=... FOR <statement>: judge the statement
                    parts = _FOR_WORD.split(text, 1)
                    text = parts[1] if len(parts) == 2 else text
                if may_call_stored_function(text):
                    # a stored function may have set @v or a variable for this session:
                    # keep the connection, as the server would keep the session
                    pins.pin_sticky(pinreasons.UNEXPLAINED)
                else:
                    # no function call (SET STATEMENT's temporary value, information_schema
                    # and SHOW queries' internal temporary tables): nothing the session
                    # can rely on, but never hand it on unreset (a view may call a function)
                    self._reset_on_release = True
        else:
            if self._state_changed and cmd != COM_INIT_DB:
                pins.pin_sticky(pinreasons.UNEXPLAINED)
            # (COM_STMT_* are handled by frontend.prepared: cursors and long data pin there)
        if not failed:
            self.status = up.status
        if cmd == COM_QUERY:
            self._learn_values(up, c)

    def _learn_values(self, up: ServerConn, c: Classification | None) -> None:
        """The per-statement values the finished response left (state.values)."""
        t = up.tracker
        values = self.values
        values.learn(
            c,
            self._last_sql,
            Outcome(
                error=_ERROR if t.error else None,
                warnings=t.warnings,
                last_resultset=t.last_resultset,
                resultset=t.resultset,
                rows=t.rows,
                affected_rows=t.affected_rows,
                insert_id=t.last_insert_id,
                insert_ids=t.insert_ids,
                statements=c.statements if c is not None else 1,
            ),
        )
        up.values_owner = (self.id, self.seq)
        up.insert_id = None if statevalues.INSERT_ID in values.pending else values.insert_id
        up.diagnostics_clean = statevalues.diagnostics_clean_after(
            up.diagnostics_clean, c, self._last_sql, t.error, t.warnings
        )

    async def _collation_after(self, c: Classification | None, charset: str) -> str | None:
        """collation_connection after the connection charset changed: the tracker never
        reports it. ``SET NAMES cs [COLLATE x]`` says it; anything else (SET CHARACTER
        SET, a routine) is asked of the server."""
        if c is not None:
            coll = c.settings.get("collation_connection")
            if coll is not None:
                return coll
            if c.settings.get("character_set_results") is not None:
                default = self.proxy.default_collation.get(charset)
                if default is not None:
                    return default
        up = self.up
        assert up is not None
        try:
            with trio.fail_after(_OWN_EXCHANGE_TIMEOUT):
                rows = await up.query_rows("SELECT @@collation_connection")
        except UpstreamError:
            return None
        value = rows[0][0] if rows else None
        return value.decode() if value is not None else None

    # -- commands the proxy handles itself ---------------------------------------
    async def _answered_here(self, cmd: int, payload: bytes) -> bool:
        """KILL and CONNECTION_ID() are the proxy's business. True if answered here
        (the caller drops the command), False to relay it."""
        sql = payload[1:]
        verdict = vet_kill(sql, prepare=cmd == COM_STMT_PREPARE)
        if isinstance(verdict, Refusal):
            await self.io.send_error(verdict.code, verdict.sqlstate, verdict.message, 1)
            return True
        if isinstance(verdict, KillRequest):
            await self._kill_id(verdict.target, verdict.query_only)
            return True
        m = _CONNECTION_ID_RE.match(sql) if cmd == COM_QUERY else None
        if m is None:
            return False
        name = (m.group(1) or b"CONNECTION_ID()").decode("utf-8", "replace").strip("`")
        assert self.login is not None
        await self.io.conn.send_all(
            text_resultset([name], [[self.id]], self.login.capabilities, status=self._status())
        )
        return True

    async def _com_process_kill(self, payload: bytes, seq: int) -> None:
        if len(payload) < 5:
            raise ProtocolError("short COM_PROCESS_KILL")
        await self._kill_id(int.from_bytes(payload[1:5], "little"), query_only=False)

    async def _kill_id(self, target_id: int, query_only: bool) -> None:
        proxy = self.proxy
        target = proxy.find_session(target_id)
        if target is None or target.user != self.user:
            await self.io.send_error(
                ER_NO_SUCH_THREAD, "HY000", f"Unknown thread id: {target_id}", 1
            )
            return
        assert self.login is not None
        if target is self:
            if query_only:
                await self.io.conn.send_all(
                    ok_response(self.login.capabilities, status=self._status())
                )
                return
            await self._try_error(1, ER_CONNECTION_KILLED, "70100", "Connection was killed")
            self.killed = True
            raise SessionEnd(True)
        tup = target.up
        if tup is not None and target.busy:
            # counted before any wait: a connection with a KILL on its way is never
            # handed to another session (it is closed instead)
            tup.kills_in_flight += 1
            try:
                if self.up is None and self.mode is not None:
                    if not await self._checkout(None, 1):
                        return
                me = self.up
                if me is None:
                    raise SessionEnd(True)
                verb = "QUERY" if query_only else "CONNECTION"
                if target.up is tup and target.busy:
                    # still the target's, still running: otherwise (the wait above let it
                    # finish) the KILL would hit whatever that thread runs now
                    await me.command_ok(com_query(f"KILL {verb} {tup.thread_id}".encode()))
            except UpstreamError as exc:
                err = exc.err
                if err is None:
                    raise SessionEnd(False) from exc
                if err.code != ER_NO_SUCH_THREAD:  # e.g. privileges: say so, keep going
                    await self.io.send_error(err.code, err.sqlstate, err.message, 1)
                    return
            finally:
                tup.kills_in_flight -= 1
        if not query_only:
            target.killed = True
            if target.cancel_scope is not None and not target.busy:
                target.cancel_scope.cancel()
        await self.io.conn.send_all(ok_response(self.login.capabilities, status=self._status()))

    async def _com_reset_connection(self, payload: bytes, seq: int) -> None:
        assert self.login is not None
        if self.mode is not None:
            # the session starts over; its connection (if it held one) is reset in the
            # background before anyone else gets it
            self._drop_upstream(True)
            self._forget_session_state()
            await self.io.conn.send_all(ok_response(self.login.capabilities, status=self.status))
            return
        up = self.up
        assert up is not None
        try:
            # A plain COM_RESET_CONNECTION, exactly what the server would do: MariaDB keeps
            # the current database across a reset, so the client must stay in the schema it
            # had selected. (``up.reset(None)`` went through COM_CHANGE_USER and left the
            # client with no database at all.) ``up.schema`` is unchanged by the reset.
            await up.command_ok(com_reset_connection())
            up.charset = up.handshake_charset  # the server reverts to the handshake charset
            if up.charset != self.login.charset:
                await self._set_charset(up, self.login.charset)
        except UpstreamError as exc:
            if exc.err is not None:
                await self.io.send_error(exc.err.code, exc.err.sqlstate, exc.err.message, 1)
                raise SessionEnd(False) from exc
            await self._upstream_lost(forwarded=False)
        except ConnectionClosed:
            await self._upstream_lost(forwarded=False)
        await self.io.conn.send_all(ok_response(self.login.capabilities, status=self._status()))

    async def _com_change_user(self, payload: bytes, seq: int) -> None:
        """Re-authenticate against the proxy's users, then start a fresh session (a new
        upstream connection state for the new user, like the server's reset)."""
        login = self.login
        assert login is not None
        io = self.io
        try:
            cu = ChangeUser.decode(payload, login.capabilities)
        except ProtocolError:
            await io.send_error(
                1043, "08S01", "Bad handshake: malformed COM_CHANGE_USER", (seq + 1) & 0xFF
            )
            raise SessionEnd(True) from None
        seq = (seq + 1) & 0xFF
        scramble = login.scramble
        response = cu.auth_response
        if cu.auth_plugin and cu.auth_plugin != "mysql_native_password":
            scramble = wauth.make_scramble()
            await io.send_payload(
                AuthSwitchRequest("mysql_native_password", scramble + b"\x00").encode(), seq
            )
            seq, response = await io.read_payload()
            seq = (seq + 1) & 0xFF
        stage2 = self.proxy.password_stage2(cu.username)
        if stage2 is None or not wauth.verify_native_password(stage2, scramble, response):
            exc = access_denied(cu.username, io.peer_host, bool(response))
            await self._try_error(seq, exc.code, exc.sqlstate, exc.message)
            raise SessionEnd(True)
        self._drop_upstream(True)
        new = ClientLogin(
            user=cu.username,
            database=cu.database or None,
            charset=cu.charset or login.charset,
            capabilities=login.capabilities,
            attributes=dict(cu.attributes) or login.attributes,
            scramble=scramble,
            tls=login.tls,
            next_seq=seq,
        )
        self.login = new
        self.user = new.user
        if not await self._attach(new, seq):
            raise SessionEnd(True)
        await io.conn.send_all(ok_response(new.capabilities, status=self._status(), seq=seq))

    async def _com_init_db(self, payload: bytes, seq: int) -> None:
        """Relay, and remember the schema so a reset can restore it."""
        if self.up is None and not await self._checkout(None, 1):
            return
        up = self.up
        assert up is not None and self.login is not None
        resp = await up.init_db(payload)
        if resp[:1] == b"\x00" and not self.login.capabilities & CLIENT_SESSION_TRACK:
            resp = strip_session_tracking(resp, up.capabilities)
        await self.io.send_payload(resp, 1)


_FOR_WORD = re.compile(rb"\bFOR\b", re.IGNORECASE)

# what the server says when it refuses an account (the proxy's upstream login)
_ACCESS_DENIED = frozenset((1044, 1045, 1698, 1251, 1275))


def upstream_unavailable(exc: BaseException) -> ErrPacket:
    """The ERR a client gets when no upstream connection can be opened for it. Server
    codes only: a client-range code (2013) during the handshake is "malformed packet" to
    libmariadb, and drivers read 2013 as "this connection is dead"."""
    err = exc.err if isinstance(exc, UpstreamError) else None
    if err is not None and err.code == ER_CON_COUNT_ERROR:
        return ErrPacket(
            ER_CON_COUNT_ERROR,
            "08004",
            f"Too many connections: tainted-proxy: the upstream server refused a new "
            f"connection: {err.message}",
        )
    if err is not None and err.code in _ACCESS_DENIED:
        return ErrPacket(
            1045,
            "28000",
            f"Access denied: tainted-proxy could not log in to the upstream server "
            f"(check upstream_user / upstream_password): {err.message}",
        )
    return ErrPacket(
        ER_UNKNOWN_ERROR,
        "HY000",
        f"tainted-proxy: cannot open an upstream connection: {exc or type(exc).__name__}",
    )


# the reads of the previous statement's values (state.values.restore_plan)
_VALUE_NEEDS = frozenset(
    (
        Effect.LAST_INSERT_ID,
        Effect.ROW_COUNT,
        Effect.FOUND_ROWS,
        Effect.WARNINGS,
        Effect.LASTVAL,
        Effect.CONNECTION_ID,
    )
)
# what a stored routine may read, restored best-effort before a CALL
_ROUTINE_NEEDS = frozenset((Effect.LAST_INSERT_ID, Effect.WARNINGS, Effect.CONNECTION_ID))
# the diagnostics of an ERR are read back from the server (SHOW WARNINGS)
_ERROR = statevalues.Condition("Error", 0, "")

_ITEM_VALUE = {
    "insert_id": statevalues.INSERT_ID,
    "row_count": statevalues.ROW_COUNT,
    "found_rows": statevalues.FOUND_ROWS,
    "warning_count": statevalues.CONDITIONS,
    "error_count": statevalues.CONDITIONS,
    "lastval": statevalues.LASTVAL,
}


def _touches(read: answers.LocalRead, lost: set[str]) -> bool:
    if read.show:
        return statevalues.CONDITIONS in lost
    return any(_ITEM_VALUE.get(i.kind) in lost for i in read.items)


# settings vector -> lexer flags (a few distinct vectors in practice; bounded anyway)
_FLAGS_BY_SETTINGS: dict[Settings, int] = {}

# COMMIT / ROLLBACK that only end a transaction (no AND CHAIN, RELEASE, TO SAVEPOINT)
_PLAIN_END = re.compile(rb"^\s*(?:COMMIT|ROLLBACK)(?:\s+WORK)?\s*;?\s*$", re.IGNORECASE)


_SPECIAL = {
    COM_CHANGE_USER: ClientSession._com_change_user,
    COM_RESET_CONNECTION: ClientSession._com_reset_connection,
    COM_PROCESS_KILL: ClientSession._com_process_kill,
    COM_INIT_DB: ClientSession._com_init_db,
}
