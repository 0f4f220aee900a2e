"""The text output of ``tainted-proxy analyze``: rich tables over `Analyzer.report`'s dict."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_REFUSED = {
    "autocommit": "SET autocommit=0",
    "tx_begin": "BEGIN / START TRANSACTION",
    "xa": "XA START",
}


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _lengths(d: dict[str, Any]) -> str:
    if not d["count"]:
        return "—"
    return f"{d['median']} / {d['p95']} / {d['max']}"


def _reasons(reasons: dict[str, int], limit: int = 3) -> str:
    if not reasons:
        return "—"
    items = list(reasons.items())
    shown = [f"{r} ({n})" for r, n in items[:limit]]
    if len(items) > limit:
        shown.append(f"+{len(items) - limit} more")
    return "\n".join(shown)


def render(report: dict[str, Any], console: Console, source: str = "") -> None:
    """Print ``report`` (`Analyzer.report`) as tables."""
    users = report["users"]
    span = ""
    if report["first_time"]:
        span = f", {report['first_time']} → {report['last_time']} ({report['seconds']} s)"
    console.print(
        Text.assemble(
            ("general log ", "bold"),
            (source, "bold cyan"),
            f"{span}: {report['events']:,} events, {len(users)} users, "
            f"{report['sessions']:,} sessions, {report['statements']:,} statements"
            + (f", {report['failed_logins']} failed logins" if report["failed_logins"] else ""),
        )
    )
    if not users:
        console.print("no sessions found")
        return

    summary = Table(title="Per user", box=box.SIMPLE_HEAD, title_justify="left")
    summary.add_column("user", style="bold")
    summary.add_column("sessions", justify="right")
    summary.add_column("statements", justify="right")
    summary.add_column("settings keys", justify="right")
    summary.add_column("peak upstream\nsession / transaction / statement", justify="center")
    summary.add_column("recommended", style="bold green")
    for u in users:
        m = u["modes"]
        keys = f"{u['settings_keys']:,}" + ("+" if u["settings_keys_capped"] else "")
        summary.add_row(
            u["user"],
            f"{u['sessions']:,}",
            f"{u['statements']:,}",
            keys,
            f"{m['session']['peak_connections']} / {m['transaction']['peak_connections']} / "
            f"{m['statement']['peak_connections']}",
            u["recommended"]["mode"],
        )
    console.print(summary)

    tx = Table(
        title="Transaction mode: a session holds a connection while a transaction is open "
        "or it is pinned",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    tx.add_column("user", style="bold")
    tx.add_column("sessions\nthat pin", justify="right")
    tx.add_column("why (sessions)")
    tx.add_column("statements pinned\nmed / p95 / max", justify="center")
    tx.add_column("sessions with\ntransactions", justify="right")
    tx.add_column("statements per tx\nmed / p95 / max", justify="center")
    tx.add_column("peak\n(holding)", justify="right")
    for u in users:
        m = u["modes"]["transaction"]
        pinned = _lengths(m["pinned_statements"])
        if m["pinned_until_session_end"]:
            pinned += f"\n{m['pinned_until_session_end']:,} until the session ended"
        tx.add_row(
            u["user"],
            f"{m['pinned_sessions']:,} ({_pct(m['pinned_share'])})",
            _reasons(m["pin_reasons"]),
            pinned,
            f"{m['transaction_sessions']:,}",
            _lengths(m["transactions"]),
            f"{m['peak_connections']} ({m['peak_holding']})",
        )
    console.print(tx)

    st = Table(
        title="Statement mode: as transaction mode, and statements that would open a "
        "transaction are refused",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    st.add_column("user", style="bold")
    st.add_column("refused\nstatements", justify="right")
    st.add_column("sessions with\na refusal", justify="right")
    st.add_column("why (statements)")
    st.add_column("sessions\nthat pin", justify="right")
    st.add_column("why (sessions)")
    st.add_column("peak\n(holding)", justify="right")
    for u in users:
        m = u["modes"]["statement"]
        st.add_row(
            u["user"],
            f"{m['refused_statements']:,}",
            f"{m['refused_sessions']:,} ({_pct(m['refused_share'])})",
            _reasons({_REFUSED.get(k, k): n for k, n in m["refused"].items()}),
            f"{m['pinned_sessions']:,} ({_pct(m['pinned_share'])})",
            _reasons(m["pin_reasons"]),
            f"{m['peak_connections']} ({m['peak_holding']})",
        )
    console.print(st)

    settings = [(u, s) for u in users for s in u["settings"]]
    if settings:
        t = Table(title="Settings the sessions set", box=box.SIMPLE_HEAD, title_justify="left")
        t.add_column("user", style="bold")
        t.add_column("variable")
        t.add_column("sessions", justify="right")
        t.add_column("distinct values", justify="right")
        t.add_column("statement")
        last = None
        for u, s in settings:
            t.add_row(
                u["user"] if u["user"] != last else "",
                s["name"],
                f"{s['sessions']:,}",
                f"{s['values']:,}" + ("+" if s["values_capped"] else ""),
                s["fingerprint"],
            )
            last = u["user"]
        console.print(t)

    top = report["top_offenders"]
    if top:
        t = Table(title="Top offenders", box=box.SIMPLE_HEAD, title_justify="left")
        t.add_column("#", justify="right")
        t.add_column("user", style="bold")
        t.add_column("what")
        t.add_column("statement")
        t.add_column("sessions", justify="right")
        t.add_column("statements", justify="right")
        for i, o in enumerate(top, 1):
            what = {
                "pin": f"pins: {o['reason']}",
                "refused": f"refused: {_REFUSED.get(o['reason'], o['reason'])}",
                "settings": f"settings: {o['reason']}",
            }.get(o["kind"], o["kind"])
            t.add_row(
                str(i),
                o["user"],
                what,
                o["fingerprint"],
                f"{o['sessions']:,}",
                f"{o['statements']:,}",
            )
        console.print(t)
        other = report.get("other_offenders") or []
        if other:
            n = sum(o["statements"] for o in other)
            console.print(f"  (and {n:,} statements of rarer shapes, counted together)")
        hints = Table(title="Hints", box=None, show_header=False, title_justify="left")
        hints.add_column("#", justify="right")
        hints.add_column("hint")
        for i, o in enumerate(top, 1):
            hints.add_row(str(i), o["hint"])
        console.print(hints)
        console.print()

    rec = Table(title="Recommended pool mode", box=box.SIMPLE_HEAD, title_justify="left")
    rec.add_column("user", style="bold")
    rec.add_column("mode", style="bold green")
    rec.add_column("why")
    for u in users:
        rec.add_row(u["user"], u["recommended"]["mode"], u["recommended"]["reason"])
    console.print(rec)
