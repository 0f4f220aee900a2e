"""One process's parts of the admin views, as plain JSON-able data read from the proxy.

admin.views makes the views of these parts (admin.merge combines one part per worker),
so every interface (the HTTP endpoint and its page, /metrics, the SQL console,
``tainted-proxy report``) shows the same data and never disagrees:

* ``ledger_part``: the taint ledger and the per-minute counts (the ``report`` view: the
  ledger, largest first, with a hint per top offender, and the last minutes);
* ``pools``: per upstream login: client sessions active / idle / waiting, upstream
  connections in use and idle per settings key (the sub-pools, settings shown readably),
  pinned sessions, the multiplexing ratio; ``totals_part``: the process's totals, its
  checkout wait samples and the ratio's history;
* ``sessions``: one row per client session (user, address, program, mode, held upstream
  connection and its server thread id, pin with reasons, objects and age, current
  statement and its age);
* ``servers``: one row per upstream connection;
* ``stats``: the process counters; ``config``: the configuration, secrets left out.

Built on the event loop's thread (the proxy's state is never read from another thread).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from tainted_proxy.admin import merge
from tainted_proxy.taint.classifier import cache_bytes, cache_len
from tainted_proxy.taint.fingerprint import fingerprint

if TYPE_CHECKING:
    from tainted_proxy.backend.server import ServerConn
    from tainted_proxy.frontend.client import Client
    from tainted_proxy.frontend.client import Services as Proxy


def settings_text(settings: frozenset[tuple[str, str]], schema: str | None = None) -> str:
    """A settings key as an operator reads it: ``time_zone=+05:30, @v='x'; schema=db``."""
    parts = [f"{n}={v}" for n, v in sorted(settings)]
    text = ", ".join(parts) if parts else "(server defaults)"
    return text if schema is None else f"{text}; schema={schema}"


def _fingerprint(sql: bytes) -> str:
    if not sql:
        return ""
    text = fingerprint(sql[:4096])
    return text if len(text) <= 200 else text[:199] + "…"


def session_row(cl: Client, now: float) -> dict[str, Any]:
    state = cl.state
    up = cl.up
    ticket = cl.pin_ticket
    busy = cl.busy and cl.command_started
    return {
        "id": cl.id,
        "user": cl.user,
        "address": cl.io.peer_host,
        "program": cl.program,
        "mode": "admin" if cl.admin else (state.mode or "session"),
        "state": "active" if cl.busy else ("holding" if up is not None else "idle"),
        "upstream_thread_id": up.thread_id if up is not None else None,
        "pin": state.pin_reason,
        "pin_reasons": state.pins.reasons(),
        "pin_objects": state.pins.objects(),
        "pin_age_seconds": round(time.time() - ticket.started, 3) if ticket else None,
        # the fingerprint (literals as ?), as in the ledger: never the values themselves
        "statement": (
            cl.statement.fingerprint if cl.statement is not None else _fingerprint(cl.sql)
        )
        if busy
        else None,
        "statement_age_seconds": round(now - cl.command_started, 3) if busy else None,
        "connected_seconds": round(now - cl.connected_at, 1),
        "statements": cl.queries,
    }


def sessions(proxy: Proxy) -> list[dict[str, Any]]:
    now = time.monotonic()
    return [session_row(cl, now) for cl in list(proxy.sessions.values()) if cl.login is not None]


def server_row(conn: ServerConn, holder: Client | None, now: float) -> dict[str, Any]:
    return {
        "thread_id": conn.thread_id,
        "upstream_user": conn.user,
        "state": "in use" if holder is not None else "idle",
        "client_id": holder.id if holder is not None else None,
        "settings": settings_text(conn.settings, conn.schema),
        "age_seconds": round(now - conn.created_at, 1),
        "idle_seconds": round(now - conn.last_used, 1) if holder is None else 0.0,
    }


def servers(proxy: Proxy) -> list[dict[str, Any]]:
    now = time.monotonic()
    holders = {id(cl.up): cl for cl in proxy.sessions.values() if cl.up is not None}
    pool = proxy.pool
    rows = [server_row(c, holders.get(id(c)), now) for c in pool.in_use]
    for stack in pool.idle.values():
        rows.extend(server_row(c, None, now) for c in stack)
    rows.sort(key=lambda r: r["thread_id"])
    return rows


def pools(proxy: Proxy) -> list[dict[str, Any]]:
    """One row per upstream login."""
    pool = proxy.pool
    by_login: dict[str, dict[str, Any]] = {}

    def row(login: str) -> dict[str, Any]:
        r = by_login.get(login)
        if r is None:
            r = by_login[login] = {
                "upstream_user": login,
                "users": set(),
                "modes": set(),
                **dict.fromkeys(merge.POOL_COUNTS, 0),
                "cap": pool.budget.user_cap(login),
                "subpools": Counter(),
                "subpools_in_use": Counter(),
            }
        return r

    for cl in proxy.sessions.values():
        if cl.key is None:
            continue
        r = row(cl.key.user)
        r["users"].add(cl.user)
        r["modes"].add(cl.state.mode or "session")
        if cl.busy or cl.up is not None:
            r["clients_active"] += 1
        else:
            r["clients_idle"] += 1
        if cl.state.pin_reason is not None:
            r["pinned"] += 1
    for w in pool.waiters:
        row(w.key.user)["clients_waiting"] += 1
    for c in pool.in_use:
        if c.key is not None:
            r = row(c.key.user)  # type: ignore[attr-defined]
            r["upstream_in_use"] += 1
            r["subpools_in_use"][settings_text(c.settings, c.schema)] += 1
    for key, stack in pool.idle.items():
        r = row(key.user)
        r["upstream_idle"] += len(stack)
        for c in stack:
            r["subpools"][settings_text(c.settings, c.schema)] += 1
    out = []
    for r in by_login.values():
        upstream = r["upstream_in_use"] + r["upstream_idle"]
        clients = r["clients_active"] + r["clients_idle"]
        r["users"] = sorted(r["users"])
        r["modes"] = sorted(r["modes"])
        # one sub-pool per settings key: its idle connections (what a checkout with
        # those settings takes without a round trip) and those in use now
        r["subpools"] = merge.subpool_rows(r["subpools"], r.pop("subpools_in_use"))
        r["multiplexing_ratio"] = merge.multiplexing_ratio(clients, upstream)
        out.append(r)
    return sorted(out, key=lambda r: r["upstream_user"])


def totals_part(proxy: Proxy) -> dict[str, Any]:
    """This process's part of ``totals`` (admin.merge.totals): its wait samples raw."""
    pool = proxy.pool
    return {
        "client_sessions": len(proxy.sessions),
        "upstream_connections": pool.total,
        "upstream_cap": pool.max_connections,
        "upstream_idle": pool.idle_count,
        "waiting": len(pool.waiters),
        "pinned": proxy.accounting.stats.pinned_now,
        "wait_samples": list(proxy.accounting.waits),
        "history": [
            {"time": t, "client_sessions": c, "upstream_connections": u}
            for t, c, u in proxy.accounting.history
        ],
    }


