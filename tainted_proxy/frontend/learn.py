"""After a pooled command's response: hand what it said to the session model
(state.learn), asking the server the one thing the model may not know (the collation a
charset change implies)."""

from __future__ import annotations

import logging

import trio

from tainted_proxy.accounting import UNEXPLAINED
from tainted_proxy.backend.server import UpstreamError
from tainted_proxy.frontend.checkout import OWN_EXCHANGE_TIMEOUT
from tainted_proxy.frontend.client import Client
from tainted_proxy.state import learn as statelearn
from tainted_proxy.state import pins as pinreasons
from tainted_proxy.taint.effects import Classification
from tainted_proxy.taint.fingerprint import fingerprint

log = logging.getLogger("tainted_proxy.learn")


async def after_command(cl: Client, statement: bool, c: Classification | None) -> None:
    """Learn from the finished response on the held connection: settings and schema the
    server reported, pins the statement took or let go, the values of the last
    statement. ``statement``: a COM_QUERY, or a COM_STMT_EXECUTE (which runs its text)."""
    up = cl.up
    assert up is not None
    svc = cl.services
    catalog = svc.catalog
    state = cl.state
    tracker = up.tracker
    reports = cl.reports
    changes: dict[str, str] = {}
    collation: str | None = None
    if reports.variables:
        changes, ask = statelearn.reported_changes(
            reports, c, catalog.baseline, catalog.charset_of_collation, state
        )
        if ask is not None:
            collation = statelearn.collation_from_statement(c, ask, catalog.default_collation)
            if collation is None:
                collation = await _collation_on(up)
    response = statelearn.ResponseSummary.of(tracker)
    sticky_before = state.pins.sticky
    statelearn.learn(
        state, up, c, cl.sql, reports, response, changes, collation, catalog.baseline, statement
    )
    sticky = state.pins.sticky
    if sticky is not None and sticky != sticky_before and sticky == pinreasons.UNEXPLAINED:
        fp = c.fingerprint if c is not None else fingerprint(cl.sql) if cl.sql else ""
        svc.accounting.event(cl.user, cl.program, state.mode or "session", fp, UNEXPLAINED)
        log.info(
            "event=unexplained_state_change client=%s user=%s program=%r statement=%r",
            cl.id,
            cl.user,
            cl.program,
            fp,
        )


async def _collation_on(up) -> str | None:  # type: ignore[no-untyped-def]
    """collation_connection as the server says (the tracker never reports it)."""
    try:
        with trio.fail_after(OWN_EXCHANGE_TIMEOUT):
            rows = await up.query_rows("SELECT @@collation_connection")
    except UpstreamError:
        return None
    value = rows[0][0] if rows else None
    return value.decode() if value is not None else None
