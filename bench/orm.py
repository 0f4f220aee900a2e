"""An ORM workload through the proxy in transaction mode: SQLAlchemy 2 and Django (issue 11).

``.venv/bin/python bench/orm.py [--processes 4] [--ops 500] [--json PATH]``:

* starts a private MariaDB with a table ``orm.accounts`` (1,000 rows) and the account
  ``app``/``app-secret``; starts this checkout's proxy (``bench/run.py``'s
  ``ProxyProcess``), user ``app`` in transaction mode, ``upstream.max_connections =
  --upstream-max``, its admin endpoint on: the counters come from its ``/stats``;
* four targets, run in interleaved rounds (the order rotates each round, as in run.py):
  SQLAlchemy through the proxy, Django through the proxy, and both directly to MariaDB;
* one run = ``--processes`` client processes × ``--ops`` operations each, started together:
  half the operations (``--tx-share``) a short transaction that reads a row and updates it,
  the others an autocommit read by primary key; every ``--reconnect-every`` operations the
  client drops its connection, so the ORM's connect sequence comes again:

  - SQLAlchemy 2.x ORM over pymysql, ``QueuePool`` (size 1) with ``pool_pre_ping=True``:
    ``Session.begin()`` / ``get`` / attribute update / commit (no BEGIN: autocommit=0, then
    COMMIT and the pool's reset ROLLBACK), reads on an ``isolation_level="AUTOCOMMIT"``
    engine (``SET AUTOCOMMIT = 1`` on checkout, back to 0 on return); on connect the
    driver's ``SET NAMES`` / ``SET AUTOCOMMIT = 0`` and the dialect's first-connect probes;
  - Django 5.2, mysql backend (mysqlclient), settings configured in code: ``atomic()``
    (``SET autocommit=0`` ... ``COMMIT``, ``SET autocommit=1``) around ``get`` and
    ``update(F() + 1)``; on connect ``SET NAMES``, ``SET autocommit``, the version probe and
    ``SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED``;

* per proxy run, the deltas of the proxy's counters: sessions, pins (and their reasons),
  checkouts served with the same settings vs settings applied (or reset and applied), the
  pool's exact / nearest idle hits, errors; and the server's ``Questions`` delta per run (on
  a direct run: the statements the clients sent; through the proxy: what reached the server).

Prints a markdown table and the command; ``--json PATH`` saves everything. Exit status 0 when
no operation failed and the proxy counted no error.

Bounded: at most 32 processes, 20,000 operations each, 10 rounds, 120 s per run; loopback
only. Everything it starts is stopped on exit, Ctrl-C included. Figures: docs/benchmarks.md,
"ORM workload".
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "bench"):  # run as a plain script from anywhere
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from run import DB as RUN_DB  # noqa: E402
from run import (  # noqa: E402
    HOST,
    PASSWORD,
    USER,
    ProxyProcess,
    command_line,
    cpu_seconds,
    environment,
    med_range,
    ratio_cell,
    script_main,
    sigterm_as_interrupt,
)

from tainted_proxy.testing.mariadb import MariaDBServer  # noqa: E402

SCRIPT = "bench/orm.py"
DB = "orm"
ROWS = 1000
KINDS = ("sqlalchemy", "django")
RUN_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------
# The client processes
# --------------------------------------------------------------------------------------------


class _SQLAlchemyClient:
    """One process's SQLAlchemy app: an engine (QueuePool of 1, pre-ping) and the ORM."""

    def __init__(self, port: int) -> None:
        from sqlalchemy import Integer, String, create_engine
        from sqlalchemy.orm import DeclarativeBase, mapped_column

        class Base(DeclarativeBase):
            pass

        # no Mapped[] annotations: with postponed annotations SQLAlchemy resolves them in
        # this module's globals, and the ORM is imported here, in the client process only
        class Account(Base):
            __tablename__ = "accounts"
            id = mapped_column(Integer, primary_key=True)
            balance = mapped_column(Integer)
            name = mapped_column(String(40))

        self.Account = Account
        self.engine = create_engine(
            f"mysql+pymysql://{USER}:{PASSWORD}@{HOST}:{port}/{DB}",
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60},
        )
        # the same pool, autocommit on while checked out: how SQLAlchemy apps read outside
        # a transaction
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    def transaction(self, pk: int) -> None:
        from sqlalchemy.orm import Session

        with Session(self.engine) as s, s.begin():
            acct = s.get(self.Account, pk)
            assert acct is not None
            acct.balance = acct.balance + 1

    def read(self, pk: int) -> None:
        from sqlalchemy import select

        with self.autocommit.connect() as c:
            c.execute(select(self.Account.balance).where(self.Account.id == pk)).scalar_one()

    def reconnect(self) -> None:
        self.engine.dispose()  # the next checkout opens a connection: its connect sequence

    def close(self) -> None:
        self.engine.dispose()


