"""``/metrics``: the proxy's counters and gauges in the Prometheus text format.

A custom ``prometheus_client`` Collector builds every metric family at scrape time from
the same views the other admin interfaces show (admin.views) and from the accounting,
so nothing is counted twice and ``/metrics`` never disagrees with ``/pools`` or
``/report``. It runs on the proxy's Trio thread (the HTTP handlers run in the proxy's
event loop), like every other reader of the proxy's state.

Names are stable and prefixed ``tainted_proxy_``; docs/admin.md lists them with their
labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tainted_proxy import accounting
from tainted_proxy.admin import views
from tainted_proxy.taint.classifier import cache_bytes, cache_len

if TYPE_CHECKING:
    from tainted_proxy.frontend.client import Services as Proxy

PREFIX = "tainted_proxy_"
#: ledger kinds that are events (refusals, unexplained changes), not pins
EVENT_KINDS = frozenset({accounting.REFUSED, accounting.UNEXPLAINED, accounting.VALUES_REFUSED})
#: label values longer than this are cut (client programs are chosen by the clients)
MAX_LABEL = 64
QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))


def _label(v: object) -> str:
    text = "" if v is None else str(v)
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _upstream_user(proxy: Proxy, user: str) -> str:
    """The upstream login a proxy user's sessions use ("" for a user no longer configured)."""
    u = proxy.config.user(user)
    if u is None:
        return ""
    try:
        return u.upstream_credentials(proxy.config)[0]
    except Exception:  # a user without a usable upstream password: config rejects it
        return ""


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


