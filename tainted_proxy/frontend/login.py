"""A client's login: the handshake (frontend.handshake), then attaching the session to the
upstream side. Session pooling takes one connection for the whole session and brings it
to the login's schema and charset; the pooled modes start the session model from the
login (its charset's settings, its schema) and check a connection out once to prove the
schema exists (ERR 1049 as from the server). A login the upstream side cannot serve gets
a proper ERR (frontend.checkout.upstream_unavailable). A login asking for the database
``tainted_proxy`` is the admin console's (frontend.admin_session): no upstream side."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from tainted_proxy.backend.server import UpstreamError
from tainted_proxy.frontend import admin_session, checkout
from tainted_proxy.frontend.client import Client
from tainted_proxy.frontend.handshake import (
    SEMANTIC_CAPABILITIES,
    AuthFailed,
    ClientLogin,
    client_handshake,
)
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.pool.pool import PoolKey
from tainted_proxy.state.settings import EMPTY, Settings, for_charset
from tainted_proxy.wire.constants import (
    CLIENT_SESSION_TRACK,
    ER_PROXY_UPSTREAM,
    ER_UNKNOWN_ERROR,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import ErrPacket, com_init_db, com_query, ok_response

if TYPE_CHECKING:
    from tainted_proxy.backend.server import ServerConn

log = logging.getLogger("tainted_proxy.login")

# the largest packet a client may send before it has logged in
_MAX_LOGIN_PACKET = 128 * 1024


async def login(cl: Client) -> bool:
    """Handshake and attach; True when the client is in (it has its OK)."""
    svc = cl.services
    io = cl.io
    # Before login a client may only make the proxy buffer what a handshake needs (a
    # HandshakeResponse41 is a few KiB; clients cap connection attributes at 64 KiB):
    # otherwise a bare 4-byte header from anyone reserves up to 16 MiB per connection.
    max_packet, io.max_packet = io.max_packet, min(io.max_packet, _MAX_LOGIN_PACKET)
    if svc.failed_logins.blocked(io.peer_host, time.monotonic()):
        svc.accounting.stats.errors["login blocked"] += 1
        await cl.try_error(
            0,
            1129,
            "HY000",
            f"Host '{io.peer_host}' is blocked because of many failed logins "
            "(tainted-proxy: proxy.max_login_failures); try again later",
        )
        return False
    try:
        with trio.fail_after(svc.config.proxy.auth_timeout):
            got = await client_handshake(
                io,
                connection_id=cl.id,
                server_version=svc.catalog.server_version,
                ssl_context=svc.ssl_context,
                tls_required=svc.config.proxy.tls_required,
                credentials=svc,
                greeting_plugin=svc.config.proxy.default_auth_plugin,
            )
    except AuthFailed as exc:
        svc.accounting.stats.auth_failures += 1
        svc.failed_logins.failed(io.peer_host, time.monotonic())
        log.info(
            "event=login_failed client=%s address=%s code=%s reason=%r",
            cl.id,
            io.peer_host,
            exc.code,
            exc.message,
        )
        await cl.try_error(exc.seq, exc.code, exc.sqlstate, exc.message)
        return False
    except trio.TooSlowError:
        # (not counted as a failed login: a slow client or a starved proxy, not a guess)
        log.info(
            "event=login_failed client=%s address=%s code=1043 reason=%r",
            cl.id,
            io.peer_host,
            f"handshake not completed within proxy.auth_timeout "
            f"({svc.config.proxy.auth_timeout:g}s)",
        )
        await cl.try_error(0, 1043, "08S01", "Bad handshake: timed out")
        return False
    io.max_packet = max_packet
    cl.login = got
    cl.user = got.user
    if admin_session.wants_console(got):
        return await admin_session.login(cl, got)  # the admin console: no upstream side
    if not svc.upstream_ready.is_set():
        # the upstream was down at start: the catalog (collations, baseline) comes first
        with trio.move_on_after(svc.config.upstream.connect_timeout):
            await svc.upstream_ready.wait()
        if not svc.upstream_ready.is_set():
            await cl.try_error(
                got.next_seq,
                ER_UNKNOWN_ERROR,
                "HY000",
                "tainted-proxy: cannot open an upstream connection: the upstream server "
                "has not answered since the proxy started",
            )
            return False
    if not await attach(cl, got, got.next_seq):
        return False
    await io.conn.send_all(ok_response(got.capabilities, status=cl.status(), seq=got.next_seq))
    return True


def pool_key(cl: Client, got: ClientLogin) -> PoolKey:
    up_user, _ = cl.services.upstream_credentials(got.user)
    caps = got.capabilities & SEMANTIC_CAPABILITIES
    if cl.state.mode is None:
        return PoolKey(up_user, caps)
    # pooled upstreams always report session state, whatever the client asked for
    return PoolKey(up_user, caps | CLIENT_SESSION_TRACK, tracked=True)


def login_settings(cl: Client, charset: int) -> Settings:
    """The settings vector a login's handshake charset means."""
    catalog = cl.services.catalog
    names = catalog.collations.get(charset)
    if names is None:
        return EMPTY
    return for_charset(names[0], names[1], catalog.baseline)


def start_session(cl: Client, got: ClientLogin, schema: str | None) -> None:
    """The pooled session model starts over (a login, COM_RESET_CONNECTION)."""
    last = cl.last_up
    if last is not None and last.pending_for is cl:
        last.pending_for = None
    cl.state.start(login_settings(cl, got.charset), schema)


async def attach(cl: Client, got: ClientLogin, seq: int) -> bool:
    """Get an upstream connection for this login and bring it to the login's schema and
    charset. On failure the client gets an ERR (at ``seq``) and False."""
    svc = cl.services
    user = svc.config.user(got.user)
    mode = user.pool_mode if user is not None else "session"
    cl.state.mode = None if mode == "session" else mode
    key = cl.key = pool_key(cl, got)
    if cl.state.mode is not None:
        start_session(cl, got, got.database)
        if not await checkout.checkout(cl, None, seq, login=True):
            return False
        await checkout.maybe_release(cl)
        return True
    up = await checkout.acquire_or_error(cl, key, None)
    if isinstance(up, ErrPacket):
        await cl.try_error(seq, up.code, up.sqlstate, up.message)
        return False
    cl.up = up
    try:
        if got.database is not None and up.schema != got.database:
            resp = await up.init_db(com_init_db(got.database))
            if resp[:1] == b"\xff":
                err = ErrPacket.decode(resp)
                await cl.try_error(seq, err.code, err.sqlstate, err.message)
                return False
        elif got.database is None and up.schema is not None:
            await up.change_user(None)
        if up.charset != got.charset:
            await set_charset(cl, up, got.charset)
        up.home_schema = got.database
        await checkout.claim_thread_id(cl, up)
    except (UpstreamError, ConnectionClosed, ProtocolError, OSError) as exc:
        cl.up = None
        svc.pool.discard(up)
        await cl.try_error(
            seq, ER_PROXY_UPSTREAM, "HY000", f"tainted-proxy: upstream failed during login: {exc}"
        )
        return False
    return True


async def set_charset(cl: Client, up: ServerConn, charset: int) -> None:
    names = cl.services.catalog.collations.get(charset)
    if names is None:
        return  # unknown id: leave the connection's charset (as a server would reject)
    cs, coll = names
    await up.command_ok(com_query(f"SET NAMES {cs} COLLATE {coll}".encode()))
    up.charset = charset
