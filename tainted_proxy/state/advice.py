"""What to change, per pin reason or ledger event: one line of advice shared by every
report of the same findings (``tainted-proxy classify --summary``, ``tainted-proxy
analyze``, the live proxy's report, page and console). Pure data."""

from __future__ import annotations

from tainted_proxy import accounting
from tainted_proxy.state import pins as _pins
from tainted_proxy.taint.effects import (
    PIN_BACKUP_LOCK,
    PIN_COMPOUND,
    PIN_EXECUTE_IMMEDIATE,
    PIN_FLUSH_FOR_EXPORT,
    PIN_GLOBAL_READ_LOCK,
    PIN_INSERT_ID,
    PIN_REASONS,
    Effect,
)

_HINTS: dict[str, str] = {
    PIN_REASONS[Effect.TEMP_TABLE]: "temporary tables pin until dropped: DROP TEMPORARY TABLE "
    "as soon as you are done, or use a derived table / CTE",
    PIN_REASONS[Effect.ADVISORY_LOCK]: "advisory locks pin until RELEASE_LOCK; release them "
    "promptly, or use row locks (SELECT ... FOR UPDATE) inside a transaction",
    PIN_REASONS[Effect.TABLE_LOCK]: "LOCK TABLES pins until UNLOCK TABLES: use transactions "
    "and row locks",
    PIN_GLOBAL_READ_LOCK: "a global read lock pins until UNLOCK TABLES: take backups through "
    "a session-mode user",
    PIN_FLUSH_FOR_EXPORT: "FLUSH TABLES ... FOR EXPORT pins until UNLOCK TABLES: run it "
    "through a session-mode user",
    PIN_BACKUP_LOCK: "backup locks pin until BACKUP UNLOCK / BACKUP STAGE END: take backups "
    "through a session-mode user",
    PIN_REASONS[Effect.PREPARE]: "SQL-level PREPARE pins until DEALLOCATE PREPARE: use the "
    "driver's binary-protocol prepared statements, which never pin",
    PIN_REASONS[Effect.EXECUTE]: "EXECUTE of a statement the proxy has not seen prepared "
    "from a literal pins for good: use the driver's binary-protocol prepared statements",
    PIN_EXECUTE_IMMEDIATE: "EXECUTE IMMEDIATE of an expression pins for good: pass a "
    "string literal, or use the driver's prepared statements",
    PIN_REASONS[Effect.HANDLER]: "HANDLER ... OPEN pins until HANDLER ... CLOSE: close it "
    "promptly, or use a plain SELECT",
    PIN_REASONS[Effect.XA]: "XA transactions pin until XA COMMIT / XA ROLLBACK: keep them short",
    PIN_REASONS[Effect.USER_VAR]: "user variables set by an expression (or a literal over "
    "1,024 characters, or past 16 KiB of them) pin until set to NULL: keep the value in the "
    "application, or assign a short literal (SET @v = 42 is carried)",
    PIN_REASONS[Effect.NEXT_TX]: "a one-shot SET TRANSACTION pins until the next transaction: "
    "use START TRANSACTION READ ONLY / SET SESSION TRANSACTION (carried) instead",
    PIN_REASONS[Effect.ROUTINE]: "a procedure that changes session state pins for good: "
    "keep session state out of procedures",
    _pins.ROUTINE_STATE: "a procedure that changes session state pins for good: keep session "
    "state out of procedures (or pass OUT values another way)",
    PIN_REASONS[Effect.ROLE]: "SET ROLE pins for good: grant the privileges to the user, or "
    "use a default role",
    PIN_REASONS[Effect.SESSION_TRACK]: "do not change session_track_*: the proxy relies on "
    "session tracking, and the session pins for good",
    PIN_REASONS[Effect.UNKNOWN]: "unclassified statements pin for good: check unknown_reason, "
    "and report the statement if it is valid SQL",
    PIN_COMPOUND: "compound statements pin for good: move the block into a stored procedure",
    PIN_INSERT_ID: "SET insert_id pins for good: let AUTO_INCREMENT assign the id, or insert "
    "the value explicitly",
    _pins.UNEXPLAINED: "the server reported a state change the text does not explain: "
    "the session pins for good",
}
_UNKEYABLE_HINT = (
    "this variable cannot be carried to another connection, so the session pins for good: "
    "do not set it per session (for timestamp: pass the time as a value)"
)
_HINTS.update(
    {
        accounting.REFUSED: "transactions are refused in statement mode: use "
        'pool_mode = "transaction" for this user',
        accounting.UNEXPLAINED: "a statement changed session state the proxy could not see: "
        "check the stored functions and triggers it calls",
        accounting.VALUES_REFUSED: "read ROW_COUNT() / the warnings alone right after the "
        "statement (SELECT ROW_COUNT(), SHOW WARNINGS), not inside a larger statement",
        _pins.SET_OPTION: "COM_SET_OPTION pins: enable multi-statements when connecting",
        _pins.BINARY_CURSOR: "open cursors pin until fully fetched or closed: fetch promptly",
        _pins.LONG_DATA: "COM_STMT_SEND_LONG_DATA pins until the statement is executed",
    }
)
_DEFAULT_HINT = "see docs/pooling.md, 'What pins, and what unpins'"


def advice(reason: str) -> str:
    """What to change about statements that pin for ``reason`` (or a ledger event)."""
    if reason.startswith(_pins.UNKEYABLE_VAR):
        return _UNKEYABLE_HINT
    got = _HINTS.get(reason)
    if got is None:
        base = reason.split(" (", 1)[0]
        got = next((a for r, a in _HINTS.items() if r.startswith(base)), _DEFAULT_HINT)
    return got
