"""/metrics: the collector's families, names, labels and values, read back with
prometheus_client's own parser (no server: a Proxy that never serves, fed through its
Accounting as the frontend would)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tainted_proxy import accounting
from tainted_proxy.accounting import Accounting
from tainted_proxy.admin import metrics
from tainted_proxy.app import Proxy
from tainted_proxy.config import parse_config

CONFIG = """
[upstream]
max_connections = 7

[users.app]
password = "x"
pool_mode = "transaction"
upstream_user = "app_rw"
upstream_password = "y"

[users.batch]
password = "z"
pool_mode = "statement"
"""

LOCK = "advisory lock (GET_LOCK)"
TEMP = "temporary table"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def make_proxy() -> tuple[Proxy, Clock]:
    p = Proxy(parse_config(CONFIG))
    clock = Clock()
    p.accounting = Accounting(clock=clock)
    return p, clock


def scrape(p: Proxy) -> dict[str, object]:
    text = metrics.render(metrics.registry_for(p)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name: str | None = None) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


def test_every_family_is_prefixed_and_parses():
    p, _ = make_proxy()
    fams = scrape(p)
    ours = [n for n in fams if not n.startswith("process_")]
    assert ours and all(n.startswith("tainted_proxy_") for n in ours)
    for name in (
        "tainted_proxy_pins",
        "tainted_proxy_events",
        "tainted_proxy_checkouts",
        "tainted_proxy_releases",
        "tainted_proxy_errors",
        "tainted_proxy_sessions",
        "tainted_proxy_upstream_connections",
        "tainted_proxy_pinned",
        "tainted_proxy_multiplexing_ratio",
        "tainted_proxy_checkout_wait_seconds",
    ):
        assert name in fams, name
    assert fams["tainted_proxy_pins"].type == "counter"
    assert fams["tainted_proxy_sessions"].type == "gauge"
    assert fams["tainted_proxy_checkout_wait_seconds"].type == "summary"


def test_pins_and_events_by_user_mode_program_reason():
    p, clock = make_proxy()
    acc = p.accounting
    t1 = acc.pin_started("app", "shop-web", "transaction", "SELECT GET_LOCK(?, ?)", [LOCK, TEMP])
    clock.t += 2.5
    acc.pin_ended(t1)
    acc.pin_started("app", "shop-web", "transaction", "SELECT GET_LOCK(?, ?)", [LOCK])
    acc.pin_started("batch", "cron", "statement", "CREATE TEMPORARY TABLE t (a INT)", [TEMP])
    acc.event("batch", "cron", "statement", "BEGIN", accounting.REFUSED)
    acc.event("batch", "cron", "statement", "BEGIN", accounting.REFUSED)
    fams = scrape(p)

    pins = samples(fams["tainted_proxy_pins"], "tainted_proxy_pins_total")
    key = lambda user, up, mode, prog, reason: (  # noqa: E731
        ("mode", mode),
        ("program", prog),
        ("reason", reason),
        ("upstream_user", up),
        ("user", user),
    )
    assert pins == {
        key("app", "app_rw", "transaction", "shop-web", LOCK): 2,
        key("app", "app_rw", "transaction", "shop-web", TEMP): 1,
        key("batch", "batch", "statement", "cron", TEMP): 1,
    }
    held = samples(fams["tainted_proxy_pinned_seconds"], "tainted_proxy_pinned_seconds_total")
    assert held[key("app", "app_rw", "transaction", "shop-web", LOCK)] == 2.5
    events = samples(fams["tainted_proxy_events"], "tainted_proxy_events_total")
    assert events == {
        (
            ("kind", accounting.REFUSED),
            ("mode", "statement"),
            ("program", "cron"),
            ("upstream_user", "batch"),
            ("user", "batch"),
        ): 2
    }
    by_reason = samples(fams["tainted_proxy_pins_by_reason"], "tainted_proxy_pins_by_reason_total")
    assert by_reason == {(("reason", LOCK),): 2, (("reason", TEMP),): 2}
    pinned = samples(fams["tainted_proxy_pinned_sessions"])
    assert pinned == {(("user", "app"),): 1, (("user", "batch"),): 1}
    assert samples(fams["tainted_proxy_pinned"]) == {(): 2}


def test_checkouts_releases_errors_and_waits():
    p, _ = make_proxy()
    s = p.accounting.stats
    s.checkout_same_settings, s.checkout_settings_applied = 40, 2
    s.released, s.released_reset, s.released_closed = 30, 5, 1
    s.errors["checkout timeout"] += 3
    s.errors["max_pinned"] += 1
    s.accepted = 12
    ps = p.pool.stats
    ps.exact_hits, ps.nearest_hits, ps.opened = 38, 2, 4
    for w in (0.01, 0.02, 0.5):
        p.accounting.waited(w)
    ps.waited, ps.total_wait_seconds = 3, 0.53
    fams = scrape(p)
    assert samples(fams["tainted_proxy_checkouts"], "tainted_proxy_checkouts_total") == {
        (("kind", "same_settings"),): 40,
        (("kind", "settings_applied"),): 2,
        (("kind", "reset_applied"),): 0,
    }
    assert samples(fams["tainted_proxy_releases"], "tainted_proxy_releases_total") == {
        (("kind", "as_is"),): 30,
        (("kind", "reset"),): 5,
        (("kind", "closed"),): 1,
    }
    assert samples(fams["tainted_proxy_errors"], "tainted_proxy_errors_total") == {
        (("kind", "checkout timeout"),): 3,
        (("kind", "max_pinned"),): 1,
    }
    ps.acquired = 44
    fams = scrape(p)
    hits = samples(fams["tainted_proxy_pool_idle_hits"], "tainted_proxy_pool_idle_hits_total")
    assert hits == {(("match", "exact"),): 38, (("match", "nearest"),): 2}
    assert samples(fams["tainted_proxy_pool_checkouts"], "tainted_proxy_pool_checkouts_total") == {
        (): 44
    }
    assert samples(
        fams["tainted_proxy_upstream_opened"], "tainted_proxy_upstream_opened_total"
    ) == {(): 4}
    assert samples(fams["tainted_proxy_clients_accepted"])[()] == 12
    wait = fams["tainted_proxy_checkout_wait_seconds"]
    assert samples(wait, "tainted_proxy_checkout_wait_seconds_count") == {(): 3}
    assert samples(wait, "tainted_proxy_checkout_wait_seconds_sum") == {(): 0.53}
    q = samples(wait, "tainted_proxy_checkout_wait_seconds")
    assert q[(("quantile", "0.5"),)] == 0.02
    assert q[(("quantile", "0.99"),)] == 0.5


def test_no_waits_no_quantiles_and_no_ratio_without_connections():
    p, _ = make_proxy()
    fams = scrape(p)
    wait = fams["tainted_proxy_checkout_wait_seconds"]
    assert samples(wait, "tainted_proxy_checkout_wait_seconds") == {}
    assert samples(wait, "tainted_proxy_checkout_wait_seconds_count") == {(): 0}
    assert samples(fams["tainted_proxy_multiplexing_ratio"]) == {}
    assert samples(fams["tainted_proxy_upstream_max_connections"]) == {(): 7}


def test_long_client_chosen_labels_are_cut():
    p, _ = make_proxy()
    p.accounting.pin_started("app", "x" * 500, "transaction", "SELECT 1", [LOCK])
    fams = scrape(p)
    (labels,) = samples(fams["tainted_proxy_pins"], "tainted_proxy_pins_total")
    assert len(dict(labels)["program"]) == metrics.MAX_LABEL
