"""The settings vector: which session system variables differ from a fresh upstream
connection, as the server itself reports them.

A vector is a ``frozenset`` of ``(name, value)`` pairs, hashable so it can key a
sub-pool. Only values that differ from the upstream ``Baseline`` are in it, so every
session that runs ``SET NAMES utf8mb4`` on a utf8mb4 upstream, or re-sets a default,
keeps the empty vector and shares the clean sub-pool. Values are the server's canonical
forms (the session tracker's), never the client's literal SQL: ``'+5:30'`` and
``'+05:30'`` are one setting. The current schema is kept next to the vector, not in it.

``settings_sql`` turns "connection has A, session wants B" into one ``SET SESSION``
statement with only the differences. Pure functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tainted_proxy.taint.effects import Classification, Effect

_USER_VAR_ONLY = frozenset((Effect.USER_VAR,))

Settings = frozenset[tuple[str, str]]

EMPTY: Settings = frozenset()

#: What the proxy turns on for its own bookkeeping on every tracked upstream connection.
TRACKING_SQL = (
    b"SET SESSION session_track_system_variables='*', session_track_state_change=ON, "
    b"session_track_schema=ON"
)

#: Variables never keyed: the proxy's own tracking switches, and the database charset
#: and collation, which follow the current schema (the schema is applied by itself).
IGNORED: frozenset[str] = frozenset(
    {
        "session_track_system_variables",
        "session_track_state_change",
        "session_track_schema",
        "session_track_transaction_info",
        "character_set_database",
        "collation_database",
    }
)

#: Variables whose reported value cannot be trusted or re-applied: ``timestamp`` is
#: reported stale after ``SET timestamp=DEFAULT``; the others are consumed by the next
#: statement. A session that sets one is pinned instead.
UNKEYABLE: frozenset[str] = frozenset(
    {
        "timestamp",
        "insert_id",
        "last_insert_id",
        "identity",
        "rand_seed1",
        "rand_seed2",
        "pseudo_thread_id",
        "gtid_seq_no",
        "server_id",
        "gtid_domain_id",
        # the history they keep (SHOW PROFILES, information_schema.OPTIMIZER_TRACE) holds
        # the SQL text of the sessions that ran on the connection: never carried
        "profiling",
        "profiling_history_size",
        "optimizer_trace",
    }
)

#: Charset variables: they must be applied before ``collation_connection`` (setting
#: ``character_set_connection`` resets the collation to that charset's default), and an
#: empty reported value means NULL (``SET character_set_results = NULL``).
CHARSET_VARS: tuple[str, ...] = (
    "character_set_client",
    "character_set_connection",
    "character_set_results",
)
_NULLABLE = frozenset((*CHARSET_VARS, "collation_connection"))
_LAST = ("collation_connection",)

_NUMERIC_TYPES = ("INT", "BIGINT", "DOUBLE", "INT UNSIGNED", "BIGINT UNSIGNED")


@dataclass(slots=True)
class Baseline:
    """The session variables of a fresh upstream connection (read once at start-up from
    ``information_schema.SYSTEM_VARIABLES`` on a connection opened exactly as the pool
    opens them: same login, same handshake charset)."""

    values: dict[str, str] = field(default_factory=dict)
    numeric: frozenset[str] = frozenset()
    #: variables whose baseline is NULL (the tracker reports NULL as ''): '' is
    #: restored as NULL for them (``default_tmp_storage_engine=''`` is ERR 1286)
    nullable: frozenset[str] = frozenset()

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str | None, str]]) -> Baseline:
        """Rows of (VARIABLE_NAME, SESSION_VALUE, VARIABLE_TYPE)."""
        values: dict[str, str] = {}
        numeric: set[str] = set()
        nullable: set[str] = set()
        for name, value, vtype in rows:
            n = name.lower()
            values[n] = "" if value is None else value
            if value is None:
                nullable.add(n)
            if vtype.upper() in _NUMERIC_TYPES:
                numeric.add(n)
        return cls(values, frozenset(numeric), frozenset(nullable))

    def literal(self, name: str, value: str, no_backslash_escapes: bool) -> str:
        """``value`` as SQL text for ``SET SESSION name = <literal>``."""
        if name.startswith("@"):
            return value  # a carried user variable: already a mode-proof SQL literal
        if name in self.numeric or (name not in self.values and _looks_numeric(value)):
            return value
        if value == "" and (name in _NULLABLE or name in self.nullable):
            return "NULL"
        v = value.replace("'", "''")
        if not no_backslash_escapes:
            v = v.replace("\\", "\\\\")
        return f"'{v}'"


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def apply_reported(current: Settings, reported: Mapping[str, str], baseline: Baseline) -> Settings:
    """The vector after the server reported ``reported`` (name -> canonical value):
    values equal to the baseline leave the vector, others replace what was there."""
    if not reported:
        return current
    d = dict(current)
    base = baseline.values
    for name, value in reported.items():
        if base.get(name) == value:
            d.pop(name, None)
        else:
            d[name] = value
    return frozenset(d.items())


def for_charset(
    charset: str, collation: str, baseline: Baseline, into: Settings = EMPTY
) -> Settings:
    """``into`` with the character set variables a login (or ``SET NAMES``) implies."""
    reported = {name: charset for name in CHARSET_VARS}
    reported["collation_connection"] = collation
    return apply_reported(into, reported, baseline)


def settings_sql(
    current: Settings,
    target: Settings,
    baseline: Baseline,
    *,
    no_backslash_escapes: bool = False,
) -> bytes | None:
    """One ``SET SESSION`` that turns a connection carrying ``current`` into one carrying
    ``target``; None when they are equal. Variables only in ``current`` go back to their
    baseline value. ``no_backslash_escapes`` is the connection's current sql_mode flag
    (the statement is parsed under the mode in force before it runs)."""
    if current == target:
        return None
    want = dict(target)
    have = dict(current)
    assigns: dict[str, str] = {}
    for name, value in want.items():
        if have.get(name) != value:
            assigns[name] = value
    for name in have:
        if name not in want:
            assigns[name] = "NULL" if name.startswith("@") else baseline.values.get(name, "")
    if not assigns:
        return None
    if "character_set_connection" in assigns and "collation_connection" not in assigns:
        # assigning the charset resets the collation to the charset's default
        assigns["collation_connection"] = want.get(
            "collation_connection", baseline.values.get("collation_connection", "")
        )
    # charsets first, collation after them, user variables last (a string literal takes
    # the collation in force when it is assigned)
    names = sorted(assigns, key=lambda n: (n.startswith("@"), n in _LAST, n not in CHARSET_VARS, n))
    parts = [f"{n}={baseline.literal(n, assigns[n], no_backslash_escapes)}" for n in names]
    # "SET SESSION @a=1" is a syntax error: user variables alone take a plain SET
    head = "SET " if names[0].startswith("@") else "SET SESSION "
    return (head + ", ".join(parts)).encode("utf-8", "surrogateescape")


# Literals that mean the same under every sql_mode and connection charset: NULL, numbers,
# and single-quoted printable ASCII without quotes or backslashes.
_MODE_PROOF = re.compile(r"^(?:NULL|-?[0-9]+(?:\.[0-9]+)?|'[ !#-&(-\[\]-~]*')$", re.IGNORECASE)
_PLAIN_SET = re.compile(r"^\s*SET\s+@", re.IGNORECASE)
#: A longer literal pins instead of travelling: it would be sent again at every
#: handover, and kept in every settings vector (and cache of them) the session makes.
CARRY_VALUE_MAX = 1024
#: The same for all of a session's carried variables together (names and values).
CARRY_TOTAL_MAX = 16 * 1024


def carried_user_vars(c: Classification) -> dict[str, str] | None:
    """For a plain ``SET @a = <literal>, ...`` (nothing else in the text): the user
    variables as vector entries (``"@a" -> "'x'"``; ``NULL`` clears one), so the session
    carries them between connections instead of pinning one. None when the statement is
    not of that form, or a value is not a literal that means the same under every
    sql_mode and charset, or is longer than ``CARRY_VALUE_MAX``."""
    if c.statements != 1 or c.effects != _USER_VAR_ONLY or not c.user_vars:
        return None
    text = c.sql if isinstance(c.sql, str) else c.sql.decode("latin-1")
    if not _PLAIN_SET.match(text):
        return None
    out: dict[str, str] = {}
    for name, value in c.user_vars.items():
        if value is None or len(value) > CARRY_VALUE_MAX or not _MODE_PROOF.match(value):
            return None
        out["@" + name] = "NULL" if value.upper() == "NULL" else value
    return out


def user_vars_size(settings: Settings) -> int:
    """The carried user variables' names and values in ``settings``, in characters."""
    return sum(len(n) + len(v) for n, v in settings if n[:1] == "@")


def with_user_vars(current: Settings, carried: Mapping[str, str]) -> Settings:
    """``current`` after a carried ``SET @a = ...`` (NULL leaves the vector)."""
    d = dict(current)
    for name, value in carried.items():
        if value == "NULL":
            d.pop(name, None)
        else:
            d[name] = value
    return frozenset(d.items())


def distance(a: Settings, b: Settings) -> int:
    """How many variables differ (the cost of moving a connection from a to b)."""
    return len(a ^ b)
