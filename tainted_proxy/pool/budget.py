"""The pool's decisions, pure: how many upstream connections may exist (the global cap and
the per-login caps), which idle connection serves a checkout, which idle one to close to
free a slot, which waiter a returned connection goes to, and when an idle one expires.

pool.pool executes them (opens, waits, wakes, closes). Nothing here awaits, sleeps,
peeks at a socket or touches an Event, so every choice is unit-tested in microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from tainted_proxy.state.settings import Settings, distance

#: waiters handed a connection by settings, ahead of the queue's head (``waiter_for``)
LOOK_AHEAD = 16
MAX_PASSED_OVER = 3

Want = tuple[Settings, str | None]  # (settings vector, schema)


class PoolKey(NamedTuple):
    """Connections are interchangeable only within one key: same upstream login and the
    same protocol capabilities (they change how the server formats responses). (A named
    tuple: hashed and compared in C on every checkout and release.)"""

    user: str
    capabilities: int
    #: transaction/statement pooling: the server's session trackers are on and the
    #: connection carries a settings vector (session pooling resets instead)
    tracked: bool = False


class Candidate(Protocol):
    """What a choice reads of a connection."""

    settings: Settings
    schema: str | None
    last_used: float
    created_at: float
    checked_at: float
    broken: bool

    @property
    def pending_for(self) -> object: ...


class Waiting(Protocol):
    key: PoolKey
    want: Want | None
    passed_over: int


@dataclass(slots=True)
class Budget:
    """Upstream connections counted against the caps: open plus being opened."""

    max_connections: int
    per_user_max: dict[str, int] = field(default_factory=dict)
    total: int = 0
    by_user: dict[str, int] = field(default_factory=dict)
    peak: int = 0

    def user_cap(self, user: str) -> int:
        return self.per_user_max.get(user, 0) or self.max_connections

    def can_open(self, key: PoolKey) -> bool:
        return self.total < self.max_connections and self.by_user.get(key.user, 0) < self.user_cap(
            key.user
        )

    def try_reserve(self, key: PoolKey) -> bool:
        """Reserve a slot for ``key`` if the caps allow it (one call, so a budget shared
        between processes can check and count under one lock: pool.shared)."""
        if not self.can_open(key):
            return False
        self.reserve(key)
        return True

    def cap_text(self) -> str:
        """The count against the cap, for error messages."""
        return f"{self.total}/{self.max_connections} open"

    def reserve(self, key: PoolKey) -> None:
        self.total += 1
        self.by_user[key.user] = self.by_user.get(key.user, 0) + 1
        self.peak = max(self.peak, self.total)

    def unreserve(self, key: PoolKey) -> None:
        self.total -= 1
        self.by_user[key.user] -= 1

    def user_full(self, user: str) -> bool:
        return self.by_user.get(user, 0) >= self.user_cap(user)


def choose_idle(
    stack: Sequence[Candidate], want: Want | None, prefer: object | None
) -> tuple[int, bool]:
    """Which idle connection of a stack serves a checkout: ``prefer`` if it is there (the
    connection the session used last still holds its per-statement values), else the
    warmest whose settings and schema equal ``want``, else the one with the fewest
    differing variables (a schema change counts as one), else the warmest. Returns
    (index, exact: no round trip needed). ``stack`` is not empty."""
    top = len(stack) - 1
    if prefer is not None:
        for i in range(top, -1, -1):
            if stack[i] is prefer:
                c = stack[i]
                return i, want is None or (c.settings == want[0] and c.schema == want[1])
    if want is None:
        return top, True
    settings, schema = want
    best = top
    best_cost = 1 << 30
    for i in range(top, -1, -1):
        c = stack[i]
        if c.settings == settings and c.schema == schema:
            return i, True
        cost = distance(c.settings, settings) + (c.schema != schema)
        if cost < best_cost:
            best, best_cost = i, cost
    return best, False


def eviction_victim(
    idle: Mapping[PoolKey, Sequence[Candidate]], key: PoolKey, budget: Budget
) -> PoolKey | None:
    """At the cap: the key of the idle stack whose oldest connection should be closed so
    that its slot can serve ``key`` (never one of ``key`` itself; only the same login's
    when that login is at its own cap)."""
    victim: PoolKey | None = None
    oldest = math.inf
    own_full = budget.user_full(key.user)
    for k, stack in idle.items():
        if k == key or not stack:
            continue
        if own_full and k.user != key.user:
            continue
        if stack[0].last_used < oldest:
            oldest = stack[0].last_used
            victim = k
    return victim


def waiter_for(
    waiters: Iterable[Waiting], key: PoolKey, state: Want
) -> tuple[Waiting | None, bool]:
    """Who gets a connection of ``key`` carrying ``state``: the first waiter of ``key``
    (FIFO), unless one of the next few wants exactly that state (then that one: the
    hand-off costs no SET round trip; the head is passed over at most MAX_PASSED_OVER
    times, so nobody starves). Returns (waiter or None, it was an exact match ahead)."""
    first: Waiting | None = None
    looked = 0
    for w in waiters:
        if w.key != key:
            continue
        if first is None:
            first = w
            if w.want is None or w.want == state or w.passed_over >= MAX_PASSED_OVER:
                return w, False
        elif w.want == state:
            first.passed_over += 1
            return w, True
        looked += 1
        if looked >= LOOK_AHEAD:
            break
    return first, False


def expired(c: Candidate, now: float, idle_timeout: float, max_lifetime: float) -> bool:
    """Should the janitor close this idle connection?"""
    return (
        c.broken
        or bool(idle_timeout and now - c.last_used > idle_timeout)
        or bool(max_lifetime and now - c.created_at > max_lifetime)
    )


def room_wanted(waiting: int, leaving: int) -> bool:
    """Should another idle connection be closed for the wait queue? Every connection
    still closing (``leaving``) hands its slot to the queue when the server has let go
    of it, so only waiters beyond those are short of one."""
    return waiting > leaving


C = TypeVar("C", bound=Candidate)


def due_for_check(idle: Mapping[PoolKey, Sequence[C]], now: float, every: float) -> list[C]:
    """Idle connections the janitor should health-check now: idle and unchecked for
    ``every`` seconds, the longest unchecked first. Not one that holds a session's
    unread per-statement values (``pending_for``): any command of the proxy's own
    would overwrite them, and its next holder reads them first anyway."""
    due = [
        c
        for stack in idle.values()
        for c in stack
        if c.pending_for is None and now - max(c.last_used, c.checked_at) >= every
    ]
    due.sort(key=lambda c: max(c.last_used, c.checked_at))
    return due


# -- several worker processes sharing one budget (pool.shared executes these) -----------


def fair_share(cap: int, demanding: int) -> int:
    """A worker's share of the global cap while ``demanding`` workers have clients
    waiting (rounded up, so the shares cover the whole cap)."""
    return -(-cap // max(demanding, 1))


def may_reserve(
    total: int,
    cap: int,
    user_count: int,
    user_cap: int,
    mine: int,
    others_short: int,
    demanding: int,
) -> bool:
    """May a worker holding ``mine`` slots take one more? Under the global and per-login
    caps (counted over all workers), and, while other workers have clients short of a
    slot (``others_short``), only below its fair share among the ``demanding`` workers
    (itself included): a worker already holding its share leaves free slots to the
    others, so none starves while another grows."""
    if total >= cap or user_count >= user_cap:
        return False
    return others_short <= 0 or mine < fair_share(cap, demanding)


def short_of_slots(waiting: int, leaving: int) -> int:
    """Clients of a worker that no slot on its way will serve: those it asks the other
    workers to make room for (each of its closes under way frees one for it)."""
    return max(0, waiting - leaving)


def idle_to_yield(others_short: int, yielding: int, idle: int) -> int:
    """How many of its idle connections a worker closes for other workers' waiters:
    what they are short of, minus the closes already under way for them (any worker's),
    at most what it holds idle."""
    return max(0, min(idle, others_short - yielding))


def yield_on_release(others_short: int, yielding: int, mine: int, share: int) -> bool:
    """A connection comes back while this worker has waiters of its own: close it for
    another worker's waiter instead, when that worker is short, no close under way
    covers it, and this worker holds more than its fair share."""
    return others_short > yielding and mine > share
