"""What the proxy answers itself, without an upstream connection.

* plain reads of the previous statement's values (state.answers: SELECT LAST_INSERT_ID(),
  SHOW WARNINGS ...), from the session's own copy;
* EXECUTE / DEALLOCATE PREPARE of a name the session never prepared (ERR 1243) or of a
  statement only the proxy remembers (state.sql_prepared);
* statements refused in statement mode (ERR 1235, before anything reaches the server);
* COM_PING and a COMMIT / ROLLBACK with no connection held (no transaction is open).
"""

from __future__ import annotations

import logging

from tainted_proxy.accounting import REFUSED
from tainted_proxy.frontend.client import Client
from tainted_proxy.state import answers
from tainted_proxy.state import values as statevalues
from tainted_proxy.state.values import Condition, Outcome
from tainted_proxy.state.verdict import opens_transaction, statement_mode_refusal
from tainted_proxy.taint.effects import Classification
from tainted_proxy.wire.constants import ER_UNKNOWN_ERROR
from tainted_proxy.wire.packets import ok_response, text_resultset

log = logging.getLogger("tainted_proxy.local")

_ITEM_VALUE = {
    "insert_id": statevalues.INSERT_ID,
    "row_count": statevalues.ROW_COUNT,
    "found_rows": statevalues.FOUND_ROWS,
    "warning_count": statevalues.CONDITIONS,
    "error_count": statevalues.CONDITIONS,
    "lastval": statevalues.LASTVAL,
}


def _touches(read: answers.LocalRead, lost: set[str]) -> bool:
    if read.show:
        return statevalues.CONDITIONS in lost
    return any(_ITEM_VALUE.get(i.kind) in lost for i in read.items)


async def answer_read(cl: Client, read: answers.LocalRead) -> bool:
    """Answer a plain read of the last statement's values from the session's copy.
    False when the copy cannot answer it (the values are still on a connection): the
    statement then runs on that connection."""
    values = cl.state.values
    if values.pending:
        return False
    assert cl.login is not None
    if values.lost and _touches(read, values.lost):
        await cl.io.send_error(
            ER_UNKNOWN_ERROR,
            "HY000",
            "tainted-proxy: the value of the previous statement was lost when its upstream "
            "connection closed",
            1,
        )
        return True
    columns, rows = answers.answer(read, values, cl.id)
    values.learn_local(read.select)
    cl.services.accounting.stats.emulated += 1
    await cl.io.conn.send_all(
        text_resultset(columns, rows, cl.login.capabilities, status=cl.status())
    )
    return True


async def answer_sql_prepared(
    cl: Client, c: Classification, sql: bytes, early: tuple[str, object]
) -> None:
    """EXECUTE / DEALLOCATE answered without a connection (frontend.sql_prepared)."""
    assert cl.login is not None
    values = cl.state.values
    kind, detail = early
    if kind == "error":
        code, state, message = detail  # type: ignore[misc]
        await cl.io.send_error(code, state, message, 1)
        error = Condition("Error", code, message)
        values.learn(c, sql, Outcome(error=error))
        # the server never saw it: the copy is complete
        values.pending.discard(statevalues.CONDITIONS)
        values.conditions = (error,)
    else:
        await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))
        values.learn(c, sql, Outcome())


async def refused_in_statement_mode(cl: Client, c: Classification) -> bool:
    """Statement mode: refuse (ERR 1235, before anything reaches the server) a statement
    that would open a transaction outliving it."""
    if cl.state.mode != "statement" or not opens_transaction(c):
        return False
    accounting = cl.services.accounting
    accounting.stats.refused_in_statement_mode += 1
    accounting.event(cl.user, cl.program, "statement", c.fingerprint, REFUSED)
    log.info(
        "event=statement_refused client=%s user=%s program=%r statement=%r",
        cl.id,
        cl.user,
        cl.program,
        c.fingerprint,
    )
    await cl.io.send_error(1235, "42000", statement_mode_refusal(cl.user), 1)
    return True


async def answer_ok(cl: Client) -> None:
    assert cl.login is not None
    await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))
