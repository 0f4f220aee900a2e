"""The proxy's accounting: every counter the operators read, in one object.

``Accounting`` owns the process-wide counters (``stats``), the taint ledger (which
statements of which user and client program pinned, were refused or changed state
unexplained, and why: bounded per user, with an "other" bucket), per-minute buckets for
a time-window view, the pinned-connection count per user that ``users.NAME.max_pinned``
caps, checkout wait times, and the multiplexing history. The frontend reports events
here (``pin_started``, ``pin_ended``, ``event``, ``checkout``, ``reset``); the admin
surface (tainted_proxy.admin) and the demo read it. Plain data, no I/O.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

#: ledger entries kept per user before new ones go to the "other" bucket
DEFAULT_LEDGER_ENTRIES_PER_USER = 200
OTHER = "(other statements)"
#: per-minute buckets kept for the window view
WINDOW_MINUTES = 60
#: checkout waits kept for the percentiles
WAIT_SAMPLES = 2048
#: (time, client sessions, upstream connections) samples kept, one per interval (s)
HISTORY_SAMPLES = 720
HISTORY_INTERVAL = 5.0

# ledger event kinds besides pins
REFUSED = "refused in statement mode"
UNEXPLAINED = "unexplained state change"
VALUES_REFUSED = "value of the previous statement refused (ERR 1235)"


@dataclass(slots=True)
class ProxyStats:
    accepted: int = 0
    rejected: int = 0
    auth_failures: int = 0
    checkout_timeouts: int = 0
    upstream_lost: int = 0
    # transaction/statement pooling: pin reason -> times a session got pinned for it
    pins: Counter[str] = field(default_factory=Counter)
    pinned_now: int = 0
    emulated: int = 0  # reads of the last statement's values answered by the proxy
    refused_in_statement_mode: int = 0
    values_restored: int = 0  # connections given a session's values before a statement
    values_refused: int = 0  # reads of values that could not be restored (ERR 1235)
    # settings at checkout, as Vitess counts them (Get / DiffSetting / ResetSetting):
    # same key, difference applied, reset first (another session's user variables) and
    # then applied
    checkout_same_settings: int = 0
    checkout_settings_applied: int = 0
    checkout_reset_applied: int = 0
    # connections given back: as they are / reset first / closed
    released: int = 0
    released_reset: int = 0
    released_closed: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class LedgerEntry:
    """One (user, program, mode, statement fingerprint, reason) of the taint ledger."""

    user: str
    program: str
    mode: str
    fingerprint: str
    reason: str
    count: int = 0  # pins started, or events
    pinned_seconds: float = 0.0
    longest_pin: float = 0.0
    first_seen: float = 0.0
    last_seen: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "user": self.user,
            "program": self.program,
            "mode": self.mode,
            "fingerprint": self.fingerprint,
            "reason": self.reason,
            "count": self.count,
            "pinned_seconds": round(self.pinned_seconds, 6),
            "longest_pin_seconds": round(self.longest_pin, 6),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


LedgerKey = tuple[str, str, str, str, str]  # user, program, mode, fingerprint, reason


@dataclass(slots=True)
class PinTicket:
    """What ``pin_started`` gives back, for ``pin_ended``."""

    user: str
    keys: tuple[LedgerKey, ...]
    started: float


class Accounting:
    def __init__(
        self,
        ledger_entries_per_user: int = DEFAULT_LEDGER_ENTRIES_PER_USER,
        clock: object = time.time,
    ) -> None:
        self.stats = ProxyStats()
        self.entries: dict[LedgerKey, LedgerEntry] = {}
        self._entries_per_user: Counter[str] = Counter()
        self.ledger_entries_per_user = ledger_entries_per_user
        self.pinned_by_user: Counter[str] = Counter()
        self.window: deque[tuple[int, Counter[tuple[str, str]]]] = deque(maxlen=WINDOW_MINUTES)
        self.waits: deque[float] = deque(maxlen=WAIT_SAMPLES)
        self.history: deque[tuple[float, int, int]] = deque(maxlen=HISTORY_SAMPLES)
        self._clock = clock

    def now(self) -> float:
        return self._clock()  # type: ignore[operator,no-any-return]

    # -- the ledger ------------------------------------------------------------------
    def _entry(self, user: str, program: str, mode: str, fp: str, reason: str) -> LedgerEntry:
        key = (user, program, mode, fp, reason)
        e = self.entries.get(key)
        if e is None:
            if self._entries_per_user[user] >= self.ledger_entries_per_user:
                key = (user, "", mode, OTHER, reason)
                e = self.entries.get(key)
            if e is None:
                now = self.now()
                e = LedgerEntry(user, key[1], mode, key[3], reason, first_seen=now)
                self.entries[key] = e
                self._entries_per_user[user] += 1
        return e

    def _count(self, e: LedgerEntry) -> None:
        now = self.now()
        e.count += 1
        e.last_seen = now
        minute = int(now // 60)
        if not self.window or self.window[-1][0] != minute:
            self.window.append((minute, Counter()))
        self.window[-1][1][(e.user, e.reason)] += 1

    def pin_started(
        self, user: str, program: str, mode: str, fingerprint: str, reasons: Iterable[str]
    ) -> PinTicket:
        """A session starts holding its connection; every reason is counted."""
        stats = self.stats
        stats.pinned_now += 1
        self.pinned_by_user[user] += 1
        keys = []
        for reason in reasons:
            stats.pins[reason] += 1
            e = self._entry(user, program, mode, fingerprint, reason)
            self._count(e)
            keys.append((e.user, e.program, e.mode, e.fingerprint, e.reason))
        return PinTicket(user, tuple(keys), self.now())

    def pin_ended(self, ticket: PinTicket) -> None:
        self.stats.pinned_now -= 1
        self.pinned_by_user[ticket.user] -= 1
        held = max(0.0, self.now() - ticket.started)
        for key in ticket.keys:
            e = self.entries.get(key)
            if e is not None:
                e.pinned_seconds += held
                e.longest_pin = max(e.longest_pin, held)

    def event(self, user: str, program: str, mode: str, fingerprint: str, kind: str) -> None:
        """A refusal or an unexplained state change, for the ledger."""
        self._count(self._entry(user, program, mode, fingerprint, kind))

    def pinned(self, user: str) -> int:
        return self.pinned_by_user[user]

    # -- pool events ---------------------------------------------------------------------
    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)

    def sample(self, sessions: int, upstream: int) -> None:
        self.history.append((self.now(), sessions, upstream))

    # -- views ---------------------------------------------------------------------------
    @property
    def ledger(self) -> Counter[tuple[str, str, str]]:
        """(user, reason, fingerprint) -> pins started (the demo's view)."""
        out: Counter[tuple[str, str, str]] = Counter()
        for e in self.entries.values():
            out[(e.user, e.reason, e.fingerprint)] += e.count
        return out

    def recent(self, minutes: int = 5) -> Counter[tuple[str, str]]:
        """(user, reason) -> pins and events in the last ``minutes``."""
        since = int(self.now() // 60) - minutes + 1
        out: Counter[tuple[str, str]] = Counter()
        for minute, counts in self.window:
            if minute >= since:
                out.update(counts)
        return out

    def wait_percentiles(self) -> dict[str, float]:
        return percentiles(self.waits)


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    """p50, p90, p99 and the largest of ``samples`` (all 0.0 when there is none)."""
    waits = sorted(samples)
    if not waits:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def pick(q: float) -> float:
        return waits[min(len(waits) - 1, int(q * len(waits)))]

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": waits[-1]}
