"""Pool decisions: caps, idle reuse, FIFO waiting, timeouts, eviction, discards.

The pool's opener is replaced by one that makes unconnected ServerConn objects: this
tests the pool's bookkeeping, not a database (integration tests cover that)."""

from __future__ import annotations

import socket

import pytest
import trio

from tainted_proxy.backend.server import ServerConn
from tainted_proxy.net import Conn
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
