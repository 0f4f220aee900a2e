"""The values a server keeps per connection about the last statement, owned by a session.

MariaDB remembers, per connection, what the previous statement left: LAST_INSERT_ID(),
ROW_COUNT(), FOUND_ROWS(), the diagnostics area (SHOW WARNINGS / SHOW ERRORS,
@@warning_count, @@error_count, GET DIAGNOSTICS) and, per sequence, LASTVAL(). In a
pooled mode the next statement of a session may run on another connection, and another
session's statement may run on this one, so ``Values`` keeps the session's own copy:

* ``learn`` updates it from each response the session got (the protocol says most of it:
  the OK packet's affected rows, the rows of a result set, the warning count, an ERR);
  what the response does not say exactly is marked ``pending``, and the I/O side reads it
  from the server (``fetch_queries`` / ``absorb``) before the connection goes to anyone
  else, so no pin ever waits for the client's next statement;
* ``state.answers`` answers the plain reads (``SELECT LAST_INSERT_ID()``,
  ``SHOW WARNINGS``...) from the copy;
* ``restore_plan`` says what to run on a connection so that a larger statement reading
  these values sees the session's own (or why that cannot be done).

Rules and the facts they rest on (measured on MariaDB 10.11): specs/pooling.md, "Values
of the last statement". Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tainted_proxy.taint.effects import Classification, Effect

# what ``pending`` may hold: read from the server before the connection is let go
INSERT_ID = "insert_id"
ROW_COUNT = "row_count"
FOUND_ROWS = "found_rows"
CONDITIONS = "conditions"
LASTVAL = "lastval"

#: The values one SELECT reads back (in this order; ``absorb`` takes its row).
FETCH_VALUES_SQL = (
    b"SELECT LAST_INSERT_ID(), ROW_COUNT(), FOUND_ROWS(), @@warning_count, @@error_count"
)
FETCH_CONDITIONS_SQL = b"SHOW WARNINGS"

# A statement that raises no condition empties the diagnostics area only if it uses a
# table (MariaDB keeps it across DO 0, SET @x = 1, SELECT 1 FROM DUAL, BEGIN, USE).
_USES_TABLE = re.compile(
    rb"\bFROM\s+(?!DUAL\b)|\bINTO\b(?!\s*@)|\bUPDATE\b|\bJOIN\b|\bTABLE\b|\bCALL\b",
    re.IGNORECASE,
)
#: uses_table's answers by statement text (short texts only, a bounded number)
_USES_TABLE_SEEN: dict[bytes, bool] = {}
_SEEN_MAX, _SEEN_TEXT_MAX = 4096, 1024


def uses_table(sql: bytes) -> bool:
    """Does ``sql`` use a table (and so empty the diagnostics area when it raises no
    condition)? Remembered per text: a pooled connection that changes hands asks after
    every statement, and an application runs the same few texts over and over."""
    known = _USES_TABLE_SEEN.get(sql)
    if known is None:
        known = _USES_TABLE.search(sql) is not None
        if len(sql) <= _SEEN_TEXT_MAX:
            if len(_USES_TABLE_SEEN) >= _SEEN_MAX:
                _USES_TABLE_SEEN.clear()
            _USES_TABLE_SEEN[sql] = known
    return known


_SEQUENCE_NAME = re.compile(
    rb"\bNEXTVAL\s*\(\s*((?:`[^`]+`|\w+)(?:\s*\.\s*(?:`[^`]+`|\w+))?)\s*\)"
    rb"|\bNEXT\s+VALUE\s+FOR\s+((?:`[^`]+`|\w+)(?:\s*\.\s*(?:`[^`]+`|\w+))?)",
    re.IGNORECASE,
)
_SELECTS = re.compile(rb"\bSELECT\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Condition:
    """One row of SHOW WARNINGS."""

    level: str  # Note | Warning | Error
    code: int
    message: str


@dataclass(slots=True)
class Outcome:
    """What one relayed response said, as the response tracker saw it."""

    error: Condition | None = None  # the ERR that ended it
    warnings: int = 0  # the warning count of its last OK / EOF
    last_resultset: bool = False  # its last result was rows, not an OK
    resultset: bool = False  # any of its results was rows
    rows: int = 0  # rows of its last result set
    affected_rows: int = 0  # of its last OK
    insert_id: int = 0  # of its last OK
    insert_ids: int = 0  # OK packets that carried a non-zero insert id
    statements: int = 1


_READS = {
    Effect.LAST_INSERT_ID: INSERT_ID,
    Effect.FOUND_ROWS: FOUND_ROWS,
    Effect.WARNINGS: CONDITIONS,
    Effect.LASTVAL: LASTVAL,
    Effect.ROW_COUNT: ROW_COUNT,
}


def reads_of(needs: frozenset[str]) -> frozenset[str]:
    """The values (names above) a statement with these ``needs`` reads."""
    return frozenset(_READS[n] for n in needs if n in _READS)  # type: ignore[index]


def sequence_names(sql: bytes) -> list[bytes]:
    """The sequences a statement calls NEXTVAL on, as written (they set LASTVAL)."""
    return [m.group(1) or m.group(2) for m in _SEQUENCE_NAME.finditer(sql)]


@dataclass(slots=True)
class Values:
    """What the server would answer this session for the per-statement reads."""

    insert_id: int = 0
    row_count: int = -1
    found_rows: int = 0
    warning_count: int = 0
    error_count: int = 0
    conditions: tuple[Condition, ...] = ()
    #: LASTVAL per sequence name as written (NEXTVAL was called on it)
    lastvals: dict[bytes, int | None] = field(default_factory=dict)
    #: values the server holds and the copy does not (read before release)
    pending: set[str] = field(default_factory=set)
    #: sequences whose LASTVAL is pending
    pending_sequences: list[bytes] = field(default_factory=list)
    #: pending values whose connection closed before anyone read them: reads of these
    #: get an error, never a stale value
    #: (a shared empty frozenset until a loss, replaced rather than mutated: an idle
    #: session keeps no empty set of its own)
    lost: frozenset[str] = frozenset()
    #: NEXTVAL ran on the connection held now: its LASTVAL state cannot be cleared but
    #: by a reset, so the connection is reset before another session gets it
    sequence_state: bool = False

    def forget(self) -> None:
        """COM_RESET_CONNECTION / COM_CHANGE_USER / a fresh login."""
        self.insert_id = 0
        self.row_count = -1
        self.found_rows = 0
        self.warning_count = self.error_count = 0
        self.conditions = ()
        self.lastvals.clear()
        self.pending.clear()
        self.pending_sequences.clear()
        self.lost = frozenset()
        self.sequence_state = False

    def lose_pending(self) -> None:
        """The connection holding the pending values closed unread."""
        self.lost |= self.pending
        self.pending.clear()
        self.pending_sequences.clear()

    # -- learning from responses -------------------------------------------------
    def learn(self, c: Classification | None, sql: bytes, o: Outcome) -> None:
        """Account for one relayed statement (``c`` None: the gate proved it clean)."""
        effects = c.effects if c is not None else frozenset()
        routine = Effect.ROUTINE in effects or Effect.UNKNOWN in effects
        batch = o.statements > 1
        pending = self.pending
        before = set(pending) if self.lost else pending
        # diagnostics
        if o.error is not None:
            self.conditions = (o.error,)
            self.warning_count = self.error_count = 1
            pending.add(CONDITIONS)  # warnings raised before the error come with it
        elif o.warnings:
            self.warning_count = o.warnings
            pending.add(CONDITIONS)
        elif routine or batch:
            # the area holds what its last statement left: read it back
            self.conditions = ()
            self.warning_count = self.error_count = 0
            pending.add(CONDITIONS)
        elif (
            self.conditions or self.warning_count or self.error_count or CONDITIONS in pending
        ) and uses_table(sql):
            # (nothing to clear is the common case: no regex then)
            self.conditions = ()
            self.warning_count = self.error_count = 0
            pending.discard(CONDITIONS)
        # ROW_COUNT(): the last result's
        if routine:
            pending.add(ROW_COUNT)
        elif o.error is not None and not batch:
            self.row_count = -1
            pending.discard(ROW_COUNT)
        elif o.error is not None:
            pending.add(ROW_COUNT)
        else:
            self.row_count = -1 if o.last_resultset else o.affected_rows
            pending.discard(ROW_COUNT)
        # FOUND_ROWS(): rows of the last SELECT, or its count without LIMIT
        calc = c is not None and any(a == "calc_found_rows" for a, _ in c.objects)
        if routine or calc or (o.error is not None and batch):
            pending.add(FOUND_ROWS)
        elif o.resultset and o.last_resultset and not batch:
            self.found_rows = o.rows
            pending.discard(FOUND_ROWS)
        elif o.resultset or (o.error is None and _SELECTS.search(sql) is not None):
            # rows then an OK in one batch, INSERT ... SELECT, SELECT ... INTO
            pending.add(FOUND_ROWS)
        # LAST_INSERT_ID(): an OK's insert id is also set by an explicit value for an
        # AUTO_INCREMENT column, which leaves LAST_INSERT_ID() as it was
        sets_id = c is not None and any(a == "set_last_insert_id" for a, _ in c.objects)
        if routine or sets_id or batch and o.insert_ids:
            pending.add(INSERT_ID)
        elif o.insert_ids and o.insert_id != self.insert_id:
            pending.add(INSERT_ID)
        # LASTVAL(s)
        if c is not None and Effect.SEQUENCE in effects:
            names = sequence_names(sql)
            if names:
                self.pending_sequences.extend(n for n in names if n not in self.pending_sequences)
                pending.add(LASTVAL)
            self.sequence_state = True
        elif routine:
            self.sequence_state = True  # a routine may have called NEXTVAL
        if self.lost:
            # what this statement set (known or pending again) is no longer lost
            known = {ROW_COUNT} | (pending - before)
            if o.error is not None or o.warnings or not self.conditions:
                known.add(CONDITIONS)
            if o.resultset:
                known.add(FOUND_ROWS)
            self.lost -= known

    def learn_local(self, select: bool) -> None:
        """The proxy answered a read itself: a SELECT sets ROW_COUNT() to -1 and
        FOUND_ROWS() to its one row; SHOW WARNINGS / SHOW COUNT(*) only ROW_COUNT()."""
        self.row_count = -1
        if select:
            self.found_rows = 1

    # -- reading back what the response did not say ---------------------------------
    def fetch_queries(self) -> list[bytes]:
        """What to run on the connection before it is let go (nothing, usually)."""
        if not self.pending:
            return []
        out = [FETCH_VALUES_SQL]
        if CONDITIONS in self.pending:
            out.append(FETCH_CONDITIONS_SQL)
        if LASTVAL in self.pending and self.pending_sequences:
            out.append(
                b"SELECT " + b", ".join(b"PREVIOUS VALUE FOR " + n for n in self.pending_sequences)
            )
        return out

    def absorb(self, results: list[list[list[bytes | None]] | None]) -> int | None:
        """Take the answers to ``fetch_queries`` (None for a query that failed); returns
        the LAST_INSERT_ID() the connection has now (None if unknown)."""
        pending = self.pending
        lid: int | None = None
        if not pending:
            return None
        it = iter(results)
        values = next(it, None)
        if values:
            lid, rc, fr, wc, ec = (None if v is None else int(v) for v in values[0])
            if INSERT_ID in pending and lid is not None:
                self.insert_id = lid
            if ROW_COUNT in pending and rc is not None:
                self.row_count = rc
            if FOUND_ROWS in pending and fr is not None:
                self.found_rows = fr
            if CONDITIONS in pending:
                self.warning_count = wc or 0
                self.error_count = ec or 0
        if CONDITIONS in pending:
            rows = next(it, None)
            if rows is not None:
                self.conditions = tuple(
                    Condition(
                        (r[0] or b"").decode(),
                        int(r[1] or 0),
                        (r[2] or b"").decode("utf-8", "replace"),
                    )
                    for r in rows
                )
        if LASTVAL in pending and self.pending_sequences:
            rows = next(it, None)
            row = rows[0] if rows else [None] * len(self.pending_sequences)
            for name, v in zip(self.pending_sequences, row, strict=False):
                self.lastvals[name] = None if v is None else int(v)
        pending.clear()
        self.pending_sequences.clear()
        return lid

    # -- restoring them for a larger statement ----------------------------------------
    def restore_plan(
        self,
        needs: frozenset[str],
        conn_insert_id: int | None,
        conn_diagnostics_clean: bool,
        client_id: int,
        may_set_thread_id: bool,
        best_effort: bool,
    ) -> list[bytes] | str:
        """Statements that make a connection (whose values are not this session's last
        statement's) answer ``needs`` as this session's own connection would, or why it
        cannot. Order matters: each statement changes ROW_COUNT() (a SET makes it 0, a
        SELECT -1) and one that uses a table clears the diagnostics area.

        ``best_effort`` (a routine call, which may read anything): restore what can be
        restored and never refuse."""
        if self.lost & reads_of(needs) and not best_effort:
            return "the value of the previous statement (lost when its connection closed)"
        # a pending value is on the connection held now (the one that ran the statement):
        # it is left as it is, and nothing the plan runs may overwrite it
        pending = self.pending
        out: list[bytes] = []
        if Effect.WARNINGS in needs and CONDITIONS not in pending:
            if self.warning_count or self.error_count or self.conditions:
                if not best_effort:
                    return "the warnings and errors of the previous statement"
            if not conn_diagnostics_clean:
                out.append(b"DO (SELECT 1 FROM information_schema.CHARACTER_SETS LIMIT 0)")
        sets: list[bytes] = []
        if Effect.CONNECTION_ID in needs:
            if may_set_thread_id:
                sets.append(b"pseudo_thread_id = %d" % client_id)
            elif not best_effort:
                return (
                    "CONNECTION_ID() inside a larger statement (the upstream account lacks "
                    "the BINLOG REPLAY privilege that sets it)"
                )
        if (
            Effect.LAST_INSERT_ID in needs
            and conn_insert_id != self.insert_id
            and INSERT_ID not in self.pending  # pending: the held connection has it
        ):
            sets.append(b"last_insert_id = %d" % self.insert_id)
        if sets:
            out.append(b"SET SESSION " + b", ".join(sets))
        if Effect.FOUND_ROWS in needs and FOUND_ROWS not in pending:
            if self.found_rows and CONDITIONS in pending and not best_effort:
                # (the SELECT that restores it uses a table: it would clear them)
                return "FOUND_ROWS() with the warnings of the previous statement"
            out.append(
                b"SELECT SQL_CALC_FOUND_ROWS 1 FROM seq_0_to_%d LIMIT 0" % (self.found_rows - 1)
                if self.found_rows
                else b"SELECT 1 FROM DUAL WHERE 0"
            )
        if Effect.ROW_COUNT in needs and ROW_COUNT in pending:
            if out and not best_effort:
                return "ROW_COUNT() of the previous statement inside a larger statement"
        elif Effect.ROW_COUNT in needs:
            last_is_select = bool(out) and out[-1].startswith(b"SELECT")
            last_is_set = bool(out) and not last_is_select
            if self.row_count == -1:
                if not last_is_select:
                    out.append(b"SELECT 1 FROM DUAL WHERE 0")
            elif self.row_count == 0:
                if not last_is_set:
                    out.append(b"DO 0")
            elif not best_effort:
                return "ROW_COUNT() of the previous statement inside a larger statement"
        if Effect.LASTVAL in needs and self.lastvals and not best_effort:
            return "LASTVAL() / PREVIOUS VALUE FOR inside a larger statement"
        return out


def diagnostics_clean_after(
    clean_before: bool, c: Classification | None, sql: bytes, error: bool, warnings: int
) -> bool:
    """Is a connection's diagnostics area empty after a statement? It holds the
    statement's conditions if it raised any, is emptied by one that uses a table, and
    otherwise keeps what it had."""
    if error or warnings:
        return False
    if c is not None and (Effect.ROUTINE in c.effects or Effect.UNKNOWN in c.effects):
        return False
    if c is not None and c.statements > 1:
        return False
    return clean_before or uses_table(sql)
