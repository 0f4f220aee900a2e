"""The proxy's session rules, run over one logged connection without a server.

For every statement the connection ran, `Session.run` does what the proxy would do in
the two pooled modes side by side:

* transaction mode: `state.pins.Pins` after the statement (`apply_pins`, with the
  server's report derived from the text as `state.verdict.verdict` derives it, and the
  literal user variables `state.settings.carried_user_vars` lets the session carry),
  and whether a transaction is open (`TxState`): ``BEGIN`` / ``XA START`` open one,
  ``COMMIT`` / ``ROLLBACK`` / an implicit commit end it, and under ``autocommit=0`` the
  first statement that touches a table opens one;
* statement mode: the same pins, but a statement that would open a transaction
  (`state.verdict.opens_transaction`) is refused and never runs.

It also keeps the session's settings vector (the session variables its ``SET``
statements assign, and its schema) and its ``sql_mode`` quoting flags, which decide how
its next statements are lexed. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from tainted_proxy.state import pins as _pins
from tainted_proxy.state import verdict as _verdict
from tainted_proxy.state.pins import Pins
from tainted_proxy.state.settings import IGNORED, UNKEYABLE, carried_user_vars
from tainted_proxy.state.verdict import opens_transaction
from tainted_proxy.taint.classifier import classify_flags
from tainted_proxy.taint.effects import Classification, Effect
from tainted_proxy.taint.lexer import (
    ANSI_QUOTES,
    NO_BACKSLASH_ESCAPES,
    OP,
    QIDENT,
    WORD,
    split_statements,
    tokenize,
)

_ON = frozenset(("1", "ON", "TRUE"))
_OFF = frozenset(("0", "OFF", "FALSE"))

# Effects for which the server reports a session state change. TODO: state.verdict
# keeps this private (``_STATEFUL``, an alias of ``state.pins._STATEFUL``); it should
# expose it (or a function that applies one statement to a Pins as verdict() does).
_STATEFUL: frozenset[str] = _verdict._STATEFUL

_EMPTY: frozenset[str] = frozenset()


def apply_pins(pins: Pins, c: Classification | None) -> None:
    """What the proxy does to ``pins`` after ``c`` ran without an error, with the
    server's session-state report the text implies (as `state.verdict.verdict` judges
    one statement, on a session's running `Pins`)."""
    if c is None or not c.effects:
        return  # clean: no report, nothing changes
    effects = c.effects
    for name in c.settings:
        if name in UNKEYABLE:
            # the server reports it; state.learn pins before anything else
            pins.pin_sticky(f"{_pins.UNKEYABLE_VAR} ({name})")
    carried = carried_user_vars(c)
    names = frozenset(n[1:] for n in carried) if carried else _EMPTY
    stateful = bool(effects & _STATEFUL) and Effect.ROUTINE not in effects
    pins.after_statement(c, failed=False, state_changed=stateful, carried=names)


# -- transactions --------------------------------------------------------------------------

#: Schemas whose tables are not transactional (reading them opens no transaction).
_NON_TRANSACTIONAL = frozenset(("information_schema", "performance_schema", "mysql", "sys"))
_WRITES = frozenset(("INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD", "CALL", "HANDLER"))
_READS = frozenset(("SELECT", "WITH", "TABLE", "VALUES"))


def touches_table(sql: str, flags: int = 0) -> bool:
    """Does this statement read or write a (transactional) table? Under autocommit=0
    such a statement opens a transaction on the server. Lexical: DML and ``CALL`` do;
    a ``SELECT`` does when it reads ``FROM`` a table other than ``DUAL`` and the system
    schemas; ``SET``, ``SHOW``, ``DO``, ``USE`` and the like do not."""
    toks = tokenize(sql, flags).tokens
    i = 0
    while i < len(toks) and toks[i].kind == OP and toks[i].value == "(":
        i += 1
    if i >= len(toks) or toks[i].kind != WORD:
        return False
    first = toks[i].value
    if first in _WRITES:
        return True
    if first not in _READS:
        return False
    if first == "TABLE":
        return True
    for j in range(i + 1, len(toks) - 1):
        t = toks[j]
        if t.kind != WORD or t.value != "FROM":
            continue
        nxt = toks[j + 1]
        if nxt.kind == OP and nxt.value == "(":
            return True  # a derived table: whatever it reads
        if nxt.kind not in (WORD, QIDENT):
            continue
        name = nxt.value.lower()
        if name == "dual" and nxt.kind == WORD:
            continue
        if name in _NON_TRANSACTIONAL and j + 2 < len(toks) and toks[j + 2].value == ".":
            continue
        return True
    return False


