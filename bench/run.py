"""Point-select throughput: direct MariaDB vs. through tainted-proxy.

Run it with ``make bench`` (or ``.venv/bin/python bench/run.py --help``).  It:

* starts a private MariaDB (``tainted_proxy.testing.mariadb.MariaDBServer``), creates the
  account ``app``/``app-secret`` and a sysbench table ``sbtest.sbtest1`` (10,000 rows);
* starts the proxy as a subprocess (``tainted-proxy serve --config <tmp toml>``, session
  pool mode) so its CPU time can be read from ``/proc/<pid>/stat``;
* drives both targets with ``sysbench oltp_point_select`` (or, when sysbench is missing, a
  small multi-process pymysql generator running ``SELECT c FROM sbtest1 WHERE id=?``) in
  interleaved rounds: every round runs each target once, the order rotating per round, and
  each proxy/direct ratio is taken within one round;
* prints a markdown table (ratio median (min-max), TPS, p95, proxy CPU per round trip) and
  the exact command line; ``--json PATH`` saves the raw results.

Everything it starts (MariaDB, proxy, load generator) is stopped on exit, Ctrl-C included.
Method: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))

import pymysql  # noqa: E402

from tainted_proxy.testing.mariadb import (  # noqa: E402
    MariaDBError,
    MariaDBNotFound,
    MariaDBServer,
)

HOST = "127.0.0.1"
USER = "app"
PASSWORD = "app-secret"
DB = "sbtest"
TABLES = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_MODES = ("session", "transaction", "statement")
#: MODE, MODE-wN (serve --workers N), either @TREE (another checkout's code)
PROXY_TARGET = re.compile(r"^(?P<mode>[a-z]+)(?:-w(?P<workers>[1-9][0-9]?))?(?:@(?P<tree>.+))?$")
# byte relays kept beside this script: what a Trio process costs doing nothing but forwarding
RELAYS = {
    "naive": ("relays/relay_naive.py",),
    "lowlevel": ("relays/relay_lowlevel.py", "--wait-first"),
}
DEFAULT_TARGETS = "direct,naive,lowlevel,session,transaction"
SERVER_MAX_CONNECTIONS = 600
MAX_THREADS = 140


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, sys) CPU seconds of ``pid`` from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, sys) CPU seconds of ``pid`` and its live children: the workers of
    ``serve --workers N`` are children of the process the bench started, and their time
    reaches the parent's /proc/<pid>/stat only once they have exited."""
    user, sys_ = cpu_seconds(pid)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for kid in kids:
        with contextlib.suppress(OSError, ValueError):
            u, s = cpu_seconds(int(kid))
            user, sys_ = user + u, sys_ + s
    return user, sys_


def busy_seconds() -> tuple[float, float]:
    """(process time, irq+softirq time): CPU seconds of the whole machine since boot, from
    /proc/stat.  With IRQ time accounting (this kernel), softirq time -- most of loopback
    TCP delivery -- is charged to no process, so it is kept apart."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system) / CLK_TCK, (irq + softirq) / CLK_TCK


def children_cpu_seconds() -> float:
    """user+sys of this process's waited-for children (the load generator)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


_NICE = 0  # --nice


def boost(pid: int) -> None:
    """Apply --nice to the autogroup of ``pid``.

    With CONFIG_SCHED_AUTOGROUP (sched_autogroup_enabled=1, as here) the CFS share goes to
    sessions first: MariaDB, the proxy and sysbench each run in their own session, so a plain
    nice value does nothing against other sessions' work; the autogroup nice does."""
    if _NICE:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(f"{_NICE}\n")


def stop_process(proc: subprocess.Popen[Any] | None, *, first: int = signal.SIGTERM) -> None:
    """Signal ``proc`` (by pid), wait a little, then SIGKILL.  Idempotent."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(first)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def command_line(script: str | None = None, argv: list[str] | None = None) -> str:
    """The command to paste to run this again: the interpreter's own argv, or, when a suite
    runner called ``main(argv)`` in-process, ``script`` with ``argv``."""
    if argv is not None and script is not None:
        return shlex.join([".venv/bin/python", script, *argv])
    return shlex.join(
        [
            os.path.relpath(a, Path.cwd()) if i == 0 and os.path.isabs(a) else a
            for i, a in enumerate(sys.orig_argv)
        ]
    )


def med_range(values: list[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}–{fmt.format(max(values))})"
    )


def ratio_cell(ratios: list[float]) -> str:
    """A table cell: the median ratio (min-max) in bold, then every round's ratio."""
    if not ratios:
        return "–"
    return f"**{med_range(ratios, '{:.2f}')}** ({', '.join(f'{x:.2f}' for x in ratios)})"


