"""Binary prepared statements (COM_STMT_*) in transaction and statement pooling.

A statement id is only valid on the upstream connection that prepared it, and a pooled
session changes connections between transactions. So the proxy owns the ids its clients see
(``state.statements.StatementBook``, one per session) and prepares lazily on whichever
connection runs the statement (``backend.statements.ConnStatements``, one LRU per upstream
connection, in ``ServerConn.statements``). Binary prepared statements therefore never pin a session; only
state that lives on one upstream statement does, for as long as it lives: an open cursor
(until the fetch reaches the last row, or the statement is executed again, reset or closed)
and pending COM_STMT_SEND_LONG_DATA (until the statement's next execute, reset or close).

``command(client, cmd, size)`` handles one COM_STMT_* command of a pooled session (the
command loop in frontend.session calls it); it uses the same checkout, relay, learning and
release (frontend.checkout, relay, learn) so transactions, settings, pins and session
tracking work as for COM_QUERY.

Upstream statements are keyed by (schema, PARSE_VARS values, SQL text): a statement is parsed
under the schema and sql_mode in force when it was prepared, and its string literals take the
connection charset and collation of that moment; a lazy prepare on a connection whose values
differ switches them around the prepare (pipelined, one round trip).
Statements evicted from a connection's cache are closed upstream (COM_STMT_CLOSE has no
answer) in the same write as the next command, so the server never holds more than
``pool.prepared_statement_cache`` statements per connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable

import trio

from tainted_proxy.backend.server import ServerConn
from tainted_proxy.backend.statements import ConnStatements
from tainted_proxy.frontend import checkout, learn, local, relay
from tainted_proxy.frontend.classification import OFFLOAD_MIN, classify_long
from tainted_proxy.frontend.client import Client, SessionEnd
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.state import pins as pinreasons
from tainted_proxy.state.statements import (
    ClientStatement,
    Env,
    TooManyStatements,
    UpstreamStatement,
    com_stmt_prepare,
    encode_prepare_response,
    env_sql,
    execute_for_upstream,
    parse_env,
    parse_prepare_ok,
    rewrite_stmt_id,
    split_prepare_response,
    stmt_id_of,
    unknown_statement_error,
)
from tainted_proxy.taint.classifier import classify_flags
from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES
from tainted_proxy.wire.buffer import join_payload
from tainted_proxy.wire.codec import frame
from tainted_proxy.wire.constants import (
    CLIENT_DEPRECATE_EOF,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
    SERVER_STATUS_LAST_ROW_SENT,
)
from tainted_proxy.wire.packets import com_init_db, com_query, ok_response

#: The commands ``command`` handles.
STMT_COMMANDS = frozenset(
    (
        COM_STMT_PREPARE,
        COM_STMT_EXECUTE,
        COM_STMT_SEND_LONG_DATA,
        COM_STMT_CLOSE,
        COM_STMT_RESET,
        COM_STMT_FETCH,
    )
)

ER_STMT_HAS_NO_OPEN_CURSOR = 1421  # HY000
# COM_STMT_EXECUTE flags asking for a cursor (READ_ONLY, FOR_UPDATE, SCROLLABLE)
_CURSOR_FLAGS = 0x07

# the proxy's own exchanges with the server are short (as in frontend.session)
_OWN_EXCHANGE_TIMEOUT = 30.0

Key = tuple[str | None, Env, bytes]  # (schema, env, sql)


def conn_statements(s: Client, up: ServerConn) -> ConnStatements:
    st = up.statements
    if not isinstance(st, ConnStatements):
        st = ConnStatements(s.services.config.pool.prepared_statement_cache)
        up.statements = st
    return st


def env_of(s: Client, up: ServerConn) -> Env:
    """The connection's PARSE_VARS (state.statements)."""
    return parse_env(up.settings, s.services.catalog.baseline)


def set_env(s: Client, env: Env, no_backslash_escapes: bool) -> bytes:
    """The COM_QUERY payload that sets ``env``."""
    return com_query(env_sql(env, s.services.catalog.baseline, no_backslash_escapes))


# -- entry point ---------------------------------------------------------------------------


async def command(s: Client, cmd: int, size: int) -> None:
    """One COM_STMT_* command (the first ``size`` bytes of the client buffer) of a session in
    transaction or statement pooling."""
    cbuf = s.io.buf
    payload = join_payload(cbuf.data, size)
    cbuf.consume(size)
    await _HANDLERS[cmd](s, payload)


# -- commands ------------------------------------------------------------------------------


