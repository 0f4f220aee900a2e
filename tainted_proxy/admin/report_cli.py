"""``tainted-proxy report``: what a running proxy's admin endpoint says, as tables or JSON.

Fetches ``/report``, ``/pools`` and ``/sessions`` from the admin HTTP endpoint
(docs/admin.md) and prints the totals, the pools and sub-pools, the sessions (pinned ones
first) and the taint ledger with a hint per offender. ``--json`` prints the three views as
one JSON object instead. Standard library HTTP (urllib) and ``rich`` for the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from tainted_proxy.accounting import WINDOW_MINUTES
from tainted_proxy.admin.merge import POOL_COUNTS

DEFAULT_URL = "http://127.0.0.1:6034"
TOKEN_ENV = "TAINTED_PROXY_ADMIN_TOKEN"
TIMEOUT = 10.0


class ReportError(Exception):
    """The endpoint could not be read; the message says why and what to do."""


def fetch(url: str, path: str, token: str | None) -> Any:
    req = urllib.request.Request(url.rstrip("/") + path, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            hint = "wrong token" if token else f"pass --token or set {TOKEN_ENV}"
            raise ReportError(f"{url}: 401 unauthorized ({hint})") from None
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise ReportError(f"{url}{path}: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise ReportError(
            f"cannot reach {url}: {exc.reason} (is the proxy running with [admin] listen?)"
        ) from None
    except (TimeoutError, ValueError) as exc:
        raise ReportError(f"{url}{path}: {exc}") from None


def collect(url: str, token: str | None, minutes: int) -> dict[str, Any]:
    return {
        "url": url,
        "report": fetch(url, f"/report?minutes={minutes}", token),
        "pools": fetch(url, "/pools", token),
        "sessions": fetch(url, "/sessions", token),
    }


# -- rendering ------------------------------------------------------------------------------


def _secs(v: float | None) -> str:
    if v is None:
        return "—"
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min"


def _v(v: Any) -> str:
    if v is None or v == "" or v == []:
        return "—"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _advice(hint: str) -> str:
    """The hint without its "N × reason of user U by `statement`:" prefix."""
    i = hint.find("`: ")
    return hint[i + 3 :] if i >= 0 else hint


def render(data: dict[str, Any], console: Any) -> None:
    from rich import box
    from rich.table import Table

    report, pools, sessions = data["report"], data["pools"], data["sessions"]
    t = pools["totals"]
    w = t["wait_seconds"]
    when = time.strftime("%H:%M:%S", time.localtime(report["generated_at"]))
    console.print(
        f"[bold]tainted-proxy[/bold] at {data['url']} ({when}): "
        f"{t['client_sessions']} client sessions on {t['upstream_connections']} upstream "
        f"connections (cap {t['upstream_cap']}, {t['upstream_idle']} idle)\n"
        f"multiplexing ratio {_v(t['multiplexing_ratio'])}, {t['pinned']} pinned, "
        f"{t['waiting']} waiting; checkout wait p50 {_secs(w['p50'])}, p99 {_secs(w['p99'])}",
        highlight=False,
    )
    pins = report["pins_by_reason"]
    if pins:
        console.print(
            "pins since start: " + ", ".join(f"{r} {n}" for r, n in pins.items()), highlight=False
        )

    def table(title: str) -> Table:
        return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)

    tp = table("Pools")
    for col in ("upstream user", "proxy users", "modes"):
        tp.add_column(col)
    for col in ("active", "idle", "waiting", "pinned", "in use", "idle conns", "cap", "ratio"):
        tp.add_column(col, justify="right")
    subpools = table("Sub-pools (upstream connections per settings key)")
    subpools.add_column("upstream user")
    subpools.add_column("settings", overflow="fold")
    subpools.add_column("idle", justify="right")
    subpools.add_column("in use", justify="right")
    for p in pools["pools"]:
        tp.add_row(
            p["upstream_user"],
            _v(p["users"]),
            _v(p["modes"]),
            *(str(p[k]) for k in (*POOL_COUNTS, "cap")),
            _v(p["multiplexing_ratio"]),
        )
        for sp in p["subpools"]:
            subpools.add_row(p["upstream_user"], sp["settings"], str(sp["idle"]), str(sp["in_use"]))
    console.print(tp)
    if subpools.row_count:
        console.print(subpools)

    ts = table(f"Sessions ({len(sessions)}, {sum(1 for s in sessions if s['pin'])} pinned)")
    for col in ("id", "user", "address", "program", "mode", "state", "thread"):
        ts.add_column(col, justify="right" if col in ("id", "thread") else "left")
    ts.add_column("pin (reasons; objects)", overflow="fold")
    ts.add_column("pinned for", justify="right")
    ts.add_column("statement", overflow="fold")
    ts.add_column("running for", justify="right")
    ordered = sorted(
        sessions, key=lambda s: (s["pin"] is None, -(s["pin_age_seconds"] or 0), s["id"])
    )
    for s in ordered:
        pin = "—"
        if s["pin"]:
            pin = ", ".join(s["pin_reasons"]) or s["pin"]
            if s["pin_objects"]:
                pin += "; " + ", ".join(s["pin_objects"])
        ts.add_row(
            str(s["id"]),
            s["user"],
            _v(s["address"]),
            _v(s["program"]),
            s["mode"],
            s["state"],
            _v(s["upstream_thread_id"]),
            pin,
            _secs(s["pin_age_seconds"]),
            _v(s["statement"]),
            _secs(s["statement_age_seconds"]),
        )
    console.print(ts)

    recent = {(r["user"], r["reason"]): r["count"] for r in report["recent"]}
    tl = table(
        f"Taint ledger ({report['ledger_entries']} entries; "
        f"'last {report['window_minutes']} min' = pins and events of that user and reason)"
    )
    tl.add_column("count", justify="right")
    tl.add_column(f"last {report['window_minutes']} min", justify="right")
    for col in ("user", "program", "mode", "reason"):
        tl.add_column(col)
    tl.add_column("statement", overflow="fold")
    tl.add_column("pinned", justify="right")
    tl.add_column("hint", overflow="fold")
    for e in report["ledger"]:
        tl.add_row(
            str(e["count"]),
            str(recent.get((e["user"], e["reason"]), 0)),
            e["user"],
            _v(e["program"]),
            e["mode"],
            e["reason"],
            e["fingerprint"],
            _secs(e["pinned_seconds"]),
            _advice(e["hint"]),
        )
    if report["ledger"]:
        console.print(tl)
    else:
        console.print("Taint ledger: nothing has pinned, been refused or changed state unexplained")


def _from_config(path: str) -> tuple[str, str]:
    """(url, token) from a config file's [admin] section."""
    from tainted_proxy.config import load_config

    cfg = load_config(path)
    if not cfg.admin.listen:
        raise ReportError(f"{path}: [admin] listen is empty (the admin endpoint is off)")
    host, port = cfg.admin.listen_host, cfg.admin.listen_port
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return (f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"), cfg.admin.token


def _minutes(text: str) -> int:
    n = int(text)
    if not 1 <= n <= WINDOW_MINUTES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {WINDOW_MINUTES}")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tainted-proxy report",
        description="Show a running proxy's pools, sessions and taint ledger (from its admin "
        "HTTP endpoint).",
    )
    parser.add_argument("--url", help=f"the admin endpoint (default: {DEFAULT_URL})")
    parser.add_argument(
        "--config", "-c", help="take the URL and token from this file's [admin] section"
    )
    parser.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV})")
    parser.add_argument("--json", action="store_true", help="print the views as JSON")
    parser.add_argument(
        "--minutes",
        type=_minutes,
        default=5,
        help="window of the 'recent' counts, 1 to 60 (default: 5)",
    )
    args = parser.parse_args(argv)
    try:
        url, token = DEFAULT_URL, os.environ.get(TOKEN_ENV) or None
        if args.config:
            url, token = _from_config(args.config)
            token = token or None
        url = args.url or url
        token = args.token or token
        data = collect(url, token, args.minutes)
    except ReportError as exc:
        print(f"tainted-proxy report: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a config error from --config
        from tainted_proxy.config import ConfigError

        if isinstance(exc, ConfigError):
            print(exc, file=sys.stderr)
            return 2
        raise
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)
    render(data, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
