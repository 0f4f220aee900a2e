"""The model of one client session: everything the proxy knows about it, in one place.

A pooled session (transaction or statement mode) runs its statements on whichever
upstream connection it gets, so what the server would remember about it lives here and
travels with it: its settings vector and schema (state.settings), its status flags, its
pins with their reasons (state.pins), the values its last statement left
(state.values), its SQL-level prepared statements (state.sql_prepared), and whether the
connection it gives back must be reset first. Binary prepared statements are in
state.statements. Session pooling (``mode`` None) keeps one connection from login to
logout and uses only the parts that describe the login.

``state.learn`` updates this from each response; ``frontend`` only executes what these
say (checkout, converge, release, reset, discard). Pure: no I/O, no Trio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tainted_proxy.state.pins import Pins
from tainted_proxy.state.settings import EMPTY, Settings
from tainted_proxy.state.sql_prepared import SessionSqlStatements
from tainted_proxy.state.statements import SessionStatements
from tainted_proxy.state.values import CONDITIONS, FOUND_ROWS, INSERT_ID, LASTVAL, Values
from tainted_proxy.wire.constants import SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS

MODES = ("session", "transaction", "statement")

#: per-statement values a server keeps across statements that do not set them
OUTLIVE_A_STATEMENT = frozenset((INSERT_ID, FOUND_ROWS, CONDITIONS, LASTVAL))


class ConnState(Protocol):
    """What the model reads and writes of the upstream connection it runs on
    (backend.server.ServerConn has these, and a unit test's plain object can)."""

    settings: Settings
    schema: str | None
    status: int
    values_owner: tuple[int, int] | None
    insert_id: int | None
    diagnostics_clean: bool
    foreign: set[str]
    user_vars_of: int | None


@dataclass(slots=True, eq=False)
class SessionState:
    """One client session's state, as the server would keep it for a direct client."""

    id: int
    #: None: session pooling; "transaction" or "statement": pooled
    mode: str | None = None
    #: what the session carries while it holds no connection (a held one has its own)
    settings: Settings = EMPTY
    schema: str | None = None
    status: int = SERVER_STATUS_AUTOCOMMIT
    pins: Pins = field(default_factory=Pins)
    #: the pin the accounting counts now (``pins.reason()`` when it was last published)
    pin_reason: str | None = None
    values: Values = field(default_factory=Values)
    #: statements run: with ``id``, stamps whose per-statement values a connection holds
    seq: int = 0
    sql_statements: SessionSqlStatements = field(default_factory=SessionSqlStatements)
    #: the binary prepared statements: made at the first COM_STMT_* (``statements``);
    #: most sessions never prepare, and an idle one should not carry an empty book
    _statements: SessionStatements | None = field(default=None, init=False, repr=False)
    #: the connection must be reset before another session gets it (unexplained state
    #: without detail, NEXTVAL's LASTVAL state)
    reset_on_release: bool = False

    def start(self, settings: Settings, schema: str | None) -> None:
        """A fresh login or COM_RESET_CONNECTION: no pins, no statements, no values, the
        login's charset (``settings``) and schema, autocommit on."""
        self.pins.clear()
        self.pins.schema = schema
        self.schema = schema
        self.settings = settings
        self.status = SERVER_STATUS_AUTOCOMMIT
        self.values.forget()
        self.sql_statements = SessionSqlStatements()
        self._statements = None
        self.reset_on_release = False

    @property
    def statements(self) -> SessionStatements:
        """The session's binary prepared statements (made on first use)."""
        if self._statements is None:
            self._statements = SessionStatements()
        return self._statements

    def next_statement(self) -> int:
        self.seq += 1
        return self.seq

    def owns_values_of(self, conn: ConnState, reads: frozenset[str] = frozenset()) -> bool:
        """``conn`` holds the values of this session's previous statement, and none of
        ``reads`` (state.values names) is one another session left there before."""
        return conn.values_owner == (self.id, self.seq - 1) and not (reads & conn.foreign)

    def took(self, conn: ConnState) -> None:
        """The session checked ``conn`` out (for statement ``seq``): unless the statement
        before ran there, what outlives a statement there is not the session's (another
        session's, or its own older values) until its own statements set it."""
        if conn.values_owner != (self.id, self.seq - 1):
            conn.foreign = set(OUTLIVE_A_STATEMENT)

    def holds(self, conn: ConnState) -> str | None:
        """Why the session keeps ``conn`` after a statement: a pin reason, an open
        transaction, or None (give it back)."""
        reason = self.pins.reason()
        if reason is not None:
            return reason
        if conn.status & SERVER_STATUS_IN_TRANS:
            return "transaction"
        return None

    def take_back(self, conn: ConnState) -> None:
        """The session gives ``conn`` back: what it carries comes with it."""
        self.settings = conn.settings
        self.schema = conn.schema
        self.status = conn.status
        if self.values.sequence_state:
            # LASTVAL() state cannot be cleared but by a reset
            self.values.sequence_state = False
            self.reset_on_release = True

    def release_needs_reset(self, conn: ConnState) -> bool:
        """Given back now, must ``conn`` be reset first (and then forget this flag)?"""
        if self.reset_on_release or conn.status & SERVER_STATUS_IN_TRANS:
            self.reset_on_release = False
            return True
        return self.pins.reason() is not None