async def _prepare(s: Client, payload: bytes) -> None:
    """Prepare on a checked-out connection, answer with a proxy id, give it back."""
    st = s.state.statements
    sql = payload[1:]
    if s.up is None and not await checkout.checkout(s, None, 1):
        st.book.note_prepare_failed()
        return
    up = s.up
    assert up is not None and s.login is not None
    key: Key = (up.schema, env_of(s, up), sql)
    cache = conn_statements(s, up)
    got = await _upstream_prepare(s, up, cache, key, st.kept_keys())
    if isinstance(got, bytes):
        st.book.note_prepare_failed()
        await s.io.send_payload(got, 1)
        await checkout.maybe_release(s)
        return
    ok, param_defs, column_defs = got
    upstream_id, _columns, num_params, warnings = parse_prepare_ok(ok)
    if cache.lookup(key) is None:
        cache.pending_close.extend(cache.add(key, upstream_id, num_params))
    else:
        # already prepared here (maybe with types bound): keep that one
        cache.pending_close.append(upstream_id)
        await _send(s, up, cache, None)
    try:
        stmt = st.book.add(sql, key, ok, param_defs, column_defs)
    except TooManyStatements as exc:
        await s.io.send_payload(exc.err_payload(), 1)
        await checkout.maybe_release(s)
        return
    deprecate_eof = bool(s.login.capabilities & CLIENT_DEPRECATE_EOF)
    out: list[bytes] = []
    seq = 1
    for p in encode_prepare_response(stmt, deprecate_eof, up.status, warnings):
        data, seq = frame(p, seq)
        out.append(data)
    await s.io.conn.send_all(b"".join(out))
    await checkout.maybe_release(s)


async def _execute(s: Client, payload: bytes) -> None:
    st = s.state.statements
    sid = stmt_id_of(payload)
    stmt = st.book.get(sid)
    if stmt is None:
        await s.io.send_payload(unknown_statement_error(sid, COM_STMT_EXECUTE), 1)
        return
    pid = stmt.proxy_id
    deferred = st.deferred.pop(pid, None)
    if deferred is not None:
        st.long_data.discard(pid)
        _update_pin(s)
        await s.io.send_payload(deferred, 1)
        await checkout.maybe_release(s)
        return
    # what the statement's text does (pins, transactions, LAST_INSERT_ID()), as for COM_QUERY
    schema, env, sql = stmt.key  # type: ignore[misc]
    if stmt.classified is None:
        mode = env[0]
        flags = (ANSI_QUOTES if "ANSI_QUOTES" in mode else 0) | (
            NO_BACKSLASH_ESCAPES if "NO_BACKSLASH_ESCAPES" in mode else 0
        )
        if len(sql) < OFFLOAD_MIN:
            stmt.classified = (classify_flags(sql, flags),)
        else:
            stmt.classified = (await classify_long(sql, flags),)
    c = stmt.classified[0]
    if c is not None and await local.refused_in_statement_mode(s, c):
        return
    if len(payload) > 5 and payload[5] & _CURSOR_FLAGS:
        pin: str | None = pinreasons.BINARY_CURSOR
    else:
        pin = c.pin if c is not None else None
    if pin is not None and not await checkout.wait_for_pin_slot(s, pin):
        return  # users.NAME.max_pinned: the client has ERR 1040
    s.state.next_statement()
    if s.up is None and not await checkout.checkout(s, c, 1):
        return
    if c is not None and not await checkout.restore_values(s, c):
        await checkout.maybe_release(s)
        return
    up = s.up
    assert up is not None
    cache = conn_statements(s, up)
    ust = await _upstream_statement(s, up, cache, stmt)
    if isinstance(ust, bytes):
        await s.io.send_payload(ust, 1)
        await checkout.maybe_release(s)
        return
    st.book.note_execute(stmt, payload)
    out, types = execute_for_upstream(
        payload, ust.upstream_id, stmt.num_params, stmt.types, ust.types_bound
    )
    # executing again closes the statement's cursor and consumes its long data
    st.cursors.discard(pid)
    st.long_data.discard(pid)
    s.begin_response(c, stmt.sql)
    schema_before = up.schema
    await _send(s, up, cache, out)
    await relay.relay_response(s, up, COM_STMT_EXECUTE)
    tracker = up.tracker
    ust.types_bound = None if tracker.error else types
    cursor = tracker.cursor_opened and not tracker.error
    if c is None and schema != schema_before:
        # The server runs a statement in the schema it was prepared in, and switches
        # back: it then reports a state change (a schema change to the current one). From
        # a statement the classifier proved clean, that is all the change there is.
        reports = s.reports
        if not reports.schema_changed or reports.schema == schema_before:
            reports.state_changed = reports.schema_changed = False
        tracker.eof_ssc = False
    # the execute runs the statement's text: learn from it as from a COM_QUERY of it
    await learn.after_command(s, True, c)
    if cursor:
        st.cursors.add(pid)
    _update_pin(s)
    if s.killed:
        return
    await checkout.maybe_release(s)


