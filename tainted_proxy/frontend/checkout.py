"""Getting an upstream connection for a session and giving it back.

* ``checkout``: a connection from the pool carrying the session's settings and schema
  (the pool prefers the connection the session used last, then the exact sub-pool, then
  the nearest; ``ServerConn.converge`` applies the difference in one round trip), after
  reading back another session's pending values that connection still holds;
* ``restore_values``: before a statement that reads the previous statement's values, make
  the connection answer with the session's own (state.values.restore_plan);
* ``maybe_release`` / ``give_back``: the one decision of how a connection returns to the
  pool: as it is (its values left for whoever takes it next to read back), reset first,
  or closed;
* the pin accounting (``publish_pin``) and ``users.NAME.max_pinned`` (``wait_for_pin_slot``),
  counted over all worker processes when there are several (pool.shared).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from tainted_proxy.accounting import VALUES_REFUSED
from tainted_proxy.backend.server import UpstreamError
from tainted_proxy.frontend.client import Client, SessionEnd
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.pool.pool import SHARE_POLL_WAITING, PoolTimeout
from tainted_proxy.state.values import reads_of
from tainted_proxy.taint.effects import Classification, Effect
from tainted_proxy.taint.fingerprint import fingerprint
from tainted_proxy.wire.constants import (
    ER_BAD_DB_ERROR,
    ER_CON_COUNT_ERROR,
    ER_PROXY_UPSTREAM,
    ER_UNKNOWN_ERROR,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import ErrPacket, com_query

if TYPE_CHECKING:
    from tainted_proxy.backend.server import ServerConn
    from tainted_proxy.frontend.client import Services
    from tainted_proxy.pool.pool import PoolKey
    from tainted_proxy.state.settings import Settings

log = logging.getLogger("tainted_proxy.checkout")

# the proxy's own exchanges with the server (SET, INIT_DB, RESET, reads) are short
OWN_EXCHANGE_TIMEOUT = 30.0

_UPSTREAM_ERRORS = (UpstreamError, ConnectionClosed, ProtocolError, OSError, trio.TooSlowError)

# the reads of the previous statement's values (state.values.restore_plan)
VALUE_NEEDS = frozenset(
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


async def acquire_or_error(
    cl: Client,
    key: PoolKey,
    want: tuple[Settings, str | None] | None,
    prefer: ServerConn | None = None,
) -> ServerConn | ErrPacket:
    """A connection from the pool, or the ERR the client should get instead."""
    svc = cl.services
    pool = svc.pool
    try:
        waited_before = pool.stats.waited
        started = time.monotonic()
        conn = await pool.acquire(key, svc.config.pool.checkout_timeout, want, prefer)
        if pool.stats.waited != waited_before:
            svc.accounting.waited(time.monotonic() - started)
        return conn
    except PoolTimeout as exc:
        svc.accounting.stats.checkout_timeouts += 1
        svc.accounting.stats.errors["checkout timeout"] += 1
        log.warning("event=checkout_timeout client=%s user=%s reason=%r", cl.id, cl.user, str(exc))
        return ErrPacket(ER_CON_COUNT_ERROR, "08004", f"Too many connections: tainted-proxy: {exc}")
    except _UPSTREAM_ERRORS as exc:
        err = upstream_unavailable(exc)
        svc.accounting.stats.errors["upstream unavailable"] += 1
        log.warning(
            "event=upstream_connect_failed client=%s user=%s upstream_user=%s code=%s error=%r",
            cl.id,
            cl.user,
            key.user,
            err.code,
            str(exc),
        )
        return err


async def checkout(cl: Client, c: Classification | None, seq: int, login: bool = False) -> bool:
    """``checkout_or_error``; on failure the client gets the ERR at ``seq`` and False."""
    err = await checkout_or_error(cl, c, login)
    if err is None:
        return True
    await cl.try_error(seq, err.code, err.sqlstate, err.message)
    return False


async def checkout_or_error(
    cl: Client, c: Classification | None, login: bool = False
) -> ErrPacket | None:
    """Get a connection carrying the session's settings and schema. On failure, the ERR
    the client should get (now, or with the answer to a later command: frontend.prepared
    for COM_STMT_SEND_LONG_DATA)."""
    svc = cl.services
    state = cl.state
    assert cl.key is not None
    want = (state.settings, state.schema)
    last = cl.last_up
    up = svc.pool.reclaim(last, want) if last is not None else None
    if up is not None:
        if (
            (up.pending_for is None or up.pending_for is cl)
            and up.values_owner == (cl.id, state.seq - 1)
            and (up.user_vars_of is None or up.user_vars_of == cl.id)
            and up.carries(state.settings, state.schema)
        ):
            # the session's own last connection, untouched since: it holds the session's
            # settings and its last statement's values; nothing to read back or apply
            up.pending_for = None
            if up.user_vars_of is None and state.settings:
                _claim_user_vars(cl, up)
            svc.accounting.stats.checkout_same_settings += 1
            cl.up = up
            return None
    else:
        got = await acquire_or_error(cl, cl.key, want, last)
        if isinstance(got, ErrPacket):
            return got
        up = got
    return await _carry_session(cl, up, c, login)


def _claim_user_vars(cl: Client, up: ServerConn) -> None:
    if any(name[:1] == "@" for name, _ in cl.state.settings):
        up.user_vars_of = cl.id


async def _carry_session(
    cl: Client, up: ServerConn, c: Classification | None, login: bool
) -> ErrPacket | None:
    """Make ``up``, just checked out, carry the session: read back another session's
    values it holds, reset another session's user variables, apply the settings."""
    svc = cl.services
    pool = svc.pool
    state = cl.state
    owner = up.pending_for
    if owner is not None:
        up.pending_for = None
        if owner is not cl:
            # another session's last values are still only here: read them for it
            await collect_values(owner, up)  # type: ignore[arg-type]
    if state.values.pending and owner is not cl and cl.values_ready is not None:
        # this session's own are being read by whoever took its connection
        await cl.values_ready.wait()
    stats = svc.accounting.stats
    if up.user_vars_of is not None and up.user_vars_of != cl.id:
        # another session's user variables are still there, NULL or not: start clean
        try:
            with trio.fail_after(OWN_EXCHANGE_TIMEOUT):
                await up.reset(up.schema)
        except _UPSTREAM_ERRORS as exc:
            pool.discard(up)
            return upstream_unavailable(exc)
        stats.checkout_reset_applied += 1
    # (after any reset: it changes what the connection holds of the last statement)
    state.took(up)
    _claim_user_vars(cl, up)
    if up.carries(state.settings, state.schema):
        stats.checkout_same_settings += 1
        cl.up = up  # the exact sub-pool hit: no round trip (and no timer to arm)
        return None
    stats.checkout_settings_applied += 1
    try:
        with trio.fail_after(OWN_EXCHANGE_TIMEOUT):
            if await up.converge(state.settings, state.schema, svc.catalog.baseline):
                pool.stats.settings_applied += 1
    except UpstreamError as exc:
        pool.discard(up)
        err = exc.err
        if err is not None and err.code == ER_BAD_DB_ERROR and state.schema and not login:
            # another session dropped this session's schema: a server keeps such a session
            # usable (USE, qualified names), so go on without a schema
            state.schema = state.pins.schema = None
            return await checkout_or_error(cl, c)
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
    cl.up = up
    return None


