"""``tainted-proxy demo``: the two-tier pattern in transaction pooling mode.

A throwaway MariaDB with a small ``max_connections``; the proxy in front of it with an
upstream cap well below that, its user in ``pool_mode = "transaction"``; then several
application *processes*, each with its own SQLAlchemy engine and connection pool, that
together hold more client connections than the server accepts. Each process gives its
connections their own session settings (time zone, sql_mode, charset) on connect, runs
short transactions from many threads, and checks after every transaction that the
session still has its own settings. One worker per process also uses a temporary table,
which pins its session to one upstream connection until the table is dropped. Then the
numbers: client and upstream connections, the settings-keyed sub-pools, pins and the
taint ledger. Cleans up after itself; exits 1 if any session saw another's state.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# The app processes import this module (spawn): nothing heavy at the top, so they start
# fast; the server and the proxy are imported by run_demo.
if TYPE_CHECKING:
    from tainted_proxy.testing.mariadb import MariaDBServer
    from tainted_proxy.testing.proxy import ProxyThread

SERVER_MAX_CONNECTIONS = 20  # the throwaway MariaDB's max_connections
UPSTREAM_CAP = 8  # upstream.max_connections: the proxy never opens more
MAX_PINNED = 4  # users.app.max_pinned: pinned sessions never hold the whole pool
PROCESSES = 4  # application processes
POOL_SIZE = 10  # SQLAlchemy QueuePool size per process (max_overflow = 0), = worker threads
RUN_SECONDS = 3.0  # how long the workers run transactions
TEMP_TABLE_EVERY = 5  # worker 0 of each process: every 5th unit of work uses a temp table

USER = "app"
PASSWORD = "app-secret"

# Per process: its time zone and sql_mode (set on every connection it opens).
TIME_ZONES = ("+01:00", "+02:00", "-03:00", "+05:30", "-07:00", "+09:00")
SQL_MODES = (
    "STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION",
    "TRADITIONAL",
    "STRICT_ALL_TABLES,ONLY_FULL_GROUP_BY",
    "NO_ENGINE_SUBSTITUTION,PIPES_AS_CONCAT",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "NO_ZERO_DATE,NO_ZERO_IN_DATE",
)


@dataclass
class AppResult:
    """What one application process reports back."""

    process: int
    connections: int = 0  # client connections its engine opened
    transactions: int = 0
    temp_table_uses: int = 0
    leaked_sessions: int = 0  # client sessions that read state that was not their own
    errors: list[str] = field(default_factory=list)


# -- the application processes -------------------------------------------------------------


def _app_process(n: int, pool_size: int, setup: Any, ready: Any, go: Any, results: Any) -> None:
    """One application process. Imports SQLAlchemy while the server starts, then waits
    for ``(port, expected settings, seconds)`` on ``setup`` (None: the demo gave up)."""
    result = AppResult(n)
    try:
        import sqlalchemy  # noqa: F401  (the slow part of starting up)

        job = setup.get(timeout=300)
        if job is None:
            return
        port, expected, seconds = job
        _app_main(n, port, expected[n], pool_size, seconds, ready, go, result)
    except BaseException as exc:  # report, never leave the parent waiting
        result.errors.append(f"process {n}: {type(exc).__name__}: {exc}")
    finally:
        ready.set()
        results.put(result)


def _app_main(
    n: int,
    port: int,
    expected: tuple[str, str],
    pool_size: int,
    seconds: float,
    ready: Any,
    go: Any,
    result: AppResult,
) -> None:
    from sqlalchemy import create_engine, event, text

    tz, mode = TIME_ZONES[n % len(TIME_ZONES)], SQL_MODES[n % len(SQL_MODES)]
    engine = create_engine(
        f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{port}/shop?charset=utf8mb4",
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"connect_timeout": 30},
    )
    lock = threading.Lock()
    leaked: set[int] = set()

    def leak(dbapi_conn: Any, what: str) -> None:
        with lock:
            if id(dbapi_conn) not in leaked:
                leaked.add(id(dbapi_conn))
                result.errors.append(f"process {n}: {what}")

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # the process's own session settings, set as apps do: on every new connection
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET time_zone = '{tz}'")
            cur.execute(f"SET sql_mode = '{mode}'")
            cur.execute("SET NAMES utf8mb4")
            cur.execute("SELECT @@time_zone, @@sql_mode")
            got = tuple(cur.fetchone())
        if got != expected:
            leak(dbapi_conn, f"right after its SETs a session read {got!r}, not {expected!r}")
        with lock:
            result.connections += 1

    # Open the whole pool (in parallel) and hold it: then every process's connections
    # are open at the same time.
    held: list[Any] = []

    def open_one() -> None:
        try:
            c = engine.connect()
        except Exception as exc:
            with lock:
                result.errors.append(f"process {n}: connect: {type(exc).__name__}: {exc}")
            return
        with lock:
            held.append(c)

    openers = [threading.Thread(target=open_one) for _ in range(pool_size)]
    for t in openers:
        t.start()
    for t in openers:
        t.join()
    ready.set()
    go.wait(120)
    for c in held:
        c.close()

    deadline = time.monotonic() + seconds

    def temp_table_work(conn: Any) -> None:
        # a temporary table outlives the transaction: the session stays pinned to its
        # upstream connection from CREATE to DROP, across the COMMIT
        conn.execute(text("CREATE TEMPORARY TABLE scratch (id INT PRIMARY KEY, amount INT)"))
        conn.execute(
            text(
                "INSERT INTO scratch SELECT id, amount FROM orders "
                "WHERE customer = :c ORDER BY id DESC LIMIT 5"
            ),
            {"c": f"p{n}"},
        )
        conn.commit()
        conn.execute(text("SELECT COUNT(*), SUM(amount) FROM scratch")).one()
        conn.execute(text("DROP TEMPORARY TABLE scratch"))
        conn.commit()

    def worker(w: int) -> None:
        units = 0
        while time.monotonic() < deadline:
            units += 1
            try:
                with engine.connect() as conn:
                    dbapi_conn = conn.connection.dbapi_connection
                    if w == 0 and units % TEMP_TABLE_EVERY == 1:
                        temp_table_work(conn)
                        with lock:
                            result.temp_table_uses += 1
                    # the ORM-ish unit of work: INSERT, read it back, COMMIT
                    with conn.begin():
                        r = conn.execute(
                            text(
                                "INSERT INTO orders (customer, worker, amount) VALUES (:c, :w, :a)"
                            ),
                            {"c": f"p{n}", "w": w, "a": units % 500},
                        )
                        oid = r.lastrowid
                        row = tuple(
                            conn.execute(
                                text("SELECT customer, worker FROM orders WHERE id = :id"),
                                {"id": oid},
                            ).one()
                        )
                    if row != (f"p{n}", w):
                        leak(dbapi_conn, f"read back its row {oid} as {row!r}")
                    got = tuple(conn.execute(text("SELECT @@time_zone, @@sql_mode")).one())
                    if got != expected:
                        leak(dbapi_conn, f"after a transaction a session read {got!r}")
                    with lock:
                        result.transactions += 1
            except Exception as exc:
                with lock:
                    result.errors.append(f"process {n} worker {w}: {type(exc).__name__}: {exc}")
                return

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(pool_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.leaked_sessions = len(leaked)
    engine.dispose()


# -- the demo ------------------------------------------------------------------------------


def _canonical_settings(srv: MariaDBServer, n: int) -> tuple[str, str]:
    """What the server reads back after process ``n``'s SETs (``TRADITIONAL`` expands),
    asked directly, not through the proxy."""
    conn = srv.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET time_zone = '{TIME_ZONES[n % len(TIME_ZONES)]}'")
            cur.execute(f"SET sql_mode = '{SQL_MODES[n % len(SQL_MODES)]}'")
            cur.execute("SELECT @@time_zone, @@sql_mode")
            tz, mode = cur.fetchone()
            return tz, mode
    finally:
        conn.close()


class _Monitor:
    """One admin connection straight to the server: resets Max_used_connections, then
    samples how many connections the proxy holds (PROCESSLIST) and how many client
    sessions and pins the proxy has, until stopped."""

    def __init__(self, srv: MariaDBServer, proxy: ProxyThread) -> None:
        self.conn = srv.connect()
        self.proxy = proxy
        self.peak_upstream = 0
        self.peak_clients = 0
        self.peak_pinned = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        with self.conn.cursor() as cur:
            cur.execute("FLUSH STATUS")  # Max_used_connections := connections open now

    def upstream_now(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (USER,)
            )
            return int(cur.fetchone()[0])

    def sample(self) -> None:
        self.peak_upstream = max(self.peak_upstream, self.upstream_now())
        px = self.proxy.proxy
        clients, pinned = self.proxy.call(lambda: (len(px.sessions), px.stats.pinned_now))
        self.peak_clients = max(self.peak_clients, clients)
        self.peak_pinned = max(self.peak_pinned, pinned)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.02):
                self.sample()
        except Exception as exc:
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """Stop sampling; return the server's Max_used_connections since FLUSH STATUS."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.error is not None:
            raise self.error
        with self.conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Max_used_connections'")
            return int(cur.fetchone()[1])

    def close(self) -> None:
        self._stop.set()
        self.conn.close()


