"""Pool decisions: caps, idle reuse, FIFO waiting, timeouts, eviction, discards.

The pool's opener is replaced by one that makes unconnected ServerConn objects: this
tests the pool's bookkeeping, not a database (integration tests cover that)."""

from __future__ import annotations

import socket

import pytest
import trio

from tainted_proxy.backend.server import ServerConn
from tainted_proxy.net import Conn
from tainted_proxy.pool import pool as pool_mod
from tainted_proxy.pool.budget import Budget
from tainted_proxy.pool.pool import Pool, PoolKey, PoolTimeout

A = PoolKey("app", 0)
B = PoolKey("app", 1)
OTHER_USER = PoolKey("reporting", 0)


def make_pool(cap: int = 2, **kw) -> tuple[Pool, list[ServerConn]]:
    opened: list[ServerConn] = []
    peers: list[socket.socket] = []

    async def opener(key: PoolKey) -> ServerConn:
        await trio.sleep(0)
        a, b = socket.socketpair()
        # keep the "server" end open: an idle connection whose peer closed is rightly
        # treated as dead by the pool (ServerConn.idle_alive)
        peers.append(b)
        conn = ServerConn(Conn(a), 0, key.user)
        opened.append(conn)
        return conn

    return Pool(opener, max_connections=cap, **kw), opened


async def test_released_connection_is_reused_for_the_same_key():
    pool, opened = make_pool()
    c1 = await pool.acquire(A, 1)
    pool.release(c1)
    c2 = await pool.acquire(A, 1)
    assert c2 is c1 and len(opened) == 1


async def test_different_keys_never_share_a_connection():
    pool, opened = make_pool()
    c1 = await pool.acquire(A, 1)
    pool.release(c1)
    c2 = await pool.acquire(B, 1)
    assert c2 is not c1 and len(opened) == 2


async def test_at_the_cap_a_waiter_times_out_with_a_clear_message():
    pool, _ = make_pool(cap=1)
    await pool.acquire(A, 1)
    with pytest.raises(PoolTimeout, match="no upstream connection available within 0.05s"):
        await pool.acquire(A, 0.05)
    assert pool.stats.wait_timeouts == 1 and not pool.waiters


async def test_waiters_are_served_in_arrival_order():
    pool, _ = make_pool(cap=1)
    held = await pool.acquire(A, 1)
    order: list[int] = []

    async def wait(i: int) -> None:
        c = await pool.acquire(A, 5)
        order.append(i)
        pool.release(c)

    async with trio.open_nursery() as n:
        for i in range(3):
            n.start_soon(wait, i)
            await trio.sleep(0.01)
        pool.release(held)
    assert order == [0, 1, 2]


async def test_a_waiter_joining_a_long_queue_at_the_cap_does_not_walk_it(monkeypatch):
    """2,000 clients on 20 connections: every statement waits. Joining the queue walked it
    (a `w in deque` test per waiter: quadratic per arrival, 87 TPS in
    bench/many_clients.py); at the cap with nothing idle there is nothing to hand out."""
    pool, _ = make_pool(cap=1)
    held = await pool.acquire(A, 1)
    walked = 0
    can_open = Budget.can_open

    def counting(self: Budget, key: PoolKey) -> bool:
        nonlocal walked
        walked += 1
        return can_open(self, key)

    monkeypatch.setattr(Budget, "can_open", counting)  # (slots: not on the instance)
    done: list[int] = []

    async def wait(i: int) -> None:
        c = await pool.acquire(A, 5)
        done.append(i)
        pool.release(c)

    async with trio.open_nursery() as n:
        for i in range(200):
            n.start_soon(wait, i)
        await trio.sleep(0.01)
        # one look per acquire (may it open?), none per waiter already queued
        assert len(pool.waiters) == 200 and walked == 200
        pool.release(held)
    assert sorted(done) == list(range(200))