async def collect_values(cl: Client, up: ServerConn) -> None:
    """Read ``cl``'s pending values from ``up`` (which holds them) into its copy; called by
    whichever session takes ``up`` next, or before a reset."""
    values = cl.state.values
    queries = values.fetch_queries()
    if queries:
        try:
            with trio.fail_after(OWN_EXCHANGE_TIMEOUT):
                up.insert_id = values.absorb(await up.query_many(queries))
        except _UPSTREAM_ERRORS:
            values.lose_pending()
            up.broken = True
    cl.values_collected()


async def maybe_release(cl: Client) -> None:
    """Give the connection back when no transaction and no pin holds it."""
    up = cl.up
    state = cl.state
    if up is None or state.mode is None:
        return
    reason = state.pins.reason()
    if reason is not state.pin_reason:
        publish_pin(cl, reason)
    if reason is not None or state.holds(up) is not None:
        return
    state.take_back(up)
    if state.values.pending:
        if state.reset_on_release or up.kills_in_flight or up.options_changed:
            await collect_values(cl, up)  # the reset would lose them
        else:
            up.pending_for = cl  # read by whoever takes the connection next
            cl.values_ready = trio.Event()
    cl.up = None
    cl.last_up = up
    give_back(cl, up, True)


def give_back(cl: Client, up: ServerConn, reusable: bool) -> None:
    """The one place that decides how a connection this session held returns to the
    pool: closed (unknown state, a KILL on its way, COM_SET_OPTION, XA), reset first
    (session pooling; a transaction, a pin or unexplained state in pooled modes), or
    released as it is, to the sub-pool of the settings it carries."""
    svc = cl.services
    pool = svc.pool
    state = cl.state
    stats = svc.accounting.stats
    if up.kills_in_flight or up.options_changed or not reusable or state.pins.xa:
        # (XA: COM_RESET_CONNECTION of a PREPARED XA transaction orphans it with its
        # locks on MariaDB 10.11; closing the connection lets XA RECOVER see it)
        stats.released_closed += 1
        pool.discard(up)
    elif state.mode is None:
        stats.released_reset += 1
        pool.release_for_reset(up, svc.default_schema_for(up))
    elif state.release_needs_reset(up):
        # roll back, drop temp tables and locks: the next session starts clean
        stats.released_reset += 1
        pool.release_for_reset(up, up.schema)
    else:
        stats.released += 1
        pool.release(up)