def _short(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 3] + "..."


class _Apps:
    """The application processes, started before the server so that their imports
    overlap its start-up; always stopped (``close``)."""

    def __init__(self, processes: int, pool_size: int) -> None:
        ctx = mp.get_context("spawn")  # not fork: this process runs the proxy's thread
        self.setup = ctx.Queue()
        self.results = ctx.Queue()
        self.go = ctx.Event()
        self.readies = [ctx.Event() for _ in range(processes)]
        self.procs = [
            ctx.Process(
                target=_app_process,
                args=(n, pool_size, self.setup, self.readies[n], self.go, self.results),
                name=f"demo-app-{n}",
                daemon=True,
            )
            for n in range(processes)
        ]
        self._sent = False
        for p in self.procs:
            p.start()

    def start_work(self, port: int, expected: list[tuple[str, str]], seconds: float) -> None:
        self._sent = True
        for _ in self.procs:
            self.setup.put((port, expected, seconds))

    def wait_ready(self, timeout: float = 120) -> None:
        """Until every process holds its connections (or has died, or ``timeout``)."""
        deadline = time.monotonic() + timeout
        for p, r in zip(self.procs, self.readies, strict=True):
            while not r.wait(0.1) and p.is_alive() and time.monotonic() < deadline:
                pass

    def collect(self, timeout: float) -> list[AppResult]:
        """The processes' results; stops early when the rest have died without one."""
        out: list[AppResult] = []
        deadline = time.monotonic() + timeout
        while len(out) < len(self.procs) and time.monotonic() < deadline:
            try:
                out.append(self.results.get(timeout=0.2))
            except queue.Empty:
                if not any(p.is_alive() for p in self.procs):
                    try:  # a result may still be in the pipe
                        out.append(self.results.get(timeout=1))
                    except queue.Empty:
                        break
        return out

    def close(self) -> None:
        if not self._sent:
            for _ in self.procs:
                self.setup.put(None)
        self.go.set()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


