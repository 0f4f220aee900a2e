"""What the proxy does with one statement, per pool mode: the `Verdict`.

``verdict(c, sql, mode)`` answers "what does this statement do to my session?" the way
the proxy itself decides it, so that ``tainted-proxy classify`` and the proxy agree:

* the pin comes from running `Pins` (a fresh session, the statement as its first)
  exactly as ``state.learn.learn`` does, with the user variables that
  ``carried_user_vars`` lets the session carry: the classifier's ``pin`` is only what
  the rules say, not what the proxy keeps;
* what travels with the session is what the settings vector takes: the settings the
  server reports, the schema, literal user variables (``state.settings``);
* a connection is held while a pin holds or a transaction is open
  (``SERVER_STATUS_IN_TRANS``); in statement mode a statement that would open a
  transaction outliving it is refused with ERR 1235 (`opens_transaction`);
* the values of the previous statement never pin: they are carried, answered by the
  proxy or read back (``state.values``, ``state.answers``).

Each statement is judged alone, as the first statement of a fresh session: a
``DROP TEMPORARY TABLE`` has nothing to drop, an ``EXECUTE s`` does not know what was
prepared. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tainted_proxy.state import answers
from tainted_proxy.state import pins as _pins
from tainted_proxy.state.pins import Pins
from tainted_proxy.state.settings import IGNORED, UNKEYABLE, carried_user_vars
from tainted_proxy.taint.effects import PIN_BACKUP_LOCK, Classification, Effect
from tainted_proxy.taint.lexer import split_statements, tokenize

#: The pool modes, as ``[users.NAME] pool_mode`` spells them.
MODES: tuple[str, ...] = ("session", "transaction", "statement")

#: ERR code and SQLSTATE of the statement-mode refusal.
REFUSED_CODE = 1235
REFUSED_SQLSTATE = "42000"

#: How long a sticky pin lasts.
UNTIL_SESSION_ENDS = "until the session ends (logout, COM_RESET_CONNECTION, COM_CHANGE_USER)"
#: How long a transaction holds the connection.
UNTIL_COMMIT = "until COMMIT or ROLLBACK"
UNTIL_COMMIT_AUTOCOMMIT_OFF = (
    "until COMMIT or ROLLBACK, for every transaction (autocommit=0: the first statement "
    "that touches a table opens one)"
)

# Effects for which the server sends a session ``state_change`` (what makes
# ``Pins.after_statement`` accept a reported change as explained).
_STATEFUL: frozenset[str] = _pins._STATEFUL

# COMMIT / ROLLBACK that only end a transaction (answered by the proxy itself when the
# session holds no connection: frontend.session, _PLAIN_END)
_PLAIN_END = re.compile(r"^\s*(?:COMMIT|ROLLBACK)(?:\s+WORK)?\s*;?\s*$", re.IGNORECASE)
_ON = ("1", "ON", "TRUE")


def statement_mode_refusal(user: str) -> str:
    """The message of the ERR 1235 a statement-mode session gets for a statement that
    would open a transaction outliving it."""
    return (
        "tainted-proxy: transactions are not allowed in statement pooling mode "
        f"(user '{user}'): use pool_mode = \"transaction\""
    )


def opens_transaction(c: Classification) -> bool:
    """Would this text open a transaction that outlives it (refused in statement mode)?"""
    if Effect.TX_BEGIN in c.effects:
        return True
    if any(action == "xa_start" for action, _ in c.objects):
        return True
    if "autocommit" not in c.settings:
        return False
    autocommit = c.settings["autocommit"]
    # an expression (None) cannot be proven to leave autocommit on
    return autocommit is None or autocommit.upper() not in _ON


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one statement does to a session of the given pool mode."""

    #: ``session``, ``transaction`` or ``statement``.
    mode: str
    #: The pin reason the session takes (as the proxy counts it), or None. Never set in
    #: session mode (the session owns its connection) nor for a refused statement.
    pins: str | None = None
    #: The reason it pins with when the server reports a session state change the text
    #: cannot show (a ``CALL`` whose procedure sets a variable), when that differs.
    may_pin: str | None = None
    #: What travels with the session to whichever connection it gets next: session
    #: variable names, ``schema``, ``@name`` for literal user variables.
    carried: tuple[str, ...] = ()
    #: How long the connection stays with the session after the statement (the pin's
    #: lifetime, or the transaction it opens); None: it goes back to the pool at once.
    holds: str | None = None
    #: The ERR the client gets instead of a result (statement mode), or None.
    refused: str | None = None
    #: What the proxy resets on the connection because of the statement: at logout in
    #: session mode, before another session gets it in the pooled modes.
    resets: tuple[str, ...] = ()
    #: Other things the proxy does about the statement, in words.
    notes: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """One word for the summary: ``refused``, ``pins``, ``holds``, ``carried``,
        ``resets`` or ``clean`` (the first that applies)."""
        if self.refused:
            return "refused"
        if self.pins:
            return "pins"
        if self.holds:
            return "holds"
        if self.carried:
            return "carried"
        if self.resets:
            return "resets"
        return "clean"

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the CLI's ``verdict`` object)."""
        return {
            "mode": self.mode,
            "kind": self.kind,
            "pins": self.pins,
            "may_pin": self.may_pin,
            "carried": list(self.carried),
            "holds": self.holds,
            "refused": self.refused,
            "resets": list(self.resets),
            "notes": list(self.notes),
        }