def script_main(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
) -> int:
    """The end of a suite script's ``main``: run it, print its report and the proxy's log
    problems, save ``--json``; exit status 0 when ``result["ok"]``, 2 without MariaDB, 1 on
    an error, 130 on Ctrl-C (what it started is stopped by then)."""
    try:
        result = run(args)
    except MariaDBNotFound as exc:
        print(f"error: MariaDB not available: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, MariaDBError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopped everything", file=sys.stderr)
        return 130
    print()
    print(report(result))
    if result.get("proxy_log_problems"):
        print("\nproxy log warnings and errors:")
        for line in result["proxy_log_problems"]:
            print(f"    {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"raw results: {args.json}")
    print(f"RESULT: {'ok' if result['ok'] else 'FAILED'}")
    return 0 if result["ok"] else 1


def percentile(samples: list[float], p: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    target: str
    threads: int
    round: int
    position: int  # order within the round (0 = first)
    ok: bool
    seconds: float  # wall time of the load-generator command
    transactions: int = 0
    queries: int = 0
    tps: float = 0.0
    qps: float = 0.0
    p95_ms: float | None = None
    errors: int = 0  # errors the load generator counted (sysbench: ignored errors)
    reconnects: int = 0
    proxy_user_s: float | None = None
    proxy_sys_s: float | None = None
    mysqld_cpu_s: float | None = None
    loadgen_cpu_s: float | None = None
    # CPU used by everything else on the machine during the run (other users, daemons):
    # process time from /proc/stat minus proxy, mysqld and load generator.  Noise indicator.
    other_cpu_s: float | None = None
    softirq_cpu_s: float | None = None  # irq+softirq time (mostly loopback TCP), all cores
    error: str = ""  # why the run failed, or the load generator's complaints

    @property
    def proxy_cpu_s(self) -> float | None:
        if self.proxy_user_s is None or self.proxy_sys_s is None:
            return None
        return self.proxy_user_s + self.proxy_sys_s

    def us_per_rt(self, part: str = "total") -> float | None:
        """Proxy CPU µs per statement (one point select = one round trip)."""
        if not self.queries or self.proxy_cpu_s is None:
            return None
        cpu = {"total": self.proxy_cpu_s, "user": self.proxy_user_s, "sys": self.proxy_sys_s}[part]
        return (cpu or 0.0) * 1e6 / self.queries


@dataclass
class Bench:
    args: argparse.Namespace
    runs: list[RunResult] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------

_SB_NUM = r"([0-9]+(?:\.[0-9]+)?)"
_SB_SECOND = re.compile(r"^\[ (\d+)s \]")


class Sysbench:
    name = "sysbench"

    def __init__(
        self, binary: str, ps_mode: str, table_size: int, workload: str = "oltp_point_select"
    ) -> None:
        self.binary = binary
        self.workload = workload
        self.ps_mode = ps_mode
        self.table_size = table_size
        self.proc: subprocess.Popen[str] | None = None
        #: seconds at the start of each run left out of its figures (the logins of
        #: thousands of threads, not the steady state): sysbench 1.0 has no --warmup-time,
        #: so the run reports every second and the figures are taken from the seconds after
        self.settle = 0

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.strip()

    def _cmd(self, port: int, threads: int, seconds: int, action: str) -> list[str]:
        return [
            self.binary,
            self.workload,
            "--db-driver=mysql",
            f"--mysql-host={HOST}",
            f"--mysql-port={port}",
            f"--mysql-user={USER}",
            f"--mysql-password={PASSWORD}",
            f"--mysql-db={DB}",
            f"--tables={TABLES}",
            f"--table-size={self.table_size}",
            f"--db-ps-mode={self.ps_mode}",
            f"--threads={threads}",
            f"--time={seconds + self.settle}",
            f"--report-interval={1 if self.settle else 0}",
            "--percentile=95",
            action,
        ]

    def prepare(self, port: int) -> None:
        cmd = self._cmd(port, 1, 0, "prepare")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"sysbench prepare failed:\n{res.stdout}\n{res.stderr}")

    def run(
        self,
        port: int,
        threads: int,
        seconds: int,
        on_second: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """One run; with ``settle``, ``on_second(n)`` is called as sysbench reports its
        n-th second (run_one counts the proxy's CPU over the seconds the figures cover)."""
        cmd = self._cmd(port, threads, seconds, "run")
        self.proc = proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C is handled here, then we stop it by pid
        )
        boost(proc.pid)
        killed: list[bool] = []

        def kill() -> None:
            killed.append(True)
            stop_process(proc, first=signal.SIGKILL)

        late = threading.Timer(seconds + self.settle + 60, kill)
        late.start()
        err_lines: list[str] = []
        assert proc.stderr is not None
        drain = threading.Thread(target=err_lines.extend, args=(proc.stderr,), daemon=True)
        drain.start()
        out_lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out_lines.append(line)
                m = _SB_SECOND.match(line)
                if m and on_second is not None:
                    on_second(int(m.group(1)))
            proc.wait()
            drain.join()
        finally:
            late.cancel()
            stop_process(proc, first=signal.SIGKILL)
        out, err = "".join(out_lines), "".join(err_lines)
        if killed:
            err += "\n(bench: sysbench did not finish in time; killed)"
        rc = proc.returncode
        self.proc = None
        res = self.parse(out, err, rc)
        if self.settle:
            res.update(self.steady(out, self.settle))
        return res

    @staticmethod
    def steady(out: str, settle: int) -> dict[str, Any]:
        """The figures of the seconds after the first ``settle`` (from --report-interval=1
        lines): throughput, statements, errors, and the median of the per-second p95s."""
        seconds = [
            m
            for m in re.finditer(
                r"^\[ (\d+)s \] thds: \d+ tps: "
                + _SB_NUM
                + " qps: "
                + _SB_NUM
                + r".*?lat \(ms,95%\): "
                + _SB_NUM
                + " err/s: "
                + _SB_NUM,
                out,
                re.MULTILINE,
            )
            if int(m.group(1)) > settle
        ]
        if not seconds:
            return {"ok": False, "error": f"no per-second report after {settle} s"}
        tps = [float(m.group(2)) for m in seconds]
        qps = [float(m.group(3)) for m in seconds]
        return {
            "transactions": round(sum(tps)),
            "queries": round(sum(qps)),
            "tps": statistics.fmean(tps),
            "qps": statistics.fmean(qps),
            "p95_ms": statistics.median(float(m.group(4)) for m in seconds),
            "errors": round(sum(float(m.group(5)) for m in seconds)),
            "total_time": float(len(seconds)),
        }

    @staticmethod
    def parse(out: str, err: str, rc: int) -> dict[str, Any]:
        def grab(pattern: str, cast: Any = float) -> Any:
            m = re.search(pattern, out)
            return cast(m.group(1)) if m else None

        total_time = grab(r"total time:\s+" + _SB_NUM + "s")
        res = {
            "transactions": grab(r"transactions:\s+(\d+)", int) or 0,
            "queries": grab(r"queries:\s+(\d+)", int) or 0,
            "tps": grab(r"transactions:\s+\d+\s+\(" + _SB_NUM + " per sec") or 0.0,
            "qps": grab(r"queries:\s+\d+\s+\(" + _SB_NUM + " per sec") or 0.0,
            "p95_ms": grab(r"95th percentile:\s+" + _SB_NUM),
            "errors": grab(r"ignored errors:\s+(\d+)", int) or 0,
            "reconnects": grab(r"reconnects:\s+(\d+)", int) or 0,
            "total_time": total_time,
        }
        complaints = list(
            dict.fromkeys(  # unique, in order: every sysbench thread repeats the same lines
                line
                for line in (out + "\n" + err).splitlines()
                if re.search(r"FATAL|ERROR|error|warning|Can't|Lost connection", line)
                and "ignored errors" not in line
            )
        )
        ok = rc == 0 and res["transactions"] > 0 and not any("FATAL" in c for c in complaints)
        res["ok"] = ok
        res["error"] = "\n".join(complaints[:20]) if complaints or ok else ""
        if not ok:
            res["error"] = (
                f"sysbench exit code {rc}\n"
                + "\n".join(complaints[:20])
                + ("\n--- stderr tail ---\n" + "\n".join(err.splitlines()[-15:]) if err else "")
            )
        return res

    def stop(self) -> None:
        stop_process(self.proc, first=signal.SIGKILL)


def _pymysql_worker(
    port: int, table_size: int, start_at: float, end_at: float, seed: int, q: Any
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    rnd = random.Random(seed)
    count, errors, lat, msg = 0, 0, [], ""
    try:
        conn = pymysql.connect(
            host=HOST, port=port, user=USER, password=PASSWORD, database=DB, autocommit=True
        )
    except Exception as exc:
        q.put((0, 1, [], f"connect: {exc!r}"))
        return
    try:
        cur = conn.cursor()
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter
        deadline = now() + (end_at - time.time())
        sample_every = 4  # keep every 4th latency: enough for p95, cheap to ship back
        while True:
            t0 = now()
            if t0 >= deadline:
                break
            try:
                cur.execute("SELECT c FROM sbtest1 WHERE id=%s", (rnd.randint(1, table_size),))
                cur.fetchall()
            except pymysql.err.MySQLError as exc:
                errors += 1
                msg = msg or repr(exc)
                if not conn.open:
                    break
                continue
            count += 1
            if count % sample_every == 0:
                lat.append(now() - t0)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    q.put((count, errors, lat, msg))


class PymysqlLoad:
    """Fallback load generator: one process per 'thread' (no GIL sharing), text protocol."""

    name = "pymysql"

    def __init__(self, table_size: int) -> None:
        self.table_size = table_size
        self.procs: list[Any] = []
        self.ctx = mp.get_context("fork")

    def version(self) -> str:
        return f"pymysql {pymysql.__version__} (multi-process fallback generator)"

    def prepare(self, port: int) -> None:
        conn = pymysql.connect(
            host=HOST, port=port, user=USER, password=PASSWORD, database=DB, autocommit=True
        )
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS sbtest1 (id INT NOT NULL AUTO_INCREMENT, "
                "k INT NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '', "
                "pad CHAR(60) NOT NULL DEFAULT '', PRIMARY KEY (id), KEY k_1 (k)) ENGINE=InnoDB"
            )
            rnd = random.Random(1)
            rows = [
                (
                    rnd.randint(1, self.table_size),
                    "-".join(f"{rnd.randrange(10**11):011d}" for _ in range(10)),
                    "-".join(f"{rnd.randrange(10**11):011d}" for _ in range(5)),
                )
                for _ in range(self.table_size)
            ]
            for i in range(0, len(rows), 1000):
                cur.executemany(
                    "INSERT INTO sbtest1 (k, c, pad) VALUES (%s, %s, %s)", rows[i : i + 1000]
                )

    def run(self, port: int, threads: int, seconds: int) -> dict[str, Any]:
        q = self.ctx.Queue()
        start_at = time.time() + 0.5 + 0.02 * threads  # all connected before the clock starts
        end_at = start_at + seconds
        self.procs = [
            self.ctx.Process(
                target=_pymysql_worker,
                args=(port, self.table_size, start_at, end_at, i * 7919 + 1, q),
                daemon=True,
            )
            for i in range(threads)
        ]
        for p in self.procs:
            p.start()
        results = []
        try:
            for _ in self.procs:
                results.append(q.get(timeout=seconds + 60))
        finally:
            self.stop()
        count = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        lat = [x for r in results for x in r[2]]
        msgs = sorted({r[3] for r in results if r[3]})
        p95 = percentile(lat, 95)
        return {
            "transactions": count,
            "queries": count,
            "tps": count / seconds,
            "qps": count / seconds,
            "p95_ms": None if p95 is None else round(p95 * 1000, 3),
            "errors": errors,
            "reconnects": 0,
            "ok": count > 0 and not errors,
            "error": "\n".join(msgs[:10]),
        }

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(5)
        self.procs = []


# --------------------------------------------------------------------------------------------
# The proxy subprocess
# --------------------------------------------------------------------------------------------


def wait_for_login(
    proc: subprocess.Popen[bytes],
    port: int,
    log_tail: Callable[[], str],
    what: str = "proxy",
    database: str | None = DB,
) -> None:
    """Until a pymysql login as USER through ``port`` works (30 s at most); RuntimeError
    with the log's tail if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {proc.returncode} at start-up:\n{log_tail()}"
            )
        try:
            # autocommit=True: pymysql's default connect sends SET AUTOCOMMIT = 0, which a
            # proxy in statement pooling refuses (no transactions there)
            pymysql.connect(
                host=HOST,
                port=port,
                user=USER,
                password=PASSWORD,
                database=database,
                connect_timeout=2,
                autocommit=True,
            ).close()
            return
        except (pymysql.err.MySQLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready within 30 s ({exc}):\n{log_tail()}") from exc
            time.sleep(0.05)


class Target:
    """One thing sysbench is pointed at. ``pid`` (when known) is the process whose CPU time
    is charged to the target: µs per statement."""

    name: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        return ""

    def log_problems(self) -> list[str]:
        return []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        stop_process(self.proc, first=signal.SIGINT)

    def describe(self) -> str:
        return f"{self.name} on {HOST}:{self.port}" + (f" (pid {self.pid})" if self.pid else "")


class Direct(Target):
    def __init__(self, port: int) -> None:
        self.name = "direct"
        self.port = port


class Endpoint(Target):
    """``--endpoint NAME=HOST:PORT[:PID]``: a proxy the user runs (e.g. ProxySQL)."""

    def __init__(self, spec: str) -> None:
        name, _, addr = spec.partition("=")
        parts = addr.split(":")
        if not name or len(parts) not in (2, 3):
            raise ValueError(f"--endpoint {spec!r}: expected NAME=HOST:PORT[:PID]")
        self.name = name
        self.host = parts[0]
        self.port = int(parts[1])
        self.ext_pid = int(parts[2]) if len(parts) == 3 else None

    @property
    def pid(self) -> int | None:
        return self.ext_pid


class RelayProcess(Target):
    """A byte relay from bench/relays: the floor a Trio process starts from."""

    def __init__(self, name: str, upstream_port: int) -> None:
        self.name = name
        self.upstream_port = upstream_port

    def start(self) -> None:
        script, *flags = RELAYS[self.name]
        self.port = free_port()
        cmd = [
            sys.executable,
            str(Path(__file__).resolve().parent / script),
            "--port",
            str(self.port),
            "--upstream-port",
            str(self.upstream_port),
            *flags,
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, start_new_session=True, stderr=subprocess.DEVNULL
        )
        boost(self.proc.pid)
        wait_for_login(self.proc, self.port, lambda: "", f"relay {self.name}")


class ProxyProcess(Target):
    def __init__(
        self,
        workdir: Path,
        upstream_port: int,
        max_connections: int,
        pool_mode: str = "session",
        tree: tuple[str, Path] | None = None,
        workers: int = 1,
        *,
        max_client_connections: int = 10000,
        admin: bool = False,
    ) -> None:
        self.name = pool_mode if workers == 1 else f"{pool_mode}-w{workers}"
        if tree is not None:
            self.name += f"@{tree[0]}"
        self.max_client_connections = max_client_connections
        # off by default: run.py measures the hot path, and an HTTP server idling in the
        # proxy's nursery is not part of it; bench/orm.py reads the counters through it
        self.admin = admin
        self.admin_port = 0
        self.tree = tree
        self.workers = workers
        self.pool_mode = pool_mode
        self.workdir = workdir
        self.upstream_port = upstream_port
        self.max_connections = max_connections
        self.config_path = workdir / f"proxy-{self.name}.toml"
        self.log_path = workdir / f"proxy-{self.name}.log"

    def command(self) -> list[str]:
        args = ["serve", "--config", str(self.config_path), "--log-level", "info"]
        if self.workers != 1:  # not passed otherwise: a --tree checkout may predate it
            args += ["--workers", str(self.workers)]
        if self.tree is not None:
            # another checkout's code, this venv's packages: an A/B of two commits
            return [sys.executable, "-m", "tainted_proxy", *args]
        exe = Path(sys.executable).parent / "tainted-proxy"
        if not exe.exists():
            exe = REPO / ".venv" / "bin" / "tainted-proxy"
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "tainted_proxy"]
        return [*base, *args]

    def start(self) -> None:
        self.port = free_port()
        self.admin_port = free_port() if self.admin else 0
        admin_listen = f"{HOST}:{self.admin_port}" if self.admin else ""
        self.config_path.write_text(
            f"""[proxy]
listen = "{HOST}:{self.port}"
max_client_connections = {self.max_client_connections}

[upstream]
host = "{HOST}"
port = {self.upstream_port}
max_connections = {self.max_connections}

[pool]
default_mode = "session"
checkout_timeout = 30.0

[admin]
listen = "{admin_listen}"

[users.{USER}]
password = "{PASSWORD}"
pool_mode = "{self.pool_mode}"
"""
        )
        with open(self.log_path, "ab") as log:
            # the code of the checkout asked for (this one by default), not whatever the
            # venv's editable install points at: a worktree sharing another checkout's venv
            # would otherwise benchmark the other checkout
            tree = self.tree[1] if self.tree is not None else REPO
            env = {**os.environ, "PYTHONPATH": str(tree)}
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.tree[1] if self.tree is not None else None,
                start_new_session=True,  # a Ctrl-C is for us; we stop it by pid
            )
        boost(self.proc.pid)
        wait_for_login(self.proc, self.port, self.log_tail, f"proxy ({self.pool_mode})")

    def describe(self) -> str:
        return (
            f"tainted-proxy, {self.pool_mode} mode, on {HOST}:{self.port} (pid {self.pid}, "
            f"upstream.max_connections={self.max_connections}, workers={self.workers})"
        )

    def admin_json(self, route: str = "/stats") -> dict[str, Any]:
        """A JSON view of the admin endpoint (``admin=True``), e.g. ``/stats``: the proxy's
        own counters (pins, checkouts, sub-pool hits, the pool's peak)."""
        if not self.admin_port:
            raise RuntimeError("the proxy was started without its admin endpoint")
        url = f"http://{HOST}:{self.admin_port}{route}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.load(resp))

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [
            ln
            for ln in lines
            if not re.search(r" INFO .*(listening on |event=workers_started)", ln)
        ]


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def environment(srv: MariaDBServer, load: Any) -> dict[str, Any]:
    import trio

    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return {
        "mariadb": srv.version,
        "load_generator": load.version(),
        "python": platform.python_version(),
        "trio": trio.__version__,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def run_one(
    load: Any,
    target: Target,
    threads: int,
    rnd: int,
    pos: int,
    srv: MariaDBServer,
    seconds: int,
) -> RunResult:
    if not target.alive():
        raise RuntimeError(f"{target.name} died:\n{target.log_tail()}")
    mysqld_pid = srv.pid
    pid = target.pid
    zero = (0.0, 0.0)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}

    def snapshot(into: dict[str, Any]) -> None:
        into.update(
            p=tree_cpu_seconds(pid) if pid and target.alive() else None,
            m=sum(cpu_seconds(mysqld_pid)) if mysqld_pid and srv.running else None,
            b=busy_seconds(),
            t=time.monotonic(),
        )

    settle = getattr(load, "settle", 0)

    def on_second(n: int) -> None:
        # the seconds the figures cover (Sysbench.steady): CPU from the end of the
        # settle-th to the end of the last one, not the logins before or the logouts after
        if n == settle:
            snapshot(before)
        elif n == settle + seconds:
            snapshot(after)

    c0 = children_cpu_seconds()
    if settle:
        res = load.run(target.port, threads, seconds, on_second)
        if not before:  # the run ended early (its figures say why)
            snapshot(before)
        if not after:
            snapshot(after)
    else:
        snapshot(before)
        res = load.run(target.port, threads, seconds)
        snapshot(after)
    c1 = children_cpu_seconds()  # the load generator's: only known whole, once it exited
    p0 = before["p"] or zero
    p1 = after["p"] or p0
    m0, m1, b0, b1 = before["m"], after["m"], before["b"], after["b"]
    t0 = before["t"]
    wall = after["t"] - t0
    other = None
    if m0 is not None and m1 is not None:
        other = (b1[0] - b0[0]) - (c1 - c0) - (m1 - m0) - sum(p1) + sum(p0)
    return RunResult(
        target=target.name,
        threads=threads,
        round=rnd,
        position=pos,
        ok=res["ok"],
        seconds=round(wall, 3),
        transactions=res["transactions"],
        queries=res["queries"],
        tps=res["tps"],
        qps=res["qps"],
        p95_ms=res["p95_ms"],
        errors=res["errors"],
        reconnects=res["reconnects"],
        proxy_user_s=round(p1[0] - p0[0], 3) if pid else None,
        proxy_sys_s=round(p1[1] - p0[1], 3) if pid else None,
        mysqld_cpu_s=None if m0 is None or m1 is None else round(m1 - m0, 3),
        loadgen_cpu_s=round(c1 - c0, 3),
        other_cpu_s=None if other is None else round(max(0.0, other), 3),
        softirq_cpu_s=round(b1[1] - b0[1], 3),
        error=res["error"],
    )


def fmt_run(r: RunResult) -> str:
    extra = ""
    if r.us_per_rt() is not None:
        extra = f", {r.us_per_rt():.1f} µs/stmt"
    p95 = f", p95 {r.p95_ms} ms" if r.p95_ms is not None else ""
    status = "" if r.ok else "  ** FAILED **"
    errs = f", {r.errors} errors" if r.errors else ""
    cpu = []
    if r.proxy_cpu_s is not None:
        cpu.append(f"{r.target} {100 * r.proxy_cpu_s / r.seconds:.0f}")
    if r.mysqld_cpu_s is not None:
        cpu.append(f"mysqld {100 * r.mysqld_cpu_s / r.seconds:.0f}")
    if r.loadgen_cpu_s is not None:
        cpu.append(f"loadgen {100 * r.loadgen_cpu_s / r.seconds:.0f}")
    if r.softirq_cpu_s is not None:
        cpu.append(f"softirq {100 * r.softirq_cpu_s / r.seconds:.0f}")
    if r.other_cpu_s is not None:
        cpu.append(f"other {100 * r.other_cpu_s / r.seconds:.0f}")
    cpu_s = f"  [CPU %: {', '.join(cpu)}]" if cpu else ""
    return f"{r.tps:>10,.0f} TPS{p95}{errs}{extra}{cpu_s}{status}"


def summarize(bench: Bench) -> list[dict[str, Any]]:
    """One row per (client count, target): ratios to direct taken within each round, and
    to the naive relay (the floor the issue sets) when it ran."""
    rows = []
    for threads in bench.args.threads:
        for name in bench.args.targets:
            ratios, vs_naive, tps, p95, us, us_user, us_sys, cpu_pct, other = ([] for _ in range(9))
            runs = [r for r in bench.runs if r.threads == threads and r.target == name]
            for rnd in range(bench.args.rounds):
                by = {
                    r.target: r
                    for r in bench.runs
                    if r.threads == threads and r.round == rnd and r.ok
                }
                r = by.get(name)
                if r is None:
                    continue
                tps.append(r.tps)
                if r.p95_ms is not None:
                    p95.append(r.p95_ms)
                if r.other_cpu_s is not None:
                    other.append(100 * r.other_cpu_s / r.seconds)
                if r.us_per_rt() is not None:
                    us.append(r.us_per_rt())
                    us_user.append(r.us_per_rt("user"))
                    us_sys.append(r.us_per_rt("sys"))
                    cpu_pct.append(100 * (r.proxy_cpu_s or 0) / r.seconds)
                if "direct" in by and by["direct"].tps:
                    ratios.append(r.tps / by["direct"].tps)
                if "naive" in by and by["naive"].tps:
                    vs_naive.append(r.tps / by["naive"].tps)
            rows.append(
                {
                    "threads": threads,
                    "target": name,
                    "tps": tps,
                    "ratios": ratios,
                    "vs_naive": vs_naive,
                    "p95_ms": p95,
                    "us_per_stmt": us,
                    "us_per_stmt_user": us_user,
                    "us_per_stmt_sys": us_sys,
                    "cpu_pct": cpu_pct,
                    "other_cpu_pct": other,
                    "failed_runs": sum(1 for r in runs if not r.ok),
                    "errors": sum(r.errors for r in runs),
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| threads | target | TPS | **ratio to direct** | per-round | **ratio to naive relay** "
        "| p95 ms | **CPU µs/stmt** | user / sys µs | CPU % | failed runs / errors "
        "| other CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p95 = statistics.median(r["p95_ms"]) if r["p95_ms"] else None
        user = statistics.median(r["us_per_stmt_user"]) if r["us_per_stmt_user"] else None
        sys_ = statistics.median(r["us_per_stmt_sys"]) if r["us_per_stmt_sys"] else None
        split = "–" if user is None or sys_ is None else f"{user:.1f} / {sys_:.1f}"
        out.append(
            f"| {r['threads']} | {r['target']} "
            f"| {med_range(r['tps'])} "
            f"| **{med_range(r['ratios'], '{:.2f}')}** "
            f"| {', '.join(f'{x:.2f}' for x in r['ratios']) or '–'} "
            f"| **{med_range(r['vs_naive'], '{:.2f}')}** "
            f"| {'–' if p95 is None else f'{p95:.2f}'} "
            f"| **{med_range(r['us_per_stmt'], '{:.1f}')}** "
            f"| {split} "
            f"| {med_range(r['cpu_pct'], '{:.0f}')} "
            f"| {r['failed_runs']} / {r['errors']} "
            f"| {med_range(r['other_cpu_pct'], '{:.0f}')} |"
        )
    return "\n".join(out)


def run_bench(args: argparse.Namespace) -> int:
    global _NICE
    if args.nice:
        try:  # before any thread or child exists: every child inherits it
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as exc:
            print(f"error: --nice {args.nice}: {exc}", file=sys.stderr)
            return 2
        _NICE = args.nice
    sysbench = None if args.loadgen == "pymysql" else shutil.which("sysbench")
    if args.loadgen == "sysbench" and sysbench is None:
        print("error: sysbench not found (apt-get install -y sysbench)", file=sys.stderr)
        return 2
    if sysbench:
        load: Any = Sysbench(sysbench, args.ps_mode, args.table_size, args.workload)
    else:
        if args.loadgen == "auto":
            print(
                "sysbench not found (apt-get install -y sysbench): "
                "using the multi-process pymysql generator",
                file=sys.stderr,
            )
        if args.workload != "oltp_point_select":
            print(f"error: {args.workload} needs sysbench", file=sys.stderr)
            return 2
        if args.ps_mode != "disable":
            print(
                "note: the pymysql generator only speaks the text protocol; --ps-mode is ignored",
                file=sys.stderr,
            )
        load = PymysqlLoad(args.table_size)

    bench = Bench(args)
    max_threads = max(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    srv = MariaDBServer(
        max_connections=SERVER_MAX_CONNECTIONS,
        # same buffer pool as the reference measurements (the helper's default is 32M)
        extra_args=["--innodb-buffer-pool-size=128M"],
    )
    upstream_max = args.upstream_max or max_threads + 8
    targets: list[Target] = []
    t_start = time.monotonic()
    problems: list[str] = []
    try:
        with sigterm_as_interrupt():
            try:
                srv.start()
            except MariaDBNotFound as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if srv.pid:
                boost(srv.pid)
            srv.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
            srv.create_user(USER, PASSWORD)
            print(f"MariaDB {srv.version} on {HOST}:{srv.port} (pid {srv.pid})")
            load.prepare(srv.port)
            rows = srv.execute(f"SELECT COUNT(*) FROM {DB}.sbtest1")
            print(f"prepared {DB}.sbtest1 with {rows[0][0]} rows ({load.name})")

            for name in args.targets:
                if name == "direct":
                    t: Target = Direct(srv.port)
                elif name in RELAYS:
                    t = RelayProcess(name, srv.port)
                elif (m := PROXY_TARGET.match(name)) and m["mode"] in PROXY_MODES:
                    tree = m["tree"]
                    t = ProxyProcess(
                        workdir,
                        srv.port,
                        upstream_max,
                        m["mode"],
                        None if tree is None else (tree, args.trees[tree]),
                        int(m["workers"] or 1),
                    )
                else:
                    t = args.endpoints[name]
                targets.append(t)
                t.start()
                print(f"  {t.describe()}")
            env = environment(srv, load)
            print(
                f"load: {env['load_generator']}, ps-mode={args.ps_mode}, threads={args.threads}, "
                f"{args.rounds} rounds x {args.seconds} s per target\n"
            )

            for threads in args.threads:
                if args.warmup > 0:
                    for t in targets:
                        w = load.run(t.port, threads, args.warmup)
                        if not w["ok"] or w["errors"]:
                            print(f"threads={threads:<3} warm-up {t.name}: FAILED or errors")
                            for line in w["error"].splitlines():
                                print(f"    {line}")
                for rnd in range(args.rounds):
                    k = rnd % len(targets)
                    order = targets[k:] + targets[:k]
                    for pos, t in enumerate(order):
                        r = run_one(load, t, threads, rnd, pos, srv, args.seconds)
                        bench.runs.append(r)
                        print(f"threads={threads:<3} round {rnd + 1} {t.name:<12} {fmt_run(r)}")
                        if r.error:
                            for line in r.error.splitlines():
                                print(f"    {line}")
                        sys.stdout.flush()
            for t in targets:
                problems += [f"{t.name}: {line}" for line in t.log_problems()]
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, MariaDBError, pymysql.err.MySQLError, OSError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        load.stop()
        for t in targets:
            t.stop()
        srv.close()
        if args.keep_logs:
            print(f"proxy logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = summarize(bench)
    table = markdown(rows)
    command = command_line()
    print(
        f"\n## {args.workload}, ps-mode={args.ps_mode}, "
        f"{args.rounds} rounds x {args.seconds} s, interleaved\n"
    )
    print(table)
    print(
        f"\nMariaDB {env['mariadb']}, {env['load_generator']}, Python {env['python']}, "
        f"trio {env['trio']}, {env['cpus']} CPUs, commit {env['commit'] or '?'}, {env['date']}; "
        f"total {time.monotonic() - t_start:.0f} s"
    )
    if problems:
        print(f"\nproxy log: {len(problems)} warning/error lines, first ones:")
        for line in problems[:15]:
            print(f"    {line}")
    other = [100 * r.other_cpu_s / r.seconds for r in bench.runs if r.other_cpu_s is not None]
    if other and statistics.median(other) > 20:
        print(
            f"\nwarning: other processes used {statistics.median(other):.0f}% CPU (median per run) "
            "while this ran: the TPS ratios are unreliable (a one-thread proxy loses its CPU "
            "share first); CPU µs per round trip is still meaningful."
            + ("" if args.nice else " Try --nice -10 (as root).")
        )
    failed = [r for r in bench.runs if not r.ok or r.errors]
    if failed:
        print(f"\n{len(failed)} run(s) failed or had errors (see above)")
    print(f"\ncommand: {command}")

    if args.json:
        data = {
            "command": command,
            "settings": {
                "threads": args.threads,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "ps_mode": args.ps_mode,
                "workload": args.workload,
                "table_size": args.table_size,
                "tables": TABLES,
                "load_generator": load.name,
                "upstream_max_connections": upstream_max,
                "targets": args.targets,
                "nice": args.nice,
            },
            "environment": env,
            "runs": [{**asdict(r), "proxy_us_per_rt": r.us_per_rt()} for r in bench.runs],
            "summary": rows,
            "proxy_log_problems": problems,
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        print(f"raw results: {args.json}")
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Point-select throughput, direct MariaDB vs tainted-proxy (interleaved A/B).",
    )
    p.add_argument(
        "--threads",
        default="16",
        help="comma-separated client counts, e.g. 1,16,64 (default: 16)",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    p.add_argument("--seconds", type=int, default=5, help="seconds per run (default: 5)")
    p.add_argument(
        "--ps-mode",
        choices=["disable", "auto"],
        default="disable",
        help="sysbench --db-ps-mode: disable = text protocol (COM_QUERY), auto = server-side "
        "prepared statements (default: disable)",
    )
    p.add_argument(
        "--workload",
        choices=["oltp_point_select", "oltp_read_only"],
        default="oltp_point_select",
        help="the sysbench workload (oltp_read_only: 16 statements a transaction, range "
        "queries of 100 rows among them; CPU per statement counts all of them)",
    )
    p.add_argument("--json", metavar="PATH", help="save the raw results as JSON")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unrecorded seconds per target before each thread count (default: 1; 0 = none)",
    )
    p.add_argument("--table-size", type=int, default=10000, help="rows in sbtest1 (default: 10000)")
    p.add_argument(
        "--loadgen",
        choices=["auto", "sysbench", "pymysql"],
        default="auto",
        help="auto = sysbench if installed, else the pymysql multi-process generator",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the proxy log and config")
    p.add_argument(
        "--targets",
        default=DEFAULT_TARGETS,
        help="comma-separated, run interleaved in this order (rotating per round): direct, "
        f"the byte relays {', '.join(RELAYS)}, tainted-proxy in {', '.join(PROXY_MODES)} "
        "mode (MODE-wN: with --workers N, e.g. transaction-w2), and --endpoint names "
        f"(default: {DEFAULT_TARGETS})",
    )
    p.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another checkout of tainted-proxy (e.g. a git worktree of an older commit): "
        "targets MODE@NAME run its code, for an A/B of two commits in one run",
    )
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT[:PID]",
        help="another proxy to measure in the same run (e.g. a ProxySQL you started, its "
        "user app/app-secret able to reach the database sbtest); with PID, its CPU per "
        "statement too; add NAME to --targets to place it (default: appended)",
    )
    p.add_argument(
        "--upstream-max",
        type=int,
        default=0,
        help="the proxy's upstream.max_connections (default: 0 = threads + 8)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run MariaDB, the proxy and sysbench at this nice value (process and autogroup), "
        "e.g. -10 on a machine shared with other work (negative needs root; default: 0 = "
        "unchanged)",
    )
    args = p.parse_args(argv)
    try:
        args.threads = [int(x) for x in str(args.threads).split(",") if x.strip()]
    except ValueError:
        p.error(f"--threads: expected a comma-separated list of integers, got {args.threads!r}")
    if not args.threads or min(args.threads) < 1 or max(args.threads) > MAX_THREADS:
        # direct clients + the proxy's pooled upstream connections must fit in MariaDB's
        # max_connections (300): the pool keeps its connections while direct runs
        p.error(f"--threads: each value must be between 1 and {MAX_THREADS}")
    try:
        args.endpoints = {e.name: e for e in map(Endpoint, args.endpoint)}
    except ValueError as exc:
        p.error(str(exc))
    args.trees = {}
    for spec in args.tree:
        name, _, path = spec.partition("=")
        if not name or not Path(path, "tainted_proxy").is_dir():
            p.error(f"--tree {spec!r}: expected NAME=DIR, DIR a checkout of tainted-proxy")
        args.trees[name] = Path(path).resolve()
    args.targets = [x.strip() for x in str(args.targets).split(",") if x.strip()]
    args.targets += [n for n in args.endpoints if n not in args.targets]
    known = {"direct", *RELAYS, *PROXY_MODES, *args.endpoints}
    known |= {f"{m}@{t}" for m in PROXY_MODES for t in args.trees}

    def is_known(x: str) -> bool:
        m = PROXY_TARGET.match(x)
        proxy = m is not None and m["mode"] in PROXY_MODES
        return x in known or (proxy and (m["tree"] is None or m["tree"] in args.trees))

    unknown = [x for x in args.targets if not is_known(x)]
    if unknown or len(set(args.targets)) != len(args.targets):
        p.error(f"--targets: unknown or repeated {unknown or args.targets}; known: {sorted(known)}")
    # every target keeps its upstream connections while the others run: direct clients,
    # one per client per relay, the pool of each proxy (threads + 8 by default)
    top = max(args.threads)
    relays = sum(1 for t in args.targets if t in RELAYS or t == "direct")
    proxies = sum(
        1 for t in args.targets if (m := PROXY_TARGET.match(t)) and m["mode"] in PROXY_MODES
    )
    need = top * relays + proxies * (args.upstream_max or top + 8)
    if need > SERVER_MAX_CONNECTIONS - 10:
        p.error(
            f"--threads {top} with these targets needs {need} server connections "
            f"(MariaDB here allows {SERVER_MAX_CONNECTIONS}): fewer threads or targets"
        )
    if args.rounds < 1 or args.seconds < 1:
        p.error("--rounds and --seconds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
