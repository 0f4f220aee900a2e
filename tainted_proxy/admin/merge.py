"""The admin views of several parts (one per worker process) made one.

Sans-IO: every function takes ``parts``, a list of ``(worker index or None, what that
process's admin.snapshot gave)``, and returns the view in the shape one process shows.
With one process the list has one part, so a single proxy's views go through the same
code. The rules:

* sessions, servers: every row, with ``"worker": i`` when there are workers;
* pools: one row per upstream login, counts summed, users and modes joined, sub-pools
  summed per settings key, the ratio computed again;
* totals: counts summed, wait percentiles over every worker's samples, the history
  summed per ``HISTORY_INTERVAL`` slot (each worker's latest sample at or before it);
* stats: numbers summed, dicts of numbers summed key by key, except the maxima and
  peaks (``max_wait_seconds``, ``peak_open``): the largest worker's;
* report: ledger entries of the same (user, program, mode, fingerprint, reason) summed
  (longest pin: the longest; first and last seen: the earliest and latest), then ranked;
  minute counts summed;
* metrics: every worker's samples, each with a ``worker`` label (sum them with ``sum
  without (worker)``: quantiles and process figures cannot be summed here), and
  ``tainted_proxy_worker_up`` per worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from tainted_proxy.accounting import HISTORY_INTERVAL, percentiles
from tainted_proxy.admin.hints import hint

__all__ = [
    "POOL_COUNTS",
    "Part",
    "TOP",
    "WORKER_UP",
    "metrics",
    "multiplexing_ratio",
    "pools",
    "report",
    "rows",
    "stats",
    "subpool_rows",
    "totals",
]

Part = tuple[int | None, Any]
#: ledger rows a report shows
TOP = 50
WORKER_UP = "tainted_proxy_worker_up"


def multiplexing_ratio(clients: int, upstream: int) -> float | None:
    return round(clients / upstream, 2) if upstream else None


def subpool_rows(idle: Counter[str], in_use: Counter[str]) -> list[dict[str, Any]]:
    """One row per settings key, most connections first."""
    keys = set(idle) | set(in_use)
    return sorted(
        ({"settings": k, "idle": idle[k], "in_use": in_use[k]} for k in keys),
        key=lambda sp: (-sp["idle"] - sp["in_use"], sp["settings"]),
    )


def rows(parts: Sequence[Part], order: str) -> list[dict[str, Any]]:
    """Sessions or servers: every part's rows, tagged with their worker, by ``order``."""
    if len(parts) == 1 and parts[0][0] is None:
        return list(parts[0][1])
    out = [{**r, "worker": w} for w, part in parts for r in part]
    out.sort(key=lambda r: (r[order] is None, r[order] or 0, r["worker"]))
    return out


#: the counts of a pools row, in the order the interfaces show them
POOL_COUNTS = (
    "clients_active",
    "clients_idle",
    "clients_waiting",
    "pinned",
    "upstream_in_use",
    "upstream_idle",
)


def pools(parts: Sequence[Part]) -> list[dict[str, Any]]:
    if len(parts) == 1:
        return list(parts[0][1])
    by_login: dict[str, dict[str, Any]] = {}
    idle: dict[str, Counter[str]] = {}
    in_use: dict[str, Counter[str]] = {}
    for _, part in parts:
        for r in part:
            login = r["upstream_user"]
            m = by_login.get(login)
            if m is None:
                m = by_login[login] = {
                    "upstream_user": login,
                    "users": set(),
                    "modes": set(),
                    **dict.fromkeys(POOL_COUNTS, 0),
                    "cap": r["cap"],  # the per-login cap is one over all workers
                }
                idle[login], in_use[login] = Counter(), Counter()
            m["users"].update(r["users"])
            m["modes"].update(r["modes"])
            for k in POOL_COUNTS:
                m[k] += r[k]
            for sp in r["subpools"]:
                idle[login][sp["settings"]] += sp["idle"]
                in_use[login][sp["settings"]] += sp["in_use"]
    out = []
    for login, m in sorted(by_login.items()):
        m["users"] = sorted(m["users"])
        m["modes"] = sorted(m["modes"])
        m["subpools"] = subpool_rows(idle[login], in_use[login])
        m["multiplexing_ratio"] = multiplexing_ratio(
            m["clients_active"] + m["clients_idle"], m["upstream_in_use"] + m["upstream_idle"]
        )
        out.append(m)
    return out


_TOTAL_COUNTS = ("client_sessions", "upstream_connections", "upstream_idle", "waiting", "pinned")


def totals(parts: Sequence[Part]) -> dict[str, Any]:
    """From admin.snapshot.totals_part of each process (its wait samples included)."""
    out: dict[str, Any] = {k: sum(p[k] for _, p in parts) for k in _TOTAL_COUNTS}
    out["upstream_cap"] = parts[0][1]["upstream_cap"]  # upstream.max_connections: global
    out["multiplexing_ratio"] = multiplexing_ratio(
        out["client_sessions"], out["upstream_connections"]
    )
    out["wait_seconds"] = percentiles([s for _, p in parts for s in p["wait_samples"]])
    out["history"] = _history([p["history"] for _, p in parts])
    order = ("client_sessions", "upstream_connections", "upstream_cap", "upstream_idle")
    return {k: out[k] for k in (*order, *(k for k in out if k not in order))}


