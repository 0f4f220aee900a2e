"""Several workers sharing one upstream budget (pool.shared, the decisions in pool.budget):
the global and per-login caps over all workers, the fair share while some are short, and
idle connections closed for another worker's waiters. Two "workers" are two Pools in one
process mapping the same file (the lock is per open file, so it works the same)."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from tainted_proxy.backend.server import ServerConn
from tainted_proxy.net import Conn
from tainted_proxy.pool.budget import (
    PoolKey,
    fair_share,
    idle_to_yield,
    may_reserve,
    short_of_slots,
    yield_on_release,
)
from tainted_proxy.pool.pool import Pool
from tainted_proxy.pool.shared import (
    USERS,
    SharedBudget,
    clear_pinned,
    create_file,
    read_rows,
    remove_file,
)

A = PoolKey("app", 0, True)
B = PoolKey("batch", 0, True)


# -- the pure decisions -------------------------------------------------------------------


def test_fair_share_rounds_up_so_the_shares_cover_the_cap():
    assert fair_share(4, 2) == 2 and fair_share(5, 2) == 3 and fair_share(4, 3) == 2
    assert fair_share(4, 0) == 4  # nobody demanding: the whole cap


def test_may_reserve_counts_every_worker_and_yields_to_a_short_one_past_the_share():
    # under the caps, nobody else short: take it
    assert may_reserve(
        total=3, cap=4, user_count=0, user_cap=4, mine=3, others_short=0, demanding=1
    )
    # the global cap and the login's cap, over all workers
    assert not may_reserve(4, 4, 0, 4, 0, 0, 1)
    assert not may_reserve(2, 4, 2, 2, 0, 0, 1)
    # another worker is short: a worker at its share leaves the free slot to it
    assert not may_reserve(3, 4, 0, 4, mine=2, others_short=1, demanding=2)
    assert may_reserve(3, 4, 0, 4, mine=1, others_short=1, demanding=2)


def test_what_a_worker_asks_for_and_what_the_others_give():
    assert short_of_slots(waiting=3, leaving=1) == 2 and short_of_slots(1, 2) == 0
    # others short of 2, one close already under way for them, 5 idle here: close 1
    assert idle_to_yield(others_short=2, yielding=1, idle=5) == 1
    assert idle_to_yield(others_short=3, yielding=0, idle=1) == 1
    assert idle_to_yield(others_short=1, yielding=1, idle=5) == 0
    # a returning connection goes to the other worker only past this one's share
    assert yield_on_release(others_short=1, yielding=0, mine=3, share=2)
    assert not yield_on_release(others_short=1, yielding=0, mine=2, share=2)
    assert not yield_on_release(others_short=1, yielding=1, mine=3, share=2)


# -- the shared file ---------------------------------------------------------------------


@pytest.fixture
def shared_path():
    path = create_file(2)
    yield path
    remove_file(path)


def test_two_workers_never_reserve_past_the_global_or_the_login_cap(shared_path):
    w0 = SharedBudget(shared_path, 0, 3, {"batch": 1})
    w1 = SharedBudget(shared_path, 1, 3, {"batch": 1})
    assert w0.try_reserve(A) and w0.try_reserve(B)
    assert not w1.try_reserve(B)  # batch's cap of 1 is held by worker 0
    assert w1.try_reserve(A)
    assert not w0.try_reserve(A) and not w1.try_reserve(A)  # 3/3 over both
    assert w0.global_total() == 3 and (w0.total, w1.total) == (2, 1)
    assert w1.user_full("batch") and "3/3 open across 2 workers" in w1.cap_text()
    w0.unreserve(B)
    assert w1.try_reserve(B) and w1.by_user == {"app": 1, "batch": 1}
    rows = read_rows(shared_path)
    assert [r["total"] for r in rows] == [1, 2] and rows[0]["pid"] == os.getpid()
    w0.close()
    w1.close()


def test_a_worker_at_its_share_leaves_a_free_slot_to_a_short_one(shared_path):
    w0 = SharedBudget(shared_path, 0, 4)
    w1 = SharedBudget(shared_path, 1, 4)
    assert w0.try_reserve(A) and w0.try_reserve(A) and w1.try_reserve(A)
    w1.publish(short=2, idle=0, waiting=2, yielding=0)
    assert not w0.try_reserve(A)  # one slot free, but worker 0 holds its share (2 of 4)
    assert w1.try_reserve(A)
    w1.publish(short=0, idle=0, waiting=0, yielding=0)
    w0.close()
    w1.close()


def test_a_worker_index_outside_the_file_is_refused(shared_path):
    with pytest.raises(ValueError, match="worker index 2"):
        SharedBudget(shared_path, 2, 4)


def test_pinned_sessions_count_over_all_workers_and_a_gone_worker_leaves_none(shared_path):
    w0 = SharedBudget(shared_path, 0, 4)
    w1 = SharedBudget(shared_path, 1, 4)
    assert w0.pinned("app") == 0
    w0.publish_pinned("app", 1)
    w1.publish_pinned("app", 2)
    w1.publish_pinned("batch", 1)
    assert w0.pinned("app") == w1.pinned("app") == 3
    assert w0.pinned("batch") == 1 and w0.pinned("other") == 0
    w1.publish_pinned("app", 1)  # a pin of worker 1 ended
    assert w0.pinned("app") == 2
    # worker 1 exited (crashed holding its pins): the parent forgets them, and only them
    clear_pinned(shared_path, 1)
    assert w0.pinned("app") == 1 and w0.pinned("batch") == 0
    assert w1.try_reserve(A) and read_rows(shared_path)[1]["total"] == 1
    w0.close()
    w1.close()


def test_a_user_past_the_table_has_its_pins_counted_in_its_worker(shared_path):
    w0 = SharedBudget(shared_path, 0, 4)
    w1 = SharedBudget(shared_path, 1, 4)
    for i in range(USERS):
        w0.publish_pinned(f"u{i}", 1)
    w0.publish_pinned("late", 1)
    w1.publish_pinned("late", 1)
    assert w0.pinned("late") == 1 and w1.pinned("late") == 1
    assert w1.pinned("u7") == 1
    w0.close()
    w1.close()


# -- two pools: idle connections are closed for the other worker's waiters ---------------


class _Server:
    """Socketpair "connections" whose server end hangs up when the pool quits them."""

    def __init__(self) -> None:
        self.peers: list[socket.socket] = []

    async def opener(self, key: PoolKey) -> ServerConn:
        await trio.sleep(0)
        a, b = socket.socketpair()
        b.setblocking(False)
        self.peers.append(b)
        return ServerConn(Conn(a), 0, key.user)

    async def hang_up_on_quit(self) -> None:
        """Like a server: a COM_QUIT (or a closed socket) ends the session."""
        while True:
            for b in list(self.peers):
                try:
                    data = b.recv(64)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data or data[4:5] == b"\x01":
                    b.close()
                    self.peers.remove(b)
            await trio.sleep(0.002)


async def test_a_worker_holding_idle_connections_up_to_the_cap_does_not_starve_another(
    shared_path,
):
    server = _Server()
    p0 = Pool(server.opener, max_connections=3, budget=SharedBudget(shared_path, 0, 3))
    p1 = Pool(server.opener, max_connections=3, budget=SharedBudget(shared_path, 1, 3))
    async with trio.open_nursery() as n:
        n.start_soon(server.hang_up_on_quit)
        await n.start(p0.run)
        await n.start(p1.run)
        held = [await p0.acquire(A, 1) for _ in range(3)]
        for c in held:
            p0.release(c)
        assert p0.idle_count == 3 and p0.shared.global_total() == 3
        with trio.fail_after(1):
            got = [await p1.acquire(A, 1) for _ in range(2)]
        # worker 0 closed two of its idle connections for them; never more than 3 in all
        assert p1.total == 2 and p0.total == 1 and p0.idle_count == 1
        assert p0.shared.global_total() == 3
        for c in got:
            p1.release(c)
        n.cancel_scope.cancel()


async def test_busy_workers_converge_to_their_fair_shares(shared_path):
    server = _Server()
    p0 = Pool(server.opener, max_connections=4, budget=SharedBudget(shared_path, 0, 4))
    p1 = Pool(server.opener, max_connections=4, budget=SharedBudget(shared_path, 1, 4))
    peak = 0
    served = [0, 0]

    async def client(pool: Pool, i: int) -> None:
        nonlocal peak
        while True:
            c = await pool.acquire(A, 2)
            peak = max(peak, pool.shared.global_total())
            served[i] += 1
            await trio.sleep(0.002)
            pool.release(c)
            await trio.sleep(0)

    async with trio.open_nursery() as n:
        n.start_soon(server.hang_up_on_quit)
        await n.start(p0.run)
        await n.start(p1.run)
        # worker 0 grabs the whole cap first, then worker 1's clients arrive
        for _ in range(6):
            n.start_soon(client, p0, 0)
        await trio.sleep(0.1)
        assert p0.total == 4
        for _ in range(6):
            n.start_soon(client, p1, 1)
        await trio.sleep(0.6)
        assert (p0.total, p1.total) == (2, 2), (p0.total, p1.total)
        n.cancel_scope.cancel()
    assert peak <= 4 and served[1] > 50