def ledger_part(proxy: Proxy) -> dict[str, Any]:
    """This process's part of ``report`` (admin.merge.report): the whole ledger and the
    per-minute counts."""
    acc = proxy.accounting
    return {
        "entries": [e.as_dict() for e in acc.entries.values()],
        "window": [
            (minute, [(user, reason, n) for (user, reason), n in counts.items()])
            for minute, counts in acc.window
        ],
        "pins": dict(acc.stats.pins),
        "sessions_by_user": dict(Counter(cl.user for cl in proxy.sessions.values())),
    }


def stats(proxy: Proxy) -> dict[str, Any]:
    s = proxy.accounting.stats
    ps = proxy.pool.stats
    out: dict[str, Any] = {
        name: getattr(s, name)
        for name in s.__slots__  # type: ignore[attr-defined]
        if not isinstance(getattr(s, name), Counter)
    }
    out["errors"] = dict(s.errors)
    out["pins"] = dict(s.pins)
    out["pool"] = {name: getattr(ps, name) for name in ps.__slots__}  # type: ignore[attr-defined]
    out["classifier_cache"] = {"entries": cache_len(), "bytes": cache_bytes()}
    return out


def config(proxy: Proxy) -> dict[str, Any]:
    """The configuration in force, passwords and tokens left out."""
    data = proxy.config.model_dump(mode="json")
    return _redact(data)


_SECRET_WORDS = ("password", "token", "secret", "stage2")


def _redact(v: Any) -> Any:
    if isinstance(v, dict):
        return {
            k: ("(set)" if v2 else "") if any(w in k for w in _SECRET_WORDS) else _redact(v2)
            for k, v2 in v.items()
        }
    if isinstance(v, list):
        return [_redact(x) for x in v]
    return v
