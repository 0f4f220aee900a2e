"""More clients than the server allows: 2,000 clients through a 20-connection pool (issue 11).

``.venv/bin/python bench/many_clients.py [--clients 2000] [--json PATH]``:

* starts a private MariaDB with ``max_connections = 151`` (its default) and a sysbench table
  ``sbtest.sbtest1``; the account ``app`` gets privileges on ``sbtest`` only, so it has no
  SUPER / CONNECTION ADMIN and no extra connection beyond the 151;
* starts this checkout's proxy as a subprocess (``bench/run.py``'s ``ProxyProcess``),
  transaction pool mode, ``upstream.max_connections = 20``, ``proxy.max_client_connections``
  above ``--clients``, admin endpoint on (its ``/stats``: the pool's own peak);
* runs ``sysbench oltp_point_select`` (text protocol) through the proxy with ``--clients``
  threads and with ``--base-clients`` (16) threads, and directly against MariaDB with
  ``--base-clients`` threads for reference, in interleaved rounds (the order rotates each
  round, as in run.py); the ratio TPS(N clients) / TPS(16 clients) is taken within a round;
* around every proxy run: ``FLUSH STATUS`` before, ``Max_used_connections`` after (minus the
  monitoring connection): the most upstream connections the server saw, which must be
  <= 20; the proxy's CPU per statement (/proc/PID/stat) and its RSS (sampled every 0.2 s);
* with ``--control``, also direct × ``--clients`` threads, the server's ``max_connections``
  raised for those runs only (``SET GLOBAL``): how much of the drop from 16 to 2,000
  clients the load generator and the server cause with no proxy in between, in the same
  rounds (each target's ratio is taken to the same target at ``--base-clients``);
* at the end, ``--direct-clients`` raw logins straight to MariaDB, all held at once: how
  many got ERR 1040 *Too many connections*. That is the point of the pool.

Prints a markdown table and the command; ``--json PATH`` saves everything. Exit status 0
when no run failed, no statement failed and the upstream peak stayed <= 20.

Bounded: at most ``MAX_CLIENTS`` clients, 60 s per run, 10 rounds; loopback only.
Everything it starts is stopped on exit, Ctrl-C included. Figures: docs/benchmarks.md,
"More clients than the server allows".
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "bench"):  # run as a plain script from anywhere
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from idle_clients import login, memory_kb  # noqa: E402
from run import (  # noqa: E402
    DB,
    HOST,
    PASSWORD,
    USER,
    Direct,
    ProxyProcess,
    RunResult,
    Sysbench,
    Target,
    command_line,
    environment,
    med_range,
    ratio_cell,
    run_one,
    script_main,
    sigterm_as_interrupt,
)

from tainted_proxy.testing.mariadb import MariaDBServer  # noqa: E402

SCRIPT = "bench/many_clients.py"
SERVER_MAX_CONNECTIONS = 151  # MariaDB's default
UPSTREAM_MAX = 20
#: the first seconds of a run, left out (2,000 threads log in then): --settle
SETTLE = 5
MAX_CLIENTS = 5000
# fds the proxy needs besides its clients (listener, pool, admin, logs, epoll)
SPARE_FDS = 200


# --------------------------------------------------------------------------------------------
# Measurements around one run
# --------------------------------------------------------------------------------------------


def server_peak_reset(srv: MariaDBServer) -> None:
    """FLUSH STATUS sets Max_used_connections back to the connections open now (the
    proxy's idle pool and this one), so the next reading is the peak of one run."""
    srv.execute("FLUSH STATUS")


def server_peak(srv: MariaDBServer) -> int:
    """Max_used_connections minus this monitoring connection: the most connections anyone
    else (here: only the proxy) held at once since the last reset."""
    rows = srv.execute("SHOW GLOBAL STATUS LIKE 'Max_used_connections'")
    return int(rows[0][1]) - 1


class RssSampler(threading.Thread):
    """The proxy's VmRSS every ``every`` seconds while a run lasts (peak and last, kB)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.peak_kb = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while True:
            with contextlib.suppress(OSError, KeyError):
                self.peak_kb = max(self.peak_kb, memory_kb(self.pid)["VmRSS"])
            if self.stop_event.wait(self.every):
                return

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.join()


# --------------------------------------------------------------------------------------------
# Direct logins: how many the server refuses
# --------------------------------------------------------------------------------------------


def _login_worker(port: int, count: int, results: Any, release: Any) -> None:
    """Try ``count`` logins, keep the ones that worked open until ``release`` is set, so
    every worker's connections are held at the same time."""
    socks = []
    outcome: Counter[str] = Counter()
    for _ in range(count):
        try:
            socks.append(login(port, database=DB))
            outcome["connected"] += 1
        except RuntimeError as exc:  # "login: ERR 1040 Too many connections" and the like
            text = str(exc)
            outcome["ERR 1040" if "ERR 1040" in text else text[:80]] += 1
        except OSError as exc:
            outcome[f"{type(exc).__name__}: {exc}"[:80]] += 1
    results.put(dict(outcome))
    release.wait(120)
    for s in socks:
        s.close()


def direct_logins(port: int, clients: int, workers: int = 4) -> dict[str, Any]:
    """``clients`` raw logins to ``port`` from ``workers`` processes, all held at once:
    connected, refused with ERR 1040, anything else."""
    ctx = mp.get_context("fork")
    results, release = ctx.Queue(), ctx.Event()
    workers = max(1, min(workers, clients))
    procs = [
        ctx.Process(
            target=_login_worker,
            args=(port, clients // workers + (i < clients % workers), results, release),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    total: Counter[str] = Counter()
    try:
        for _ in procs:
            total.update(results.get(timeout=120))
    finally:
        release.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    other = {k: v for k, v in total.items() if k not in ("connected", "ERR 1040")}
    return {
        "attempted": clients,
        "connected": total["connected"],
        "refused_1040": total["ERR 1040"],
        "other_errors": other,
    }


@contextlib.contextmanager
def server_allows(srv: MariaDBServer, clients: int) -> Any:
    """``max_connections`` raised to let ``clients`` in (``--control`` runs only), and set
    back to the default afterwards, so the direct logins at the end still meet the 151."""
    srv.execute(f"SET GLOBAL max_connections = {SERVER_MAX_CONNECTIONS + clients}")
    try:
        yield
    finally:
        srv.execute(f"SET GLOBAL max_connections = {SERVER_MAX_CONNECTIONS}")


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def measure(
    load: Sysbench,
    target: Target,
    clients: int,
    rnd: int,
    pos: int,
    srv: MariaDBServer,
    seconds: int,
) -> dict[str, Any]:
    """One sysbench run through ``target`` (run.py's ``run_one``: CPU of the proxy, mysqld,
    the load generator), plus the server's connection peak and the proxy's RSS."""
    proxy = isinstance(target, ProxyProcess)
    if proxy:
        server_peak_reset(srv)
    with RssSampler(target.pid or 0) if proxy else contextlib.nullcontext() as rss:
        r: RunResult = run_one(load, target, clients, rnd, pos, srv, seconds)
    out = {
        **{k: v for k, v in vars(r).items()},
        "proxy_us_per_stmt": r.us_per_rt(),
        "proxy_cpu_pct": None if r.proxy_cpu_s is None else 100 * r.proxy_cpu_s / r.seconds,
        "upstream_peak": server_peak(srv) if proxy else None,
        "proxy_rss_peak_kb": rss.peak_kb if rss is not None else None,
    }
    return out


def fmt(r: dict[str, Any]) -> str:
    parts = [f"{r['tps']:>9,.0f} TPS"]
    if r["p95_ms"] is not None:
        parts.append(f"p95 {r['p95_ms']} ms")
    parts.append(f"{r['errors']} errors")
    if r["proxy_us_per_stmt"] is not None:
        parts.append(f"{r['proxy_us_per_stmt']:.1f} µs/stmt, proxy CPU {r['proxy_cpu_pct']:.0f}%")
    if r["upstream_peak"] is not None:
        parts.append(f"upstream peak {r['upstream_peak']}")
    if r["proxy_rss_peak_kb"]:
        parts.append(f"RSS {r['proxy_rss_peak_kb'] / 1024:.1f} MB")
    if not r["ok"]:
        parts.append("** FAILED **")
    return ", ".join(parts)


def run_many_clients(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; the results as a dict (``summary``, ``runs``, ``direct_logins``,
    ``proxy_stats``, ``ok``...). Raises MariaDBNotFound when there is no mariadbd."""
    sysbench = shutil.which("sysbench")
    if sysbench is None:
        raise RuntimeError("sysbench not found (apt-get install -y sysbench)")
    load = Sysbench(sysbench, "disable", args.table_size)
    # sysbench's sockets, and the proxy's (it inherits the limit)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.clients + SPARE_FDS > hard:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {args.clients + SPARE_FDS}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    workdir = Path(tempfile.mkdtemp(prefix="tp-many-"))
    srv = MariaDBServer(
        max_connections=SERVER_MAX_CONNECTIONS, extra_args=["--innodb-buffer-pool-size=128M"]
    )
    proxy: ProxyProcess | None = None
    runs: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        with sigterm_as_interrupt():
            srv.start()
            srv.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
            # database privileges only: a SUPER account would get MariaDB's one extra
            # connection beyond max_connections
            srv.create_user(USER, PASSWORD, grants=f"ALL PRIVILEGES ON {DB}.*")
            load.prepare(srv.port)
            proxy = ProxyProcess(
                workdir,
                srv.port,
                UPSTREAM_MAX,
                "transaction",
                max_client_connections=args.clients + 100,
                admin=True,
            )
            proxy.start()
            print(
                f"MariaDB {srv.version} on {HOST}:{srv.port}, max_connections={srv.max_connections}"
            )
            print(f"  {proxy.describe()}, max_client_connections={proxy.max_client_connections}")
            direct = Direct(srv.port)

            def allowing(t: Target, n: int) -> Any:
                wide = t is direct and n > args.base_clients
                return server_allows(srv, n) if wide else contextlib.nullcontext()

            plan: list[tuple[Target, int]] = [
                (proxy, args.base_clients),
                (proxy, args.clients),
            ]
            if not args.no_direct or args.control:
                plan.append((direct, args.base_clients))
            if args.control:
                plan.append((direct, args.clients))
            env = environment(srv, load)
            if args.warmup > 0:
                for t, n in plan:
                    with allowing(t, n):
                        load.run(t.port, n, args.warmup)
            load.settle = args.settle
            for rnd in range(args.rounds):
                k = rnd % len(plan)
                for pos, (t, n) in enumerate(plan[k:] + plan[:k]):
                    with allowing(t, n):
                        r = measure(load, t, n, rnd, pos, srv, args.seconds)
                    r["label"] = f"{'proxy' if t is proxy else 'direct'} × {n}"
                    runs.append(r)
                    print(f"round {rnd + 1} {r['label']:<16} {fmt(r)}")
                    for line in r["error"].splitlines()[:5]:
                        print(f"    {line}")
                    sys.stdout.flush()
            stats = proxy.admin_json("/stats")
            max_connections = int(srv.execute("SELECT @@max_connections")[0][0])
            # while the proxy still holds its idle pool, as it would in production
            held = int(srv.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1]) - 1
            logins = direct_logins(srv.port, args.direct_clients)
            logins["held_by_proxy_pool"] = held
            print(
                f"direct: {logins['attempted']} logins to MariaDB (max_connections "
                f"{srv.max_connections}, {held} held by the proxy's pool): "
                f"{logins['connected']} connected, {logins['refused_1040']} refused with "
                f"ERR 1040 Too many connections, other errors {logins['other_errors'] or 0}"
            )
            problems = proxy.log_problems()
    finally:
        load.stop()
        if proxy is not None:
            proxy.stop()
        if args.keep_logs:
            print(f"proxy config and log kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        srv.close()

    summary = summarize(runs, args)
    peaks = [r["upstream_peak"] for r in runs if r["upstream_peak"] is not None]
    errors = sum(r["errors"] for r in runs) + sum(1 for r in runs if not r["ok"])
    result = {
        "command": args.command,
        "settings": {
            "clients": args.clients,
            "base_clients": args.base_clients,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "settle": args.settle,
            "table_size": args.table_size,
            "server_max_connections": SERVER_MAX_CONNECTIONS,
            "upstream_max_connections": UPSTREAM_MAX,
            "direct_clients": args.direct_clients,
            "control": args.control,
        },
        "environment": env,
        "summary": summary,
        "runs": runs,
        "errors": errors,
        "upstream_peak": max(peaks) if peaks else None,
        "upstream_cap": UPSTREAM_MAX,
        "proxy_pool_peak_open": stats.get("pool", {}).get("peak_open"),
        "proxy_stats": stats,
        "direct_logins": logins,
        "server_max_connections_at_end": max_connections,
        "proxy_log_problems": problems[:20],
        "seconds_total": round(time.monotonic() - t_start, 1),
    }
    result["ok"] = bool(
        runs and errors == 0 and peaks and max(peaks) <= UPSTREAM_MAX and not stats["errors"]
    )
    return result


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (target, clients); the ratio to the same target at ``base_clients``
    taken within each round."""
    rows = []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        base_label = f"{label.split(' × ')[0]} × {args.base_clients}"
        ratios = []
        for r in mine:
            base = [
                b
                for b in runs
                if b["round"] == r["round"] and b["label"] == base_label and b["ok"] and b["tps"]
            ]
            if base and r["ok"]:
                ratios.append(r["tps"] / base[0]["tps"])

        def vals(key: str, mine: list[dict[str, Any]] = mine) -> list[float]:
            return [r[key] for r in mine if r[key] is not None and r["ok"]]

        rows.append(
            {
                "label": label,
                "clients": mine[0]["threads"],
                "tps": vals("tps"),
                "ratio_to_base": ratios,
                "p95_ms": vals("p95_ms"),
                "errors": sum(r["errors"] for r in mine),
                "failed_runs": sum(1 for r in mine if not r["ok"]),
                "us_per_stmt": vals("proxy_us_per_stmt"),
                "proxy_cpu_pct": vals("proxy_cpu_pct"),
                "upstream_peak": max(vals("upstream_peak"), default=None),
                "rss_peak_mb": max((x / 1024 for x in vals("proxy_rss_peak_kb")), default=None),
            }
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    base = result["settings"]["base_clients"]
    out = [
        f"| clients → target | TPS | **ratio to the same target × {base}** (per round) | p95 ms "
        "| errors (failed runs) | **proxy CPU µs/stmt** | proxy CPU % "
        "| **peak upstream conns** (server) | proxy RSS peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        ratios = r["ratio_to_base"]
        ratio = ratio_cell(ratios)
        p95 = f"{statistics.median(r['p95_ms']):.2f}" if r["p95_ms"] else "–"
        peak = "–" if r["upstream_peak"] is None else f"**{r['upstream_peak']}** ≤ {UPSTREAM_MAX}"
        rss = "–" if r["rss_peak_mb"] is None else f"{r['rss_peak_mb']:.1f}"
        out.append(
            f"| {r['label']} | {med_range(r['tps'])} | {ratio} | {p95} "
            f"| {r['errors']} ({r['failed_runs']}) "
            f"| {med_range(r['us_per_stmt'], '{:.1f}')} | {med_range(r['proxy_cpu_pct'], '{:.0f}')} "
            f"| {peak} | {rss} |"
        )
    d = result["direct_logins"]
    out.append("")
    out.append(
        f"Direct to MariaDB (max_connections {result['settings']['server_max_connections']}, "
        f"{d['held_by_proxy_pool']} of them held by the proxy's idle pool): "
        f"{d['attempted']:,} clients logging in at once, **{d['connected']:,} connected, "
        f"{d['refused_1040']:,} refused with ERR 1040 Too many connections**"
        + (f", other errors: {d['other_errors']}" if d["other_errors"] else "")
        + "."
    )
    return "\n".join(out)


def report(result: dict[str, Any]) -> str:
    env = result["environment"]
    s = result["settings"]
    return (
        f"## {s['clients']:,} clients through a {s['upstream_max_connections']}-connection pool, "
        f"sysbench oltp_point_select, {s['rounds']} rounds × {s['seconds']} s, interleaved\n\n"
        + markdown(result)
        + f"\n\nMariaDB {env['mariadb']}, {env['load_generator']}, Python {env['python']}, "
        f"trio {env['trio']}, {env['cpus']} CPUs, kernel {env['kernel']}, commit "
        f"{env['commit'] or '?'}, {env['date']}; total {result['seconds_total']:.0f} s. "
        f"Proxy errors: {result['errors']}; upstream peak (server) {result['upstream_peak']}, "
        f"pool peak_open {result['proxy_pool_peak_open']}, checkout timeouts "
        f"{result['proxy_stats'].get('checkout_timeouts')}.\n\n"
        f"command: {result['command']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=2000, help="clients through the proxy (2000)")
    p.add_argument("--base-clients", type=int, default=16, help="the comparison client count (16)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--seconds", type=int, default=5, help="seconds per run (5)")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded seconds per target (1)")
    p.add_argument(
        "--settle",
        type=int,
        default=SETTLE,
        help=f"seconds at the start of each measured run left out of its figures (sysbench "
        f"--warmup-time; the proxy's CPU is counted from then on): {SETTLE} by default, so "
        "that 2,000 threads logging in at once are not counted as steady throughput; 0 = "
        "count everything",
    )
    p.add_argument("--table-size", type=int, default=10000, help="rows in sbtest1 (10000)")
    p.add_argument(
        "--direct-clients",
        type=int,
        default=0,
        help="raw logins straight to MariaDB at the end (default: --clients)",
    )
    p.add_argument("--no-direct", action="store_true", help="no direct × base-clients runs")
    p.add_argument(
        "--control",
        action="store_true",
        help="also direct × --clients, max_connections raised for those runs: the drop "
        "the load generator and the server cause alone",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds: 50 clients, 1 round × 2 s, 1,000 rows, 200 direct logins",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the proxy's config and log")
    p.add_argument("--json", metavar="PATH", help="save the results as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        args.clients, args.rounds, args.seconds, args.warmup, args.settle = 50, 1, 2, 0, 0
        args.table_size = 1000
        # above max_connections, so the refusals show even in the smoke run
        args.direct_clients = args.direct_clients or 200
    args.direct_clients = args.direct_clients or args.clients
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.base_clients <= args.clients:
        p.error(f"need 1 <= --base-clients <= --clients <= {MAX_CLIENTS}")
    if not 1 <= args.rounds <= 10 or not 1 <= args.seconds <= 60 or args.warmup < 0:
        p.error("need 1 <= --rounds <= 10, 1 <= --seconds <= 60, --warmup >= 0")
    if not 1 <= args.direct_clients <= MAX_CLIENTS:
        p.error(f"need 1 <= --direct-clients <= {MAX_CLIENTS}")
    args.command = command_line(SCRIPT, argv)
    return args


def main(argv: list[str] | None = None) -> int:
    return script_main(parse_args(argv), run_many_clients, report)


if __name__ == "__main__":
    sys.exit(main())
