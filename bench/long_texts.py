"""One client's long statements against everyone else's latency.

``.venv/bin/python bench/long_texts.py [--seconds 8] [--terms 60000] [--tree NAME=DIR]``:

* starts a private MariaDB and this checkout's proxy (``bench/run.py``'s ``ProxyProcess``,
  transaction mode, 4 upstream connections); with ``--tree NAME=DIR`` also another
  checkout's proxy (a git worktree of an older commit), for a before/after in one run;
* per proxy: a *light* client runs ``SELECT 1`` in a loop for ``--seconds`` alone, then as
  long again while a *heavy* client sends, over and over, one long statement the
  classifier's gate cannot clear (``SELECT 1 FROM DUAL WHERE @never IS NOT NULL AND (@v0 =
  0 OR @v1 = 1 OR ...)``, ``--terms`` terms, about 15 bytes each, a new comment each time
  so the cache never answers);
* reports the light client's statements and latency (p50, p99, max) in both phases, and
  the heavy client's statements.

What it shows: whether classifying a long text stalls the proxy's other sessions
(``frontend/classification.py`` analyses texts of 64 KiB or more in a worker thread).
No threshold is asserted; ``--smoke`` (a second a phase, 5,000 terms) only checks that the
script runs (tests/integration/test_bench_long_texts.py). Loopback only, bounded: at
most 60 s a phase.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pymysql

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "bench"):  # run as a plain script from anywhere
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from run import (  # noqa: E402
    DB,
    HOST,
    PASSWORD,
    USER,
    ProxyProcess,
    command_line,
    script_main,
    sigterm_as_interrupt,
)

from tainted_proxy.testing.mariadb import MariaDBServer  # noqa: E402

SCRIPT = "bench/long_texts.py"


def long_text(terms: int) -> str:
    expr = " OR ".join(f"@v{i % 3} = {i}" for i in range(terms))
    return f"SELECT 1 FROM DUAL WHERE @never IS NOT NULL AND ({expr})"


def _connect(port: int) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=HOST, port=port, user=USER, password=PASSWORD, database=DB, autocommit=True
    )


def phase(port: int, seconds: float, heavy_text: str | None) -> dict[str, Any]:
    """The light client for ``seconds``, with the heavy one beside it if ``heavy_text``."""
    stop = threading.Event()
    latencies: list[float] = []
    errors: list[str] = []
    heavy_done = [0]

    def light() -> None:
        try:
            conn = _connect(port)
            cur = conn.cursor()
            while not stop.is_set():
                t = time.perf_counter()
                cur.execute("SELECT 1")
                cur.fetchall()
                latencies.append(time.perf_counter() - t)
            conn.close()
        except pymysql.MySQLError as exc:
            errors.append(f"light: {exc}")

    def heavy() -> None:
        assert heavy_text is not None
        try:
            conn = _connect(port)
            cur = conn.cursor()
            while not stop.is_set():
                cur.execute(f"{heavy_text} /* {heavy_done[0]} */")
                cur.fetchall()
                heavy_done[0] += 1
            conn.close()
        except pymysql.MySQLError as exc:
            errors.append(f"heavy: {exc}")

    threads = [threading.Thread(target=light)]
    if heavy_text is not None:
        threads.append(threading.Thread(target=heavy))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    lat = sorted(latencies)

    def ms(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3, 2) if lat else None

    return {
        "light_statements": len(lat),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": round(lat[-1] * 1e3, 1) if lat else None,
        "heavy_statements": heavy_done[0] if heavy_text is not None else None,
        "errors": errors,
    }


def run_long_texts(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tp-long-"))
    srv = MariaDBServer(max_connections=151)
    proxies: list[ProxyProcess] = []
    runs: list[dict[str, Any]] = []
    text = long_text(args.terms)
    t_start = time.monotonic()
    try:
        with sigterm_as_interrupt():
            srv.start()
            srv.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
            srv.create_user(USER, PASSWORD)
            proxies.append(ProxyProcess(workdir, srv.port, 4, "transaction"))
            for name, tree in args.trees.items():
                proxies.append(ProxyProcess(workdir, srv.port, 4, "transaction", (name, tree)))
            for proxy in proxies:
                proxy.start()
            print(f"MariaDB {srv.version} on {HOST}:{srv.port}; long text {len(text):,} bytes")
            for proxy in proxies:
                for heavy in (False, True):
                    r = phase(proxy.port, args.seconds, text if heavy else None)
                    r.update(target=proxy.name, heavy=heavy)
                    runs.append(r)
                    print(f"  {fmt(r)}")
                    sys.stdout.flush()
    finally:
        for proxy in proxies:
            proxy.stop()
        srv.close()
        shutil.rmtree(workdir, ignore_errors=True)
    errors = [e for r in runs for e in r["errors"]]
    return {
        "command": args.command,
        "settings": {"seconds": args.seconds, "terms": args.terms, "text_bytes": len(text)},
        "runs": runs,
        "errors": errors,
        "seconds_total": round(time.monotonic() - t_start, 1),
        "ok": bool(runs) and not errors,
    }


def fmt(r: dict[str, Any]) -> str:
    phase_name = "with the long texts" if r["heavy"] else "alone"
    out = (
        f"{r['target']:<22} light client {phase_name:<20} {r['light_statements']:>7,} "
        f"statements, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms"
    )
    if r["heavy"]:
        out += f"; long statements {r['heavy_statements']}"
    return out + "".join(f"\n    {e}" for e in r["errors"][:3])


def report(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"## Long texts: a light client's latency beside {s['text_bytes']:,}-byte statements, "
        f"{s['seconds']} s a phase",
        "",
        "| proxy | phase | light statements | p50 ms | p99 ms | max ms | long statements |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['target']} | {'with long texts' if r['heavy'] else 'alone'} "
            f"| {r['light_statements']:,} | {r['p50_ms']} | {r['p99_ms']} | **{r['max_ms']}** "
            f"| {r['heavy_statements'] if r['heavy'] else '–'} |"
        )
    lines += ["", f"total {result['seconds_total']:.0f} s; command: {result['command']}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="seconds a phase (8)")
    p.add_argument("--terms", type=int, default=60_000, help="terms in the long text (60000)")
    p.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another checkout of tainted-proxy, measured too (a before/after)",
    )
    p.add_argument("--smoke", action="store_true", help="1 s a phase, 5,000 terms")
    p.add_argument("--json", metavar="PATH", help="save the results as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        args.seconds, args.terms = 1.0, 5000
    if not 0 < args.seconds <= 60 or not 1 <= args.terms <= 500_000:
        p.error("need 0 < --seconds <= 60 and 1 <= --terms <= 500000")
    args.trees = {}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        if not name or not (Path(path) / "tainted_proxy").is_dir():
            p.error(f"--tree {spec!r}: expected NAME=DIR, DIR a checkout of tainted-proxy")
        args.trees[name] = Path(path).resolve()
    args.command = command_line(SCRIPT, argv)
    return args


def main(argv: list[str] | None = None) -> int:
    return script_main(parse_args(argv), run_long_texts, report)


if __name__ == "__main__":
    sys.exit(main())