class _DjangoClient:
    """One process's Django app: settings configured in code, the mysql backend."""

    def __init__(self, port: int) -> None:
        import django
        from django.conf import settings

        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.mysql",
                    "HOST": HOST,
                    "PORT": port,
                    "NAME": DB,
                    "USER": USER,
                    "PASSWORD": PASSWORD,
                    "OPTIONS": {"connect_timeout": 10},
                }
            },
            INSTALLED_APPS=[],
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        )
        django.setup()
        from django.db import connection, models, transaction
        from django.db.models import F

        class Account(models.Model):
            balance = models.IntegerField()
            name = models.CharField(max_length=40)

            class Meta:
                app_label = "bench"
                db_table = "accounts"
                managed = False

        self.Account, self.connection, self.atomic, self.F = Account, connection, transaction, F

    def transaction(self, pk: int) -> None:
        with self.atomic.atomic():
            self.Account.objects.get(pk=pk)
            self.Account.objects.filter(pk=pk).update(balance=self.F("balance") + 1)

    def read(self, pk: int) -> None:
        self.Account.objects.filter(pk=pk).values_list("balance", flat=True).get()

    def reconnect(self) -> None:
        self.connection.close()  # as at the end of a request with CONN_MAX_AGE = 0

    def close(self) -> None:
        self.connection.close()


def _client_worker(
    kind: str,
    port: int,
    ops: int,
    tx_share: float,
    reconnect_every: int,
    seed: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Import and set up the ORM (not timed), wait for ``go``, run ``ops`` operations, put
    (operations done, errors, seconds, first error, CPU seconds of the operations)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    rnd = random.Random(seed)
    client: Any = None
    try:
        client = _SQLAlchemyClient(port) if kind == "sqlalchemy" else _DjangoClient(port)
    except Exception as exc:
        ready.put(f"{kind} setup: {exc!r}")
        return
    ready.put("")
    go.wait(60)
    done, errors, first = 0, 0, ""
    t0, cpu0 = time.monotonic(), time.process_time()
    for i in range(ops):
        if reconnect_every and i and i % reconnect_every == 0:
            client.reconnect()
        pk = rnd.randint(1, ROWS)
        try:
            if rnd.random() < tx_share:
                client.transaction(pk)
            else:
                client.read(pk)
            done += 1
        except Exception as exc:  # counted, and the next operation starts afresh
            errors += 1
            first = first or f"{type(exc).__name__}: {exc}"[:300]
            with contextlib.suppress(Exception):
                client.reconnect()
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    with contextlib.suppress(Exception):
        client.close()
    results.put((done, errors, elapsed, first, cpu))


def run_clients(args: argparse.Namespace, kind: str, port: int) -> dict[str, Any]:
    """``args.processes`` processes of ``kind`` against ``port``; wall time from the common
    start to the last one done, operations and errors, the processes' CPU."""
    ctx = mp.get_context("fork")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(
            target=_client_worker,
            args=(
                kind,
                port,
                args.ops,
                args.tx_share,
                args.reconnect_every,
                # the same operations in every round and on both targets
                1000 * i + KINDS.index(kind),
                ready,
                go,
                results,
            ),
            daemon=True,
        )
        for i in range(args.processes)
    ]
    for p in procs:
        p.start()
    try:
        setup_errors = [e for e in (ready.get(timeout=60) for _ in procs) if e]
        if setup_errors:
            raise RuntimeError(setup_errors[0])
        t0 = time.monotonic()
        go.set()
        outs = []
        for _ in procs:
            outs.append(results.get(timeout=RUN_TIMEOUT))
        wall = time.monotonic() - t0
    finally:
        go.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    first = next((o[3] for o in outs if o[3]), "")
    return {
        "ops": sum(o[0] for o in outs),
        "client_errors": sum(o[1] for o in outs),
        "seconds": round(wall, 3),
        # the clients' own CPU (each measures itself: it may have exited before we look);
        # they share the 2 cores with the proxy and MariaDB
        "clients_cpu_s": round(sum(o[4] for o in outs), 3),
        "first_error": first,
    }