def verdict(c: Classification | None, sql: str, mode: str) -> Verdict:
    """What the proxy does with ``sql`` (classified as ``c``; None: clean, as the
    classifier's gate says) in pool mode ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown pool mode {mode!r} (expected one of {', '.join(MODES)})")
    if mode == "session":
        return _session(c, sql)
    if c is None or not c.effects:
        return Verdict(mode)
    if mode == "statement" and opens_transaction(c):
        return Verdict(
            mode,
            refused=f"ERROR {REFUSED_CODE} ({REFUSED_SQLSTATE}): "
            + statement_mode_refusal("<user>"),
            notes=("refused before anything reaches the server; the session keeps no connection",),
        )

    effects = c.effects
    carried_vars = carried_user_vars(c)
    carried_names = frozenset(n[1:] for n in carried_vars) if carried_vars else frozenset()
    pins = Pins()
    unkeyable = [n for n in c.settings if n in UNKEYABLE]
    for name in unkeyable:
        # the server reports it; state.learn.learn pins before anything else
        pins.pin_sticky(f"{_pins.UNKEYABLE_VAR} ({name})")
    # the server reports a state change for what the text visibly changes; a routine's
    # own changes only the server knows (measured: CALL p(@out) reports none)
    routine = Effect.ROUTINE in effects
    stateful = bool(effects & _STATEFUL) and not routine
    pins.after_statement(c, failed=False, state_changed=stateful, carried=carried_names)
    reason = pins.reason()

    may_pin = None
    if routine:
        other = Pins()
        for name in unkeyable:
            other.pin_sticky(f"{_pins.UNKEYABLE_VAR} ({name})")
        other.after_statement(c, failed=False, state_changed=True, carried=carried_names)
        if other.reason() != reason:
            may_pin = other.reason()

    carried = [
        n
        for n in c.settings
        if n not in IGNORED and n not in UNKEYABLE and not n.startswith("session_track_")
    ]
    if any(action == "schema" for action, _ in c.objects):
        carried.append("schema")
    if carried_vars:
        carried.extend(carried_vars)

    holds = None
    if reason is not None:
        holds = _lifetime(pins, reason)
    else:
        holds = _transaction_hold(c, sql)

    resets: list[str] = []
    notes: list[str] = []
    if Effect.SEQUENCE in effects:
        resets.append(
            "the connection, before another session gets it (NEXTVAL leaves LASTVAL() "
            "state that only a reset clears)"
        )
        notes.append("LASTVAL() is read back before the connection is let go: no pin")
    elif Effect.ROUTINE in effects:
        resets.append(
            "the connection, before another session gets it (the routine may have called "
            "NEXTVAL, whose LASTVAL() state only a reset clears)"
        )
    objects = {action for action, _ in c.objects}
    if "set_last_insert_id" in objects:
        notes.append(
            "LAST_INSERT_ID(expr): the value is read back before the connection is let go: no pin"
        )
    if "calc_found_rows" in objects:
        notes.append(
            "SQL_CALC_FOUND_ROWS: FOUND_ROWS() is read back before the connection is let go: no pin"
        )
    if c.needs:
        reads = ", ".join(sorted(c.needs))
        if c.statements == 1 and answers.match(sql.encode("utf-8", "surrogateescape")):
            notes.append(
                f"reads the previous statement's {reads}: answered by the proxy from the "
                "session's own copy (no connection used)"
            )
        else:
            notes.append(
                f"reads the previous statement's {reads}: the proxy restores the session's "
                "values on the connection first (ERR 1235 when it cannot: warnings, "
                "ROW_COUNT() or LASTVAL() inside a larger statement)"
            )
    for name in unkeyable:
        if reason is not None and reason.startswith(_pins.UNKEYABLE_VAR):
            notes.append(
                "@@timestamp pins whenever it is set (its reported value cannot be trusted)"
                if name == "timestamp"
                else f"@@{name} pins when the server reports a value other than its default"
            )
    if may_pin is not None:
        notes.append(f"pins when the server reports a session state change: {may_pin}")
    if reason is None and c.pin is not None:
        notes.append(
            f"does not pin, though the classifier's rule says '{c.pin}'"
            + (" (the session carries it)" if carried_vars else "")
            + ": under users.NAME.max_pinned it still waits for a pin slot first"
        )
    if Effect.DISCONNECT in effects:
        notes.append("the server closes the connection afterwards (RELEASE)")
    if _PLAIN_END.match(sql):
        notes.append(
            "with no transaction open the session holds no connection: the proxy answers OK itself"
        )
    if Effect.GLOBAL in effects:
        notes.append("changes the server for every session, not this session")
    if c.unknown_reason:
        notes.append(f"unknown: {c.unknown_reason}")
    return Verdict(
        mode,
        pins=reason,
        may_pin=may_pin,
        carried=tuple(carried),
        holds=holds,
        resets=tuple(resets),
        notes=tuple(notes),
    )


def _lifetime(p: Pins, reason: str) -> str:
    """How long the pin ``reason`` lasts (Pins.reason's order of reasons)."""
    if reason == p.sticky or reason == p.protocol:
        return UNTIL_SESSION_ENDS
    if p.xa:
        return "until XA COMMIT or XA ROLLBACK"
    if p.table_locks:
        if reason == PIN_BACKUP_LOCK:
            return "until BACKUP UNLOCK, BACKUP STAGE END or UNLOCK INSTANCE"
        return "until UNLOCK TABLES"
    if p.temp_tables:
        return "until DROP TEMPORARY TABLE " + ", ".join(sorted(p.temp_tables))
    if p.locks:
        return "until " + ", ".join(f"RELEASE_LOCK('{n}')" for n in sorted(p.locks))
    if p.prepared:
        return "until DEALLOCATE PREPARE " + ", ".join(sorted(p.prepared))
    if p.handlers:
        return "until HANDLER " + ", ".join(sorted(p.handlers)) + " CLOSE"
    if p.user_vars:
        names = sorted(n for n in p.user_vars if n != "?")
        which = ", ".join("@" + n for n in names) if names else "each variable it sets"
        return f"until SET @v = NULL (or a literal) for {which}"
    if p.next_tx:
        return "until the next transaction starts or ends"
    return UNTIL_SESSION_ENDS


def _transaction_hold(c: Classification, sql: str) -> str | None:
    """How long the transaction the text leaves open holds the connection, or None
    (a batch is followed statement by statement: ``BEGIN; ...; COMMIT`` leaves none)."""
    if c.statements <= 1:
        if not opens_transaction(c):
            return None
        return UNTIL_COMMIT if _explicit(c) else UNTIL_COMMIT_AUTOCOMMIT_OFF
    from tainted_proxy.taint.classifier import classify_flags

    lexed = tokenize(sql, c.flags)
    tx_open = False
    autocommit_off = False
    for st in split_statements(lexed.tokens, len(sql)):
        part = classify_flags(sql[st.start : st.end], c.flags)
        if part is None or not part.effects:
            continue
        if Effect.TX_END in part.effects:
            tx_open = False
        if "autocommit" in part.settings:
            value = part.settings["autocommit"]
            autocommit_off = value is None or value.upper() not in _ON
            if not autocommit_off:
                tx_open = False  # SET autocommit=1 commits
        if _explicit(part):
            tx_open = True
    if tx_open:
        return UNTIL_COMMIT
    if autocommit_off:
        return UNTIL_COMMIT_AUTOCOMMIT_OFF
    return None


def _explicit(c: Classification) -> bool:
    return Effect.TX_BEGIN in c.effects or any(a == "xa_start" for a, _ in c.objects)


# -- session mode -----------------------------------------------------------------------

_RESET_OBJECTS = {
    "temp_table": "temporary table {}",
    "advisory_lock": "advisory lock '{}'",
    "prepare": "prepared statement {}",
    "handler_open": "HANDLER {}",
}
_RESET_EFFECTS = {
    Effect.TABLE_LOCK: "table locks",
    Effect.XA: "the XA transaction",
    Effect.ROLE: "the current role",
    Effect.NEXT_TX: "the next transaction's characteristics",
    Effect.SEQUENCE: "LASTVAL() state",
    Effect.ROUTINE: "whatever the routine left",
    Effect.UNKNOWN: "whatever the statement left",
}


def _session(c: Classification | None, sql: str) -> Verdict:
    """Session mode: the session owns its connection from login to logout; at logout the
    connection is reset (COM_RESET_CONNECTION) before the next client gets it."""
    if c is None or not c.effects:
        return Verdict("session")
    resets: list[str] = [
        n for n in c.settings if n not in IGNORED and not n.startswith("session_track_")
    ]
    resets.extend("@" + n for n in c.user_vars)
    if Effect.USER_VAR in c.effects and not c.user_vars:
        resets.append("the user variables it sets")
    for action, name in c.objects:
        if action == "schema":
            resets.append("schema (back to the login's)")
        elif action in _RESET_OBJECTS:
            resets.append(_RESET_OBJECTS[action].format(name if name is not None else "?"))
    resets.extend(text for effect, text in _RESET_EFFECTS.items() if effect in c.effects)
    if _transaction_hold(c, sql) == UNTIL_COMMIT:
        resets.append("the open transaction (rolled back)")
    unique = tuple(dict.fromkeys(resets))
    pooled = verdict(c, sql, "transaction")
    notes = (
        (
            "nothing pins: the session owns its connection from login to logout "
            f"(in transaction mode it would pin: {pooled.pins})",
        )
        if pooled.pins
        else ()
    )
    return Verdict("session", resets=unique, notes=notes)
