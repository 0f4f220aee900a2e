"""The text output of ``tainted-proxy analyze``: rich tables over `Analyzer.report`'s dict."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


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

    modes = Table(
        title="How sessions would behave, per mode", box=box.SIMPLE_HEAD, title_justify="left"
    )
    modes.add_column("user", style="bold")
    modes.add_column("mode")
    modes.add_column("sessions that hold", justify="right")
    modes.add_column("why (sessions)")
    modes.add_column("held for, statements\nmedian / p95 / max")
    modes.add_column("refused", justify="right")
    modes.add_column("peak\n(holding)", justify="right")
    for i, u in enumerate(users):
        n = u["sessions"]
        m = u["modes"]
        tx, st = m["transaction"], m["statement"]
        modes.add_row(
            u["user"],
            "session",
            f"{n:,} (100%)" if n else "0",
            "own connection, login to logout",
            "—",
            "—",
            str(m["session"]["peak_connections"]),
        )
        held = [f"pins: {_lengths(tx['pinned_statements'])}"]
        if tx["transactions"]["count"]:
            held.append(f"transactions: {_lengths(tx['transactions'])}")
        hold_tx = f"{tx['pinned_sessions']:,} pin ({_pct(tx['pinned_share'])})"
        if tx["transaction_sessions"]:
            hold_tx += f"\n{tx['transaction_sessions']:,} in transactions"
        modes.add_row(
            "",
            "transaction",
            hold_tx,
            _reasons(tx["pin_reasons"]),
            "\n".join(held),
            "—",
            f"{tx['peak_connections']} ({tx['peak_holding']})",
        )
        refused = "—"
        if st["refused_statements"]:
            refused = (
                f"{st['refused_statements']:,} statements\n"
                f"{st['refused_sessions']:,} sessions ({_pct(st['refused_share'])})"
            )
        modes.add_row(
            "",
            "statement",
            f"{st['pinned_sessions']:,} pin ({_pct(st['pinned_share'])})",
            _reasons(st["pin_reasons"]),
            f"pins: {_lengths(st['pinned_statements'])}",
            refused,
            f"{st['peak_connections']} ({st['peak_holding']})",
            end_section=i < len(users) - 1,
        )
    console.print(modes)

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
                "refused": f"refused ({o['reason']})",
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
        console.print(Text("Hints", style="bold"))
        for i, o in enumerate(top, 1):
            console.print(f"{i:>3}. {o['hint']}", highlight=False)
        console.print()

    rec = Table(title="Recommended pool mode", box=box.SIMPLE_HEAD, title_justify="left")
    rec.add_column("user", style="bold")
    rec.add_column("mode", style="bold green")
    rec.add_column("why")
    for u in users:
        rec.add_row(u["user"], u["recommended"]["mode"], u["recommended"]["reason"])
    console.print(rec)