def run_demo(args: argparse.Namespace) -> int:
    processes = max(1, int(getattr(args, "processes", PROCESSES)))
    pool_size = max(1, int(getattr(args, "pool_size", POOL_SIZE)))
    seconds = float(getattr(args, "seconds", RUN_SECONDS))
    print("tainted-proxy demo: transaction pooling")
    print("=======================================")
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        print(
            "error: the demo's applications use SQLAlchemy: pip install -e '.[test]' "
            "(make demo does)",
            file=sys.stderr,
        )
        return 1
    from tainted_proxy.testing.mariadb import MariaDBNotFound, MariaDBServer

    apps = _Apps(processes, pool_size)
    try:
        try:
            srv = MariaDBServer(max_connections=SERVER_MAX_CONNECTIONS)
            t0 = time.monotonic()
            srv.start()
        except MariaDBNotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            return _run(srv, t0, apps, processes, pool_size, seconds)
        finally:
            srv.close()
            print("cleaned up the throwaway MariaDB")
    finally:
        apps.close()


def _run(
    srv: MariaDBServer, t0: float, apps: _Apps, processes: int, pool_size: int, seconds: float
) -> int:
    from tainted_proxy.testing.proxy import ProxyThread, config_for

    print(
        f"1. a throwaway MariaDB {srv.version} on 127.0.0.1:{srv.port} with "
        f"max_connections = {SERVER_MAX_CONNECTIONS} (started in {time.monotonic() - t0:.1f}s)"
    )
    srv.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'")
    srv.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%'")
    srv.execute("CREATE DATABASE shop")
    srv.execute(
        "CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(20), "
        "worker INT, amount INT, KEY (customer))"
    )
    expected = [_canonical_settings(srv, n) for n in range(processes)]
    cfg = config_for(
        srv.host,
        srv.port,
        users={USER: {"password": PASSWORD, "pool_mode": "transaction", "max_pinned": MAX_PINNED}},
        upstream={"max_connections": UPSTREAM_CAP},
        pool={"checkout_timeout": 30.0},
    )
    with ProxyThread(cfg) as proxy:
        print(
            f"2. tainted-proxy on 127.0.0.1:{proxy.port} in front of it: user '{USER}' in "
            f'pool_mode = "transaction", upstream.max_connections = {UPSTREAM_CAP}, '
            f"users.{USER}.max_pinned = {MAX_PINNED}"
        )
        print(
            f"3. {processes} app processes, each a SQLAlchemy engine (QueuePool, pool_size "
            f"{pool_size}, pymysql) holding all {pool_size} of its connections open: "
            f"{processes * pool_size} client connections"
        )
        print(
            "   on connect each process sets its own time_zone and sql_mode, and SET NAMES "
            f"utf8mb4; then {pool_size} threads per process run INSERT + SELECT + COMMIT for "
            f"{seconds:g}s and read back @@time_zone, @@sql_mode after every transaction; one "
            "thread per process also uses a temporary table now and then"
        )
        monitor = _Monitor(srv, proxy)
        try:
            return _workload(srv, proxy, monitor, apps, processes, seconds, expected)
        finally:
            monitor.close()