def drop_upstream(cl: Client, reusable: bool) -> None:
    """The session ends (or starts over): let go of its connection and its claims."""
    last = cl.last_up
    if last is not None and last.pending_for is cl:
        last.pending_for = None  # nobody will ask for this session's values
    up, cl.up = cl.up, None
    if up is None:
        return
    publish_pin(cl, None)
    give_back(cl, up, reusable)


async def restore_values(
    cl: Client, c: Classification, extra_needs: frozenset[str] = frozenset()
) -> bool:
    """Before ``c`` runs on the held connection: when it reads values of the previous
    statement that this connection does not have, make the connection give the session's
    own. False when the client got an ERR instead (what it reads cannot be restored)."""
    needs = (c.needs | extra_needs) & VALUE_NEEDS
    routine = Effect.ROUTINE in c.effects or Effect.UNKNOWN in c.effects
    if not needs and not routine:
        return True
    up = cl.up
    state = cl.state
    assert up is not None
    if state.owns_values_of(up, reads_of(needs)) and (
        Effect.CONNECTION_ID not in needs or up.pseudo_thread_id == cl.id
    ):
        return True
    svc = cl.services
    plan = state.values.restore_plan(
        needs | _ROUTINE_NEEDS if routine else needs,
        up.insert_id,
        up.diagnostics_clean,
        cl.id,
        svc.thread_id_settable.get(up.user, True),
        best_effort=routine,
    )
    if isinstance(plan, str):
        svc.accounting.stats.values_refused += 1
        svc.accounting.event(
            cl.user, cl.program, state.mode or "session", c.fingerprint, VALUES_REFUSED
        )
        await cl.io.send_error(
            1235,
            "42000",
            f"tainted-proxy: {plan} cannot be read in {state.mode} pooling once the "
            "connection that ran it served another statement; read it alone "
            '(SELECT ROW_COUNT(), SHOW WARNINGS ...) or use pool_mode = "session"',
            1,
        )
        return False
    if not plan:
        return True
    try:
        with trio.fail_after(OWN_EXCHANGE_TIMEOUT):
            results = await up.query_many(plan)
    except _UPSTREAM_ERRORS:
        cl.up = None
        svc.pool.discard(up)
        raise SessionEnd(False) from None
    sets_thread_id = any(q.startswith(b"SET SESSION pseudo_thread_id") for q in plan)
    if any(r is None for r in results):
        if sets_thread_id:
            svc.thread_id_settable[up.user] = False
            return await restore_values(cl, c, extra_needs)
        await cl.io.send_error(
            ER_PROXY_UPSTREAM, "HY000", "tainted-proxy: restoring per-statement values failed", 1
        )
        return False
    svc.accounting.stats.values_restored += 1
    if Effect.LAST_INSERT_ID in needs:
        up.insert_id = state.values.insert_id
    if sets_thread_id:
        up.pseudo_thread_id = cl.id
    if Effect.WARNINGS in needs:
        up.diagnostics_clean = True
    return True