async def _send_long_data(s: Client, payload: bytes) -> None:
    """No answer: failures are reported at the statement's next execute."""
    st = s.state.statements
    stmt = st.book.get(stmt_id_of(payload))
    if stmt is None:
        return  # the server ignores it as well; the execute gets 1243
    pid = stmt.proxy_id
    if pid in st.deferred:
        return
    if s.up is None:
        err = await _quiet_checkout(s)
        if err is not None:
            st.deferred[pid] = err
            return
    up = s.up
    assert up is not None
    cache = conn_statements(s, up)
    ust = await _upstream_statement(s, up, cache, stmt)
    if isinstance(ust, bytes):
        st.deferred[pid] = ust
        await checkout.maybe_release(s)
        return
    s.begin_response(None, b"")
    await _send(s, up, cache, rewrite_stmt_id(payload, ust.upstream_id))
    st.long_data.add(pid)
    _update_pin(s)
    await checkout.maybe_release(s)


async def _close(s: Client, payload: bytes) -> None:
    """No answer. The upstream statement stays cached for other executions, unless a cursor
    or long data of this session lives on it."""
    st = s.state.statements
    stmt = st.book.close(stmt_id_of(payload))
    if stmt is None:
        return
    held = st.forget(stmt.proxy_id)
    up = s.up
    if held and up is not None:
        cache = conn_statements(s, up)
        ust = cache.drop(stmt.key)
        if ust is not None:
            cache.pending_close.append(ust.upstream_id)
            await _send(s, up, cache, None)
    _update_pin(s)
    await checkout.maybe_release(s)


async def _reset(s: Client, payload: bytes) -> None:
    st = s.state.statements
    sid = stmt_id_of(payload)
    stmt = st.book.get(sid)
    if stmt is None:
        await s.io.send_payload(unknown_statement_error(sid, COM_STMT_RESET), 1)
        return
    st.forget(stmt.proxy_id)
    up = s.up
    ust = conn_statements(s, up).lookup(stmt.key) if up is not None else None
    if up is not None and ust is not None:
        cache = conn_statements(s, up)
        s.begin_response(None, b"")
        await _send(s, up, cache, rewrite_stmt_id(payload, ust.upstream_id))
        await relay.relay_response(s, up, COM_STMT_RESET)
        ust.types_bound = None  # sending the types again is always accepted
    else:
        # nothing of this statement lives upstream: a reset has nothing to do
        assert s.login is not None
        await s.io.conn.send_all(ok_response(s.login.capabilities, status=s.status()))
    _update_pin(s)
    await checkout.maybe_release(s)


async def _fetch(s: Client, payload: bytes) -> None:
    st = s.state.statements
    sid = stmt_id_of(payload)
    stmt = st.book.get(sid)
    if stmt is None:
        await s.io.send_payload(unknown_statement_error(sid, COM_STMT_FETCH), 1)
        return
    pid = stmt.proxy_id
    up = s.up
    ust = None
    if pid in st.cursors and up is not None:
        ust = conn_statements(s, up).lookup(stmt.key)
    if up is None or ust is None:
        await s.io.send_error(
            ER_STMT_HAS_NO_OPEN_CURSOR, "HY000", f"The statement ({sid}) has no open cursor.", 1
        )
        return
    cache = conn_statements(s, up)
    s.begin_response(None, b"")
    await _send(s, up, cache, rewrite_stmt_id(payload, ust.upstream_id))
    await relay.relay_response(s, up, COM_STMT_FETCH)
    tracker = up.tracker
    if not tracker.error and tracker.status & SERVER_STATUS_LAST_ROW_SENT:
        st.cursors.discard(pid)  # the server closed the cursor
    _update_pin(s)
    if s.killed:
        return
    await checkout.maybe_release(s)


_HANDLERS: dict[int, Callable[[Client, bytes], Awaitable[None]]] = {
    COM_STMT_PREPARE: _prepare,
    COM_STMT_EXECUTE: _execute,
    COM_STMT_SEND_LONG_DATA: _send_long_data,
    COM_STMT_CLOSE: _close,
    COM_STMT_RESET: _reset,
    COM_STMT_FETCH: _fetch,
}


# -- helpers -------------------------------------------------------------------------------


def _update_pin(s: Client) -> None:
    s.state.pins.protocol = s.state.statements.protocol_pin()


