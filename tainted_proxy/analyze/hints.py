"""One sentence of advice per finding: `hint(reason_or_effect, **facts)`.

Keyed by a pin reason (the strings of `taint.effects.PIN_REASONS`, `state.pins`) or by
an effect name (`taint.effects.Effect`: ``settings``, ``autocommit``, ``tx_begin``,
``xa``), so that any report of the same findings (``tainted-proxy analyze`` now, the
live proxy's report later) words them the same way. The advice after the colon for a pin
reason is `tainted_proxy.state.advice`'s (shared with the live report). Pure.
"""

from __future__ import annotations

from tainted_proxy.state.advice import advice as pin_advice
from tainted_proxy.taint.effects import Effect

#: The settings entry for the variables ``SET NAMES`` assigns (character_set_client,
#: character_set_connection, character_set_results, collation_connection).
NAMES = "character set (SET NAMES)"


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _who(facts: dict[str, object]) -> tuple[str, bool]:
    """(``every session`` / ``412 sessions``, whether the verb is singular)."""
    n = int(facts.get("sessions", 0) or 0)  # type: ignore[call-overload]
    total = facts.get("total_sessions")
    if total is not None and n == total and n > 1:
        return "every session", True
    return _n(n, "session"), n == 1


def _sessions(facts: dict[str, object]) -> str:
    """``every session of user app`` / ``412 sessions of user app``."""
    return f"{_who(facts)[0]} of user {facts.get('user', '?')}"


def _statement(facts: dict[str, object]) -> str:
    fp = facts.get("fingerprint")
    return f"`{fp}`" if fp else "a statement"


def hint(reason_or_effect: str, **facts: object) -> str:
    """One sentence about a finding. ``reason_or_effect``: a pin reason, or one of the
    effects ``settings`` (a session variable the sessions set), ``autocommit``,
    ``tx_begin``, ``xa`` (statements refused in statement mode). ``facts`` (all
    optional): ``user``, ``sessions``, ``total_sessions``, ``statements``,
    ``fingerprint``, and for ``settings``: ``name`` (the variable) and ``values``
    (how many distinct values the sessions gave it)."""
    user = facts.get("user", "?")
    statements = int(facts.get("statements", 0) or 0)  # type: ignore[call-overload]
    key = str(reason_or_effect)
    if key == Effect.SETTINGS:
        name = facts.get("name", "it")
        if name == NAMES:
            name = "the character set"
        values = int(facts.get("values", 0) or 0)  # type: ignore[call-overload]
        who = _sessions(facts)
        verb = "runs" if _who(facts)[1] else "run"
        if values > 1:
            return (
                f"{who} {verb} {_statement(facts)} with {values} distinct values: set {name} "
                "on the server or in the app's connection URL so they share one sub-pool"
            )
        return (
            f"{who} {verb} {_statement(facts)} with one value: set {name} on the server "
            "(or leave it out) and connections need no SET when they change hands"
        )
    if key == Effect.AUTOCOMMIT:
        who, one = _who(facts)
        return (
            f"user {user}: {who} switch{'es' if one else ''} autocommit off "
            f"({_statement(facts)}), refused in statement mode; connect with autocommit on, "
            "or use transaction mode for this user"
        )
    if key == Effect.TX_BEGIN:
        return (
            f"user {user}: {_n(statements, 'multi-statement transaction')} refused in "
            f"statement mode ({_statement(facts)}); use transaction mode for this user"
        )
    if key == Effect.XA:
        return (
            f"user {user}: {_n(statements, 'XA transaction')} refused in statement mode "
            f"({_statement(facts)}); use transaction mode for this user"
        )
    # a pin reason
    return f"{_sessions(facts)} pinned by {_statement(facts)}: {pin_advice(key)}"