class TxState:
    """Whether the server would have a transaction open on the connection (what the proxy
    reads from ``SERVER_STATUS_IN_TRANS``), from the statements' classifications."""

    __slots__ = ("autocommit", "open")

    def __init__(self) -> None:
        self.autocommit = True
        self.open = False

    def step(self, c: Classification | None, sql: str, flags: int) -> None:
        """After one statement (a batch goes statement by statement: `run`)."""
        if c is None or not c.effects:
            if not self.autocommit and not self.open and touches_table(sql, flags):
                self.open = True
            return
        effects = c.effects
        if "autocommit" in c.settings:
            value = c.settings["autocommit"]
            on = value is not None and value.upper() in _ON
            if on and not self.autocommit:
                self.open = False  # SET autocommit=1 commits
            self.autocommit = on
        if Effect.TX_END in effects:
            self.open = False
        if Effect.TX_BEGIN in effects or any(a == "xa_start" for a, _ in c.objects):
            self.open = True
        elif any(a in ("xa_commit", "xa_rollback") for a, _ in c.objects):
            self.open = False
        elif (
            not self.autocommit
            and not self.open
            and Effect.TX_END not in effects
            and not (effects & {Effect.SETTINGS, Effect.AUTOCOMMIT, Effect.SCHEMA})
            and touches_table(sql, flags)
        ):
            self.open = True

    def run(self, c: Classification | None, sql: str, flags: int) -> None:
        """After one COM_QUERY text (several statements: each in turn)."""
        if c is None or c.statements <= 1:
            self.step(c, sql, flags)
            return
        lexed = tokenize(sql, flags)
        for st in split_statements(lexed.tokens, len(sql)):
            part = sql[st.start : st.end]
            self.step(classify_flags(part, flags), part, flags)


# -- sql_mode and settings -----------------------------------------------------------------

_ANSI_MODES = frozenset(("ANSI_QUOTES", "ANSI", "DB2", "MAXDB", "MSSQL", "ORACLE", "POSTGRESQL"))


def mode_flags(value: str | None, current: int, sql: str, default: int = 0) -> int:
    """The lexer flags after ``SET sql_mode = value`` (None: an expression, read as
    best we can from the text: ``CONCAT(@@sql_mode, ',ANSI_QUOTES')`` adds it)."""
    if value is None:
        up = sql.upper()
        flags = current
        if "ANSI_QUOTES" in up:
            flags |= ANSI_QUOTES
        if "NO_BACKSLASH_ESCAPES" in up:
            flags |= NO_BACKSLASH_ESCAPES
        return flags
    v = value.upper().replace(" ", "")
    if v == "DEFAULT":
        return default
    names = set(v.split(","))
    flags = 0
    if names & _ANSI_MODES:
        flags |= ANSI_QUOTES
    if "NO_BACKSLASH_ESCAPES" in names:
        flags |= NO_BACKSLASH_ESCAPES
    return flags


#: Variables whose spellings of on/off are one value.
_BOOLEAN = frozenset(
    (
        "autocommit",
        "foreign_key_checks",
        "unique_checks",
        "sql_log_bin",
        "sql_safe_updates",
        "big_tables",
        "sql_big_selects",
        "sql_notes",
        "sql_warnings",
        "sql_auto_is_null",
        "sql_quote_show_create",
        "tx_read_only",
        "profiling",
    )
)


def setting_value(name: str, value: str | None) -> str:
    """A settings-vector value as the log shows it: booleans in one spelling, an
    expression as ``?`` (the server would report its value; we cannot)."""
    if value is None:
        return "?"
    if name in _BOOLEAN:
        up = value.upper()
        if up in _ON:
            return "ON"
        if up in _OFF:
            return "OFF"
    return value


def keyed(name: str) -> bool:
    """Does the proxy key this variable in the settings vector?"""
    return name not in IGNORED and name not in UNKEYABLE and not name.startswith("session_track_")


# -- one session ---------------------------------------------------------------------------


class Episode:
    """A stretch of statements during which a session holds its connection."""

    __slots__ = ("reason", "start", "since", "fingerprint")

    def __init__(self, reason: str, start: int, since: float | None, fingerprint: str) -> None:
        self.reason = reason
        self.start = start
        self.since = since
        self.fingerprint = fingerprint