# --------------------------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------------------------


def questions(srv: MariaDBServer) -> int:
    """The server's Questions counter, less the statement that reads it."""
    return int(srv.execute("SHOW GLOBAL STATUS LIKE 'Questions'")[0][1]) - 1


def counters(stats: dict[str, Any]) -> dict[str, Any]:
    """The proxy's /stats counters this benchmark reads (flattened)."""
    pool = stats.get("pool", {})
    return {
        "sessions": stats["accepted"],
        "pins": sum(stats["pins"].values()),
        "pins_by_reason": dict(stats["pins"]),
        "same_settings": stats["checkout_same_settings"],
        "settings_applied": stats["checkout_settings_applied"],
        "reset_applied": stats.get("checkout_reset_applied", 0),
        "exact_hits": pool.get("exact_hits", 0),
        "nearest_hits": pool.get("nearest_hits", 0),
        "proxy_errors": sum(stats["errors"].values()),
        "errors_by_kind": dict(stats["errors"]),
        "checkout_timeouts": stats["checkout_timeouts"],
        "peak_open": pool.get("peak_open", 0),
    }


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, dict):
            out[k] = {r: n - before[k].get(r, 0) for r, n in v.items() if n - before[k].get(r, 0)}
        elif k == "peak_open":
            out[k] = v  # a high-water mark since start, not a count
        else:
            out[k] = v - before[k]
    return out


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def run_orm(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; the results as a dict (``summary``, ``runs``, ``ok``...). Raises
    MariaDBNotFound when there is no mariadbd."""
    workdir = Path(tempfile.mkdtemp(prefix="tp-orm-"))
    srv = MariaDBServer(max_connections=151)
    proxy: ProxyProcess | None = None
    runs: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        with sigterm_as_interrupt():
            srv.start()
            srv.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
            # ProxyProcess's readiness check logs in to run.py's database
            srv.execute(f"CREATE DATABASE IF NOT EXISTS {RUN_DB}")
            srv.create_user(USER, PASSWORD)
            srv.execute(
                f"CREATE TABLE {DB}.accounts (id INT PRIMARY KEY, balance INT NOT NULL, "
                "name VARCHAR(40) NOT NULL) ENGINE=InnoDB"
            )
            srv.execute(
                f"INSERT INTO {DB}.accounts SELECT seq, 0, CONCAT('account-', seq) "
                f"FROM seq_1_to_{ROWS}"
            )
            proxy = ProxyProcess(workdir, srv.port, args.upstream_max, "transaction", admin=True)
            proxy.start()
            print(f"MariaDB {srv.version} on {HOST}:{srv.port}")
            print(f"  {proxy.describe()}")
            env = environment(srv, _LoadName(args))
            plan = [(kind, target) for kind in KINDS for target in ("proxy", "direct")]
            for rnd in range(args.rounds):
                k = rnd % len(plan)
                for pos, (kind, target) in enumerate(plan[k:] + plan[:k]):
                    port = proxy.port if target == "proxy" else srv.port
                    before = counters(proxy.admin_json("/stats"))
                    q0 = questions(srv)
                    p0 = sum(cpu_seconds(proxy.pid)) if proxy.pid else 0.0
                    r = run_clients(args, kind, port)
                    p1 = sum(cpu_seconds(proxy.pid)) if proxy.pid else 0.0
                    r["server_statements"] = questions(srv) - q0 - 1  # less the first reading
                    r.update(
                        kind=kind,
                        target=target,
                        round=rnd,
                        position=pos,
                        ops_per_s=r["ops"] / r["seconds"] if r["seconds"] else 0.0,
                        proxy_cpu_s=round(p1 - p0, 3) if target == "proxy" else None,
                        proxy=delta(counters(proxy.admin_json("/stats")), before)
                        if target == "proxy"
                        else None,
                    )
                    runs.append(r)
                    print(f"round {rnd + 1} {kind:<10} {target:<6} {fmt(r)}")
                    if r["first_error"]:
                        print(f"    first error: {r['first_error']}")
                    sys.stdout.flush()
            problems = [
                ln
                for ln in proxy.log_problems()
                if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln
            ]
            problems = [ln for ln in problems if "event=shutdown" not in ln]
    finally:
        if proxy is not None:
            proxy.stop()
        srv.close()
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(runs)
    errors = sum(r["client_errors"] for r in runs) + sum(
        r["proxy"]["proxy_errors"] for r in runs if r["proxy"]
    )
    result = {
        "command": args.command,
        "settings": {
            "processes": args.processes,
            "ops": args.ops,
            "rounds": args.rounds,
            "tx_share": args.tx_share,
            "reconnect_every": args.reconnect_every,
            "upstream_max_connections": args.upstream_max,
            "rows": ROWS,
        },
        "environment": env,
        "summary": summary,
        "runs": runs,
        "errors": errors,
        "proxy_log_problems": problems[:20],
        "seconds_total": round(time.monotonic() - t_start, 1),
    }
    expected_ops = args.processes * args.ops * len(runs)
    result["ok"] = bool(runs) and errors == 0 and sum(r["ops"] for r in runs) == expected_ops
    return result


class _LoadName:
    """What ``run.environment`` asks of a load generator: its version line."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def version(self) -> str:
        import django
        import MySQLdb
        import pymysql
        import sqlalchemy

        return (
            f"SQLAlchemy {sqlalchemy.__version__} + PyMySQL {pymysql.__version__}, Django "
            f"{django.__version__} + mysqlclient {'.'.join(map(str, MySQLdb.version_info[:3]))}"
        )


def fmt(r: dict[str, Any]) -> str:
    s = (
        f"{r['ops']:>6} ops in {r['seconds']:.2f} s = {r['ops_per_s']:,.0f} ops/s, "
        f"{r['server_statements']:,} statements at the server, {r['client_errors']} errors, "
        f"clients' CPU {100 * r['clients_cpu_s'] / max(r['seconds'], 1e-9):.0f} %"
    )
    p = r["proxy"]
    if p:
        s += (
            f"; proxy: {p['sessions']} sessions, {p['pins']} pins, same settings "
            f"{p['same_settings']} / applied {p['settings_applied'] + p['reset_applied']}, "
            f"exact {p['exact_hits']} / nearest {p['nearest_hits']}, "
            f"{1e6 * r['proxy_cpu_s'] / max(1, r['ops']):.0f} µs CPU/op"
        )
    return s


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (ORM, target). Client statements per run are the direct run's server
    count in the same round (the same operations, nothing in between); throughput ratios
    are taken within a round."""
    rows = []
    for kind in KINDS:
        for target in ("proxy", "direct"):
            mine = [r for r in runs if r["kind"] == kind and r["target"] == target]
            if not mine:
                continue
            ratios, stmts_s, pin_rate, hit_rate, us_op = [], [], [], [], []
            totals: Counter[str] = Counter()
            reasons: Counter[str] = Counter()
            for r in mine:
                direct = next(
                    (
                        d
                        for d in runs
                        if d["kind"] == kind
                        and d["target"] == "direct"
                        and d["round"] == r["round"]
                    ),
                    None,
                )
                if direct is not None and direct["ops_per_s"]:
                    ratios.append(r["ops_per_s"] / direct["ops_per_s"])
                    stmts_s.append(direct["server_statements"] / r["seconds"])
                p = r["proxy"]
                if p:
                    checkouts = p["same_settings"] + p["settings_applied"] + p["reset_applied"]
                    if p["sessions"]:
                        pin_rate.append(p["pins"] / p["sessions"])
                    if checkouts:
                        hit_rate.append(p["same_settings"] / checkouts)
                    if r["ops"]:
                        us_op.append(1e6 * r["proxy_cpu_s"] / r["ops"])
                    for key in (
                        "sessions",
                        "pins",
                        "same_settings",
                        "settings_applied",
                        "reset_applied",
                        "exact_hits",
                        "nearest_hits",
                    ):
                        totals[key] += p[key]
                    reasons.update(p["pins_by_reason"])
            rows.append(
                {
                    "kind": kind,
                    "target": target,
                    "ops_per_s": [r["ops_per_s"] for r in mine],
                    "clients_cpu_pct": [100 * r["clients_cpu_s"] / r["seconds"] for r in mine],
                    "statements_per_s": stmts_s,
                    "ratio_to_direct": ratios if target == "proxy" else [],
                    "server_statements": [r["server_statements"] for r in mine],
                    "errors": sum(r["client_errors"] for r in mine)
                    + sum(r["proxy"]["proxy_errors"] for r in mine if r["proxy"]),
                    "pin_rate": pin_rate,
                    "settings_hit_rate": hit_rate,
                    "proxy_us_per_op": us_op,
                    "totals": dict(totals),
                    "pins_by_reason": dict(reasons),
                }
            )
    return rows


def markdown(result: dict[str, Any]) -> str:
    out = [
        "| ORM → target | ops/s | statements/s | **ratio to direct** (per round) "
        "| statements at the server per run | errors | **pins per session** "
        "| **same-settings checkouts** | exact / nearest idle hits | proxy CPU µs/op "
        "| clients' CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        t = r["totals"]
        ratios = r["ratio_to_direct"]
        ratio = ratio_cell(ratios)
        if r["target"] == "proxy":
            checkouts = t["same_settings"] + t["settings_applied"] + t["reset_applied"]
            pins = f"{t['pins'] / t['sessions']:.2f} ({t['pins']} / {t['sessions']})"
            hits = (
                f"{100 * t['same_settings'] / checkouts:.1f} % "
                f"({t['same_settings']:,} / {checkouts:,})"
                if checkouts
                else "–"
            )
            idle = f"{t['exact_hits']:,} / {t['nearest_hits']:,}"
            cpu = med_range(r["proxy_us_per_op"], "{:.0f}")
        else:
            pins = hits = idle = cpu = "–"
        out.append(
            f"| {r['kind']} → {r['target']} | {med_range(r['ops_per_s'])} "
            f"| {med_range(r['statements_per_s'])} | {ratio} "
            f"| {med_range([float(x) for x in r['server_statements']])} | {r['errors']} "
            f"| {pins} | {hits} | {idle} | {cpu} | {med_range(r['clients_cpu_pct'])} |"
        )
    reasons = {r["kind"]: r["pins_by_reason"] for r in result["summary"] if r["target"] == "proxy"}
    out.append("")
    out.append(
        "Pins by reason: "
        + "; ".join(f"{k}: {v or 'none'}" for k, v in reasons.items())
        + ". Statements/s: the statements the clients sent (counted at the server in the "
        "direct run of the same round) over the run's wall time."
    )
    return "\n".join(out)


def report(result: dict[str, Any]) -> str:
    env = result["environment"]
    s = result["settings"]
    return (
        f"## ORM workload: {s['processes']} processes × {s['ops']:,} operations, "
        f"{100 * s['tx_share']:.0f} % short transactions, reconnect every "
        f"{s['reconnect_every']}, upstream.max_connections {s['upstream_max_connections']}, "
        f"{s['rounds']} interleaved rounds\n\n"
        + markdown(result)
        + f"\n\nMariaDB {env['mariadb']}, {env['load_generator']}, Python {env['python']}, "
        f"{env['cpus']} CPUs, kernel {env['kernel']}, commit {env['commit'] or '?'}, "
        f"{env['date']}; total {result['seconds_total']:.0f} s. Errors: {result['errors']}.\n\n"
        f"command: {result['command']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=4, help="client processes per run (4)")
    p.add_argument("--ops", type=int, default=500, help="operations per process (500)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--tx-share", type=float, default=0.5, help="share of short transactions (0.5)")
    p.add_argument(
        "--reconnect-every",
        type=int,
        default=25,
        help="operations per connection; then the ORM connects again (25; 0 = never)",
    )
    p.add_argument(
        "--upstream-max", type=int, default=2, help="the proxy's upstream.max_connections (2)"
    )
    p.add_argument("--smoke", action="store_true", help="2 processes × 20 operations, 1 round")
    p.add_argument("--json", metavar="PATH", help="save the results as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        args.processes, args.ops, args.rounds, args.reconnect_every = 2, 20, 1, 10
    if not 1 <= args.processes <= 32 or not 1 <= args.ops <= 20_000:
        p.error("need 1 <= --processes <= 32 and 1 <= --ops <= 20000")
    if not 1 <= args.rounds <= 10 or not 0 <= args.tx_share <= 1 or args.reconnect_every < 0:
        p.error("need 1 <= --rounds <= 10, 0 <= --tx-share <= 1, --reconnect-every >= 0")
    if not 1 <= args.upstream_max <= 100:
        p.error("need 1 <= --upstream-max <= 100")
    args.command = command_line(SCRIPT, argv)
    return args


def main(argv: list[str] | None = None) -> int:
    return script_main(parse_args(argv), run_orm, report)


if __name__ == "__main__":
    sys.exit(main())
