"""admin.merge: the views of several workers made one (sans-IO, hand-made parts)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tainted_proxy.admin import merge


def _pool(**kw):
    row = {
        "upstream_user": "app",
        "users": ["app"],
        "modes": ["transaction"],
        "clients_active": 1,
        "clients_idle": 2,
        "clients_waiting": 0,
        "pinned": 0,
        "upstream_in_use": 1,
        "upstream_idle": 1,
        "cap": 10,
        "subpools": [{"settings": "(server defaults)", "idle": 1, "in_use": 1}],
        "multiplexing_ratio": 1.5,
    }
    row.update(kw)
    return row


def test_pools_of_two_workers_sum_per_login_and_settings_key():
    w0 = [_pool()]
    w1 = [
        _pool(
            users=["batch"],
            modes=["session"],
            pinned=1,
            upstream_idle=3,
            subpools=[
                {"settings": "(server defaults)", "idle": 2, "in_use": 1},
                {"settings": "time_zone=+05:30", "idle": 1, "in_use": 0},
            ],
        ),
        _pool(upstream_user="ro"),
    ]
    app, ro = merge.pools([(0, w0), (1, w1)])
    assert app["users"] == ["app", "batch"] and app["modes"] == ["session", "transaction"]
    assert (app["clients_active"], app["clients_idle"], app["pinned"]) == (2, 4, 1)
    assert (app["upstream_in_use"], app["upstream_idle"], app["cap"]) == (2, 4, 10)
    assert app["subpools"] == [
        {"settings": "(server defaults)", "idle": 3, "in_use": 2},
        {"settings": "time_zone=+05:30", "idle": 1, "in_use": 0},
    ]
    assert app["multiplexing_ratio"] == 1.0  # 6 clients over 6 connections
    assert ro["upstream_user"] == "ro"


def _totals(sessions, upstream, samples, history):
    return {
        "client_sessions": sessions,
        "upstream_connections": upstream,
        "upstream_cap": 8,
        "upstream_idle": 0,
        "waiting": 1,
        "pinned": 0,
        "wait_samples": samples,
        "history": [
            {"time": t, "client_sessions": c, "upstream_connections": u} for t, c, u in history
        ],
    }


def test_totals_take_percentiles_over_every_workers_samples_and_sum_the_history():
    t = merge.totals(
        [
            (0, _totals(3, 2, [0.1] * 10, [(100.0, 3, 2), (105.5, 4, 2)])),
            (1, _totals(5, 2, [0.9] * 10, [(101.0, 5, 2)])),
        ]
    )
    assert (t["client_sessions"], t["upstream_connections"], t["waiting"]) == (8, 4, 2)
    assert t["upstream_cap"] == 8 and t["multiplexing_ratio"] == 2.0
    assert t["wait_seconds"]["p50"] == 0.9 and t["wait_seconds"]["max"] == 0.9
    assert "wait_samples" not in t
    # slots of 5 s: 100 (worker 0: 3, worker 1: 5), 105 (worker 0 moved on; worker 1's last)
    assert [(h["time"], h["client_sessions"]) for h in t["history"]] == [(100.0, 8), (105.0, 9)]


def test_stats_sum_numbers_and_nested_counters_but_not_maxima_and_peaks():
    pool0 = {"opened": 2, "max_wait_seconds": 0.5, "peak_open": 3}
    pool1 = {"opened": 1, "max_wait_seconds": 0.2, "peak_open": 4}
    s = merge.stats(
        [
            (0, {"accepted": 3, "errors": {"max_pinned": 1}, "pool": pool0}),
            (1, {"accepted": 4, "errors": {"auth": 2, "max_pinned": 2}, "pool": pool1}),
        ]
    )
    assert s == {
        "accepted": 7,
        "errors": {"max_pinned": 3, "auth": 2},  # a kind of error named max_...: a count
        "pool": {"opened": 3, "max_wait_seconds": 0.5, "peak_open": 4},
    }


def _entry(count, pinned, longest, first, last, reason="advisory lock (GET_LOCK)"):
    return {
        "user": "app",
        "program": "web",
        "mode": "transaction",
        "fingerprint": "SELECT GET_LOCK(?, ?)",
        "reason": reason,
        "count": count,
        "pinned_seconds": pinned,
        "longest_pin_seconds": longest,
        "first_seen": first,
        "last_seen": last,
    }


def test_report_sums_a_ledger_entry_seen_by_two_workers_and_their_minutes():
    now = 60.0 * 1000 + 30
    lock = "advisory lock (GET_LOCK)"
    w0 = {
        "entries": [_entry(2, 1.5, 1.0, 10.0, 50.0)],
        "window": [(1000, [("app", lock, 2)])],
        "pins": {lock: 2},
        "sessions_by_user": {"app": 3},
    }
    w1 = {
        "entries": [_entry(3, 0.5, 0.4, 5.0, 40.0), _entry(1, 0, 0, 1, 1, "temporary table")],
        "window": [(999, [("app", "temporary table", 1)]), (1000, [("app", lock, 3)])],
        "pins": {lock: 3, "temporary table": 1},
        "sessions_by_user": {"app": 1},
    }
    r = merge.report([(0, w0), (1, w1)], 2, now, 123.0)
    top = r["ledger"][0]
    assert (top["count"], top["pinned_seconds"], top["longest_pin_seconds"]) == (5, 2.0, 1.0)
    assert (top["first_seen"], top["last_seen"]) == (5.0, 50.0)
    assert top["hint"] and r["ledger_entries"] == 2
    assert [m["total"] for m in r["series"]] == [1, 5]
    assert r["recent"][0] == {"user": "app", "reason": lock, "count": 5}
    assert r["pins_by_reason"] == {lock: 5, "temporary table": 1}
    assert r["sessions_by_user"] == {"app": 4} and r["generated_at"] == 123.0


def test_rows_of_one_process_stay_as_they_are_and_of_workers_say_which():
    assert merge.rows([(None, [{"id": 2}, {"id": 1}])], "id") == [{"id": 2}, {"id": 1}]
    rows = merge.rows([(0, [{"id": 4}]), (1, [{"id": 3}, {"id": None}])], "id")
    assert rows == [{"id": 3, "worker": 1}, {"id": 4, "worker": 0}, {"id": None, "worker": 1}]


def test_metrics_of_workers_carry_a_worker_label_a_prometheus_parser_reads():
    text = (
        "# HELP tainted_proxy_accepted_total Clients accepted\n"
        "# TYPE tainted_proxy_accepted_total counter\n"
        "tainted_proxy_accepted_total {n}\n"
        "# HELP tainted_proxy_sessions Sessions\n"
        "# TYPE tainted_proxy_sessions gauge\n"
        'tainted_proxy_sessions{{state="idle"}} {n}\n'
    )
    out = merge.metrics([(0, text.format(n=3)), (1, text.format(n=4))], missing=[2]).decode()
    fams = {f.name: f for f in text_string_to_metric_families(out)}
    accepted = fams["tainted_proxy_accepted"]
    assert accepted.type == "counter"
    assert {(s.labels["worker"], s.value) for s in accepted.samples} == {("0", 3), ("1", 4)}
    sessions = fams["tainted_proxy_sessions"].samples
    assert {(s.labels["worker"], s.labels["state"], s.value) for s in sessions} == {
        ("0", "idle", 3),
        ("1", "idle", 4),
    }
    up = fams["tainted_proxy_worker_up"].samples
    assert {(s.labels["worker"], s.value) for s in up} == {("0", 1), ("1", 1), ("2", 0)}
