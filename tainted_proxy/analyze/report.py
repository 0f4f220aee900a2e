"""Running the logged connections through the session model and adding it all up.

`Analyzer.feed` takes the log's events one by one (`analyze.logs`); it keeps a
`model.Session` per open connection only (dropped at ``Quit``), per-user counters, and a
bounded table of offending statement shapes. `Analyzer.report` returns the whole result
as one JSON-ready dict, which the text output renders. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import UTC, datetime

from tainted_proxy.analyze.hints import NAMES, hint
from tainted_proxy.analyze.logs import Event
from tainted_proxy.analyze.model import Episode, Session, keyed
from tainted_proxy.state import pins as _pins
from tainted_proxy.state.settings import CHARSET_VARS
from tainted_proxy.taint.classifier import classify_flags
from tainted_proxy.taint.effects import Classification, Effect

MODES = ("session", "transaction", "statement")

#: Below this share of sessions that pin, transaction mode is recommended over session mode.
PIN_THRESHOLD = 0.10
#: Distinct settings vectors kept per user (beyond: counted as "more than").
MAX_VECTORS = 10_000
#: Distinct values kept per user and variable.
MAX_VALUES = 1_000
#: Offending statement shapes kept (the rest are added up in ``other``).
MAX_OFFENDERS = 2_000
#: Statements per episode are counted exactly up to this length.
MAX_LENGTH = 100_000
#: Assumed mean statement duration (ms) for the in-flight allowance of the peaks.
STATEMENT_MS = 10.0
#: Characters of an example statement kept.
EXAMPLE_CHARS = 300

_SETTINGS_LIKE = frozenset((Effect.SETTINGS, Effect.AUTOCOMMIT, Effect.SCHEMA))
_CONNECT = re.compile(
    r"^(?P<user>.*)@(?P<host>\S*) (?:as anonymous )?on (?P<db>\S*)(?: using (?P<how>.*))?$",
    re.DOTALL,
)
UNKNOWN_USER = "(unknown)"
_AUTOCOMMIT_OFF = ("autocommit-off",)
#: Settings that split sub-pools but are reported as transactions, not as settings.
_NOT_SUBPOOL = frozenset(("autocommit",))
#: The variables SET NAMES assigns, reported as one setting, ``NAMES``.
_CHARSET = (*CHARSET_VARS, "collation_connection")


def _when(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


class LengthStats:
    """A distribution of small integers (statements per pin, per transaction)."""

    __slots__ = ("count", "total", "max", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.max = 0
        self.hist: Counter[int] = Counter()

    def add(self, n: int) -> None:
        self.count += 1
        self.total += n
        if n > self.max:
            self.max = n
        self.hist[min(n, MAX_LENGTH)] += 1

    def quantile(self, q: float) -> int:
        if not self.count:
            return 0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for n in sorted(self.hist):
            seen += self.hist[n]
            if seen >= rank:
                return n
        return self.max

    def as_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "median": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "max": self.max,
        }


class Peaks:
    """How many upstream connections one user's sessions need at once, per mode.

    The log is in the order the server received the commands, so how many connections
    are open at once (session mode) and how many sessions hold their connection at once
    (a transaction or a pin, in transaction and statement mode) are counted exactly, in
    log order. What the log cannot tell is how long a statement runs: a session that holds
    nothing still needs a connection while its statement is in flight. The clock has
    one-second resolution, so time is cut into buckets (a run of events with the same
    second); a pooled mode needs, in a bucket, the most sessions that held at once in it
    plus an allowance for the statements of the sessions that held nothing: at most one
    connection per such session (``peak_upper``: as if every statement took the whole
    second), and ``ceil(statements x statement_ms / 1000)`` for ``peak``. The peak is
    the largest bucket. O(1) per event."""

    __slots__ = (
        "second",
        "serial",
        "open",
        "max_open",
        "peak_session",
        "hold",
        "max_hold",
        "free",
        "n_free",
        "peak",
        "peak_upper",
        "peak_hold",
        "statement_ms",
    )

    def __init__(self, statement_ms: float | None = STATEMENT_MS) -> None:
        self.second: int | None = None
        self.serial = 0
        self.open = 0
        self.max_open = 0
        self.peak_session = 0
        # index 0: transaction mode, 1: statement mode
        self.hold = [0, 0]
        self.max_hold = [0, 0]
        self.free = [0, 0]
        self.n_free = [0, 0]
        self.peak = [0, 0]
        self.peak_upper = [0, 0]
        self.peak_hold = [0, 0]
        self.statement_ms = statement_ms

    def at(self, second: int) -> None:
        """The next event happens in ``second``."""
        if second == self.second:
            return
        self.close()
        self.second = second
        self.serial += 1
        self.max_open = self.open
        self.max_hold = self.hold[:]
        self.free = [0, 0]
        self.n_free = [0, 0]

    def close(self) -> None:
        """The bucket ends: fold it into the peaks."""
        for m in (0, 1):
            free = self.free[m]
            # never more than the connections open in the bucket
            upper = min(self.max_hold[m] + free, self.max_open)
            if self.statement_ms is not None:
                free = min(free, math.ceil(self.n_free[m] * self.statement_ms / 1000))
            need = min(self.max_hold[m] + free, self.max_open)
            if need > self.peak[m]:
                self.peak[m] = need
            if upper > self.peak_upper[m]:
                self.peak_upper[m] = upper
            if self.max_hold[m] > self.peak_hold[m]:
                self.peak_hold[m] = self.max_hold[m]

    def opened(self) -> None:
        self.open += 1
        if self.open > self.max_open:
            self.max_open = self.open
            if self.open > self.peak_session:
                self.peak_session = self.open

    def closed(self, s: Session) -> None:
        self.open -= 1
        if s.holds_tx():
            self.hold[0] -= 1
        if s.holds_st():
            self.hold[1] -= 1

    def statement(self, s: Session, m: int, before: bool, after: bool) -> None:
        """A statement of ``s`` ran in mode ``m`` (0 transaction, 1 statement); the
        session held its connection ``before`` it and holds it ``after`` it."""
        if after:
            if not before:
                h = self.hold[m] = self.hold[m] + 1
                if h > self.max_hold[m]:
                    self.max_hold[m] = h
        elif before:
            self.hold[m] -= 1
        else:
            # in flight on a connection the session gives back at once
            self.n_free[m] += 1
            if s.marks[m] != self.serial:
                s.marks[m] = self.serial
                self.free[m] += 1

    def released(self, m: int) -> None:
        """A session stopped holding without a statement (a reset)."""
        self.hold[m] -= 1


class ModeStats:
    """Pins of one user's sessions in one pooled mode."""

    __slots__ = ("pinned_sessions", "reasons", "episodes", "until_end", "seconds_max")

    def __init__(self) -> None:
        self.pinned_sessions = 0
        #: reason -> sessions that pinned for it
        self.reasons: Counter[str] = Counter()
        #: statements per pin (from the pinning statement to the one that ends it)
        self.episodes = LengthStats()
        #: pins that lasted until the session ended
        self.until_end = 0
        self.seconds_max = 0.0

    def as_dict(self, sessions: int, statements: int) -> dict[str, object]:
        return {
            "pinned_sessions": self.pinned_sessions,
            "pinned_share": round(self.pinned_sessions / sessions, 4) if sessions else 0.0,
            "pinned_statement_share": (
                round(self.episodes.total / statements, 4) if statements else 0.0
            ),
            "pin_reasons": dict(self.reasons.most_common()),
            "pinned_statements": self.episodes.as_dict(),
            "pinned_until_session_end": self.until_end,
            "longest_pin_seconds": round(self.seconds_max),
        }


