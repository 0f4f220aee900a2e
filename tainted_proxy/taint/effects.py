"""The effects vocabulary and the `Classification` result.

An *effect* is a stable name for one kind of thing a statement does to the
session it runs in.  The names are used by the CLI, the pool and the taint
reports, so they never change meaning; new kinds get new names.  Each name is
documented in ``specs/taint-rules.md`` and ``docs/classifier.md``.

Three questions the pool asks about a statement, answered by three fields:

* ``effects``: what the statement does (a set of the names below).
* ``pin``: whether, in transaction pooling mode, the statement leaves state on
  the upstream connection that cannot be re-applied elsewhere, and so ties the
  client session to that connection until the state is cleared.  ``None``
  when it does not.  Statements that *clear* such state (``DROP TEMPORARY
  TABLE``, ``RELEASE_LOCK``, ``UNLOCK TABLES``, ``DEALLOCATE PREPARE``,
  ``HANDLER … CLOSE``, ``XA COMMIT``) have the effect but no pin.
* ``needs``: per-connection values produced by the *previous* statement that
  this statement reads (``LAST_INSERT_ID()``, ``FOUND_ROWS()``,
  ``ROW_COUNT()``, ``SHOW WARNINGS`` …): it must run on the connection that ran
  the previous statement, or be answered by the proxy (see ``emulable``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Effect(enum.StrEnum):
    """Stable effect names.  ``Effect.SETTINGS == "settings"``."""

    #: session-scope system variables (SET x=, SET NAMES, SET SESSION TRANSACTION)
    SETTINGS = "settings"
    #: SET autocommit = … in any spelling
    AUTOCOMMIT = "autocommit"
    #: SET GLOBAL / @@global. / SET PERSIST / SET DEFAULT ROLE: not a session taint
    GLOBAL = "global"
    #: SET TRANSACTION … without scope: the next transaction only
    NEXT_TX = "next_tx"
    #: USE db
    SCHEMA = "schema"
    #: SET @x=, @x := anywhere, SELECT … INTO @x, CALL p(@out), GET DIAGNOSTICS @x
    USER_VAR = "user_var"
    #: CREATE [OR REPLACE] TEMPORARY TABLE / SEQUENCE
    TEMP_TABLE = "temp_table"
    #: DROP TEMPORARY TABLE
    TEMP_TABLE_DROP = "temp_table_drop"
    #: GET_LOCK() anywhere (and MySQL's locking-service functions)
    ADVISORY_LOCK = "advisory_lock"
    #: RELEASE_LOCK(), RELEASE_ALL_LOCKS()
    ADVISORY_UNLOCK = "advisory_unlock"
    #: LOCK TABLES, FLUSH TABLES WITH READ LOCK / FOR EXPORT, backup locks
    TABLE_LOCK = "table_lock"
    #: UNLOCK TABLES, UNLOCK INSTANCE, BACKUP UNLOCK, BACKUP STAGE END
    TABLE_UNLOCK = "table_unlock"
    #: BEGIN [WORK], START TRANSACTION, COMMIT AND CHAIN
    TX_BEGIN = "tx_begin"
    #: COMMIT, ROLLBACK, and every statement that commits implicitly
    TX_END = "tx_end"
    #: SAVEPOINT, ROLLBACK TO [SAVEPOINT], RELEASE SAVEPOINT
    SAVEPOINT = "savepoint"
    #: XA START/BEGIN/END/PREPARE/COMMIT/ROLLBACK/RECOVER
    XA = "xa"
    #: SQL-level PREPARE s FROM …
    PREPARE = "prepare"
    #: DEALLOCATE PREPARE s, DROP PREPARE s
    DEALLOCATE = "deallocate"
    #: EXECUTE s, EXECUTE IMMEDIATE <expression>
    EXECUTE = "execute"
    #: SQL_CALC_FOUND_ROWS (pins), FOUND_ROWS() (needs)
    FOUND_ROWS = "found_rows"
    #: LAST_INSERT_ID() / @@identity reads; LAST_INSERT_ID(expr) pins
    LAST_INSERT_ID = "last_insert_id"
    #: ROW_COUNT() reads
    ROW_COUNT = "row_count"
    #: LASTVAL(s), PREVIOUS VALUE FOR s (MariaDB sequences) reads
    LASTVAL = "lastval"
    #: SHOW WARNINGS/ERRORS, SHOW COUNT(*) …, GET DIAGNOSTICS, @@warning_count
    WARNINGS = "warnings"
    #: CONNECTION_ID() reads (the proxy's client id, not the upstream thread's)
    CONNECTION_ID = "connection_id"
    #: NEXTVAL(s), NEXT VALUE FOR s: sets the session's LASTVAL(s)
    SEQUENCE = "sequence"
    #: HANDLER … OPEN / READ / CLOSE
    HANDLER = "handler"
    #: CALL …, BEGIN NOT ATOMIC …: effects unknown until the server reports them
    ROUTINE = "routine"
    #: SET ROLE
    ROLE = "role"
    #: SET PASSWORD: an account change, commits implicitly
    PASSWORD = "password"
    #: SET session_track_*: breaks the proxy's own state tracking
    SESSION_TRACK = "session_track"
    #: DDL, account management, LOCK TABLES, FLUSH …
    IMPLICIT_COMMIT = "implicit_commit"
    #: COMMIT/ROLLBACK … RELEASE: the server closes the connection
    DISCONNECT = "disconnect"
    #: not understood: treated as pinning, never as clean
    UNKNOWN = "unknown"


#: Every effect name, for documentation and validation.
ALL_EFFECTS: frozenset[str] = frozenset(e.value for e in Effect)

#: Default pin reason per effect, for the statements of that effect that pin.
#: Effects missing here never pin by themselves.  Some statements use a more
#: specific reason (FLUSH TABLES WITH READ LOCK, EXECUTE IMMEDIATE …); the
#: reasons are short stable strings meant for logs, metrics labels and errors.
PIN_REASONS: Mapping[str, str] = MappingProxyType(
    {
        Effect.UNKNOWN: "unclassified statement",
        Effect.XA: "XA transaction",
        Effect.TABLE_LOCK: "table lock (LOCK TABLES)",
        Effect.TEMP_TABLE: "temporary table",
        Effect.ADVISORY_LOCK: "advisory lock (GET_LOCK)",
        Effect.PREPARE: "prepared statement (PREPARE)",
        Effect.EXECUTE: "prepared statement (EXECUTE)",
        Effect.HANDLER: "open HANDLER",
        Effect.USER_VAR: "user variable",
        Effect.ROUTINE: "stored procedure (CALL)",
        Effect.FOUND_ROWS: "SQL_CALC_FOUND_ROWS (until FOUND_ROWS())",
        Effect.LAST_INSERT_ID: "LAST_INSERT_ID(expr) sets a session value",
        Effect.SESSION_TRACK: "session tracking changed (session_track_*)",
        Effect.ROLE: "current role (SET ROLE)",
        Effect.NEXT_TX: "one-shot SET TRANSACTION (until the next transaction)",
    }
)

#: Specific pin reasons used by some statements (stable strings as well).
PIN_GLOBAL_READ_LOCK = "global read lock (FLUSH TABLES WITH READ LOCK)"
PIN_FLUSH_FOR_EXPORT = "table lock (FLUSH TABLES ... FOR EXPORT)"
PIN_BACKUP_LOCK = "backup lock (BACKUP STAGE / BACKUP LOCK / LOCK INSTANCE)"
PIN_EXECUTE_IMMEDIATE = "dynamic SQL (EXECUTE IMMEDIATE)"
PIN_COMPOUND = "compound statement (BEGIN NOT ATOMIC)"
PIN_INSERT_ID = "one-shot insert id (SET insert_id / last_insert_id)"

#: Values a statement can read that the previous statement of the same
#: connection produced (the ``needs`` field).
NEEDS_NAMES: frozenset[str] = frozenset(
    {
        Effect.FOUND_ROWS,
        Effect.LAST_INSERT_ID,
        Effect.ROW_COUNT,
        Effect.LASTVAL,
        Effect.WARNINGS,
        Effect.CONNECTION_ID,
    }
)

_EMPTY_MAP: Mapping[str, str | None] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Classification:
    """What one COM_QUERY text (one or more statements) does to the session.

    Instances are immutable and shared: the classifier caches them by text, so
    never mutate the mappings (they are read-only ``MappingProxyType`` views).
    """

    #: Effect names (see `Effect`); empty when the text is clean.  For a
    #: multi-statement text, the union over its statements.
    effects: frozenset[str] = frozenset()
    #: Session-scope system variables assigned: canonical name (lower case, no
    #: ``@@``/``SESSION.``/``LOCAL.``; ``transaction_isolation`` ->
    #: ``tx_isolation``, ``transaction_read_only`` -> ``tx_read_only``) -> the
    #: literal value as the client wrote it (strings unquoted, numbers as text,
    #: ``ON``/``OFF``/``DEFAULT``/``NULL``/``TRUE``/``FALSE`` upper-cased), or
    #: ``None`` when the value is an expression the parser cannot evaluate
    #: (``CONCAT(@@sql_mode, …)``, ``@@global.time_zone``, the collation implied
    #: by ``SET NAMES cs`` without ``COLLATE``).  Includes ``autocommit``,
    #: ``tx_isolation``/``tx_read_only`` and ``session_track_*``.  The pool
    #: learns canonical values from the session tracker; these are hints and
    #: the only source for what the tracker never reports (collation_connection).
    settings: Mapping[str, str | None] = field(default_factory=lambda: _EMPTY_MAP)
    #: Why this text pins the session to its upstream connection in
    #: transaction pooling mode (a short stable string, see `PIN_REASONS`),
    #: or ``None`` when it leaves nothing behind that a settings-keyed
    #: sub-pool cannot re-apply.
    pin: str | None = None
    #: Values produced by the previous statement on the same connection that
    #: this text reads: a subset of ``found_rows``, ``last_insert_id``,
    #: ``row_count``, ``lastval``, ``warnings``.
    needs: frozenset[str] = frozenset()
    #: Number of non-empty statements in the text.
    statements: int = 1
    #: User variables assigned (names lower-cased: user variable names are
    #: case-insensitive) -> the value as SQL literal text exactly as written
    #: (``'abc'``, ``42``, ``NULL``), re-sendable as ``SET @name = <value>``
    #: under the same quoting mode; ``None`` when not a plain literal (every
    #: assignment inside SELECT/UPDATE/CALL/INTO is ``None``).
    user_vars: Mapping[str, str | None] = field(default_factory=lambda: _EMPTY_MAP)
    #: Characteristics of a scope-less ``SET TRANSACTION …`` (next
    #: transaction only): ``tx_isolation`` (``READ-COMMITTED`` …) and/or
    #: ``tx_read_only`` (``ON``/``OFF``).
    next_tx: Mapping[str, str | None] = field(default_factory=lambda: _EMPTY_MAP)
    #: Variables of MariaDB ``SET STATEMENT … FOR``: the server reports their
    #: temporary values in the tracker; the pool must ignore those entries.
    statement_vars: frozenset[str] = frozenset()
    #: Named session objects touched, in statement order, as (action, name)
    #: pairs; name is ``None`` when not a literal.  Actions: ``temp_table``,
    #: ``temp_table_drop``, ``drop_table`` (a plain DROP TABLE also drops a
    #: temporary table of that name), ``prepare``, ``deallocate``,
    #: ``execute``, ``handler_open``, ``handler_read``, ``handler_close``,
    #: ``advisory_lock``, ``advisory_unlock``, ``advisory_unlock_all``,
    #: ``schema``, ``xa_start``, ``xa_end``, ``xa_prepare``, ``xa_commit``,
    #: ``xa_rollback``, ``xa_recover``, ``savepoint``, ``rollback_to``,
    #: ``release_savepoint``.
    objects: tuple[tuple[str, str | None], ...] = ()
    #: When the whole text is one of the simple forms the proxy can answer
    #: itself from the previous OK packet / result (``SELECT LAST_INSERT_ID()``,
    #: ``SELECT ROW_COUNT()``, ``SELECT FOUND_ROWS()``, ``SELECT @@identity``,
    #: with an optional alias): (kind, column name the client expects).
    emulable: tuple[str, str] | None = None
    #: Why the text (or part of it) is ``unknown``; ``None`` otherwise.
    unknown_reason: str | None = None
    #: The text that was classified (str or the client's bytes), for the lazy
    #: `fingerprint`.
    sql: str | bytes = field(default="", repr=False)
    #: Lexer flags used (bit 0 ANSI_QUOTES, bit 1 NO_BACKSLASH_ESCAPES).
    flags: int = field(default=0, repr=False)
    _fp: str | None = field(default=None, repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """The statement fingerprint (computed on first use, then kept)."""
        fp = self._fp
        if fp is None:
            from tainted_proxy.taint.fingerprint import fingerprint

            fp = fingerprint(
                self.sql,
                ansi_quotes=bool(self.flags & 1),
                no_backslash_escapes=bool(self.flags & 2),
            )
            object.__setattr__(self, "_fp", fp)
        return fp

    @property
    def clean(self) -> bool:
        """True when the text has no effect at all."""
        return not self.effects

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the CLI's output object)."""
        sql = self.sql
        if isinstance(sql, bytes):
            sql = sql.decode("utf-8", "replace")
        return {
            "sql": sql,
            "effects": sorted(self.effects),
            "settings": dict(self.settings),
            "pin": self.pin,
            "needs": sorted(self.needs),
            "fingerprint": self.fingerprint,
            "statements": self.statements,
            "user_vars": dict(self.user_vars),
            "next_tx": dict(self.next_tx),
            "statement_vars": sorted(self.statement_vars),
            "objects": [list(o) for o in self.objects],
            "emulable": list(self.emulable) if self.emulable else None,
            "unknown_reason": self.unknown_reason,
        }


