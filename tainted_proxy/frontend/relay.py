"""Relaying one command upstream and its response back: the hot path.

``relay`` forwards the first ``size`` bytes of the client buffer as they are and the
response as it comes, in as few sends as the reads allow, without copying payloads. In a
pooled mode the OK packets are also read for the server's session-state reports (into
``Client.reports``) and stripped of them for a client that did not ask for
CLIENT_SESSION_TRACK. LOCAL INFILE data is relayed in between.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tainted_proxy.frontend.client import Client, SessionEnd, StatementLost
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.wire.constants import (
    CLIENT_SESSION_TRACK,
    ER_PROXY_UPSTREAM,
    ER_QUERY_INTERRUPTED,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_IN_TRANS,
)
from tainted_proxy.wire.packets import (
    OkPacket,
    SchemaChange,
    StateChange,
    SysVarChange,
    ok_status,
    parse_session_state,
    strip_session_tracking,
)

if TYPE_CHECKING:
    from tainted_proxy.backend.server import ServerConn

log = logging.getLogger("tainted_proxy.relay")


async def relay(cl: Client, cmd: int, size: int) -> None:
    """Forward one command (the first ``size`` bytes of the client buffer) and its
    response. No payload copies, one send per read."""
    up = cl.up
    if up is None:
        raise SessionEnd(True)
    cbuf = cl.io.buf
    cl.busy = True
    view = memoryview(cbuf.data)[:size]
    try:
        await up.conn.send_all(view)
    except ConnectionClosed:
        await upstream_lost(cl, forwarded=False)
    finally:
        view.release()
        cbuf.consume(size)
    await relay_response(cl, up, cmd)


async def relay_response(cl: Client, up: ServerConn, cmd: int) -> None:
    """Relay the response to ``cmd``, already sent on ``up``, to the client."""
    client = cl.io.conn
    cl.busy = True
    tracker = up.tracker
    tracker.start(cmd)
    pooled = cl.state.mode is not None
    tracker.collect_ok = pooled
    sbuf = up.buf
    forwarded = False
    while True:
        if sbuf.end:
            pos = tracker.scan(sbuf.data, sbuf.end)
            if pos:
                out = track_chunk(cl, up, sbuf.data, pos, tracker.ok_packets) if pooled else None
                view = memoryview(sbuf.data)[:pos] if out is None else memoryview(out)
                try:
                    await client.send_all(view)
                finally:
                    view.release()
                forwarded = True
                sbuf.consume(pos)
            if tracker.needs_client_data:
                await _relay_infile(cl, up)
                continue
        if tracker.done:
            break
        try:
            await up.conn.recv_into(sbuf, wait_first=sbuf.end == 0)
        except ConnectionClosed:
            await upstream_lost(cl, forwarded=forwarded or tracker.mid_packet)
    if sbuf.end:
        # bytes past the end of the response: the server and the proxy disagree
        raise SessionEnd(False)
    if not tracker.error:
        up.status = tracker.status
    cl.busy = False


async def _relay_infile(cl: Client, up: ServerConn) -> None:
    """LOCAL INFILE: relay the client's file packets until the empty one."""
    io = cl.io
    while True:
        size = await io.wait_packet()
        empty = size == 4
        view = memoryview(io.buf.data)[:size]
        try:
            await up.conn.send_all(view)
        except ConnectionClosed:
            view.release()
            await upstream_lost(cl, forwarded=True)
        view.release()
        io.buf.consume(size)
        if empty:
            up.tracker.infile_sent()
            return


async def upstream_lost(cl: Client, forwarded: bool) -> None:
    """The upstream connection broke mid-command (a database restart, a crash). A pooled
    session that was neither in a transaction nor pinned lost only this statement: it
    gets ERR 1317 (a server code: drivers keep the connection) and goes on
    (StatementLost). Otherwise tell the client if it can still parse an ERR, then end the
    session: its transaction or pinned state is gone."""
    svc = cl.services
    svc.accounting.stats.upstream_lost += 1
    svc.accounting.stats.errors["upstream lost"] += 1
    up = cl.up
    state = cl.state
    if (
        not forwarded
        and up is not None
        and state.mode is not None
        and not up.status & SERVER_STATUS_IN_TRANS
        and state.pins.reason() is None
    ):
        cl.up = None
        svc.pool.discard(up)
        cl.busy = False
        log.warning(
            "event=statement_lost client=%s user=%s upstream_thread=%s",
            cl.id,
            cl.user,
            up.thread_id,
        )
        await cl.try_error(
            1,
            ER_QUERY_INTERRUPTED,
            "70100",
            "tainted-proxy: the upstream connection was lost while this statement ran (did "
            "the database restart?); it may or may not have been applied; the session goes on",
        )
        raise StatementLost
    log.warning(
        "event=session_lost client=%s user=%s mode=%s in_transaction=%s pin=%r",
        cl.id,
        cl.user,
        state.mode or "session",
        bool(up is not None and up.status & SERVER_STATUS_IN_TRANS),
        state.pins.reason(),
    )
    if not forwarded:
        await cl.try_error(
            1,
            ER_PROXY_UPSTREAM,
            "HY000",
            "Lost connection to MySQL server during query (tainted-proxy: the upstream "
            "connection closed)",
        )
    cl.busy = False
    raise SessionEnd(False)


def track_chunk(
    cl: Client, up: ServerConn, data: bytearray, end: int, ok_packets: list[tuple[int, int]]
) -> bytes | None:
    """Read the session-state blocks of the OK packets in ``data[:end]`` (offsets of
    their payloads in ``ok_packets``) into ``cl.reports``, and strip them for a client
    that did not ask for CLIENT_SESSION_TRACK. Returns the bytes to forward instead, or
    None when ``data[:end]`` can go as it is."""
    if not ok_packets:
        return None
    assert cl.login is not None
    strip = not cl.login.capabilities & CLIENT_SESSION_TRACK
    reports = cl.reports
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
                    reports.variables[entry.name] = entry.value
                elif isinstance(entry, SchemaChange):
                    reports.schema = entry.schema or None
                    reports.schema_changed = True
                elif isinstance(entry, StateChange):
                    reports.state_changed = True
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
