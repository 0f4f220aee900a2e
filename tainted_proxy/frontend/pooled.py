"""One command of a session in transaction or statement pooling (binary prepared
statements are frontend.prepared's).

Classify it (taint), answer it here when that needs no connection (frontend.local),
else check out a connection carrying the session's state (frontend.checkout), bring a
virtualized SQL prepared statement and the previous statement's values to it, relay
(frontend.relay), learn what changed (frontend.learn → state.learn), and give the
connection back when nothing holds it. Rules: specs/pooling.md.
"""

from __future__ import annotations

import re

from tainted_proxy.frontend import checkout, learn, local, relay, sql_prepared
from tainted_proxy.frontend.classification import OFFLOAD_MIN, classify_long
from tainted_proxy.frontend.client import Client
from tainted_proxy.state import answers
from tainted_proxy.state import pins as pinreasons
from tainted_proxy.state.settings import Settings
from tainted_proxy.state.values import reads_of
from tainted_proxy.state.verdict import verdict
from tainted_proxy.taint.classifier import classify_flags
from tainted_proxy.taint.effects import Classification, Effect
from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES
from tainted_proxy.wire.constants import COM_PING, COM_QUERY, COM_SET_OPTION

# COMMIT / ROLLBACK that only end a transaction (no AND CHAIN, RELEASE, TO SAVEPOINT)
_PLAIN_END = re.compile(rb"^\s*(?:COMMIT|ROLLBACK)(?:\s+WORK)?\s*;?\s*$", re.IGNORECASE)

# settings vector -> lexer flags (a few distinct vectors in practice; bounded anyway: in
# entries, and in size, since a vector holds the session's carried user variables)
_FLAGS_BY_SETTINGS: dict[Settings, int] = {}
_FLAGS_MAX, _FLAGS_VECTOR_MAX = 4096, 4096


async def command(cl: Client, cmd: int, size: int) -> None:
    """One command (the first ``size`` bytes of the client buffer) of a pooled session."""
    cbuf = cl.io.buf
    state = cl.state
    c: Classification | None = None
    sql = b""
    if cmd == COM_QUERY:
        flags = parse_flags(cl)
        sql = bytes(cbuf.data[5:size])
        if len(sql) < OFFLOAD_MIN:
            c = classify_flags(sql, flags)
        else:
            c = await classify_long(sql, flags)
        state.next_statement()
        cl.sql = sql
        if c is not None and await _answered_without_connection(cl, c, sql):
            cbuf.consume(size)
            return
    elif cmd == COM_PING and cl.up is None:
        cbuf.consume(size)
        await local.answer_ok(cl)
        return
    elif cmd == COM_SET_OPTION:
        # multi-statements on/off outlives every reset: keep this connection for the
        # session, and never reuse it
        state.pins.pin_sticky(pinreasons.SET_OPTION)
    if cl.up is None and not await checkout.checkout(cl, c, 1):
        cbuf.consume(size)
        return
    up = cl.up
    assert up is not None
    if (
        c is not None
        and c.needs
        and c.statements == 1
        and not state.owns_values_of(up, reads_of(c.needs))
    ):
        # a plain read whose values were still on the connection another session took
        # (it read them back for this one during the checkout): answer from the copy
        read = answers.match(sql)
        if read is not None and await local.answer_read(cl, read):
            cbuf.consume(size)
            await checkout.maybe_release(cl)
            return
    if cmd == COM_SET_OPTION:
        up.options_changed = True
    virtual = sql_prepared.touches(c)
    extra_needs: frozenset[str] = frozenset()
    if virtual:
        cl.busy = True
        await sql_prepared.before_execute(cl, up, sql)
        cl.busy = False
        extra_needs = sql_prepared.needs_of(cl, sql)
    if c is not None and not await checkout.restore_values(cl, c, extra_needs):
        cbuf.consume(size)
        await checkout.maybe_release(cl)
        return
    cl.begin_response(c, sql)
    await relay.relay(cl, cmd, size)
    if virtual:
        assert c is not None
        sql_prepared.after(cl, up, c, sql, up.tracker.error)
        if sql_prepared.executes_clean_text(cl, sql):
            # the server runs the statement in the schema it was prepared in and switches
            # back, and reports that as a change: nothing else changed
            up.tracker.eof_ssc = False
            reports = cl.reports
            if not reports.schema_changed or reports.schema == up.schema:
                reports.state_changed = reports.schema_changed = False
    await learn.after_command(cl, cmd == COM_QUERY, c)
    if cl.killed:
        return
    await checkout.maybe_release(cl)


async def _answered_without_connection(cl: Client, c: Classification, sql: bytes) -> bool:
    """Refusals and answers that need no connection; True when the client has its
    answer."""
    state = cl.state
    if state.mode == "statement" and await local.refused_in_statement_mode(cl, c):
        return True
    if (
        c.needs
        and c.statements == 1
        and (cl.up is None or not state.owns_values_of(cl.up, reads_of(c.needs)))
    ):
        read = answers.match(sql)
        if read is not None and await local.answer_read(cl, read):
            await checkout.maybe_release(cl)
            return True
    if cl.up is None and Effect.TX_END in c.effects and _PLAIN_END.match(sql):
        # no connection held means no transaction open: nothing to end.
        # (SQLAlchemy rolls back every connection returned to its pool.)
        await local.answer_ok(cl)
        return True
    if sql_prepared.touches(c):
        early = sql_prepared.answer_without_connection(cl, sql)
        if early is not None:
            await local.answer_sql_prepared(cl, c, sql, early)
            await checkout.maybe_release(cl)
            return True
    if c.pin is not None:
        # users.NAME.max_pinned counts what would really pin (state.verdict: a literal
        # user variable or PREPARE is carried, never pinned)
        mode = state.mode or "transaction"
        would = verdict(c, sql.decode("utf-8", "surrogateescape"), mode).pins
        if would is not None and not await checkout.wait_for_pin_slot(cl, would):
            return True
    return False


def parse_flags(cl: Client) -> int:
    """Lexer flags from the sql_mode the session runs under: its settings vector is the
    server's own report, and stays right after an ERR (the status bits of the last OK
    would not, and a wrong quoting mode hides what a statement does)."""
    settings = cl.up.settings if cl.up is not None else cl.state.settings
    flags = _FLAGS_BY_SETTINGS.get(settings)
    if flags is None:
        base = cl.services.catalog.baseline.values.get("sql_mode", "")
        mode = dict(settings).get("sql_mode", base)
        flags = (ANSI_QUOTES if "ANSI_QUOTES" in mode else 0) | (
            NO_BACKSLASH_ESCAPES if "NO_BACKSLASH_ESCAPES" in mode else 0
        )
        if sum(len(n) + len(v) for n, v in settings) <= _FLAGS_VECTOR_MAX:
            if len(_FLAGS_BY_SETTINGS) >= _FLAGS_MAX:
                _FLAGS_BY_SETTINGS.clear()
            _FLAGS_BY_SETTINGS[settings] = flags
    return flags
