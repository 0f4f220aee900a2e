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
    COM_SHUTDOWN,
    COM_SLEEP,
    COM_STMT_BULK_EXECUTE,
    COM_TABLE_DUMP,
    COM_TIME,
    COMMAND_NAMES,
    ER_CON_COUNT_ERROR,
    ER_CONNECTION_KILLED,
    ER_KILL_DENIED_ERROR,
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

# Statements the proxy answers or vets itself. Checked only on statements whose first
# bytes could match, so ordinary traffic pays one startswith-like test.
_KILL_RE = re.compile(
    rb"^\s*(?:/\*.*?\*/\s*)*KILL\s+(?:(HARD|SOFT)\s+)?(?:(CONNECTION|QUERY)\s+)?(?:(ID)\s+)?(\S+?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONNECTION_ID_RE = re.compile(
    rb"^\s*SELECT\s+CONNECTION_ID\s*\(\s*\)\s*(?:AS\s+(`[^`]+`|\w+)\s*)?;?\s*$",
    re.IGNORECASE,
)


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
                    except ConnectionClosed:
                        pass
                except ConnectionClosed:
                    reusable = not self.busy
                except ProtocolError as exc:
                    log.info("client %s: protocol error: %s", self.id, exc)
                    reusable = False
                    await self._try_error(1, 1158, "08S01", f"tainted-proxy: protocol error: {exc}")
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
        if up.kills_in_flight or not reusable:
            pool.discard(up)
        else:
            pool.release_for_reset(up, self.proxy.default_schema_for(up))

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
                await up.send_payload(com_init_db(login.database), 0)
                _s, resp = await up.read_packet()
                if resp[:1] == b"\xff":
                    err = ErrPacket.decode(resp)
                    await self._try_error(seq, err.code, err.sqlstate, err.message)
                    return False
                up.schema = login.database
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
            if cmd == COM_QUERY:
                head = bytes(data[5 : min(size, 64)]).lstrip()[:4].upper()
                if head == b"KILL" or (
                    head == b"SELE" and _CONNECTION_ID_RE.match(bytes(data[5:size]))
                ):
                    payload = bytes(data[4:size])
                    cbuf.consume(size)
                    await self._query_answered_here(payload)
                    continue
            elif cmd == COM_QUIT:
                raise SessionEnd(True)
            elif cmd in _SPECIAL:
                payload = bytes(data[4:size])
                seq = data[3]
                cbuf.consume(size)
                await _SPECIAL[cmd](self, payload, seq)
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
            await self._relay(cmd, size)

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
    async def _query_answered_here(self, payload: bytes) -> None:
        sql = payload[1:]
        m = _KILL_RE.match(sql)
        if m is not None:
            await self._kill(m, sql)
            return
        m2 = _CONNECTION_ID_RE.match(sql)
        if m2 is not None:
            name = (m2.group(1) or b"CONNECTION_ID()").decode().strip("`")
            assert self.login is not None
            await self.io.conn.send_all(
                text_resultset([name], [[self.id]], self.login.capabilities, status=self._status())
            )
            return
        # a KILL we do not understand (KILL USER ...): never forward, it could reach
        # other clients' connections
        await self.io.send_error(
            ER_KILL_DENIED_ERROR,
            "HY000",
            "tainted-proxy: only KILL [QUERY|CONNECTION] <id> of your own connections is allowed",
            1,
        )

    async def _kill(self, m: re.Match[bytes], sql: bytes) -> None:
        query_only = (m.group(2) or b"").upper() == b"QUERY"
        raw = m.group(4)
        try:
            target_id = int(raw)
        except ValueError:
            await self.io.send_error(
                ER_KILL_DENIED_ERROR,
                "HY000",
                "tainted-proxy: only KILL [QUERY|CONNECTION] <id> of your own connections is allowed",
                1,
            )
            return
        await self._kill_id(target_id, query_only)

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
                if err is None or err.code != ER_NO_SUCH_THREAD:
                    raise SessionEnd(False) from exc
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
            await up.reset(None)
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
        await up.send_payload(payload, 0)
        _s, resp = await up.read_packet()
        if resp[:1] == b"\x00":
            up.schema = payload[1:].decode("utf-8", "surrogateescape")
        await self.io.send_payload(resp, 1)


_SPECIAL = {
    COM_CHANGE_USER: ClientSession._com_change_user,
    COM_RESET_CONNECTION: ClientSession._com_reset_connection,
    COM_PROCESS_KILL: ClientSession._com_process_kill,
    COM_INIT_DB: ClientSession._com_init_db,
}