def _workload(
    srv: MariaDBServer,
    proxy: ProxyThread,
    monitor: _Monitor,
    apps: _Apps,
    processes: int,
    seconds: float,
    expected: list[tuple[str, str]],
) -> int:
    apps.start_work(proxy.port, expected, seconds)
    apps.wait_ready()
    # every process now holds its whole pool open
    monitor.sample()
    open_clients = monitor.peak_clients
    upstream_then = monitor.upstream_now()
    monitor.start()
    started = time.monotonic()
    apps.go.set()
    results = apps.collect(timeout=60 + seconds)
    elapsed = time.monotonic() - started
    max_used = monitor.stop()
    # let the proxy see every client leave before reading its counters
    px = proxy.proxy
    for _ in range(100):
        if not proxy.call(lambda: len(px.sessions)):
            break
        time.sleep(0.02)

    def snapshot() -> dict[str, Any]:
        return {
            "pool": px.pool.stats,
            "pins": Counter(px.stats.pins),
            "pinned_now": px.stats.pinned_now,
            "emulated": px.stats.emulated,
            "ledger": Counter(px.ledger).most_common(5),
            "accepted": px.stats.accepted,
        }

    snap = proxy.call(snapshot)
    ps = snap["pool"]
    rows = srv.execute("SELECT COUNT(*) FROM shop.orders")[0][0]
    connections = sum(r.connections for r in results)
    transactions = sum(r.transactions for r in results)
    temp_uses = sum(r.temp_table_uses for r in results)
    leaks = sum(r.leaked_sessions for r in results)
    errors = [e for r in results for e in r.errors]
    if len(results) < processes:
        errors.append(f"only {len(results)} of {processes} app processes reported back")

    print()
    print("what happened")
    print("-------------")
    print(
        f"client connections      {connections} opened in total by {processes} processes, "
        f"{open_clients} open at once (server max_connections = {SERVER_MAX_CONNECTIONS})"
    )
    print(
        f"upstream connections    proxy pool.stats.peak_open = {ps.peak_open} "
        f"(cap {UPSTREAM_CAP}), {ps.opened} opened in all"
    )
    print(
        f"                        server Max_used_connections = {max_used} (the proxy's plus "
        f"the demo's 1 monitoring connection); most in PROCESSLIST: {monitor.peak_upstream}; "
        f"while all {open_clients} clients were connected: {upstream_then}"
    )
    print(
        f"work                    {transactions} transactions in {elapsed:.1f}s, "
        f"{temp_uses} temporary-table uses, {rows} rows written"
    )
    print(
        f"checkouts               {ps.acquired}: {ps.exact_hits} exact_hits (idle, same "
        f"settings), {ps.nearest_hits} nearest_hits (idle, fewest differences), {ps.waited} "
        f"waited (longest {ps.max_wait_seconds * 1000:.0f} ms, {ps.wait_timeouts} timeouts)"
    )
    print(
        f"                        settings_applied = {ps.settings_applied} (checkouts that "
        "needed a SET / COM_INIT_DB round trip)"
    )
    pins = snap["pins"]
    print(
        f"pins                    {sum(pins.values())} started, at most {monitor.peak_pinned} "
        f"at once, {snap['pinned_now']} left at the end"
    )
    for reason, count in pins.most_common():
        print(f"  {count:5d}  {reason}")
    print("taint ledger (top)      pins started: user, pin reason, statement fingerprint")
    for (user, reason, fp), count in snap["ledger"]:
        print(f"  {count:5d}  {user}, {reason}, {_short(fp or '-', 72)}")
    if not snap["ledger"]:
        print("      -")
    if snap["emulated"]:
        print(f"answered by the proxy   {snap['emulated']} LAST_INSERT_ID() / ROW_COUNT()")
    print(
        f"{leaks} sessions saw another's state"
        + ("" if leaks == 0 else "  <-- must be 0: settings travel with the session")
    )
    for e in errors[:8]:
        print(f"error: {e}")
    if len(errors) > 8:
        print(f"error: ... and {len(errors) - 8} more")
    ok = (
        leaks == 0
        and not errors
        and connections > SERVER_MAX_CONNECTIONS
        and ps.peak_open <= UPSTREAM_CAP
        and monitor.peak_upstream <= UPSTREAM_CAP
        and snap["pinned_now"] == 0
    )
    print()
    print("result: OK" if ok else "result: FAILED")
    return 0 if ok else 1