class SettingStats:
    __slots__ = ("sessions", "statements", "values", "capped", "fingerprint")

    def __init__(self) -> None:
        #: sessions that set the variable, and SET statements that did
        self.sessions = 0
        self.statements = 0
        #: the values in force when the user's statements ran (each a sub-pool key)
        self.values: set[str] = set()
        self.capped = False
        #: the first SET statement seen
        self.fingerprint: str | None = None

    def add_value(self, value: str) -> None:
        if value in self.values:
            return
        if len(self.values) >= MAX_VALUES:
            self.capped = True
            return
        self.values.add(value)


class UserStats:
    """Everything counted for one user."""

    __slots__ = (
        "name",
        "sessions",
        "statements",
        "tx",
        "st",
        "transactions",
        "tx_sessions",
        "tx_seconds_max",
        "tx_open_at_end",
        "autocommit_off_sessions",
        "refused_statements",
        "refused_sessions",
        "refused",
        "vectors",
        "vectors_capped",
        "settings",
        "peaks",
    )

    def __init__(self, name: str, statement_ms: float | None = STATEMENT_MS) -> None:
        self.name = name
        self.sessions = 0
        self.statements = 0
        self.tx = ModeStats()
        self.st = ModeStats()
        self.transactions = LengthStats()
        self.tx_sessions = 0
        self.tx_seconds_max = 0.0
        self.tx_open_at_end = 0
        self.autocommit_off_sessions = 0
        self.refused_statements = 0
        self.refused_sessions = 0
        #: why statements were refused in statement mode: effect -> statements
        self.refused: Counter[str] = Counter()
        self.vectors: set[frozenset[tuple[str, str]]] = set()
        self.vectors_capped = False
        self.settings: dict[str, SettingStats] = {}
        self.peaks = Peaks(statement_ms)

    def add_vector(self, v: frozenset[tuple[str, str]]) -> None:
        if v in self.vectors:
            return
        if len(self.vectors) >= MAX_VECTORS:
            self.vectors_capped = True
            return
        self.vectors.add(v)


