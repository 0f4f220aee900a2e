"""The upstream connection pool: a hard global cap, per-user caps, idle connections
grouped by key, and a FIFO wait queue with a timeout.

Decisions are made without awaiting (so no other task can interleave between a check
and its effect); only opening, resetting and closing connections await. Connections
come back through ``release`` (known clean), ``release_for_reset`` (reset first, in the
pool's own task, so a leaving client never waits for it) or ``discard``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from tainted_proxy.backend.server import ServerConn, UpstreamError
from tainted_proxy.state.settings import Settings, distance


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Connections are interchangeable only within one key: same upstream login and the
    same protocol capabilities (they change how the server formats responses)."""

    user: str
    capabilities: int
    #: transaction/statement pooling: the server's session trackers are on and the
    #: connection carries a settings vector (session pooling resets instead)
    tracked: bool = False


class PoolTimeout(Exception):
    """No upstream connection became available in time."""


@dataclass(slots=True)
class PoolStats:
    opened: int = 0
    closed: int = 0
    reset: int = 0
    reset_failed: int = 0
    acquired: int = 0
    waited: int = 0
    wait_timeouts: int = 0
    total_wait_seconds: float = 0.0
    max_wait_seconds: float = 0.0
    peak_open: int = 0
    exact_hits: int = 0  # checkouts served by an idle connection with the wanted settings
    nearest_hits: int = 0  # served by the idle connection with the fewest differences
    settings_applied: int = 0  # checkouts that needed a SET / INIT_DB round trip


@dataclass(eq=False, slots=True)
class _Waiter:
    key: PoolKey
    event: trio.Event = field(default_factory=trio.Event)
    conn: ServerConn | None = None
    permit: bool = False
    want: tuple[Settings, str | None] | None = None
    passed_over: int = 0  # times a later waiter got a connection first (bounded)


# waiters handed a connection by settings, ahead of the queue's head (see _waiter_for)
_LOOK_AHEAD = 16
_MAX_PASSED_OVER = 3

Opener = Callable[[PoolKey], Awaitable[ServerConn]]


