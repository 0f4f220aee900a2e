"""The taint ledger: every reason of a pin counted, pinned time, bounded memory per user,
and the window view."""

from __future__ import annotations

from tainted_proxy.accounting import OTHER, REFUSED, Accounting


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_every_reason_of_a_pin_is_counted_with_its_pinned_time():
    clock = Clock()
    acc = Accounting(clock=clock)
    ticket = acc.pin_started("app", "job", "transaction", "SELECT GET_LOCK(?, ?)", ["a", "b"])
    assert acc.stats.pinned_now == 1 and acc.pinned("app") == 1
    clock.t += 2.5
    acc.pin_ended(ticket)
    got = {(e.reason, e.count, e.pinned_seconds) for e in acc.entries.values()}
    assert got == {("a", 1, 2.5), ("b", 1, 2.5)}
    assert acc.stats.pinned_now == 0 and dict(acc.stats.pins) == {"a": 1, "b": 1}


def test_the_ledger_is_bounded_per_user_with_an_other_bucket():
    acc = Accounting(ledger_entries_per_user=3)
    for i in range(10):
        acc.event("app", "", "statement", f"SELECT {i}", REFUSED)
    acc.event("web", "", "statement", "SELECT 1", REFUSED)
    app = [e for e in acc.entries.values() if e.user == "app"]
    assert len(app) == 4  # three fingerprints and the other bucket
    other = next(e for e in app if e.fingerprint == OTHER)
    assert other.count == 7
    assert any(e.user == "web" for e in acc.entries.values())  # another user unaffected


def test_the_window_view_counts_only_recent_minutes():
    clock = Clock()
    acc = Accounting(clock=clock)
    acc.event("app", "", "statement", "BEGIN", REFUSED)
    clock.t += 600
    acc.event("app", "", "statement", "BEGIN", REFUSED)
    assert acc.recent(5)[("app", REFUSED)] == 1
    assert acc.ledger[("app", REFUSED, "BEGIN")] == 2