class Session:
    """One client session as the log shows it (a login, or a ``Change user``, until
    ``Quit``) and what the proxy would know about it."""

    __slots__ = (
        "sid",
        "conn",
        "user",
        "schema",
        "started",
        "flags",
        "statements",
        "settings",
        "vector",
        "recorded",
        "tx",
        "tx_pins",
        "st_pins",
        "tx_pin",
        "st_pin",
        "tx_reason",
        "st_reason",
        "tx_since",
        "tx_open_at",
        "set_names",
        "seen",
        "ever_tx_pinned",
        "ever_st_pinned",
        "ever_refused",
        "ever_tx",
        "last_time",
        "marks",
    )

    def __init__(
        self,
        sid: int,
        conn: int,
        user: str,
        schema: str | None,
        started: float | None,
        flags: int = 0,
    ) -> None:
        self.sid = sid
        self.conn = conn
        self.user = user
        self.schema = schema or None
        self.started = started
        self.last_time = started
        self.flags = flags
        self.statements = 0
        #: the settings vector: keyed variable -> value as written
        self.settings: dict[str, str] = {}
        self.vector: frozenset[tuple[str, str]] | None = None
        #: the last vector the report recorded for this session
        self.recorded: frozenset[tuple[str, str]] | None = None
        self.tx = TxState()
        self.tx_pins = Pins()
        self.tx_pins.schema = self.schema
        self.st_pins = Pins()
        self.st_pins.schema = self.schema
        #: why the session is pinned now, per mode (``Pins.reason()`` after the last
        #: statement: kept, as the proxy keeps ``SessionState.pin_reason``)
        self.tx_reason: str | None = None
        self.st_reason: str | None = None
        #: the pin episode running now, per mode
        self.tx_pin: Episode | None = None
        self.st_pin: Episode | None = None
        #: the transaction running now (transaction mode): first statement, time
        self.tx_since: int | None = None
        self.tx_open_at: float | None = None
        #: settings names this session set (each counted once per session)
        self.set_names: set[str] = set()
        #: offender keys this session already counted (sessions are counted once)
        self.seen: set[tuple[str, ...]] = set()
        self.ever_tx_pinned = False
        self.ever_st_pinned = False
        self.ever_refused = False
        self.ever_tx = False
        #: the last bucket in which report.Peaks counted this session's statements in
        #: flight, per pooled mode
        self.marks: list[int] = [-1, -1]

    # -- what the session carries ----------------------------------------------------------

    def key(self) -> frozenset[tuple[str, str]]:
        """The settings vector with the schema: the sub-pool the session checks out of."""
        v = self.vector
        if v is None:
            items = set(self.settings.items())
            if self.schema is not None:
                items.add(("schema", self.schema))
            v = self.vector = frozenset(items)
        return v

    def use(self, schema: str | None) -> None:
        """``COM_INIT_DB`` (or ``USE``)."""
        schema = schema or None
        if schema != self.schema:
            self.schema = schema
            self.vector = None
        self.tx_pins.schema = schema
        self.st_pins.schema = schema

    def learn_settings(self, settings: Mapping[str, str | None], sql: str, default: int) -> None:
        for name, value in settings.items():
            if name == "sql_mode":
                self.flags = mode_flags(value, self.flags, sql, default)
            if not keyed(name):
                continue
            v = setting_value(name, value)
            if v == "DEFAULT":
                if self.settings.pop(name, None) is not None:
                    self.vector = None
            elif self.settings.get(name) != v:
                self.settings[name] = v
                self.vector = None

    # -- one statement ---------------------------------------------------------------------

    def holds_tx(self) -> bool:
        """Transaction mode: does the session keep its connection now?"""
        return self.tx.open or self.tx_reason is not None

    def holds_st(self) -> bool:
        """Statement mode: does the session keep its connection now (a pin)?"""
        return self.st_reason is not None

    def refresh(self) -> None:
        """Read the pin reasons again (after changing the pins from outside `run`)."""
        self.tx_reason = self.tx_pins.reason()
        self.st_reason = self.st_pins.reason()

    def run(self, c: Classification | None, sql: str, default_flags: int = 0) -> bool:
        """Account for one statement the server ran (``c``: its classification under
        the session's flags, None when the gate proved it clean). Returns whether
        statement mode refuses it."""
        self.statements += 1
        flags = self.flags
        if c is None or not c.effects:
            # clean: only a transaction can start (autocommit=0)
            if not self.tx.autocommit and not self.tx.open:
                self.tx.run(c, sql, flags)
            return False
        refused = opens_transaction(c)
        if c.settings:
            self.learn_settings(c.settings, sql, default_flags)
        apply_pins(self.tx_pins, c)
        self.tx_reason = self.tx_pins.reason()
        if not refused:
            apply_pins(self.st_pins, c)
            self.st_reason = self.st_pins.reason()
        for action, name in c.objects:
            if action == "schema" and name is not None:
                self.use(name)
        self.tx.run(c, sql, flags)
        return refused