class Offender:
    __slots__ = ("statements", "sessions", "example")

    def __init__(self, example: str) -> None:
        self.statements = 0
        self.sessions = 0
        self.example = example


class Offenders:
    """Statement shapes that pin or are refused, by (kind, user, reason, fingerprint),
    in bounded memory: past ``capacity`` keys the least counted half is folded into
    ``other`` (per kind and user), so the top entries stay exact unless a log has more
    than ``capacity`` distinct offending shapes."""

    def __init__(self, capacity: int = MAX_OFFENDERS) -> None:
        self.capacity = capacity
        self.entries: dict[tuple[str, str, str, str], Offender] = {}
        self.other: Counter[tuple[str, str]] = Counter()
        self.other_sessions: Counter[tuple[str, str]] = Counter()

    def add(self, key: tuple[str, str, str, str], sql: str, new_session: bool) -> None:
        e = self.entries.get(key)
        if e is None:
            if len(self.entries) >= self.capacity:
                self._prune()
            e = self.entries[key] = Offender(sql[:EXAMPLE_CHARS])
        e.statements += 1
        if new_session:
            e.sessions += 1

    def _prune(self) -> None:
        ranked = sorted(self.entries.items(), key=lambda kv: (kv[1].sessions, kv[1].statements))
        drop = ranked[: len(ranked) - self.capacity // 2]
        for key, e in drop:
            del self.entries[key]
            self.other[key[0], key[1]] += e.statements
            self.other_sessions[key[0], key[1]] += e.sessions


class Analyzer:
    """Feeds a general log's events through the session model."""

    def __init__(
        self,
        *,
        flags: int = 0,
        statement_ms: float | None = STATEMENT_MS,
        pin_threshold: float = PIN_THRESHOLD,
        offenders: int = MAX_OFFENDERS,
    ) -> None:
        self.flags = flags
        self.statement_ms = statement_ms
        self.pin_threshold = pin_threshold
        self.open: dict[int, Session] = {}
        self.users: dict[str, UserStats] = {}
        self.offenders = Offenders(offenders)
        self.events = 0
        self.statements = 0
        self.sessions = 0
        self.failed_logins = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self._sid = 0

    # -- plumbing ----------------------------------------------------------------------------

    def _user(self, name: str) -> UserStats:
        u = self.users.get(name)
        if u is None:
            u = self.users[name] = UserStats(name, self.statement_ms)
        return u

    def _start(self, conn: int, user: str, schema: str | None, t: float | None) -> Session:
        self._sid += 1
        s = Session(self._sid, conn, user, schema, t, self.flags)
        self.open[conn] = s
        u = self._user(user)
        u.peaks.at(_second(t))
        u.peaks.opened()
        return s

    def _session(self, conn: int, user: str | None, t: float | None) -> Session:
        s = self.open.get(conn)
        if s is None:
            # connected before the log starts
            s = self._start(conn, user or UNKNOWN_USER, None, t)
        return s

    # -- events ------------------------------------------------------------------------------

    def feed(self, ev: Event) -> None:
        """One event of the log."""
        self.events += 1
        t = ev.time
        if t is not None:
            if self.first_time is None:
                self.first_time = t
            self.last_time = t
        cmd = ev.command
        if cmd == "Query" or cmd == "Execute":
            self._statement(ev.conn, ev.user, t, ev.argument)
        elif cmd == "Connect":
            self._connect(ev.conn, t, ev.argument)
        elif cmd == "Quit":
            s = self.open.get(ev.conn)
            if s is not None:
                self._end(s, t)
        elif cmd == "Init DB":
            self._session(ev.conn, ev.user, t).use(ev.argument.strip())
        elif cmd == "Change user":
            self._change_user(ev.conn, t, ev.argument)
        elif cmd == "Reset connection":
            self._reset(self._session(ev.conn, ev.user, t), t)
        elif cmd == "Set option":
            s = self._session(ev.conn, ev.user, t)
            self._sticky(s, t, _pins.SET_OPTION, "COM_SET_OPTION", ev.argument)
        elif cmd in ("Prepare", "Close stmt", "Reset stmt", "Fetch", "Long Data", "Field List"):
            self._session(ev.conn, ev.user, t)

    def _connect(self, conn: int, t: float | None, argument: str) -> None:
        m = _CONNECT.match(argument)
        old = self.open.get(conn)
        if m is None:
            # "Access denied for user ...", "Unknown database ...": the login failed
            if old is not None and old.statements == 0:
                self._discard(old)
                self.failed_logins += 1
            return
        if old is not None:
            self._end(old, t)  # a reused thread id (the server restarted)
        self._start(conn, m.group("user") or UNKNOWN_USER, m.group("db"), t)

    def _change_user(self, conn: int, t: float | None, argument: str) -> None:
        m = _CONNECT.match(argument)
        old = self.open.get(conn)
        if m is None:
            return  # failed: the session goes on as it was
        schema = m.group("db")
        if old is not None:
            self._end(old, t)
        self._start(conn, m.group("user") or UNKNOWN_USER, schema, t)

    def _discard(self, s: Session) -> None:
        del self.open[s.conn]
        u = self._user(s.user)
        u.peaks.closed(s)

    # -- statements --------------------------------------------------------------------------

    def _statement(self, conn: int, user: str | None, t: float | None, sql: str) -> None:
        s = self.open.get(conn)
        if s is None:
            s = self._session(conn, user, t)
        u = self.users[s.user]
        peaks = u.peaks
        second = -1 if t is None else int(t)
        if second != peaks.second:
            peaks.at(second)
        s.last_time = t
        self.statements += 1
        u.statements += 1
        c = classify_flags(sql, s.flags)
        tx = s.tx
        was_open = tx.open
        tx_before = was_open or s.tx_reason is not None
        st_before = s.st_reason is not None
        if c is None or not c.effects:
            # clean: no pin changes, no settings; a transaction may start (autocommit=0)
            self._in_force(s, u)
            s.run(c, sql, self.flags)
            if tx.open and not was_open:
                self._begin_transaction(s, u, t)
            peaks.statement(s, 0, tx_before, tx_before or tx.open)
            peaks.statement(s, 1, st_before, st_before)
            return
        autocommit = tx.autocommit
        if not (c.effects & _SETTINGS_LIKE):
            self._in_force(s, u)
        refused = s.run(c, sql, self.flags)
        if c.settings:
            self._settings(s, u, c)
        if autocommit and not tx.autocommit and _AUTOCOMMIT_OFF not in s.seen:
            s.seen.add(_AUTOCOMMIT_OFF)
            u.autocommit_off_sessions += 1
        # transactions (transaction mode)
        if tx.open and not was_open:
            self._begin_transaction(s, u, t)
        elif was_open and not tx.open:
            self._end_transaction(s, u, t)
        # pins
        self._pins(s, u, c, sql, t, "transaction")
        if refused:
            self._refused(s, u, c, sql)
        else:
            self._pins(s, u, c, sql, t, "statement")
        peaks.statement(s, 0, tx_before, s.holds_tx())
        if not refused:
            peaks.statement(s, 1, st_before, s.holds_st())

    def _begin_transaction(self, s: Session, u: UserStats, t: float | None) -> None:
        s.tx_since = s.statements
        s.tx_open_at = t
        if not s.ever_tx:
            s.ever_tx = True
            u.tx_sessions += 1

    def _in_force(self, s: Session, u: UserStats) -> None:
        """A statement runs with the session's settings vector: record it (once per
        change) as a sub-pool key of the user, and each variable's value in force."""
        key = s.key()
        if key is s.recorded:
            return
        s.recorded = key
        u.add_vector(key)
        charset: dict[str, str] = {}
        for name, value in key:
            if name in _CHARSET:
                charset[name] = value
            elif name != "schema":
                self._setting(u, name).add_value(value)
        if charset:
            value = "/".join(charset.get(n, "-") for n in _CHARSET).replace("?", "default")
            self._setting(u, NAMES).add_value(value)

    @staticmethod
    def _setting(u: UserStats, name: str) -> SettingStats:
        st = u.settings.get(name)
        if st is None:
            st = u.settings[name] = SettingStats()
        return st

    def _settings(self, s: Session, u: UserStats, c: Classification) -> None:
        """A statement sets session variables: count it, and the session once."""
        names = [n for n in c.settings if keyed(n) and n not in _CHARSET]
        if any(n in c.settings for n in _CHARSET):
            # SET NAMES / SET CHARACTER SET: one entry for the four variables
            names.append(NAMES)
        for name in names:
            st = self._setting(u, name)
            st.statements += 1
            if st.fingerprint is None:
                st.fingerprint = c.fingerprint
            if name not in s.set_names:
                s.set_names.add(name)
                st.sessions += 1

    def _end_transaction(self, s: Session, u: UserStats, t: float | None) -> None:
        if s.tx_since is None:
            return
        u.transactions.add(s.statements - s.tx_since + 1)
        if t is not None and s.tx_open_at is not None:
            u.tx_seconds_max = max(u.tx_seconds_max, t - s.tx_open_at)
        s.tx_since = None
        s.tx_open_at = None

    def _pins(
        self,
        s: Session,
        u: UserStats,
        c: Classification | None,
        sql: str,
        t: float | None,
        mode: str,
    ) -> None:
        if mode == "transaction":
            reason, ep, stats = s.tx_reason, s.tx_pin, u.tx
        else:
            reason, ep, stats = s.st_reason, s.st_pin, u.st
        if ep is None and reason is not None:
            fp = c.fingerprint if c is not None else sql[:EXAMPLE_CHARS]
            self._pin_started(s, stats, mode, Episode(reason, s.statements, t, fp))
            if mode == "transaction":
                key = ("pin", s.user, reason, fp)
                self.offenders.add(key, sql, key not in s.seen)
                s.seen.add(key)
        elif ep is not None and reason is None:
            self._pin_ended(s, stats, mode, ep, t, until_end=False)

    def _pin_started(self, s: Session, stats: ModeStats, mode: str, ep: Episode) -> None:
        if mode == "transaction":
            s.tx_pin = ep
            if not s.ever_tx_pinned:
                s.ever_tx_pinned = True
                stats.pinned_sessions += 1
        else:
            s.st_pin = ep
            if not s.ever_st_pinned:
                s.ever_st_pinned = True
                stats.pinned_sessions += 1
        key = (mode, ep.reason)
        if key not in s.seen:
            s.seen.add(key)
            stats.reasons[ep.reason] += 1

    def _pin_ended(
        self,
        s: Session,
        stats: ModeStats,
        mode: str,
        ep: Episode,
        t: float | None,
        *,
        until_end: bool,
    ) -> None:
        stats.episodes.add(s.statements - ep.start + 1)
        if until_end:
            stats.until_end += 1
        if t is not None and ep.since is not None:
            stats.seconds_max = max(stats.seconds_max, t - ep.since)
        if mode == "transaction":
            s.tx_pin = None
        else:
            s.st_pin = None

    def _refused(self, s: Session, u: UserStats, c: Classification, sql: str) -> None:
        if Effect.TX_BEGIN in c.effects:
            why = str(Effect.TX_BEGIN)
        elif any(a == "xa_start" for a, _ in c.objects):
            why = str(Effect.XA)
        else:
            why = str(Effect.AUTOCOMMIT)
        u.refused_statements += 1
        u.refused[why] += 1
        if not s.ever_refused:
            s.ever_refused = True
            u.refused_sessions += 1
        key = ("refused", s.user, why, c.fingerprint)
        self.offenders.add(key, sql, key not in s.seen)
        s.seen.add(key)

    def _sticky(self, s: Session, t: float | None, reason: str, what: str, arg: str) -> None:
        """A command that pins for good in both pooled modes (COM_SET_OPTION)."""
        u = self._user(s.user)
        u.peaks.at(_second(t))
        for m, pins in ((0, s.tx_pins), (1, s.st_pins)):
            before = s.holds_tx() if m == 0 else s.holds_st()
            pins.pin_sticky(reason)
            s.refresh()
            self._pins(s, u, None, what, t, MODES[1 + m])
            if not before:
                u.peaks.statement(s, m, False, True)

    def _reset(self, s: Session, t: float | None) -> None:
        """COM_RESET_CONNECTION: the server forgot the session's state."""
        u = self._user(s.user)
        u.peaks.at(_second(t))
        tx_before, st_before = s.holds_tx(), s.holds_st()
        if s.tx.open:
            self._end_transaction(s, u, t)
        if s.tx_pin is not None:
            self._pin_ended(s, u.tx, "transaction", s.tx_pin, t, until_end=False)
        if s.st_pin is not None:
            self._pin_ended(s, u.st, "statement", s.st_pin, t, until_end=False)
        s.tx_pins.clear()
        s.st_pins.clear()
        s.refresh()
        s.tx.open = False
        s.tx.autocommit = True
        s.settings.clear()
        s.vector = None
        if tx_before:
            u.peaks.released(0)
        if st_before:
            u.peaks.released(1)

    def _end(self, s: Session, t: float | None) -> None:
        """The session ends (Quit, Change user, the end of the log)."""
        u = self._user(s.user)
        u.peaks.at(_second(t))
        end = t if t is not None else s.last_time
        if s.tx.open and s.tx_since is not None:
            u.tx_open_at_end += 1
            self._end_transaction(s, u, end)
        if s.tx_pin is not None:
            self._pin_ended(s, u.tx, "transaction", s.tx_pin, end, until_end=True)
        if s.st_pin is not None:
            self._pin_ended(s, u.st, "statement", s.st_pin, end, until_end=True)
        u.sessions += 1
        self.sessions += 1
        u.peaks.closed(s)
        del self.open[s.conn]

    def finish(self) -> None:
        """The end of the log: every connection still open ends there."""
        for s in list(self.open.values()):
            self._end(s, self.last_time)
        for u in self.users.values():
            u.peaks.close()

    # -- the result --------------------------------------------------------------------------

    def recommend(self, u: UserStats) -> dict[str, str]:
        """The pool mode for the user, and why: statement mode when nothing would be
        refused there and nothing pins; transaction mode when pins are rare: the share of
        sessions that pin, or the share of statements that run pinned, is below
        ``pin_threshold`` (few sessions pin, or they pin briefly); session mode
        otherwise (pinned sessions would hold their connections most of the time)."""
        n = u.sessions
        pinned = u.tx.pinned_sessions
        share = pinned / n if n else 0.0
        held = u.tx.episodes.total
        held_share = held / u.statements if u.statements else 0.0
        top = u.tx.reasons.most_common(1)
        reason = top[0][0] if top else "?"
        if u.refused_statements == 0 and pinned == 0:
            return {
                "mode": "statement",
                "reason": "no transactions and no pins: every statement can go back to the "
                "pool at once",
            }
        if u.refused_statements == 1:
            txs = "1 statement would open a transaction (refused in statement mode)"
        elif u.refused_statements:
            txs = (
                f"{u.refused_statements:,} statements would open transactions "
                "(refused in statement mode)"
            )
        else:
            txs = "no transactions"
        pins = (
            f"{pinned:,} of {n:,} sessions ({share:.1%}) pin, mostly for {reason}, for "
            f"{held:,} of {u.statements:,} statements ({held_share:.1%})"
        )
        limit = f"{self.pin_threshold:.0%}"
        if not pinned:
            return {"mode": "transaction", "reason": f"{txs}; no session pins"}
        if share < self.pin_threshold or held_share < self.pin_threshold:
            return {"mode": "transaction", "reason": f"{txs}; {pins}: pins are rare (< {limit})"}
        return {
            "mode": "session",
            "reason": f"{pins}, both at least {limit}: in transaction mode those sessions "
            "would hold their connections most of the time",
        }

    def report(self, top: int = 10) -> dict[str, object]:
        users = sorted(self.users.values(), key=lambda u: (-u.sessions, u.name))
        users = [u for u in users if u.sessions or u.statements]
        out_users = [self._user_dict(u) for u in users]
        span = (
            self.last_time - self.first_time
            if self.first_time is not None and self.last_time is not None
            else None
        )
        return {
            "events": self.events,
            "sessions": self.sessions,
            "statements": self.statements,
            "failed_logins": self.failed_logins,
            "users": out_users,
            "first_time": _when(self.first_time),
            "last_time": _when(self.last_time),
            "seconds": round(span) if span is not None else None,
            "top_offenders": self._top(top),
            "other_offenders": [
                {
                    "kind": kind,
                    "user": name,
                    "statements": n,
                    "sessions": self.offenders.other_sessions[kind, name],
                }
                for (kind, name), n in sorted(self.offenders.other.items())
            ],
            "assumptions": {
                "pin_threshold": self.pin_threshold,
                "statement_ms": self.statement_ms,
            },
        }

    def _user_dict(self, u: UserStats) -> dict[str, object]:
        n = u.sessions
        tx = u.tx.as_dict(n, u.statements)
        tx.update(
            {
                "transaction_sessions": u.tx_sessions,
                "autocommit_off_sessions": u.autocommit_off_sessions,
                "transactions": u.transactions.as_dict(),
                "transactions_open_at_session_end": u.tx_open_at_end,
                "longest_transaction_seconds": round(u.tx_seconds_max),
                "peak_connections": u.peaks.peak[0],
                "peak_connections_upper": u.peaks.peak_upper[0],
                "peak_holding": u.peaks.peak_hold[0],
            }
        )
        st = u.st.as_dict(n, u.statements)
        st.update(
            {
                "refused_sessions": u.refused_sessions,
                "refused_share": round(u.refused_sessions / n, 4) if n else 0.0,
                "refused_statements": u.refused_statements,
                "refused": dict(u.refused.most_common()),
                "peak_connections": u.peaks.peak[1],
                "peak_connections_upper": u.peaks.peak_upper[1],
                "peak_holding": u.peaks.peak_hold[1],
            }
        )
        settings = [
            {
                "name": name,
                "sessions": st_.sessions,
                "statements": st_.statements,
                "values": len(st_.values),
                "values_capped": st_.capped,
                "fingerprint": st_.fingerprint,
            }
            for name, st_ in sorted(u.settings.items(), key=lambda kv: (-kv[1].sessions, kv[0]))
        ]
        return {
            "user": u.name,
            "sessions": n,
            "statements": u.statements,
            "settings_keys": len(u.vectors),
            "settings_keys_capped": u.vectors_capped,
            "settings": settings,
            "modes": {
                "session": {"peak_connections": u.peaks.peak_session},
                "transaction": tx,
                "statement": st,
            },
            "recommended": self.recommend(u),
        }

    def _top(self, n: int) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for (kind, user, reason, fp), e in self.offenders.entries.items():
            total = self.users[user].sessions if user in self.users else None
            found.append(
                {
                    "kind": kind,
                    "user": user,
                    "reason": reason,
                    "fingerprint": fp,
                    "sessions": e.sessions,
                    "statements": e.statements,
                    "example": e.example,
                    "hint": hint(
                        reason,
                        user=user,
                        sessions=e.sessions,
                        total_sessions=total,
                        statements=e.statements,
                        fingerprint=fp,
                    ),
                }
            )
        for u in self.users.values():
            for name, st in u.settings.items():
                if len(st.values) < 2 or name in _NOT_SUBPOOL:
                    continue  # one value: one sub-pool; not an offender
                found.append(
                    {
                        "kind": "settings",
                        "user": u.name,
                        "reason": name,
                        "fingerprint": st.fingerprint,
                        "sessions": st.sessions,
                        "statements": st.statements,
                        "values": len(st.values),
                        "example": None,
                        "hint": hint(
                            Effect.SETTINGS,
                            user=u.name,
                            sessions=st.sessions,
                            total_sessions=u.sessions,
                            statements=st.statements,
                            fingerprint=st.fingerprint,
                            name=name,
                            values=len(st.values),
                        ),
                    }
                )
        found.sort(
            key=lambda d: (-int(d["sessions"]), -int(d["statements"]), str(d["fingerprint"]))  # type: ignore[call-overload]
        )
        return found[: max(n, 0)]


def _second(t: float | None) -> int:
    return -1 if t is None else int(t)
