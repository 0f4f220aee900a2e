"""The pool's pure decisions (pool.budget): caps, which idle connection serves a
checkout, which idle one to close for a slot, which waiter gets a returned connection,
and expiry. No Trio, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from tainted_proxy.pool.budget import (
    MAX_PASSED_OVER,
    Budget,
    PoolKey,
    choose_idle,
    due_for_check,
    eviction_victim,
    expired,
    room_wanted,
    waiter_for,
)

A = PoolKey("app", 0, True)
B = PoolKey("batch", 0, True)
TZ = frozenset({("time_zone", "+05:30")})


@dataclass(eq=False)
class C:
    settings: frozenset = frozenset()
    schema: str | None = "test"
    last_used: float = 0.0
    created_at: float = 0.0
    broken: bool = False
    checked_at: float = 0.0
    pending_for: object = None


@dataclass(eq=False)
class W:
    key: PoolKey
    want: tuple | None = None
    passed_over: int = field(default=0)


def test_the_global_and_per_login_caps_bound_what_may_open():
    b = Budget(3, {"app": 1})
    assert b.can_open(A)
    b.reserve(A)
    assert not b.can_open(A) and b.can_open(B)
    b.reserve(B)
    b.reserve(B)
    assert not b.can_open(B) and b.peak == 3
    b.unreserve(B)
    assert b.can_open(B)


def test_the_preferred_connection_wins_then_an_exact_match_then_the_nearest():
    plain, tz, last = C(), C(settings=TZ), C(settings=TZ, schema="other")
    stack = [tz, plain, last]
    assert choose_idle(stack, (TZ, "test"), prefer=last) == (2, False)
    assert choose_idle(stack, (TZ, "test"), prefer=None) == (0, True)
    assert choose_idle([plain, last], (TZ, "test"), prefer=None) == (1, False)


def test_eviction_takes_the_oldest_idle_of_another_key():
    old, new = C(last_used=1.0), C(last_used=5.0)
    assert eviction_victim({A: [C()], B: [old, new]}, A, Budget(2)) == B
    assert eviction_victim({A: [C()]}, A, Budget(2)) is None


def test_a_returned_connection_goes_to_a_waiter_wanting_its_settings_but_nobody_starves():
    head, match = W(A, want=(frozenset(), "test")), W(A, want=(TZ, "test"))
    waiters = [head, W(B), match]
    for _ in range(MAX_PASSED_OVER):
        assert waiter_for(waiters, A, (TZ, "test")) == (match, True)
    assert waiter_for(waiters, A, (TZ, "test")) == (head, False)
    assert waiter_for([W(B)], A, (TZ, "test")) == (None, False)


def test_idle_connections_expire_by_idle_time_and_lifetime():
    assert expired(C(last_used=0.0, created_at=0.0), 301.0, 300.0, 3600.0)
    assert expired(C(last_used=4000.0, created_at=0.0), 4000.5, 300.0, 3600.0)
    assert not expired(C(last_used=10.0, created_at=0.0), 20.0, 300.0, 3600.0)
    assert expired(C(broken=True), 0.0, 0, 0)


def test_idle_connections_are_closed_for_the_queue_only_beyond_the_closes_under_way():
    assert room_wanted(waiting=1, leaving=0)
    assert not room_wanted(waiting=1, leaving=1)  # its slot goes to the queue when freed
    assert room_wanted(waiting=3, leaving=2)
    assert not room_wanted(waiting=0, leaving=0)


def test_health_checks_are_due_after_the_interval_of_idleness_or_since_the_last_check():
    fresh = C(last_used=95.0)
    old = C(last_used=10.0)
    checked = C(last_used=10.0, checked_at=80.0)
    older = C(last_used=5.0, checked_at=5.0)
    holds_values = C(last_used=0.0, pending_for=object())
    idle = {A: [fresh, old, checked], B: [holds_values, older]}
    # the longest unchecked first; one holding a session's unread values is left alone
    assert due_for_check(idle, 100.0, 30.0) == [older, old]
    assert due_for_check(idle, 100.0, 5.0) == [older, old, checked, fresh]
    assert due_for_check({}, 100.0, 30.0) == []