class Pool:
    def __init__(
        self,
        opener: Opener,
        *,
        max_connections: int,
        per_user_max: dict[str, int] | None = None,
        idle_timeout: float = 300.0,
        max_lifetime: float = 3600.0,
    ) -> None:
        self._opener = opener
        self.max_connections = max_connections
        self.per_user_max = per_user_max or {}
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.idle: dict[PoolKey, list[ServerConn]] = {}
        self.total = 0  # open + opening
        self.by_user: dict[str, int] = {}
        self.in_use: set[ServerConn] = set()
        self.waiters: deque[_Waiter] = deque()
        self.stats = PoolStats()
        self._nursery: trio.Nursery | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background work (resets, janitor) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._janitor)
            task_status.started()
            await trio.sleep_forever()

    def close_all(self) -> None:
        self._closing = True
        for conns in self.idle.values():
            for c in conns:
                self._close(c)
        self.idle.clear()
        for c in list(self.in_use):
            c.close()

    # -- numbers -----------------------------------------------------------------
    @property
    def idle_count(self) -> int:
        return sum(len(v) for v in self.idle.values())

    def _user_cap(self, user: str) -> int:
        return self.per_user_max.get(user, 0) or self.max_connections

    def _can_open(self, key: PoolKey) -> bool:
        return self.total < self.max_connections and self.by_user.get(key.user, 0) < self._user_cap(
            key.user
        )

    def _reserve(self, key: PoolKey) -> None:
        self.total += 1
        self.by_user[key.user] = self.by_user.get(key.user, 0) + 1
        if self.total > self.stats.peak_open:
            self.stats.peak_open = self.total

    def _unreserve(self, key: PoolKey) -> None:
        self.total -= 1
        self.by_user[key.user] -= 1

    # -- acquire -----------------------------------------------------------------
    async def acquire(
        self,
        key: PoolKey,
        timeout: float,
        want: tuple[Settings, str | None] | None = None,
        prefer: ServerConn | None = None,
    ) -> ServerConn:
        """An upstream connection for ``key``: idle (same key; ``prefer`` if it is idle:
        the connection the session used last still holds its per-statement values; else
        with ``want``, the one whose (settings, schema) equal it, else the nearest), new
        (under the caps), or a slot freed by closing an idle connection of another key;
        else wait FIFO. The caller brings the connection to the state it wants
        (``ServerConn.converge``)."""
        self.stats.acquired += 1
        conn = self._take_idle(key, want, prefer)
        if conn is not None:
            return conn
        # Waiters only remain while no slot they may use is free (a freed slot is
        # handed out at once), so opening here never jumps the queue.
        if self._can_open(key):
            self._reserve(key)
            return await self._open(key)
        if not self.waiters:
            if self._evict_idle_for(key):
                self._reserve(key)
                return await self._open(key)
        return await self._wait(key, timeout, want)

    def _take_idle(
        self,
        key: PoolKey,
        want: tuple[Settings, str | None] | None = None,
        prefer: ServerConn | None = None,
    ) -> ServerConn | None:
        stack = self.idle.get(key)
        if stack and prefer is not None and stack[-1] is not prefer and prefer in stack:
            stack.remove(prefer)
            stack.append(prefer)
            if want is not None and prefer.settings == want[0] and prefer.schema == want[1]:
                self.stats.exact_hits += 1
                want = None
        elif stack and want is not None:
            self._settings_first(stack, want)
        while stack:
            conn = stack.pop()  # LIFO: the warmest connection
            # idle_alive(): the server may have closed it while it sat idle (restart,
            # crash, wait_timeout); handing it out would fail the client's first query
            if conn.broken or not conn.idle_alive():
                self._close(conn)
                continue
            self.in_use.add(conn)
            return conn
        return None

    def _settings_first(self, stack: list[ServerConn], want: tuple[Settings, str | None]) -> None:
        """Move the best idle connection for ``want`` to the top of ``stack``: the
        warmest exact match (no round trip), else the one with the fewest differing
        variables (a schema change counts as one). A linear scan: idle stacks are at
        most upstream.max_connections long, and the exact match is usually on top."""
        settings, schema = want
        best = -1
        best_cost = 1 << 30
        for i in range(len(stack) - 1, -1, -1):
            c = stack[i]
            if c.settings == settings and c.schema == schema:
                best = i
                best_cost = 0
                break
            cost = distance(c.settings, settings) + (c.schema != schema)
            if cost < best_cost:
                best, best_cost = i, cost
        if best_cost == 0:
            self.stats.exact_hits += 1
        else:
            self.stats.nearest_hits += 1
        if best != len(stack) - 1:
            stack.append(stack.pop(best))

    def _evict_idle_for(self, key: PoolKey) -> bool:
        """At the cap with idle connections of other keys: close the oldest one so its
        slot can serve ``key``. True if a slot was freed (and is now usable by key)."""
        victim_key = None
        oldest = math.inf
        for k, stack in self.idle.items():
            if k == key or not stack:
                continue
            if self.by_user.get(key.user, 0) >= self._user_cap(key.user) and k.user != key.user:
                continue
            if stack[0].last_used < oldest:
                oldest = stack[0].last_used
                victim_key = k
        if victim_key is None:
            return False
        victim = self.idle[victim_key].pop(0)
        self._close(victim)
        return self._can_open(key)

    async def _open(self, key: PoolKey) -> ServerConn:
        try:
            conn = await self._opener(key)
        except BaseException:
            self._unreserve(key)
            self._hand_out_slot()
            raise
        conn.key = key
        self.stats.opened += 1
        self.in_use.add(conn)
        return conn

    async def _wait(
        self, key: PoolKey, timeout: float, want: tuple[Settings, str | None] | None = None
    ) -> ServerConn:
        waiter = _Waiter(key, want=want)
        self.waiters.append(waiter)
        self.stats.waited += 1
        started = time.monotonic()
        try:
            with trio.move_on_after(timeout):
                await waiter.event.wait()
        except BaseException:
            self._abandon(waiter)
            raise
        waited = time.monotonic() - started
        self.stats.total_wait_seconds += waited
        self.stats.max_wait_seconds = max(self.stats.max_wait_seconds, waited)
        if not waiter.event.is_set():
            self._abandon(waiter)
            self.stats.wait_timeouts += 1
            raise PoolTimeout(
                f"no upstream connection available within {timeout:g}s "
                f"({self.total}/{self.max_connections} open, "
                f"{len(self.in_use)} in use, {len(self.waiters)} clients waiting; "
                "raise upstream.max_connections or pool.checkout_timeout)"
            )
        if waiter.conn is not None:
            return waiter.conn
        return await self._open(key)

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter left (timeout or cancelled): give back whatever it was handed."""
        if not waiter.event.is_set():
            try:
                self.waiters.remove(waiter)
            except ValueError:
                pass
        elif waiter.conn is not None:
            conn, waiter.conn = waiter.conn, None
            self.in_use.discard(conn)
            self._give_back(conn)
        elif waiter.permit:
            waiter.permit = False
            self._unreserve(waiter.key)
            self._hand_out_slot()

    # -- release -----------------------------------------------------------------
    def release(self, conn: ServerConn) -> None:
        """A clean connection comes back."""
        self.in_use.discard(conn)
        conn.last_used = time.monotonic()
        if conn.broken or self._closing:
            self._close(conn)
            self._hand_out_slot()
            return
        self._give_back(conn)

    def release_for_reset(self, conn: ServerConn, schema: str | None) -> None:
        """A connection whose session state is not clean: reset it in the background,
        then release it; close it if the reset fails."""
        self.in_use.discard(conn)
        if conn.broken or self._closing or self._nursery is None:
            self._close(conn)
            self._hand_out_slot()
            return
        self.in_use.add(conn)
        try:
            self._nursery.start_soon(self._reset_then_release, conn, schema)
        except RuntimeError:  # the pool is shutting down
            self.discard(conn)

    async def _reset_then_release(self, conn: ServerConn, schema: str | None) -> None:
        try:
            with trio.fail_after(10):
                await conn.reset(schema)
        except (UpstreamError, OSError, trio.TooSlowError, Exception):
            self.stats.reset_failed += 1
            self.discard(conn)
            return
        self.stats.reset += 1
        self.release(conn)

    def discard(self, conn: ServerConn) -> None:
        """A connection in unknown state: close it, never reuse it."""
        self.in_use.discard(conn)
        self._close(conn)
        self._hand_out_slot()

    def _give_back(self, conn: ServerConn) -> None:
        key = conn.key
        assert isinstance(key, PoolKey)
        w = self._waiter_for(conn, key)
        if w is not None:
            self.waiters.remove(w)
            w.conn = conn
            self.in_use.add(conn)
            w.event.set()
            return
        if self.waiters:
            # someone waits for another key: this connection's slot serves them better
            self._close(conn)
            self._hand_out_slot()
            return
        self.idle.setdefault(key, []).append(conn)

    def _waiter_for(self, conn: ServerConn, key: PoolKey) -> _Waiter | None:
        """The first waiter of ``key`` (FIFO), unless one of the next few wants exactly
        the settings and schema ``conn`` carries: then that one, so the hand-off costs
        no SET round trip. A waiter is passed over at most _MAX_PASSED_OVER times, so
        nobody starves."""
        first: _Waiter | None = None
        looked = 0
        state = (conn.settings, conn.schema)
        for w in self.waiters:
            if w.key != key:
                continue
            if first is None:
                first = w
                if w.want is None or w.want == state or w.passed_over >= _MAX_PASSED_OVER:
                    return w
            elif w.want == state:
                first.passed_over += 1
                self.stats.exact_hits += 1
                return w
            looked += 1
            if looked >= _LOOK_AHEAD:
                break
        return first

    def _hand_out_slot(self) -> None:
        """A slot was freed: let the first waiter that may use it open a connection."""
        for w in self.waiters:
            if self._can_open(w.key):
                self.waiters.remove(w)
                self._reserve(w.key)
                w.permit = True
                w.event.set()
                return
        # waiters blocked by a per-user cap might still be served by closing an idle one
        for w in self.waiters:
            if self._evict_idle_for(w.key):
                self.waiters.remove(w)
                self._reserve(w.key)
                w.permit = True
                w.event.set()
                return

    def _close(self, conn: ServerConn) -> None:
        key = conn.key
        conn.close()
        self.stats.closed += 1
        if isinstance(key, PoolKey):
            self._unreserve(key)
            conn.key = None  # never counted twice

    # -- janitor -----------------------------------------------------------------
    async def _janitor(self) -> None:
        while True:
            await trio.sleep(1.0)
            now = time.monotonic()
            freed = False
            for key, stack in list(self.idle.items()):
                keep = []
                for c in stack:
                    if (
                        c.broken
                        or (self.idle_timeout and now - c.last_used > self.idle_timeout)
                        or (self.max_lifetime and now - c.created_at > self.max_lifetime)
                    ):
                        self._close(c)
                        freed = True
                    else:
                        keep.append(c)
                self.idle[key] = keep
            if freed:
                self._hand_out_slot()
