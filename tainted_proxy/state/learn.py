"""Learning from a response: what one finished command did to a pooled session.

The relay (frontend.relay) fills a ``Reports`` from the session-state blocks of the OK
packets it forwards, and a ``ResponseSummary`` from the response tracker. Then, for a
COM_QUERY or a COM_STMT_EXECUTE (which runs its statement's text):

1. ``reported_changes`` turns the reported variables into settings changes and pins
   (unkeyable variables, ambiguous batches). The one thing it may not know is the
   collation a charset change implies (the tracker never reports it): it then names the
   charset, and the I/O side asks the server (``SELECT @@collation_connection``);
2. ``learn`` applies everything: the connection's settings and schema, the pins the
   statement took or let go, the carried literal user variables, the status, the values of
   the last statement (state.values), and which session's values the connection now holds.

Rules: specs/pooling.md. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tainted_proxy.state import pins as pinreasons
from tainted_proxy.state import values as statevalues
from tainted_proxy.state.session import ConnState, SessionState
from tainted_proxy.state.settings import (
    CARRY_TOTAL_MAX,
    IGNORED,
    UNKEYABLE,
    Baseline,
    apply_reported,
    carried_user_vars,
    user_vars_size,
    with_user_vars,
)
from tainted_proxy.state.values import Outcome
from tainted_proxy.taint.crosscheck import may_call_stored_function
from tainted_proxy.taint.effects import Classification
from tainted_proxy.wire.response import ResponseTracker

_FOR_WORD = re.compile(rb"\bFOR\b", re.IGNORECASE)
# the diagnostics of an ERR are read back from the server (SHOW WARNINGS)
_ERROR = statevalues.Condition("Error", 0, "")


@dataclass(slots=True)
class Reports:
    """What the session-state blocks of one response reported."""

    variables: dict[str, str] = field(default_factory=dict)
    schema: str | None = None
    schema_changed: bool = False
    state_changed: bool = False

    def clear(self) -> None:
        self.variables.clear()
        self.schema = None
        self.schema_changed = False
        self.state_changed = False


@dataclass(slots=True)
class ResponseSummary:
    """What the response tracker saw of one response."""

    error: bool = False
    status: int = 0
    warnings: int = 0
    last_resultset: bool = False
    resultset: bool = False
    rows: int = 0
    affected_rows: int = 0
    insert_id: int = 0
    insert_ids: int = 0
    #: a classic EOF said "state changed" without room for the detail
    eof_state_changed: bool = False

    @classmethod
    def of(cls, t: ResponseTracker) -> ResponseSummary:
        return cls(
            t.error,
            t.status,
            t.warnings,
            t.last_resultset,
            t.resultset,
            t.rows,
            t.affected_rows,
            t.last_insert_id,
            t.insert_ids,
            t.eof_ssc,
        )


def reported_changes(
    reports: Reports,
    c: Classification | None,
    baseline: Baseline,
    charset_of_collation: dict[str, str],
    session: SessionState,
) -> tuple[dict[str, str], str | None]:
    """(settings changes, charset whose collation must be asked of the server or None)."""
    pins = session.pins
    skip = c.statement_vars if c is not None else frozenset()
    batch = c is not None and c.statements > 1
    changes: dict[str, str] = {}
    for name, value in reports.variables.items():
        if name in IGNORED:
            continue
        if name in skip:
            if batch:
                # a SET STATEMENT's temporary value and a real SET of the same variable
                # in one batch: which one the report holds is unknown
                pins.pin_sticky(pinreasons.UNEXPLAINED)
            continue
        if name in UNKEYABLE:
            if baseline.values.get(name) != value or name == "timestamp":
                pins.pin_sticky(f"{pinreasons.UNKEYABLE_VAR} ({name})")
            continue
        changes[name] = value
    ask: str | None = None
    if "character_set_connection" in changes and ("collation_connection" not in changes or batch):
        # the tracker never reports the collation a charset change implies, and a batch's
        # reports are merged, so their order is lost: the server says which one holds
        ask = changes["character_set_connection"]
        changes.pop("collation_connection", None)
    elif "collation_connection" in changes:
        # SET collation_connection also sets character_set_connection, unreported
        cs = charset_of_collation.get(changes["collation_connection"])
        if cs is None:
            pins.pin_sticky(pinreasons.UNEXPLAINED)
        else:
            changes["character_set_connection"] = cs
    return changes, ask


def collation_from_statement(
    c: Classification | None, charset: str, default_collation: dict[str, str]
) -> str | None:
    """The collation ``SET NAMES cs [COLLATE x]`` implies; None: ask the server."""
    if c is None or c.statements > 1:
        return None
    coll = c.settings.get("collation_connection")
    if coll is not None:
        return coll
    if c.settings.get("character_set_results") is not None:
        return default_collation.get(charset)
    return None


def learn(
    session: SessionState,
    conn: ConnState,
    c: Classification | None,
    sql: bytes,
    reports: Reports,
    response: ResponseSummary,
    changes: dict[str, str],
    collation: str | None,
    baseline: Baseline,
    statement: bool = True,
) -> None:
    """Apply what a finished command did: a statement (COM_QUERY, or COM_STMT_EXECUTE of
    ``sql``), or with ``statement`` False another command (COM_PING, COM_FIELD_LIST...:
    any state change it reports is unexplained). ``collation``: the answer
    to ``reported_changes``' question, if it asked one (None when the server could not
    say: the session is then pinned)."""
    pins = session.pins
    failed = response.error
    if "character_set_connection" in changes and "collation_connection" not in changes:
        if collation is None:
            pins.pin_sticky(pinreasons.UNEXPLAINED)
        else:
            changes["collation_connection"] = collation
    if changes:
        conn.settings = apply_reported(conn.settings, changes, baseline)
    pins.schema = conn.schema  # before this statement (for its temporary tables)
    if reports.schema_changed:
        conn.schema = reports.schema
    if not statement:
        if reports.state_changed:
            pins.pin_sticky(pinreasons.UNEXPLAINED)
        if not failed:
            session.status = conn.status
        return
    carried = carried_user_vars(c) if c is not None and not failed else None
    if carried:
        # literal user variables travel with the session like settings do, up to a size
        vector = with_user_vars(conn.settings, carried)
        if user_vars_size(vector) > CARRY_TOTAL_MAX:
            carried = None  # they stay on this connection: the session pins
        else:
            conn.settings = vector
            conn.user_vars_of = session.id
    pins.after_statement(
        c,
        failed=failed,
        state_changed=reports.state_changed,
        carried=frozenset(n[1:] for n in carried) if carried else frozenset(),
    )
    pins.schema = conn.schema
    if response.eof_state_changed:
        # the server changed state but a classic EOF carried no detail
        text = sql
        if c is not None and c.statement_vars and c.statements == 1:
            # SET STATEMENT v=... FOR <statement>: judge the statement
            parts = _FOR_WORD.split(text, 1)
            text = parts[1] if len(parts) == 2 else text
        if may_call_stored_function(text):
            # a stored function may have set @v or a variable for this session: keep the
            # connection, as the server would keep the session
            pins.pin_sticky(pinreasons.UNEXPLAINED)
        else:
            # no function call (SET STATEMENT's temporary value, information_schema and
            # SHOW queries' internal temporary tables): nothing the session can rely on,
            # but never hand it on unreset (a view may call a function)
            session.reset_on_release = True
    if not failed:
        session.status = conn.status
    learn_values(session, conn, c, sql, response)


def learn_values(
    session: SessionState,
    conn: ConnState,
    c: Classification | None,
    sql: bytes,
    response: ResponseSummary,
) -> None:
    """The per-statement values the response left (state.values), and that ``conn``
    now holds this statement's."""
    values = session.values
    values.learn(
        c,
        sql,
        Outcome(
            error=_ERROR if response.error else None,
            warnings=response.warnings,
            last_resultset=response.last_resultset,
            resultset=response.resultset,
            rows=response.rows,
            affected_rows=response.affected_rows,
            insert_id=response.insert_id,
            insert_ids=response.insert_ids,
            statements=c.statements if c is not None else 1,
        ),
    )
    conn.values_owner = (session.id, session.seq)
    foreign = conn.foreign
    if foreign:
        # what this statement set is the session's now
        if statevalues.INSERT_ID in values.pending or conn.insert_id == values.insert_id:
            foreign.discard(statevalues.INSERT_ID)
        if response.resultset or statevalues.FOUND_ROWS in values.pending:
            foreign.discard(statevalues.FOUND_ROWS)
        if statevalues.CONDITIONS in foreign and (
            response.error
            or response.warnings
            or statevalues.diagnostics_clean_after(False, c, sql, False, 0)
        ):
            foreign.discard(statevalues.CONDITIONS)
        if statevalues.LASTVAL in values.pending:
            foreign.discard(statevalues.LASTVAL)
    if statevalues.INSERT_ID in values.pending:
        conn.insert_id = None
    elif statevalues.INSERT_ID not in foreign:
        conn.insert_id = values.insert_id
    # (else the connection still has the previous session's: conn.insert_id says so)
    conn.diagnostics_clean = statevalues.diagnostics_clean_after(
        conn.diagnostics_clean, c, sql, response.error, response.warnings
    )
