"""One sentence per offender that says what to change: shown in the report, on the page,
in the SQL console and by ``tainted-proxy analyze``. Keyed by pin reason or ledger event
(taint.effects.PIN_REASONS, state.pins, accounting)."""

from __future__ import annotations

from tainted_proxy import accounting
from tainted_proxy.state import pins
from tainted_proxy.taint.effects import PIN_REASONS, Effect

_ADVICE: dict[str, str] = {
    PIN_REASONS[Effect.ADVISORY_LOCK]: (
        "advisory locks pin until RELEASE_LOCK; release them promptly, or use row locks "
        "(SELECT ... FOR UPDATE) inside a transaction"
    ),
    PIN_REASONS[Effect.TEMP_TABLE]: (
        "temporary tables pin until dropped; DROP TEMPORARY TABLE as soon as it is used, "
        "or use a derived table / CTE"
    ),
    PIN_REASONS[Effect.TABLE_LOCK]: "LOCK TABLES pins until UNLOCK TABLES; use transactions",
    PIN_REASONS[Effect.USER_VAR]: (
        "user variables set from expressions pin; set them to literals "
        "(SET @v = 'x' travels with the session) or pass the value as a parameter"
    ),
    PIN_REASONS[Effect.PREPARE]: (
        "PREPARE ... FROM @var pins; prepare from a literal text (virtualized, no pin) "
        "or use the binary protocol's prepared statements"
    ),
    PIN_REASONS[Effect.EXECUTE]: (
        "EXECUTE of a text the proxy cannot see pins for the session; PREPARE from a "
        "literal whose text leaves no state behind"
    ),
    PIN_REASONS[Effect.HANDLER]: "HANDLER ... OPEN pins until HANDLER ... CLOSE; close it promptly",
    PIN_REASONS[Effect.XA]: "XA transactions pin from XA START to XA COMMIT / ROLLBACK",
    PIN_REASONS[Effect.NEXT_TX]: (
        "SET TRANSACTION (without SESSION) pins until the next transaction; use "
        "START TRANSACTION READ ONLY / the isolation level on the session instead"
    ),
    PIN_REASONS[Effect.ROUTINE]: (
        "a stored procedure changed session state; make it leave none behind (no user "
        "variables, temporary tables or locks left set)"
    ),
    PIN_REASONS[Effect.UNKNOWN]: (
        "the proxy could not classify this statement and keeps the connection to be safe; "
        "run `tainted-proxy classify` on it and report it"
    ),
    pins.UNEXPLAINED: (
        "the server reported a session change the statement does not explain (a stored "
        "function or trigger setting a variable?); the session keeps its connection"
    ),
    pins.UNKEYABLE_VAR: (
        "this session variable cannot be re-applied on another connection (timestamp, "
        "insert_id...); avoid setting it, or use session mode for this user"
    ),
    pins.SET_OPTION: "COM_SET_OPTION pins; enable multi-statements at connect instead",
    pins.BINARY_CURSOR: "open cursors pin until fully fetched or closed; fetch them promptly",
    pins.LONG_DATA: "COM_STMT_SEND_LONG_DATA pins until the statement is executed",
    accounting.REFUSED: (
        'transactions are refused in statement mode; use pool_mode = "transaction" for this user'
    ),
    accounting.UNEXPLAINED: (
        "a statement changed session state the proxy could not see; check stored "
        "functions and triggers"
    ),
    accounting.VALUES_REFUSED: (
        "read ROW_COUNT() / warnings alone right after the statement (SELECT ROW_COUNT()), "
        "not inside a larger statement"
    ),
    "settings": (
        "sessions set different values of this setting, so they cannot share a sub-pool; "
        "set it on the server or in the application's connection URL"
    ),
}


def hint(reason: str, *, user: str = "", count: int = 0, fingerprint: str = "") -> str:
    """The advice for one ledger entry: ``412 pins of user app by `SELECT GET_LOCK(?, ?)`:
    advisory locks pin until RELEASE_LOCK; release them promptly``."""
    advice = _ADVICE.get(reason)
    if advice is None:
        base = reason.split(" (", 1)[0]
        advice = next((a for r, a in _ADVICE.items() if r.startswith(base)), None)
    if advice is None:
        advice = f"{reason}: see docs/pooling.md for what ends it"
    who = f" of user {user}" if user else ""
    what = f" by `{fingerprint}`" if fingerprint else ""
    if count:
        return f"{count} × {reason}{who}{what}: {advice}"
    return advice
