"""Pool decisions with settings vectors: ``acquire(key, timeout, want)`` picks the idle
connection whose (settings, schema) equal ``want``, else the nearest one, and tracked and
untracked keys never share connections.

Like test_pool.py, the opener makes unconnected ServerConn objects (a socketpair whose
peer stays open): this tests the pool's choice, not a database. The settings and schema a
connection carries are set by hand before it is released."""

from __future__ import annotations

import socket

import trio

from tainted_proxy.backend.server import ServerConn
from tainted_proxy.net import Conn
from tainted_proxy.pool.pool import Pool, PoolKey
from tainted_proxy.state.settings import EMPTY, Settings

TRACKED = PoolKey("app", 0, tracked=True)
UNTRACKED = PoolKey("app", 0, tracked=False)

TZ = frozenset({("time_zone", "+05:30")})
ANSI = frozenset({("sql_mode", "ANSI")})
TZ_ANSI = TZ | ANSI
LATIN1 = frozenset(
    {
        ("character_set_client", "latin1"),
        ("character_set_connection", "latin1"),
        ("character_set_results", "latin1"),
        ("collation_connection", "latin1_swedish_ci"),
    }
)


def make_pool(cap: int = 8, **kw) -> tuple[Pool, list[ServerConn]]:
    opened: list[ServerConn] = []
    peers: list[socket.socket] = []

    async def opener(key: PoolKey) -> ServerConn:
        await trio.sleep(0)
        a, b = socket.socketpair()
        peers.append(b)  # keep the "server" end open (ServerConn.idle_alive)
        conn = ServerConn(Conn(a), 0, key.user)
        opened.append(conn)
        return conn

    return Pool(opener, max_connections=cap, **kw), opened


async def idle_with(
    pool: Pool, key: PoolKey, states: list[tuple[Settings, str | None]]
) -> list[ServerConn]:
    """Open one connection per state, give it that state and release them all in order:
    the last one ends on top of the idle stack (the warmest)."""
    conns = [await pool.acquire(key, 1) for _ in states]
    for conn, (settings, schema) in zip(conns, states, strict=True):
        conn.settings = settings
        conn.schema = schema
    for conn in conns:
        pool.release(conn)
    return conns


async def test_exact_match_is_chosen_even_when_it_is_not_on_top():
    pool, opened = make_pool()
    exact, _, top = await idle_with(pool, TRACKED, [(TZ, "test"), (EMPTY, "test"), (ANSI, "test")])
    got = await pool.acquire(TRACKED, 1, (TZ, "test"))
    assert got is exact and got is not top
    assert pool.stats.exact_hits == 1 and pool.stats.nearest_hits == 0
    assert len(opened) == 3


async def test_exact_match_needs_the_same_schema_too():
    pool, _ = make_pool()
    in_test, in_other = await idle_with(pool, TRACKED, [(TZ, "test"), (TZ, "other")])
    got = await pool.acquire(TRACKED, 1, (TZ, "test"))
    assert got is in_test  # not the warmer one: its schema differs
    assert pool.stats.exact_hits == 1
    got2 = await pool.acquire(TRACKED, 1, (TZ, "test"))
    assert got2 is in_other  # the only one left: settings equal, schema differs
    assert pool.stats.nearest_hits == 1


async def test_warmest_exact_match_wins_among_several():
    pool, _ = make_pool()
    _, warm, _ = await idle_with(pool, TRACKED, [(TZ, "test"), (TZ, "test"), (ANSI, "test")])
    got = await pool.acquire(TRACKED, 1, (TZ, "test"))
    assert got is warm


async def test_without_exact_match_the_nearest_connection_is_chosen():
    pool, _ = make_pool()
    far, near, top = await idle_with(
        pool,
        TRACKED,
        [(LATIN1, "test"), (TZ_ANSI, "test"), (EMPTY, "other")],
    )
    want = (TZ_ANSI | {("wait_timeout", "100")}, "test")
    got = await pool.acquire(TRACKED, 1, want)
    assert got is near  # 1 variable to add; top: 3 + schema; far: 4 + 3
    assert pool.stats.exact_hits == 0 and pool.stats.nearest_hits == 1
    assert far in pool.idle[TRACKED] and top in pool.idle[TRACKED]


async def test_a_schema_change_counts_as_one_difference():
    pool, _ = make_pool()
    other_schema, two_vars_missing = await idle_with(
        pool, TRACKED, [(TZ_ANSI, "other"), (EMPTY, "test")]
    )
    # want (TZ_ANSI, "test"): the first costs 1 (INIT_DB), the warmer second 2 (two SETs)
    got = await pool.acquire(TRACKED, 1, (TZ_ANSI, "test"))
    assert got is other_schema
    assert pool.stats.nearest_hits == 1
    assert pool.idle[TRACKED] == [two_vars_missing]


async def test_ties_go_to_the_warmest_connection():
    pool, _ = make_pool()
    _, warm = await idle_with(pool, TRACKED, [(EMPTY, "test"), (TZ, "other")])
    # want (TZ, "test"): both cost 1 (a SET, or an INIT_DB)
    assert await pool.acquire(TRACKED, 1, (TZ, "test")) is warm