async def claim_thread_id(cl: Client, up: ServerConn) -> None:
    """Session pooling: make CONNECTION_ID() return this session's id in any statement
    (SET pseudo_thread_id, when the upstream login may)."""
    settable = cl.services.thread_id_settable
    if up.pseudo_thread_id == cl.id or not settable.get(up.user, True):
        return
    try:
        await up.command_ok(com_query(b"SET SESSION pseudo_thread_id = %d" % cl.id))
    except UpstreamError as exc:
        if exc.err is None:
            raise
        settable[up.user] = False
        up.diagnostics_clean = False
        return
    up.pseudo_thread_id = cl.id


def publish_pin(cl: Client, reason: str | None) -> None:
    """Record the start or the end of a pin (counters, the taint ledger with every reason
    that holds, the per-user pinned count that users.NAME.max_pinned caps)."""
    state = cl.state
    was = state.pin_reason
    state.pin_reason = reason
    if (was is None) == (reason is None):
        return
    svc = cl.services
    user = cl.user
    if reason is not None:
        c = cl.statement
        if c is not None:
            fp = c.fingerprint
        elif cl.sql:
            fp = fingerprint(cl.sql)
        else:
            fp = ""
        reasons = state.pins.reasons() or [reason]
        cl.pin_ticket = svc.accounting.pin_started(
            cl.user, cl.program, state.mode or "session", fp, reasons
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "event=pin_started client=%s user=%s reasons=%r statement=%r",
                cl.id,
                cl.user,
                reasons,
                fp,
            )
    else:
        ticket, cl.pin_ticket = cl.pin_ticket, None
        if ticket is not None:
            user = ticket.user
            svc.accounting.pin_ended(ticket)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "event=pin_ended client=%s user=%s held_seconds=%.3f",
                    cl.id,
                    cl.user,
                    svc.accounting.now() - ticket.started,
                )
        svc.unpinned.set()
        svc.unpinned = trio.Event()
    shared = svc.pool.shared
    if shared is not None:
        shared.publish_pinned(user, svc.accounting.pinned(user))


def pinned_count(svc: Services, user: str) -> int:
    """What users.NAME.max_pinned compares with: the user's pinned sessions in this
    process, or over all workers when there are several (pool.shared)."""
    shared = svc.pool.shared
    if shared is None:
        return svc.accounting.pinned(user)
    return shared.pinned(user)


async def wait_for_pin_slot(cl: Client, reason: str) -> bool:
    """users.NAME.max_pinned: before a statement that would pin runs, wait for one of the
    user's pinned connections to be let go; on timeout the client gets ERR 1040 naming
    the cap and the reason (and the statement never ran)."""
    svc = cl.services
    user = svc.config.user(cl.user)
    cap = user.max_pinned if user is not None else 0
    if not cap or cl.state.pin_reason is not None:
        return True
    accounting = svc.accounting
    shared = svc.pool.shared
    with trio.move_on_after(svc.config.pool.checkout_timeout):
        while pinned_count(svc, cl.user) >= cap:
            if shared is None:
                await svc.unpinned.wait()
            else:
                # another worker's unpin sets no Event here: look again every few ms
                with trio.move_on_after(SHARE_POLL_WAITING):
                    await svc.unpinned.wait()
        return True
    pinned = pinned_count(svc, cl.user)
    accounting.stats.checkout_timeouts += 1
    accounting.stats.errors["max_pinned"] += 1
    log.warning(
        "event=max_pinned_refused client=%s user=%s pinned=%s max_pinned=%s reason=%r",
        cl.id,
        cl.user,
        pinned,
        cap,
        reason,
    )
    where = "" if shared is None else f" over all {shared.workers} workers"
    await cl.io.send_error(
        ER_CON_COUNT_ERROR,
        "08004",
        f"Too many connections: tainted-proxy: user '{cl.user}' holds "
        f"{pinned} pinned connections{where} "
        f"(users.{cl.user}.max_pinned = {cap}); pin reason: {reason}",
        1,
    )
    return False