async def test_total_never_exceeds_the_cap_under_contention():
    pool, opened = make_pool(cap=3)
    peak = 0

    async def worker(key: PoolKey) -> None:
        nonlocal peak
        for _ in range(10):
            c = await pool.acquire(key, 5)
            peak = max(peak, pool.total)
            await trio.sleep(0.001)
            pool.release(c)

    async with trio.open_nursery() as n:
        for i in range(12):
            n.start_soon(worker, (A, B, OTHER_USER)[i % 3])
    assert peak <= 3 and pool.stats.peak_open <= 3


async def test_idle_connection_of_another_key_is_closed_to_make_room():
    pool, opened = make_pool(cap=1)
    c1 = await pool.acquire(A, 1)
    pool.release(c1)
    c2 = await pool.acquire(B, 1)
    assert c1.broken and c2 is not c1 and pool.total == 1


async def test_discarded_connection_frees_its_slot_for_a_waiter():
    pool, opened = make_pool(cap=1)
    c1 = await pool.acquire(A, 1)
    got: list[ServerConn] = []

    async def waiter() -> None:
        got.append(await pool.acquire(A, 5))

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.sleep(0.01)
        pool.discard(c1)
    assert c1.broken and got and got[0] is not c1 and pool.total == 1


async def test_per_user_cap_limits_one_user_but_not_others():
    pool, _ = make_pool(cap=3, per_user_max={"app": 1})
    await pool.acquire(A, 1)
    with pytest.raises(PoolTimeout):
        await pool.acquire(A, 0.05)
    other = await pool.acquire(OTHER_USER, 0.05)
    assert other.user == "reporting"


async def test_cancelled_waiter_does_not_leak_the_connection_handed_to_it():
    pool, _ = make_pool(cap=1)
    c1 = await pool.acquire(A, 1)
    with trio.move_on_after(0.02):
        await pool.acquire(A, 5)
    pool.release(c1)
    c2 = await pool.acquire(A, 0.05)
    assert c2 is c1 and not pool.waiters


async def test_failed_open_gives_the_slot_back():
    async def failing(key: PoolKey) -> ServerConn:
        raise OSError("refused")

    pool = Pool(failing, max_connections=1)
    with pytest.raises(OSError):
        await pool.acquire(A, 1)
    assert pool.total == 0


# -- closing keeps the slot until the server let go; the janitor's health check ----------