async def test_exact_and_nearest_hits_are_counted_per_checkout():
    pool, _ = make_pool()
    await idle_with(pool, TRACKED, [(TZ, "test"), (ANSI, "test")])
    a = await pool.acquire(TRACKED, 1, (TZ, "test"))  # exact
    b = await pool.acquire(TRACKED, 1, (TZ, "test"))  # only ANSI left: nearest
    c = await pool.acquire(TRACKED, 1, (TZ, "test"))  # none idle: opened, no hit
    assert len({a, b, c}) == 3
    assert pool.stats.exact_hits == 1 and pool.stats.nearest_hits == 1
    assert pool.stats.opened == 3


async def test_without_want_the_warmest_connection_is_taken_and_no_hit_counted():
    pool, _ = make_pool()
    _, top = await idle_with(pool, TRACKED, [(TZ, "test"), (ANSI, "test")])
    got = await pool.acquire(TRACKED, 1)
    assert got is top
    assert pool.stats.exact_hits == 0 and pool.stats.nearest_hits == 0


async def test_dead_idle_connection_is_skipped():
    pool, _ = make_pool()
    exact, _ = await idle_with(pool, TRACKED, [(TZ, "test"), (ANSI, "test")])
    exact.close()  # the server closed it while it sat idle
    got = await pool.acquire(TRACKED, 1, (TZ, "test"))
    assert got is not exact and not got.broken
    assert exact not in pool.idle.get(TRACKED, [])


# -- tracked and untracked keys ----------------------------------------------------


def test_tracked_and_untracked_keys_are_different_keys():
    assert TRACKED != UNTRACKED and hash(TRACKED) != hash(UNTRACKED)
    assert PoolKey("app", 0) == UNTRACKED


async def test_untracked_checkout_never_gets_a_tracked_connection():
    pool, opened = make_pool()
    (tracked,) = await idle_with(pool, TRACKED, [(EMPTY, "test")])
    got = await pool.acquire(UNTRACKED, 1)
    assert got is not tracked and len(opened) == 2
    assert pool.idle[TRACKED] == [tracked]


async def test_tracked_checkout_never_gets_an_untracked_connection():
    pool, opened = make_pool()
    (untracked,) = await idle_with(pool, UNTRACKED, [(EMPTY, "test")])
    got = await pool.acquire(TRACKED, 1, (EMPTY, "test"))
    assert got is not untracked and len(opened) == 2
    assert pool.stats.exact_hits == 0 and pool.stats.nearest_hits == 0
    assert pool.idle[UNTRACKED] == [untracked]


async def test_released_connections_return_to_their_own_key():
    pool, _ = make_pool()
    t = await pool.acquire(TRACKED, 1)
    u = await pool.acquire(UNTRACKED, 1)
    pool.release(t)
    pool.release(u)
    assert pool.idle[TRACKED] == [t] and pool.idle[UNTRACKED] == [u]
    assert await pool.acquire(TRACKED, 1, (EMPTY, None)) is t
    assert await pool.acquire(UNTRACKED, 1) is u


async def test_at_the_cap_the_other_kind_is_evicted_not_shared():
    pool, opened = make_pool(cap=1)
    (tracked,) = await idle_with(pool, TRACKED, [(EMPTY, "test")])
    got = await pool.acquire(UNTRACKED, 1)
    assert got is not tracked and tracked.broken
    assert pool.total == 1 and len(opened) == 2


async def test_a_released_connection_goes_to_a_waiter_wanting_its_settings_then_fifo():
    pool, _ = make_pool(cap=1)
    conn = await pool.acquire(TRACKED, 1, (TZ, "test"))
    conn.settings, conn.schema = TZ, "test"
    got: list[str] = []

    async def wait(name: str, want: tuple[Settings, str | None]) -> None:
        c = await pool.acquire(TRACKED, 5, want)
        got.append(name)
        await trio.sleep(0.01)
        pool.release(c)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "ansi-first-in-line", (ANSI, "test"))
        await trio.sleep(0.01)
        nursery.start_soon(wait, "tz-second", (TZ, "test"))
        await trio.sleep(0.01)
        pool.release(conn)  # carries TZ: the second waiter gets it without a SET
    assert got == ["tz-second", "ansi-first-in-line"]


async def test_a_waiter_is_passed_over_at_most_three_times():
    pool, _ = make_pool(cap=1)
    conn = await pool.acquire(TRACKED, 1, (TZ, "test"))
    conn.settings, conn.schema = TZ, "test"
    got: list[str] = []

    async def wait(name: str, want: tuple[Settings, str | None]) -> None:
        c = await pool.acquire(TRACKED, 5, want)
        got.append(name)
        c.settings, c.schema = TZ, "test"  # every user leaves TZ behind
        pool.release(c)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "ansi", (ANSI, "test"))
        for i in range(5):
            await trio.sleep(0.01)
            nursery.start_soon(wait, f"tz{i}", (TZ, "test"))
        await trio.sleep(0.01)
        pool.release(conn)
    assert got.index("ansi") <= 3
