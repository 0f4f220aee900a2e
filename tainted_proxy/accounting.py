"""The proxy's accounting: every counter the operators read, in one object.

``Accounting`` owns the process-wide counters (``stats``), the taint ledger (which
statements of which user pinned, and why: bounded, with an "other" bucket per user) and
the pinned-connection count per user that ``users.NAME.max_pinned`` caps. The frontend
reports events here (``pin_started``, ``pin_ended``, ``refused`` ...); the admin surface
and the demo read it. Plain data, no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: ledger entries kept per user before new fingerprints go to the "other" bucket
DEFAULT_LEDGER_ENTRIES_PER_USER = 200
OTHER = "(other statements)"


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


class Accounting:
    def __init__(self, ledger_entries_per_user: int = DEFAULT_LEDGER_ENTRIES_PER_USER) -> None:
        self.stats = ProxyStats()
        # (user, pin reason, statement fingerprint) -> pins started
        self.ledger: Counter[tuple[str, str, str]] = Counter()
        self._ledger_entries: Counter[str] = Counter()
        self.ledger_entries_per_user = ledger_entries_per_user
        self.pinned_by_user: Counter[str] = Counter()

    def pin_started(self, user: str, reason: str, fingerprint: str) -> None:
        stats = self.stats
        stats.pinned_now += 1
        stats.pins[reason] += 1
        self.pinned_by_user[user] += 1
        key = (user, reason, fingerprint)
        if key not in self.ledger:
            if self._ledger_entries[user] >= self.ledger_entries_per_user:
                key = (user, reason, OTHER)
            else:
                self._ledger_entries[user] += 1
        self.ledger[key] += 1

    def pin_ended(self, user: str) -> None:
        self.stats.pinned_now -= 1
        self.pinned_by_user[user] -= 1

    def pinned(self, user: str) -> int:
        return self.pinned_by_user[user]