async def _send(s: Client, up: ServerConn, cache: ConnStatements, payload: bytes | None) -> None:
    """Send ``payload`` (a command, or nothing) after the pending COM_STMT_CLOSEs, in one
    write."""
    data = cache.take_closes()
    if payload is not None:
        data += frame(payload, 0)[0]
    if not data:
        return
    s.busy = True
    try:
        await up.conn.send_all(data)
    except ConnectionClosed:
        await relay.upstream_lost(s, forwarded=False)
    if payload is None or payload[0] == COM_STMT_SEND_LONG_DATA:
        s.busy = False  # no answer comes


async def _quiet_checkout(s: Client) -> bytes | None:
    """``checkout.checkout`` for a command without an answer: the client must not get the ERR
    now. Returns None, or the ERR payload for later."""
    err = await checkout.checkout_or_error(s, None)
    return None if err is None else err.encode()


async def _upstream_statement(
    s: Client, up: ServerConn, cache: ConnStatements, stmt: ClientStatement
) -> UpstreamStatement | bytes:
    """The statement prepared on ``up`` (prepared now if it is not, its response
    swallowed), or the ERR payload the prepare got."""
    ust = cache.lookup(stmt.key)
    if ust is not None:
        return ust
    got = await _upstream_prepare(s, up, cache, stmt.key, s.state.statements.kept_keys())  # type: ignore[arg-type]
    if isinstance(got, bytes):
        return got
    upstream_id, _columns, num_params, _warnings = parse_prepare_ok(got[0])
    cache.pending_close.extend(cache.add(stmt.key, upstream_id, num_params))
    ust = cache.lookup(stmt.key)
    assert ust is not None
    return ust


async def _upstream_prepare(
    s: Client, up: ServerConn, cache: ConnStatements, key: Key, keep: set[Hashable]
) -> tuple[bytes, list[bytes], list[bytes]] | bytes:
    """COM_STMT_PREPARE of ``key`` on ``up``, under ``key``'s schema and sql_mode, read whole
    by the proxy. Returns (PREPARE_OK, param definitions, column definitions), or the ERR
    payload. The caller records the statement in ``cache``."""
    schema, env, sql = key
    cache.make_room(key, keep)
    pre: list[bytes] = []
    post: list[bytes] = []
    current = env_of(s, up)
    if env != current:
        pre.append(set_env(s, env, "NO_BACKSLASH_ESCAPES" in current[0]))
        post.append(set_env(s, current, "NO_BACKSLASH_ESCAPES" in env[0]))
    if schema is not None and up.schema is not None and schema != up.schema:
        pre.append(com_init_db(schema))
        post.insert(0, com_init_db(up.schema))
    msgs = [cache.take_closes()]
    msgs.extend(frame(p, 0)[0] for p in pre)
    msgs.append(frame(com_stmt_prepare(sql), 0)[0])
    msgs.extend(frame(p, 0)[0] for p in post)
    deprecate_eof = bool(up.capabilities & CLIENT_DEPRECATE_EOF)
    s.busy = True
    switch_err: bytes | None = None
    restore_err: bytes | None = None
    try:
        with trio.fail_after(_OWN_EXCHANGE_TIMEOUT):
            await up.conn.send_all(b"".join(msgs))
            # every pipelined answer is read, even after an ERR
            for _ in pre:
                _, resp = await up.read_packet()
                if resp[:1] == b"\xff" and switch_err is None:
                    switch_err = resp
            payloads = await _read_prepare_response(up, deprecate_eof)
            for _ in post:
                _, resp = await up.read_packet()
                if resp[:1] == b"\xff" and restore_err is None:
                    restore_err = resp
    except ConnectionClosed:
        await relay.upstream_lost(s, forwarded=False)
    s.busy = False
    if restore_err is not None:
        # the connection's schema or sql_mode is not what the proxy thinks: give up on it
        await s.io.send_payload(restore_err, 1)
        raise SessionEnd(False)
    if payloads[0][:1] == b"\xff":
        return switch_err or payloads[0]
    ok, param_defs, column_defs = split_prepare_response(payloads, deprecate_eof)
    if switch_err is not None:
        # prepared under the wrong schema or sql_mode: not usable
        cache.pending_close.append(parse_prepare_ok(ok)[0])
        return switch_err
    return ok, param_defs, column_defs


async def _read_prepare_response(up: ServerConn, deprecate_eof: bool) -> list[bytes]:
    """The payloads of one COM_STMT_PREPARE response (just the ERR if it failed)."""
    _, first = await up.read_packet()
    if first[:1] == b"\xff":
        return [first]
    _, columns, params, _ = parse_prepare_ok(first)
    count = params + columns
    if not deprecate_eof:
        count += (params > 0) + (columns > 0)
    out = [first]
    for _ in range(count):
        _, p = await up.read_packet()
        out.append(p)
    return out


__all__ = [
    "STMT_COMMANDS",
    "command",
    "conn_statements",
    "env_of",
]
