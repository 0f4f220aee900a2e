"""SQL-level PREPARE / EXECUTE / DEALLOCATE PREPARE of a pooled session (the sans-IO
rules are in state.sql_prepared): the proxy remembers what each name was prepared from
and re-prepares it on whichever connection an EXECUTE runs, so PREPARE never pins.

``before(session, c, sql, flags)`` runs before a COM_QUERY is relayed: it answers what
needs no connection (an unknown name: ERR 1243; DEALLOCATE of a statement that only the
proxy remembers: OK) and brings the held connection to the session's statement before an
EXECUTE. ``after(session, c, sql, flags)`` records what a relayed PREPARE or DEALLOCATE did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from tainted_proxy.frontend.checkout import OWN_EXCHANGE_TIMEOUT
from tainted_proxy.frontend.client import Client, SessionEnd
from tainted_proxy.state.sql_prepared import (
    SqlStatement,
    deallocate_sql,
    literal_text,
    parse_deallocate,
    parse_execute,
    parse_prepare,
    prepare_sql,
    unknown_error,
)
from tainted_proxy.state.statements import env_sql, parse_env
from tainted_proxy.taint.classifier import classify_flags
from tainted_proxy.taint.effects import Classification, Effect

if TYPE_CHECKING:
    from tainted_proxy.backend.server import ServerConn

_ALL_NEEDS = frozenset(
    (
        Effect.LAST_INSERT_ID,
        Effect.ROW_COUNT,
        Effect.FOUND_ROWS,
        Effect.WARNINGS,
        Effect.LASTVAL,
        Effect.CONNECTION_ID,
    )
)


def touches(c: Classification | None) -> bool:
    """Is ``c`` a single PREPARE / EXECUTE / DEALLOCATE this module looks at?"""
    return (
        c is not None
        and c.statements == 1
        and bool(c.effects & {Effect.PREPARE, Effect.EXECUTE, Effect.DEALLOCATE})
    )


def answer_without_connection(s: Client, sql: bytes) -> tuple[str, object] | None:
    """What to answer before any checkout: ("error", (code, state, msg)) for a name this
    session never prepared, ("ok", None) for DEALLOCATE of a statement only the proxy
    holds, or None to go on."""
    name = parse_execute(sql)
    verb = "EXECUTE"
    if name is None:
        name = parse_deallocate(sql)
        verb = "DEALLOCATE PREPARE"
    if name is None:
        return None
    if name in s.state.sql_statements:
        if verb == "EXECUTE":
            return None
        del s.state.sql_statements[name]
        up = s.up
        if up is not None and up.sql_statements.held.get(name) is not None:
            up.sql_statements.forget(name)
            return None  # deallocate it where it is
        return ("ok", None)
    if name in s.state.pins.prepared:
        return None  # prepared from a variable: it lives on the pinned connection
    return ("error", unknown_error(name, verb))


def executes_clean_text(s: Client, sql: bytes) -> bool:
    """Is ``sql`` an EXECUTE of a virtualized statement whose text has no effect?"""
    name = parse_execute(sql)
    return (
        name is not None and name in s.state.sql_statements and name in s.state.pins.prepared_clean
    )


def needs_of(s: Client, sql: bytes) -> frozenset[str]:
    """What an EXECUTE of a virtualized statement reads of the previous statement."""
    name = parse_execute(sql)
    stmt = s.state.sql_statements.get(name) if name is not None else None
    return stmt.needs if stmt is not None else frozenset()


async def before_execute(s: Client, up: ServerConn, sql: bytes) -> None:
    """Make ``up`` hold the session's statement before an EXECUTE of it is relayed."""
    name = parse_execute(sql)
    if name is None:
        return
    stmt = s.state.sql_statements.get(name)
    if stmt is None or up.sql_statements.has(name, stmt):
        return
    held = up.sql_statements
    queries = [deallocate_sql(old) for old in held.evictions()]
    baseline = s.services.catalog.baseline
    current_env = parse_env(up.settings, baseline)
    switch = stmt.env != current_env
    use = stmt.schema is not None and up.schema is not None and stmt.schema != up.schema
    if switch:
        queries.append(env_sql(stmt.env, baseline, "NO_BACKSLASH_ESCAPES" in current_env[0]))
    if use:
        queries.append(b"USE `" + stmt.schema.encode().replace(b"`", b"``") + b"`")  # type: ignore[union-attr]
    queries.append(prepare_sql(name, stmt))
    if use:
        queries.append(b"USE `" + up.schema.encode().replace(b"`", b"``") + b"`")  # type: ignore[union-attr]
    if switch:
        queries.append(env_sql(current_env, baseline, "NO_BACKSLASH_ESCAPES" in stmt.env[0]))
    with trio.fail_after(OWN_EXCHANGE_TIMEOUT):
        results = await up.query_many(queries)
    if any(r is None for r in results[-1 - use - switch :]):
        # the connection is not where the proxy thinks (schema, sql_mode): do not use it
        raise SessionEnd(False)
    prepared_ok = results[-1 - use - switch] is not None
    if prepared_ok:
        held.prepared(name, stmt)


def after(s: Client, up: ServerConn, c: Classification, sql: bytes, failed: bool) -> None:
    """Record what a relayed PREPARE / DEALLOCATE did."""
    parsed = parse_prepare(sql, c.flags)
    if parsed is not None:
        name, literal = parsed
        if failed:
            # the server drops an existing statement of that name before preparing
            s.state.sql_statements.pop(name, None)
            up.sql_statements.forget(name)
            return
        text = literal_text(literal)
        tc = classify_flags(text, c.flags) if text is not None else None
        needs = (tc.needs if tc is not None else frozenset()) if text is not None else _ALL_NEEDS
        env = parse_env(up.settings, s.services.catalog.baseline)
        stmt = SqlStatement(literal, up.schema, env, c.flags, frozenset(needs))
        s.state.sql_statements[name] = stmt
        up.sql_statements.prepared(name, stmt)
        return
    for action, name in c.objects:
        if action == "prepare" and name is not None:
            # PREPARE name FROM @var: pinned (state.pins), no longer the virtual one
            s.state.sql_statements.pop(name.lower(), None)
            up.sql_statements.forget(name.lower())
        elif action == "deallocate" and name is not None and not failed:
            up.sql_statements.forget(name.lower())