class _Server:
    """The server ends of socketpair "connections": each can answer COM_PING, close
    (like a server ending the session), or stay silent."""

    def __init__(self) -> None:
        self.peers: dict[ServerConn, socket.socket] = {}

    def make_pool(self, cap: int = 1, **kw) -> Pool:
        async def opener(key: PoolKey) -> ServerConn:
            await trio.sleep(0)
            a, b = socket.socketpair()
            b.setblocking(False)
            conn = ServerConn(Conn(a), 0, key.user)
            self.peers[conn] = b
            return conn

        return Pool(opener, max_connections=cap, **kw)

    def received(self, conn: ServerConn) -> bytes:
        try:
            return self.peers[conn].recv(100)
        except BlockingIOError:
            return b""

    def answer_ping(self, conn: ServerConn) -> None:
        self.peers[conn].send(b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00")

    def hang_up(self, conn: ServerConn) -> None:
        self.peers[conn].close()


@pytest.fixture
async def running():
    """``start(pool)``: run ``pool`` (its janitor, its closes) until the test ends."""
    async with trio.open_nursery() as n:

        async def start(pool: Pool) -> Pool:
            await n.start(pool.run)
            return pool

        yield start
        n.cancel_scope.cancel()


async def test_a_closed_connection_keeps_its_slot_until_the_server_hangs_up(running):
    server = _Server()
    pool = await running(server.make_pool(cap=1))
    c1 = await pool.acquire(A, 1)
    got: list[ServerConn] = []

    async def waiter() -> None:
        got.append(await pool.acquire(A, 5))

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.sleep(0.01)
        pool.discard(c1)
        await trio.sleep(0.05)
        # the server has not let go yet: opening a replacement would make it count two
        assert c1.broken and not got and pool.total == 1 and pool.leaving == {c1}
        assert server.received(c1) == b"\x01\x00\x00\x00\x01"  # COM_QUIT
        server.hang_up(c1)
    assert got and got[0] is not c1 and pool.total == 1 and not pool.leaving
    assert pool.stats.close_waits == 1 and pool.stats.close_wait_timeouts == 0


async def test_a_server_that_never_hangs_up_holds_the_slot_only_close_wait_seconds(running):
    server = _Server()
    pool = await running(server.make_pool(cap=1, close_wait=0.05))
    c1 = await pool.acquire(A, 1)
    pool.discard(c1)
    assert pool.total == 1
    c2 = await pool.acquire(A, 2)
    assert c2 is not c1 and pool.total == 1 and pool.stats.close_wait_timeouts == 1


async def test_a_connection_whose_socket_is_dead_frees_its_slot_at_once(running):
    server = _Server()
    pool = await running(server.make_pool(cap=1))
    c1 = await pool.acquire(A, 1)
    server.hang_up(c1)
    await trio.sleep(0.01)
    pool.discard(c1)
    assert pool.total == 0 and not pool.leaving


async def test_eviction_for_another_key_waits_for_the_server_then_serves_it(running):
    server = _Server()
    pool = await running(server.make_pool(cap=1))
    c1 = await pool.acquire(A, 1)
    pool.release(c1)
    with trio.move_on_after(0.05):
        await pool.acquire(B, 5)
        raise AssertionError("served before the evicted connection was let go")
    assert pool.leaving == {c1} and pool.total == 1
    # only one idle connection is closed for one waiter, however often it asks
    async with trio.open_nursery() as n:
        got: list[ServerConn] = []

        async def take() -> None:
            got.append(await pool.acquire(B, 5))

        n.start_soon(take)
        await trio.sleep(0.01)
        assert len(pool.leaving) == 1
        server.hang_up(c1)
    assert got and got[0].key == B and pool.total == 1


async def test_shutdown_closes_at_once(running):
    server = _Server()
    pool = await running(server.make_pool(cap=2))
    c1 = await pool.acquire(A, 1)
    c2 = await pool.acquire(A, 1)
    pool.release(c1)
    pool.discard(c2)
    assert pool.leaving == {c2}
    pool.close_all()
    assert c1.conn.closed and c2.conn.closed


async def test_the_janitor_closes_an_idle_connection_the_server_killed(
    running, monkeypatch, caplog
):
    monkeypatch.setattr(pool_mod, "JANITOR_EVERY", 0.01)
    server = _Server()
    pool = await running(server.make_pool(cap=2, health_check_idle=0.05))
    c1 = await pool.acquire(A, 1)
    c2 = await pool.acquire(A, 1)
    pool.release(c1)
    pool.release(c2)
    server.hang_up(c1)
    with trio.fail_after(2):
        while pool.idle_count != 1:
            # c2's server answers every COM_PING the janitor sends
            if server.received(c2):
                server.answer_ping(c2)
            await trio.sleep(0.005)
    assert pool.idle[A] == [c2] and pool.total == 1 and pool.stats.dead_idle == 1
    dead = [r.getMessage() for r in caplog.records if "upstream_dead_idle" in r.getMessage()]
    assert len(dead) == 1 and "why=closed by the server" in dead[0], caplog.text


async def test_a_connection_that_does_not_answer_the_ping_is_closed(running, monkeypatch):
    monkeypatch.setattr(pool_mod, "JANITOR_EVERY", 0.01)
    monkeypatch.setattr(pool_mod, "PING_TIMEOUT", 0.05)
    server = _Server()
    pool = await running(server.make_pool(cap=1, health_check_idle=0.02, close_wait=0.05))
    c1 = await pool.acquire(A, 1)
    pool.release(c1)
    with trio.fail_after(2):
        while pool.stats.dead_idle == 0:
            await trio.sleep(0.01)
    assert c1.broken and pool.idle_count == 0


async def test_a_waiter_arriving_during_a_health_check_gets_the_connection(running, monkeypatch):
    monkeypatch.setattr(pool_mod, "JANITOR_EVERY", 0.01)
    server = _Server()
    pool = await running(server.make_pool(cap=1, health_check_idle=0.02))
    c1 = await pool.acquire(A, 1)
    pool.release(c1)
    with trio.fail_after(2):
        while pool.checking is not c1:
            await trio.sleep(0.001)
    got: list[ServerConn] = []
    async with trio.open_nursery() as n:

        async def take() -> None:
            got.append(await pool.acquire(A, 5))

        n.start_soon(take)
        await trio.sleep(0.01)
        assert not got and pool.checking is c1
        server.received(c1)
        server.answer_ping(c1)
    assert got == [c1] and not c1.broken and pool.stats.health_checks == 1


async def test_the_janitor_never_closes_a_checked_out_connection(running, monkeypatch):
    monkeypatch.setattr(pool_mod, "JANITOR_EVERY", 0.01)
    server = _Server()
    pool = await running(
        server.make_pool(cap=1, idle_timeout=0.01, max_lifetime=0.01, health_check_idle=0.01)
    )
    c1 = await pool.acquire(A, 1)
    await trio.sleep(0.1)  # past every limit, several janitor rounds
    assert not c1.broken and pool.in_use == {c1} and not server.received(c1)
    pool.release(c1)
    with trio.fail_after(2):
        while not c1.broken:  # expired once it is back
            await trio.sleep(0.01)


async def test_a_running_pool_ends_a_wait_at_its_deadline(running):
    # the running pool's expiry task, not a cancel scope per wait, ends it
    pool = await running(make_pool()[0])
    await pool.acquire(A, 1)
    await pool.acquire(A, 1)
    t0 = trio.current_time()
    with pytest.raises(PoolTimeout):
        await pool.acquire(A, 0.2)
    assert 0.2 <= trio.current_time() - t0 < 0.2 + 3 * pool_mod.EXPIRE_TICK
    assert not pool.waiters


async def test_a_shorter_timeout_after_longer_ones_still_ends_on_time(running):
    # (a reload may lower pool.checkout_timeout while older waits are queued)
    pool = await running(make_pool()[0])
    held = [await pool.acquire(A, 1), await pool.acquire(A, 1)]
    ended: list[float] = []
    t0 = trio.current_time()

    async def times_out(timeout: float) -> None:
        with pytest.raises(PoolTimeout):
            await pool.acquire(A, timeout)
        ended.append(trio.current_time() - t0)

    async def gets_one() -> None:
        await pool.acquire(A, 5.0)

    async with trio.open_nursery() as n:
        n.start_soon(gets_one)
        await trio.sleep(0.01)
        n.start_soon(times_out, 0.2)
        await trio.sleep(0.5)
        assert len(ended) == 1 and ended[0] < 0.2 + 3 * pool_mod.EXPIRE_TICK
        pool.release(held.pop())  # the long wait gets a connection instead
    assert len(pool.waiters) == 0


async def test_a_cancelled_wait_leaves_the_queue_and_the_next_waiter_is_served(running):
    pool = await running(make_pool()[0])
    c1 = await pool.acquire(A, 1)
    await pool.acquire(A, 1)
    with trio.move_on_after(0.05):
        await pool.acquire(A, 5)
    assert not pool.waiters
    got: list[object] = []

    async def wait() -> None:
        got.append(await pool.acquire(A, 5))

    async with trio.open_nursery() as n:
        n.start_soon(wait)
        await trio.sleep(0.01)
        pool.release(c1)
    assert got == [c1]
