"""Commands that change the session itself: COM_RESET_CONNECTION, COM_CHANGE_USER
(re-authenticated against the proxy's users) and COM_INIT_DB."""

from __future__ import annotations

from tainted_proxy.backend.server import UpstreamError
from tainted_proxy.frontend import checkout, login, relay
from tainted_proxy.frontend.client import Client, SessionEnd
from tainted_proxy.frontend.handshake import NATIVE, AuthFailed, ClientLogin, authenticate
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.wire import auth as wauth
from tainted_proxy.wire import packets
from tainted_proxy.wire.constants import CLIENT_SESSION_TRACK
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import (
    ChangeUser,
    ok_response,
    strip_session_tracking,
)


async def com_reset_connection(cl: Client, payload: bytes, seq: int) -> None:
    assert cl.login is not None
    if cl.state.mode is not None:
        # the session starts over; its connection (if it held one) is reset in the
        # background before anyone else gets it
        # MariaDB keeps the current database across a reset
        schema = cl.up.schema if cl.up is not None else cl.state.schema
        checkout.drop_upstream(cl, True)
        login.start_session(cl, cl.login, schema)
        await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))
        return
    up = cl.up
    assert up is not None
    try:
        # A plain COM_RESET_CONNECTION, exactly what the server would do: MariaDB keeps the
        # current database across a reset, so the client stays in the schema it had
        # selected. ``up.schema`` is unchanged by the reset.
        await up.command_ok(packets.com_reset_connection())
        up.charset = up.handshake_charset  # the server reverts to the handshake charset
        if up.charset != cl.login.charset:
            await login.set_charset(cl, up, cl.login.charset)
    except UpstreamError as exc:
        if exc.err is not None:
            await cl.io.send_error(exc.err.code, exc.err.sqlstate, exc.err.message, 1)
            raise SessionEnd(False) from exc
        await relay.upstream_lost(cl, forwarded=False)
    except ConnectionClosed:
        await relay.upstream_lost(cl, forwarded=False)
    await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))


async def com_change_user(cl: Client, payload: bytes, seq: int) -> None:
    """Re-authenticate against the proxy's users, then start a fresh session (a new
    upstream connection state for the new user, like the server's reset)."""
    got = cl.login
    assert got is not None
    io = cl.io
    try:
        cu = ChangeUser.decode(payload, got.capabilities)
    except ProtocolError:
        await io.send_error(
            1043, "08S01", "Bad handshake: malformed COM_CHANGE_USER", (seq + 1) & 0xFF
        )
        raise SessionEnd(True) from None
    try:
        # the first response answers the login's scramble; a switch gets a fresh one
        seq, scramble = await authenticate(
            io,
            cl.services,
            user=cu.username,
            plugin=cu.auth_plugin or NATIVE,
            response=cu.auth_response,
            scramble=got.scramble,
            switch_scramble=wauth.make_scramble(),
            seq=(seq + 1) & 0xFF,
        )
    except AuthFailed as exc:
        await cl.try_error(exc.seq, exc.code, exc.sqlstate, exc.message)
        raise SessionEnd(True) from None
    checkout.drop_upstream(cl, True)
    new = ClientLogin(
        user=cu.username,
        database=cu.database or None,
        charset=cu.charset or got.charset,
        capabilities=got.capabilities,
        attributes=dict(cu.attributes) or got.attributes,
        scramble=scramble,
        tls=got.tls,
        next_seq=seq,
    )
    cl.login = new
    cl.user = new.user
    if not await login.attach(cl, new, seq):
        raise SessionEnd(True)
    await io.conn.send_all(ok_response(new.capabilities, status=cl.status(), seq=seq))


async def com_init_db(cl: Client, payload: bytes, seq: int) -> None:
    """Relay, and remember the schema so a reset can restore it."""
    if cl.up is None and not await checkout.checkout(cl, None, 1):
        return
    up = cl.up
    assert up is not None and cl.login is not None
    resp = await up.init_db(payload)
    if resp[:1] == b"\x00" and not cl.login.capabilities & CLIENT_SESSION_TRACK:
        resp = strip_session_tracking(resp, up.capabilities)
    await cl.io.send_payload(resp, 1)