def _history(series: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    if len(series) == 1:
        return series[0]
    slots: dict[int, list[dict[str, Any] | None]] = {}
    for i, samples in enumerate(series):
        for s in samples:
            slots.setdefault(int(s["time"] // HISTORY_INTERVAL), [None] * len(series))[i] = s
    out = []
    latest: list[dict[str, Any] | None] = [None] * len(series)
    for slot in sorted(slots):
        for i, s in enumerate(slots[slot]):
            if s is not None:
                latest[i] = s
        known = [s for s in latest if s is not None]
        out.append(
            {
                "time": slot * HISTORY_INTERVAL,
                "client_sessions": sum(s["client_sessions"] for s in known),
                "upstream_connections": sum(s["upstream_connections"] for s in known),
            }
        )
    return out


#: stats that are a maximum or a peak (pool.PoolStats), not a count
_LARGEST = frozenset(("max_wait_seconds", "peak_open"))


def stats(parts: Sequence[Part]) -> dict[str, Any]:
    if len(parts) == 1:
        return dict(parts[0][1])
    return _sum_dicts([p for _, p in parts])


def _sum_dicts(dicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict):
                out[k] = _sum_dicts([out.get(k, {}), v])
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                # a maximum or a peak is the largest worker's, not their sum
                if k in _LARGEST:
                    out[k] = max(out.get(k, v), v)
                else:
                    out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


def report(parts: Sequence[Part], minutes: int, now: float, generated_at: float) -> dict[str, Any]:
    """From admin.snapshot.ledger_part of each process: the report of docs/admin.md."""
    entries: dict[tuple[str, ...], dict[str, Any]] = {}
    for _, part in parts:
        for e in part["entries"]:
            key = (e["user"], e["program"], e["mode"], e["fingerprint"], e["reason"])
            m = entries.get(key)
            if m is None:
                entries[key] = dict(e)
                continue
            m["count"] += e["count"]
            m["pinned_seconds"] = round(m["pinned_seconds"] + e["pinned_seconds"], 6)
            m["longest_pin_seconds"] = max(m["longest_pin_seconds"], e["longest_pin_seconds"])
            m["first_seen"] = min(m["first_seen"], e["first_seen"])
            m["last_seen"] = max(m["last_seen"], e["last_seen"])
    ranked = sorted(entries.values(), key=lambda e: (-e["count"], -e["pinned_seconds"]))
    ledger = []
    for e in ranked[:TOP]:
        e["hint"] = hint(
            e["reason"], user=e["user"], count=e["count"], fingerprint=e["fingerprint"]
        )
        ledger.append(e)
    by_minute: dict[int, Counter[tuple[str, str]]] = {}
    for _, part in parts:
        for minute, counts in part["window"]:
            c = by_minute.setdefault(minute, Counter())
            for user, reason, n in counts:
                c[(user, reason)] += n
    last = int(now // 60)
    recent: Counter[tuple[str, str]] = Counter()
    series = []
    for minute in range(last - minutes + 1, last + 1):
        counts = by_minute.get(minute, Counter())
        recent.update(counts)
        by_reason: Counter[str] = Counter()
        for (_user, reason), n in counts.items():
            by_reason[reason] += n
        series.append(
            {
                "minute": minute * 60,
                "total": sum(by_reason.values()),
                "by_reason": dict(by_reason.most_common()),
            }
        )
    pins: Counter[str] = Counter()
    sessions_by_user: Counter[str] = Counter()
    for _, part in parts:
        pins.update(part["pins"])
        sessions_by_user.update(part["sessions_by_user"])
    return {
        "generated_at": generated_at,
        "window_minutes": minutes,
        "ledger": ledger,
        "ledger_entries": len(entries),
        "recent": [
            {"user": user, "reason": reason, "count": n}
            for (user, reason), n in recent.most_common(TOP)
        ],
        "series": series,
        "pins_by_reason": dict(pins.most_common()),
        "sessions_by_user": dict(sessions_by_user),
    }


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def metrics(parts: Sequence[tuple[int, str]], missing: Sequence[int] = ()) -> bytes:
    """Every worker's exposition text as one, each sample labelled with its worker, and
    ``tainted_proxy_worker_up``: 1 for each worker in ``parts``, 0 for each ``missing``
    (so a worker that did not answer is seen, not only its series gone)."""
    up = Metric(WORKER_UP, "1 if the worker answered this scrape, 0 if it did not", "gauge")
    for worker in sorted([w for w, _ in parts] + list(missing)):
        up.add_sample(WORKER_UP, {"worker": str(worker)}, 0.0 if worker in missing else 1.0)
    families: dict[str, Metric] = {WORKER_UP: up}
    for worker, text in parts:
        for fam in text_string_to_metric_families(text):
            out = families.get(fam.name)
            if out is None:
                out = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                out.add_sample(s.name, {**s.labels, "worker": str(worker)}, s.value, s.timestamp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)
