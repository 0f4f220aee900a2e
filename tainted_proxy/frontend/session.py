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
from tainted_proxy.wire import auth as wauth
from tainted_proxy.wire.constants import (
    COM_BINLOG_DUMP,
    COM_BINLOG_DUMP_GTID,
    COM_CHANGE_USER,
    COM_CONNECT,
    COM_CONNECT_OUT,
    COM_DAEMON,
    COM_DEBUG,
    COM_DELAYED_INSERT,
    COM_INIT_DB,
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
    ER_CON_COUNT_ERROR,
    ER_CONNECTION_KILLED,
    ER_NO_SUCH_THREAD,
    ER_PROXY_UPSTREAM,
    ER_UNKNOWN_COM_ERROR,
    SERVER_STATUS_AUTOCOMMIT,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import (
    AuthSwitchRequest,
    ChangeUser,
    ErrPacket,
    com_init_db,
    com_query,
    com_reset_connection,
    ok_response,
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
        up, self.up = self.up, None
        if up is None:
            return
        pool = self.proxy.pool
        if up.kills_in_flight or up.options_changed or not reusable:
            pool.discard(up)
        else:
            pool.release_for_reset(up, self.proxy.default_schema_for(up))

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
        return self.up.status if self.up is not None else SERVER_STATUS_AUTOCOMMIT

    def _pool_key(self, login: ClientLogin) -> PoolKey:
        up_user, _ = self.proxy.upstream_credentials(login.user)
        return PoolKey(up_user, login.capabilities & SEMANTIC_CAPABILITIES)

    async def _attach(self, login: ClientLogin, seq: int) -> bool:
        """Get an upstream connection for this login and bring it to the login's schema
        and charset. On failure the client gets an ERR (at ``seq``) and False."""
        proxy = self.proxy
        key = self._pool_key(login)
        try:
            up = await proxy.pool.acquire(key, proxy.config.pool.checkout_timeout)
        except PoolTimeout as exc:
            proxy.stats.checkout_timeouts += 1
            await self._try_error(
                seq, ER_CON_COUNT_ERROR, "08004", f"Too many connections: tainted-proxy: {exc}"
            )
            return False
        except UpstreamError as exc:
            err = exc.err
            if err is not None and err.code == ER_CON_COUNT_ERROR:
                msg = f"tainted-proxy: upstream refused a new connection: {err.message}"
            else:
                msg = f"tainted-proxy: cannot open an upstream connection: {exc}"
            await self._try_error(seq, ER_PROXY_UPSTREAM, "HY000", msg)
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
                    and bytes(data[5 : min(size, 64)]).lstrip()[:4].upper() == b"SELE"
                    and _CONNECTION_ID_RE.match(bytes(data[5:size]))
                ):
                    payload = bytes(data[4:size])
                    if await self._answered_here(cmd, payload):
                        cbuf.consume(size)
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
        io = self.io
        cbuf = io.buf
        client = io.conn
        self.busy = True
        view = memoryview(cbuf.data)[:size]
        try:
            await up.conn.send_all(view)
        except ConnectionClosed:
            await self._upstream_lost(forwarded=False)
        finally:
            view.release()
            cbuf.consume(size)
        tracker = up.tracker
        tracker.start(cmd)
        sbuf = up.buf
        forwarded = False
        while True:
            if sbuf.end:
                pos = tracker.scan(sbuf.data, sbuf.end)
                if pos:
                    view = memoryview(sbuf.data)[:pos]
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
            me = self.up
            if me is None:
                raise SessionEnd(True)
            tup.kills_in_flight += 1
            try:
                verb = "QUERY" if query_only else "CONNECTION"
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
        up = self.up
        assert up is not None and self.login is not None
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
        up = self.up
        assert up is not None
        await self.io.send_payload(await up.init_db(payload), 1)


_SPECIAL = {
    COM_CHANGE_USER: ClientSession._com_change_user,
    COM_RESET_CONNECTION: ClientSession._com_reset_connection,
    COM_PROCESS_KILL: ClientSession._com_process_kill,
    COM_INIT_DB: ClientSession._com_init_db,
}
