"""The upstream connection pool: a hard global cap, per-user caps, idle connections
grouped by key, and a FIFO wait queue with a timeout.

The decisions are pool.budget's (pure); this module executes them. They are made without
awaiting (so no other task can interleave between a check and its effect); only opening,
resetting, closing and health-checking connections await. Connections
come back through ``release`` (known clean), ``release_for_reset`` (reset first, in the
pool's own task, so a leaving client never waits for it) or ``discard``.

A closed connection keeps its slot until the server has let go of it (``_close``): the
server counts a connection until it has ended the session, so a replacement opened at
once would make it see one more than ``max_connections``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from tainted_proxy.backend.server import ServerConn, UpstreamError
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.pool import budget as decide
from tainted_proxy.pool.budget import Budget, PoolKey, Want
from tainted_proxy.pool.shared import SharedBudget
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import com_ping

__all__ = ["Pool", "PoolKey", "PoolStats", "PoolTimeout"]

log = logging.getLogger("tainted_proxy.pool")

#: how long a closing connection may keep its slot waiting for the server to end the
#: session; past it the slot is freed anyway (a server busy with a statement reads the
#: quit only when the statement ends)
CLOSE_WAIT = 1.0
#: after the server closed the socket: MariaDB counts the connection out a moment later
#: (its thread cleans up first); a replacement opened sooner was measured to make it
#: count cap + 1 (Max_used_connections), none with 2 ms or more
CLOSE_GRACE = 0.01
#: how long a health check's COM_PING may take before the connection counts as dead
PING_TIMEOUT = 2.0
JANITOR_EVERY = 1.0
# how often the expiry task ends waits past pool.checkout_timeout (at most this late)
EXPIRE_TICK = 0.05
#: several workers (pool.shared): how often a worker with clients waiting looks for a
#: slot another worker freed, and how often the others look whether someone is short
SHARE_POLL_WAITING = 0.005
SHARE_POLL = 0.02


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
    close_waits: int = 0  # closes that kept their slot until the server had let go
    close_wait_timeouts: int = 0  # ... and freed it after CLOSE_WAIT without that
    health_checks: int = 0  # idle connections checked (pool.health_check_idle)
    dead_idle: int = 0  # ... found dead


@dataclass(eq=False, slots=True)
class _Waiter:
    """A checkout in the queue. It parks its task directly (no trio.Event, no cancel
    scope of its own: with 2,000 clients on 20 connections every statement waits, and
    those were a fifth of the proxy's time); the pool's ``_expire`` task ends it at its
    deadline."""

    key: PoolKey
    deadline: float = math.inf
    conn: ServerConn | None = None
    permit: bool = False
    want: Want | None = None
    passed_over: int = 0  # times a later waiter got a connection first (bounded)
    #: handed a connection or a slot (or timed out: ``expired``), out of the queue
    done: bool = False
    expired: bool = False
    task: Task | None = None  # parked, to be rescheduled

    def wake(self) -> None:
        self.done = True
        task, self.task = self.task, None
        if task is not None:
            reschedule(task)

    def abort(self, _: object) -> Abort:
        self.task = None
        return Abort.SUCCEEDED


def _by_deadline(w: _Waiter) -> float:
    return w.deadline


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
        health_check_idle: float = 30.0,
        close_wait: float = CLOSE_WAIT,
        budget: SharedBudget | None = None,
    ) -> None:
        self._opener = opener
        #: with several workers, the budget they share (``_share`` runs then); else the
        #: in-process one, and nothing of the sharing runs
        self.budget: Budget | SharedBudget = (
            budget if budget is not None else Budget(max_connections, per_user_max or {})
        )
        self.shared = budget
        #: closed for other workers' waiters, slot not yet freed (``shared`` only)
        self.yielding: set[ServerConn] = set()
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.health_check_idle = health_check_idle
        self.close_wait = close_wait
        self.idle: dict[PoolKey, list[ServerConn]] = {}
        self.in_use: set[ServerConn] = set()
        #: closed, still holding their slots until the server has let go of them
        self.leaving: set[ServerConn] = set()
        #: the idle connection the janitor is health-checking (out of ``idle`` meanwhile)
        self.checking: ServerConn | None = None
        self.waiters: deque[_Waiter] = deque()
        #: parked waits in arrival order, for ``_expire`` (done ones dropped lazily)
        self._deadlines: deque[_Waiter] = deque()
        self._deadlines_unordered = False
        self._expiring = False
        self.stats = PoolStats()
        self._nursery: trio.Nursery | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background work (resets, janitor) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._janitor)
            if self.shared is not None:
                nursery.start_soon(self._share, self.shared)
            task_status.started()
            await trio.sleep_forever()

    def close_all(self) -> None:
        """Shutdown: close everything at once, without waiting for the server."""
        self._closing = True
        for conns in self.idle.values():
            for c in conns:
                self._close(c)
        self.idle.clear()
        for c in list(self.in_use) + list(self.leaving):
            c.close()
        if self.checking is not None:
            self.checking.close()

    # -- numbers -----------------------------------------------------------------
    @property
    def idle_count(self) -> int:
        return sum(len(v) for v in self.idle.values())

    @property
    def max_connections(self) -> int:
        return self.budget.max_connections

    @property
    def total(self) -> int:
        """Upstream connections open, being opened, or closed and not yet let go of by
        the server (all count against the cap)."""
        return self.budget.total

    def _try_reserve(self, key: PoolKey) -> bool:
        if not self.budget.try_reserve(key):
            return False
        self.stats.peak_open = self.budget.peak
        return True

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
        # handed out at once), so opening here never jumps the queue. Another worker's
        # freed slot is seen only by looking: the waiters look first.
        if self.shared is not None and self.waiters:
            self._grant_free_slots()
        if self._try_reserve(key):
            return await self._open(key)
        # At the cap: queue first, then close idle connections of other keys for the
        # queue (``_hand_out_slot``); their slots come free when the server has let go
        # of them, and go to the queue in order.
        return await self._wait(key, timeout, want)

    def reclaim(self, conn: ServerConn, want: Want) -> ServerConn | None:
        """The hot path's checkout: ``conn`` (the connection the session used last) when it
        is idle and alive, else None (then ``acquire`` decides). Nothing to choose: the
        stack is searched by identity in C (``choose_idle`` walks it in Python)."""
        stack = self.idle.get(conn.key) if conn.key is not None else None  # type: ignore[arg-type]
        if not stack or conn.broken:
            return None
        if stack[-1] is conn:
            stack.pop()
        elif conn in stack:  # (ServerConn compares by identity)
            stack.remove(conn)
        else:
            return None
        if not conn.idle_alive():
            if self._close(conn):
                self._hand_out_slot()
            return None
        self.stats.acquired += 1
        self._taken(conn, conn.settings == want[0] and conn.schema == want[1])
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
                if self._close(conn):
                    self._hand_out_slot()
                continue
            self._taken(conn, None if want is None else exact)
            return conn
        return None

    def _taken(self, conn: ServerConn, exact: bool | None) -> None:
        """An idle connection goes to a checkout; ``exact``: it carried the wanted
        settings and schema (None: nothing was wanted)."""
        self.in_use.add(conn)
        if exact is not None:
            if exact:
                self.stats.exact_hits += 1
            else:
                self.stats.nearest_hits += 1

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
        started = time.monotonic()
        waiter = _Waiter(key, deadline=trio.current_time() + timeout, want=want)
        self.waiters.append(waiter)
        self.stats.waited += 1
        self._hand_out_slot()
        if self.shared is not None:
            self._publish(self.shared)
        if not waiter.done:
            waiter.task = current_task()
            try:
                if self._nursery is None:  # outside ``run`` (unit tests): a scope of its own
                    with trio.move_on_after(timeout):
                        await wait_task_rescheduled(waiter.abort)
                else:
                    deadlines = self._deadlines
                    if deadlines and waiter.deadline < deadlines[-1].deadline:
                        self._deadlines_unordered = True  # (the timeout was changed)
                    deadlines.append(waiter)
                    if not self._expiring:
                        self._nursery.start_soon(self._expire)  # (raises at shutdown)
                        self._expiring = True
                    await wait_task_rescheduled(waiter.abort)
            except BaseException:
                self._abandon(waiter)
                raise
        waited = time.monotonic() - started
        self.stats.total_wait_seconds += waited
        self.stats.max_wait_seconds = max(self.stats.max_wait_seconds, waited)
        if not waiter.done or waiter.expired:
            self._abandon(waiter)
            self.stats.wait_timeouts += 1
            raise PoolTimeout(
                f"no upstream connection available within {timeout:g}s "
                f"({self.budget.cap_text()}, "
                f"{len(self.in_use)} in use, {len(self.waiters)} clients waiting; "
                "raise upstream.max_connections or pool.checkout_timeout)"
            )
        conn, waiter.conn = waiter.conn, None  # (the expiry queue may hold it a while)
        if conn is not None:
            return conn
        return await self._open(key)

    async def _expire(self) -> None:
        """End the waits whose deadline passed, every EXPIRE_TICK seconds while any wait
        (a timeout fires at most that late). ``_deadlines`` is in arrival order, which is
        deadline order unless a reload changed the timeout: then it is sorted once."""
        try:
            while self._deadlines:
                await trio.sleep(EXPIRE_TICK)
                if self._deadlines_unordered or len(self._deadlines) > 2 * len(self.waiters) + 1024:
                    # (also drops the done ones a long wait at the head keeps behind it)
                    live = sorted((w for w in self._deadlines if not w.done), key=_by_deadline)
                    self._deadlines = deque(live)
                    self._deadlines_unordered = False
                deadlines = self._deadlines
                now = trio.current_time()
                while deadlines and (deadlines[0].done or deadlines[0].deadline <= now):
                    w = deadlines.popleft()
                    if not w.done:
                        self._expire_one(w)
        finally:
            self._expiring = False

    def _expire_one(self, w: _Waiter) -> None:
        try:
            self.waiters.remove(w)
        except ValueError:
            pass
        w.expired = True
        w.wake()

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter left (timeout or cancelled): give back whatever it was handed."""
        if not waiter.done or waiter.expired:
            waiter.done = True  # (the expiry task drops it)
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
            if self.shared is not None and self._yield_on_release(self.shared, conn):
                return
            if w is self.waiters[0]:
                self.waiters.popleft()  # FIFO: nearly always the head (no O(n) remove)
            else:
                self.waiters.remove(w)
            w.conn = conn
            self.in_use.add(conn)
            w.wake()
            return
        if self.waiters:
            # someone waits for another key: this connection's slot serves them better
            self._close(conn)
            self._hand_out_slot()
            return
        self.idle.setdefault(key, []).append(conn)

    def _hand_out_slot(self) -> None:
        """A slot was freed or a waiter came: let the waiters that may use a free slot
        open a connection, in order; for those still blocked, close idle connections of
        other keys, but no more than the closes under way leave short."""
        self._grant_free_slots()
        if not self.waiters or not any(self.idle.values()):
            # nothing idle to close for the queue (the usual case at the cap): this runs
            # for every waiter that arrives, so a walk of the queue here made a queue of
            # 2,000 clients cost 2,000 steps a statement
            return
        for w in list(self.waiters):
            if not decide.room_wanted(len(self.waiters), len(self.leaving)):
                return
            if w.done:  # granted a slot above: out of the queue (O(1), not `in`)
                continue
            victim = decide.eviction_victim(self.idle, w.key, self.budget)
            if victim is not None and self._close(self.idle[victim].pop(0)):
                self._grant_free_slots()

    def _grant_free_slots(self) -> None:
        if self.budget.total >= self.budget.max_connections:
            return  # at the global cap nobody may open: no walk of a long queue
        for w in list(self.waiters):
            if self._try_reserve(w.key):
                self.waiters.remove(w)
                w.permit = True
                w.wake()

    def _close(self, conn: ServerConn) -> bool:
        """Close ``conn``; True when its slot is free now. A connection the server may
        still count keeps its slot until the server has let go (``_let_go``, which then
        hands the slot out); so does nothing else here: callers hand out what is free.
        At shutdown, or outside ``run``, the slot is freed at once."""
        self.stats.closed += 1
        if not isinstance(conn.key, PoolKey):
            conn.close()
            return True
        if not conn.quit_nowait() or self._closing or self._nursery is None:
            self._free(conn)
            return True
        try:
            self._nursery.start_soon(self._let_go, conn)
        except RuntimeError:  # the pool's nursery is closing
            self._free(conn)
            return True
        self.leaving.add(conn)
        self.stats.close_waits += 1
        return False

    async def _let_go(self, conn: ServerConn) -> None:
        try:
            with trio.move_on_after(self.close_wait) as scope:
                await conn.wait_server_gone()
                # MariaDB closes the socket first and only then ends the thread and
                # counts the connection out; a replacement connecting in between is
                # counted on top of it
                await trio.sleep(CLOSE_GRACE)
            if scope.cancelled_caught:
                self.stats.close_wait_timeouts += 1
                log.warning(
                    "event=upstream_close_slow upstream_thread=%s user=%s waited=%gs: its "
                    "slot is freed anyway; the server may count it until it ends the session",
                    conn.thread_id,
                    conn.user,
                    self.close_wait,
                )
        finally:
            self.leaving.discard(conn)
            self._free(conn)
            self._hand_out_slot()

    def _free(self, conn: ServerConn) -> None:
        conn.close()
        key = conn.key
        if isinstance(key, PoolKey):
            self.budget.unreserve(key)
            conn.key = None  # never counted twice
        if self.yielding and conn in self.yielding:
            self.yielding.discard(conn)
            if self.shared is not None:
                self._publish(self.shared)

    # -- several workers (pool.shared) --------------------------------------------------
    async def _share(self, shared: SharedBudget) -> None:
        """Look at the other workers: take slots they freed for this worker's waiters,
        say how many of them no slot serves, and close idle connections for theirs.
        Polled: a few words of shared memory, every SHARE_POLL_WAITING seconds while
        clients wait here, every SHARE_POLL otherwise."""
        try:
            while True:
                await trio.sleep(SHARE_POLL_WAITING if self.waiters else SHARE_POLL)
                if self._closing:
                    continue
                # a slot another worker freed: one unlocked read first, the lock only
                # when there is room
                if self.waiters and shared.global_total() < shared.max_connections:
                    self._grant_free_slots()
                self._publish(shared)
                self._yield_idle(shared)
        finally:
            shared.publish(short=0, idle=0, waiting=0, yielding=0)

    def _publish(self, shared: SharedBudget) -> None:
        shared.publish(
            short=decide.short_of_slots(len(self.waiters), len(self.leaving)),
            idle=self.idle_count,
            waiting=len(self.waiters),
            yielding=len(self.yielding),
        )

    def _yield_idle(self, shared: SharedBudget) -> None:
        """Other workers' clients are short of a slot: close this worker's oldest idle
        connections for them (their slots come free once the server has let go)."""
        v = shared.view()
        n = decide.idle_to_yield(v.others_short, v.yielding, self.idle_count)
        for _ in range(n):
            key = min(
                (k for k, st in self.idle.items() if st), key=lambda k: self.idle[k][0].last_used
            )
            conn = self.idle[key].pop(0)
            self.yielding.add(conn)
            if self._close(conn):
                self.yielding.discard(conn)
        if n:
            self._publish(shared)

    def _yield_on_release(self, shared: SharedBudget, conn: ServerConn) -> bool:
        """``conn`` came back and a waiter here could take it: close it instead when
        another worker is short and this one holds more than its fair share."""
        v = shared.view()
        share = decide.fair_share(self.max_connections, v.demanding)
        if not decide.yield_on_release(v.others_short, v.yielding, self.total, share):
            return False
        self.yielding.add(conn)
        if self._close(conn):
            self.yielding.discard(conn)
            self._hand_out_slot()
        self._publish(shared)
        return True

    # -- janitor -----------------------------------------------------------------
    async def _janitor(self) -> None:
        while True:
            await trio.sleep(JANITOR_EVERY)
            self._expire_idle(time.monotonic())
            if self.health_check_idle:
                await self._check_idle(time.monotonic())

    def _expire_idle(self, now: float) -> None:
        """Close idle connections past idle_timeout or max_lifetime. Only ``idle`` is
        looked at: a checked-out connection is never closed under its user (it expires
        once it is back)."""
        freed = False
        for key, stack in list(self.idle.items()):
            keep = []
            for c in stack:
                if decide.expired(c, now, self.idle_timeout, self.max_lifetime):
                    freed = self._close(c) or freed
                else:
                    keep.append(c)
            self.idle[key] = keep
        if freed:
            self._hand_out_slot()

    async def _check_idle(self, now: float) -> None:
        """Health-check, one at a time, the idle connections unchecked for
        health_check_idle seconds, so the server's KILL, wait_timeout or a dead
        network is found before a client is handed the connection."""
        for conn in decide.due_for_check(self.idle, now, self.health_check_idle):
            key = conn.key
            stack = self.idle.get(key) if isinstance(key, PoolKey) else None
            if not stack or conn not in stack or self._closing:
                continue  # checked out (or closed) while an earlier one was checked
            # out of idle while it is checked, so nobody is handed it mid-ping; back
            # through _give_back afterwards, which serves whoever started waiting
            stack.remove(conn)
            self.checking = conn
            try:
                why = await self._ping(conn)
            except BaseException:
                self.checking = None
                self._free(conn)
                raise
            self.checking = None
            self.stats.health_checks += 1
            if self._closing:
                self._free(conn)
                return
            if why is None:
                conn.checked_at = time.monotonic()
                self._give_back(conn)
                continue
            self.stats.dead_idle += 1
            log.warning(
                "event=upstream_dead_idle upstream_thread=%s user=%s idle=%.0fs why=%s",
                conn.thread_id,
                conn.user,
                time.monotonic() - conn.last_used,
                why,
            )
            self._close(conn)
            self._hand_out_slot()

    async def _ping(self, conn: ServerConn) -> str | None:
        """None when ``conn`` answers a COM_PING in time, else why not."""
        if not conn.idle_alive():
            return "closed by the server"
        try:
            with trio.fail_after(PING_TIMEOUT):
                await conn.command_ok(com_ping())
        except trio.TooSlowError:
            return f"no answer to COM_PING within {PING_TIMEOUT:g}s"
        except (UpstreamError, OSError, ConnectionClosed, ProtocolError) as exc:
            return f"COM_PING failed: {exc}"
        # the proxy's own command ran here: the session values on it are no one's now
        conn.values_owner = None
        return None
