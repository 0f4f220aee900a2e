"""The upstream connection pool: a hard global cap, per-user caps, idle connections
grouped by key, and a FIFO wait queue with a timeout.

The decisions are pool.budget's (pure); this module executes them. They are made without
awaiting (so no other task can interleave between a check and its effect); only opening,
resetting and closing connections await. Connections
come back through ``release`` (known clean), ``release_for_reset`` (reset first, in the
pool's own task, so a leaving client never waits for it) or ``discard``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from tainted_proxy.backend.server import ServerConn, UpstreamError
from tainted_proxy.pool import budget as decide
from tainted_proxy.pool.budget import Budget, PoolKey, Want

__all__ = ["Pool", "PoolKey", "PoolStats", "PoolTimeout"]


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
    want: Want | None = None
    passed_over: int = 0  # times a later waiter got a connection first (bounded)


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
        self.budget = Budget(max_connections, per_user_max or {})
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.idle: dict[PoolKey, list[ServerConn]] = {}
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

    @property
    def max_connections(self) -> int:
        return self.budget.max_connections

    @property
    def total(self) -> int:
        """Upstream connections open or being opened."""
        return self.budget.total

    def _reserve(self, key: PoolKey) -> None:
        self.budget.reserve(key)
        self.stats.peak_open = self.budget.peak

    # -- acquire -----------------------------------------------------------------
    async def acquire(
        self,
        key: PoolKey,
        timeout: float,
        want: Want | None = None,
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
        if self.budget.can_open(key):
            self._reserve(key)
            return await self._open(key)
        if not self.waiters:
            if self._evict_idle_for(key):
                self._reserve(key)
                return await self._open(key)
        return await self._wait(key, timeout, want)

    def reclaim(self, conn: ServerConn, want: Want) -> ServerConn | None:
        """The hot path's checkout: ``conn`` (the connection the session used last) when it
        is still the newest idle connection of its key and alive, else None (then
        ``acquire`` decides). O(1): nothing to choose."""
        stack = self.idle.get(conn.key) if conn.key is not None else None  # type: ignore[arg-type]
        if not stack or stack[-1] is not conn or conn.broken or not conn.idle_alive():
            return None
        stack.pop()
        self.in_use.add(conn)
        stats = self.stats
        stats.acquired += 1
        if conn.settings == want[0] and conn.schema == want[1]:
            stats.exact_hits += 1
        else:
            stats.nearest_hits += 1
        return conn

    def _take_idle(
        self, key: PoolKey, want: Want | None = None, prefer: ServerConn | None = None
    ) -> ServerConn | None:
        stack = self.idle.get(key)
        while stack:
            i, exact = decide.choose_idle(stack, want, prefer)
            conn = stack.pop(i)
            # idle_alive(): the server may have closed it while it sat idle (restart,
            # crash, wait_timeout); handing it out would fail the client's first query
            if conn.broken or not conn.idle_alive():
                self._close(conn)
                continue
            if want is not None:
                if exact:
                    self.stats.exact_hits += 1
                else:
                    self.stats.nearest_hits += 1
            self.in_use.add(conn)
            return conn
        return None

    def _evict_idle_for(self, key: PoolKey) -> bool:
        """At the cap with idle connections of other keys: close the oldest one so its
        slot can serve ``key``. True if a slot was freed (and is now usable by key)."""
        victim = decide.eviction_victim(self.idle, key, self.budget)
        if victim is None:
            return False
        self._close(self.idle[victim].pop(0))
        return self.budget.can_open(key)

    async def _open(self, key: PoolKey) -> ServerConn:
        try:
            conn = await self._opener(key)
        except BaseException:
            self.budget.unreserve(key)
            self._hand_out_slot()
            raise
        conn.key = key
        self.stats.opened += 1
        self.in_use.add(conn)
        return conn

    async def _wait(self, key: PoolKey, timeout: float, want: Want | None = None) -> ServerConn:
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
            self.budget.unreserve(waiter.key)
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
        if not self.waiters:
            self.idle.setdefault(key, []).append(conn)
            return
        w, exact_ahead = decide.waiter_for(self.waiters, key, (conn.settings, conn.schema))
        if exact_ahead:
            self.stats.exact_hits += 1
        if isinstance(w, _Waiter):
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

    def _hand_out_slot(self) -> None:
        """A slot was freed: let the first waiter that may use it open a connection."""
        for w in self.waiters:
            if self.budget.can_open(w.key):
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
            self.budget.unreserve(key)
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
                    if decide.expired(c, now, self.idle_timeout, self.max_lifetime):
                        self._close(c)
                        freed = True
                    else:
                        keep.append(c)
                self.idle[key] = keep
            if freed:
                self._hand_out_slot()