_COMPARED = (
    "effects",
    "settings",
    "pin",
    "needs",
    "statements",
    "user_vars",
    "next_tx",
    "statement_vars",
    "objects",
    "emulable",
    "unknown_reason",
    "sql",
    "flags",
)


def _eq(self: Classification, other: object) -> bool:
    if not isinstance(other, Classification):
        return NotImplemented
    return all(getattr(self, f) == getattr(other, f) for f in _COMPARED)


Classification.__eq__ = _eq  # type: ignore[method-assign,assignment]
Classification.__hash__ = None  # type: ignore[assignment]


class _GateClean(Classification):
    """A clean single-statement result, as the gate decides it.

    Every field but ``sql``/``flags`` (and the lazily filled fingerprint) is
    a class constant that shadows the base class's slot, so building one
    costs three slot writes instead of the dataclass ``__init__``'s fourteen:
    it is on the gate's hot path.  It compares equal to the same
    `Classification` built normally.
    """

    __slots__ = ()
    effects = frozenset()  # type: ignore[assignment]
    settings = _EMPTY_MAP  # type: ignore[assignment]
    pin = None  # type: ignore[assignment]
    needs = frozenset()  # type: ignore[assignment]
    statements = 1  # type: ignore[assignment]
    user_vars = _EMPTY_MAP  # type: ignore[assignment]
    next_tx = _EMPTY_MAP  # type: ignore[assignment]
    statement_vars = frozenset()  # type: ignore[assignment]
    objects = ()  # type: ignore[assignment]
    emulable = None  # type: ignore[assignment]
    unknown_reason = None  # type: ignore[assignment]


_new = object.__new__
_set_sql = Classification.sql.__set__  # type: ignore[attr-defined]
_set_flags = Classification.flags.__set__  # type: ignore[attr-defined]
_set_fp = Classification._fp.__set__  # type: ignore[attr-defined]


def clean_classification(sql: str | bytes, flags: int) -> Classification:
    """A clean single-statement `Classification` for `sql`, built fast."""
    o = _new(_GateClean)
    _set_sql(o, sql)
    _set_flags(o, flags)
    _set_fp(o, None)
    return o