class ProxyCollector(Collector):
    """Yields the proxy's metric families, read fresh at each scrape."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: the families depend on the proxy's state

    def collect(self) -> Iterator[Metric]:
        proxy = self.proxy
        acc = proxy.accounting
        s = acc.stats
        ps = proxy.pool.stats

        info = GaugeMetricFamily(
            PREFIX + "build_info",
            "Always 1: the proxy's version and the server version it announces",
            labels=["version", "server_version"],
        )
        info.add_metric([_version(), _label(proxy.server_version)], 1)
        yield info

        # -- counters from the taint ledger -------------------------------------------
        ledger_labels = ["user", "upstream_user", "mode", "program", "reason"]
        pins = _counter(
            "pins",
            "Times a session got pinned, by user, mode, client program and reason",
            ledger_labels,
        )
        pinned_seconds = _counter(
            "pinned_seconds",
            "Seconds sessions held their connection pinned (pins that have ended)",
            ledger_labels,
        )
        events = _counter(
            "events",
            "Ledger events: statement-mode refusals, unexplained state changes, refused reads",
            ["user", "upstream_user", "mode", "program", "kind"],
        )
        by_pin: Counter[tuple[str, ...]] = Counter()
        by_pin_seconds: Counter[tuple[str, ...]] = Counter()
        by_event: Counter[tuple[str, ...]] = Counter()
        ups: dict[str, str] = {}
        for e in acc.entries.values():
            up = ups.get(e.user)
            if up is None:
                up = ups[e.user] = _upstream_user(proxy, e.user)
            key = (_label(e.user), _label(up), e.mode, _label(e.program), _label(e.reason))
            if e.reason in EVENT_KINDS:
                by_event[key] += e.count
            else:
                by_pin[key] += e.count
                by_pin_seconds[key] += e.pinned_seconds
        for key, n in sorted(by_pin.items()):
            pins.add_metric(list(key), n)
            pinned_seconds.add_metric(list(key), round(by_pin_seconds[key], 6))
        for key, n in sorted(by_event.items()):
            events.add_metric(list(key), n)
        yield pins
        yield pinned_seconds
        yield events

        by_reason = _counter("pins_by_reason", "Pins started, by reason (all users)", ["reason"])
        for reason, n in sorted(s.pins.items()):
            by_reason.add_metric([_label(reason)], n)
        yield by_reason

        # -- process counters -----------------------------------------------------------
        for name, doc, value in (
            ("clients_accepted", "Client connections accepted", s.accepted),
            ("clients_rejected", "Client connections refused (max_client_connections)", s.rejected),
            ("auth_failures", "Client logins refused", s.auth_failures),
            (
                "upstream_lost",
                "Upstream connections lost while a client used them",
                s.upstream_lost,
            ),
            ("checkout_timeouts", "Checkouts and pin slots that timed out", s.checkout_timeouts),
            (
                "values_emulated",
                "Reads of the last statement's values answered by the proxy",
                s.emulated,
            ),
            (
                "values_restored",
                "Connections given a session's values before a statement",
                s.values_restored,
            ),
            (
                "values_refused",
                "Reads of values that could not be restored (ERR 1235)",
                s.values_refused,
            ),
            (
                "statement_mode_refusals",
                "Statements refused in statement mode",
                s.refused_in_statement_mode,
            ),
            ("upstream_opened", "Upstream connections opened", ps.opened),
            ("upstream_closed", "Upstream connections closed", ps.closed),
        ):
            c = _counter(name, doc)
            c.add_metric([], value)
            yield c

        checkouts = _counter(
            "checkouts",
            "Checkouts in pooled modes: the connection already carried the session's "
            "settings (same_settings), needed them applied (settings_applied), or was reset "
            "first and then applied (reset_applied: another session's user variables)",
            ["kind"],
        )
        checkouts.add_metric(["same_settings"], s.checkout_same_settings)
        checkouts.add_metric(["settings_applied"], s.checkout_settings_applied)
        checkouts.add_metric(["reset_applied"], s.checkout_reset_applied)
        yield checkouts

        pool_checkouts = _counter(
            "pool_checkouts", "Connections the pool handed out (idle, new or handed over)"
        )
        pool_checkouts.add_metric([], ps.acquired)
        yield pool_checkouts

        idle_hits = _counter(
            "pool_idle_hits",
            "Checkouts served by an idle connection: one with the wanted settings (exact) "
            "or the one with the fewest differences (nearest)",
            ["match"],
        )
        idle_hits.add_metric(["exact"], ps.exact_hits)
        idle_hits.add_metric(["nearest"], ps.nearest_hits)
        yield idle_hits

        wait_timeouts = _counter("pool_wait_timeouts", "Waits for a connection that timed out")
        wait_timeouts.add_metric([], ps.wait_timeouts)
        yield wait_timeouts

        releases = _counter(
            "releases",
            "Connections given back: as they are (as_is), reset first (reset) or closed",
            ["kind"],
        )
        releases.add_metric(["as_is"], s.released)
        releases.add_metric(["reset"], s.released_reset)
        releases.add_metric(["closed"], s.released_closed)
        yield releases

        resets = _counter(
            "upstream_resets", "Connection resets before reuse, by outcome", ["outcome"]
        )
        resets.add_metric(["ok"], ps.reset)
        resets.add_metric(["failed"], ps.reset_failed)
        yield resets

        errors = _counter("errors", "Errors by kind", ["kind"])
        for kind, n in sorted(s.errors.items()):
            errors.add_metric([_label(kind)], n)
        yield errors

        # -- gauges (the same numbers as /pools) ----------------------------------------
        local = views.local(proxy)
        pools = local.pools()
        totals = local.totals()
        sessions = _gauge(
            "sessions",
            "Client sessions per upstream login: active (running a statement or holding a "
            "connection), idle; waiting for a connection (a part of active)",
            ["upstream_user", "state"],
        )
        upstream = _gauge(
            "upstream_connections",
            "Upstream connections per login, in use or idle",
            ["upstream_user", "state"],
        )
        pinned_login = _gauge(
            "pool_pinned_sessions", "Sessions pinned now, per upstream login", ["upstream_user"]
        )
        ratio_login = _gauge(
            "pool_multiplexing_ratio",
            "Client sessions per upstream connection, per upstream login",
            ["upstream_user"],
        )
        cap_login = _gauge(
            "pool_max_connections", "The cap on a login's upstream connections", ["upstream_user"]
        )
        for r in pools:
            login = _label(r["upstream_user"])
            sessions.add_metric([login, "active"], r["clients_active"])
            sessions.add_metric([login, "idle"], r["clients_idle"])
            sessions.add_metric([login, "waiting"], r["clients_waiting"])
            upstream.add_metric([login, "in_use"], r["upstream_in_use"])
            upstream.add_metric([login, "idle"], r["upstream_idle"])
            pinned_login.add_metric([login], r["pinned"])
            cap_login.add_metric([login], r["cap"])
            if r["multiplexing_ratio"] is not None:
                ratio_login.add_metric([login], r["multiplexing_ratio"])
        yield sessions
        yield upstream
        yield pinned_login
        yield ratio_login
        yield cap_login

        pinned_user = _gauge("pinned_sessions", "Sessions pinned now, per proxy user", ["user"])
        for user, n in sorted(acc.pinned_by_user.items()):
            pinned_user.add_metric([_label(user)], n)
        yield pinned_user

        for name, doc, value in (
            ("client_sessions", "Client sessions connected now", totals["client_sessions"]),
            ("pinned", "Sessions pinned now (all users)", totals["pinned"]),
            ("upstream_max_connections", "upstream.max_connections", totals["upstream_cap"]),
            ("waiting", "Sessions waiting for a connection now", totals["waiting"]),
            ("ledger_entries", "Entries in the taint ledger", len(acc.entries)),
            ("classifier_cache_entries", "Statement texts in the classifier's cache", cache_len()),
            (
                "classifier_cache_bytes",
                "The classifier cache's size as it counts it (texts, fingerprints, values, 2 KB each; at "
                "most 32 MiB per quoting mode)",
                cache_bytes(),
            ),
        ):
            g = _gauge(name, doc)
            g.add_metric([], value)
            yield g
        ratio = _gauge(
            "multiplexing_ratio",
            "Client sessions per upstream connection (absent while there is no connection)",
        )
        if totals["multiplexing_ratio"] is not None:
            ratio.add_metric([], totals["multiplexing_ratio"])
        yield ratio

        # -- checkout waits ------------------------------------------------------------
        name = PREFIX + "checkout_wait_seconds"
        wait = Metric(
            name,
            "Seconds checkouts waited for a connection (only checkouts that waited; quantiles "
            f"over the last {accounting.WAIT_SAMPLES})",
            "summary",
        )
        if acc.waits:
            pct = acc.wait_percentiles()
            for q, key in QUANTILES:
                wait.add_sample(name, {"quantile": q}, pct[key])
        wait.add_sample(name + "_count", {}, ps.waited)
        wait.add_sample(name + "_sum", {}, round(ps.total_wait_seconds, 6))
        yield wait


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tainted-proxy")
    except PackageNotFoundError:
        return "unknown"


def registry_for(proxy: Proxy) -> CollectorRegistry:
    """A registry of this proxy's collector (and the process's CPU, memory, fds)."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(proxy))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition (``text/plain; version=0.0.4``)."""
    return generate_latest(registry)
