"""The whole benchmark suite in one command (issue 11); docs/performance.md holds its tables.

    .venv/bin/python bench/suite.py --json results.json --chart docs/throughput.png
    .venv/bin/python bench/suite.py --smoke          # a few seconds per step, no ratios read

Each step is one of the bench scripts, run as a subprocess with its own private MariaDB
(so a step that fails or hangs cannot spoil the next), with ``--json`` into a temporary
file; the suite prints each step's table as it finishes and writes one JSON file of every
step's command, exit status, duration and results. Steps:

* ``point-text`` / ``point-ps``: bench/run.py, sysbench oltp_point_select over the text
  protocol and server-side prepared statements, at 1, 16 and 64 clients: direct MariaDB, the
  naive and low-level Trio byte relays, tainted-proxy in session, transaction and statement
  pooling, and any ``--endpoint`` (another proxy); ratios per round, CPU µs per statement;
* ``read-only``: bench/run.py, sysbench oltp_read_only at 1, 16 and 64 clients;
* ``many-clients``: bench/many_clients.py, 2,000 clients through 20 upstream connections
  (MariaDB max_connections = 151);
* ``orm``: bench/orm.py, SQLAlchemy and Django sessions: pin rate, settings-pool hit rate;
* ``idle``: bench/idle_clients.py, 10,000 logged-in idle clients, RSS per client;
* ``classifier``: bench/bench_classifier.py, µs per statement.

``--chart PATH`` draws throughput against clients for each target of ``point-text`` (and
``point-ps``) with matplotlib (``pip install -e '.[bench]'``); without it the suite says so
and goes on. The exit status is non-zero when a step failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
TARGETS = "direct,naive,lowlevel,session,transaction,statement"


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    args: str  # split on spaces
    smoke: str
    #: what a reader needs to know about the figures
    about: str


# run.py in smoke mode: one round of a second, two clients, no warm-up
_RUN_SMOKE = "--threads 2 --rounds 1 --seconds 1 --warmup 0"

STEPS = (
    Step(
        "point-text",
        "run.py",
        "--threads 1,16,64 --ps-mode disable",
        f"{_RUN_SMOKE} --ps-mode disable --targets direct,naive,transaction,statement",
        "sysbench oltp_point_select, text protocol (COM_QUERY)",
    ),
    Step(
        "point-ps",
        "run.py",
        "--threads 1,16,64 --ps-mode auto",
        f"{_RUN_SMOKE} --ps-mode auto --targets direct,transaction",
        "sysbench oltp_point_select, server-side prepared statements (COM_STMT_EXECUTE)",
    ),
    Step(
        "read-only",
        "run.py",
        "--threads 1,16,64 --ps-mode auto --workload oltp_read_only "
        "--targets direct,session,transaction",
        f"{_RUN_SMOKE} --ps-mode auto --workload oltp_read_only --targets direct,transaction",
        "sysbench oltp_read_only (16 statements a transaction)",
    ),
    Step(
        "many-clients",
        "many_clients.py",
        "",
        "--smoke",
        "2,000 clients through 20 upstream connections, MariaDB max_connections = 151",
    ),
    Step("orm", "orm.py", "", "--smoke", "SQLAlchemy and Django sessions, transaction mode"),
    Step(
        "idle",
        "idle_clients.py",
        "--clients 10000",
        "--clients 200 --workers 2 --settle 0.3",
        "logged-in idle clients held by one proxy process",
    ),
    Step(
        "classifier",
        "bench_classifier.py",
        "",
        "--rounds 2 --n 2000",
        "the statement classifier, µs per statement",
    ),
)


def run_step(step: Step, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{step.name}.json"
    extra = (step.smoke if args.smoke else step.args).split()
    if step.script == "run.py" and not args.smoke:
        extra += ["--rounds", str(args.rounds), "--seconds", str(args.seconds)]
        if "--targets" not in extra:
            extra += ["--targets", TARGETS]
        for e in args.endpoint:
            extra += ["--endpoint", e]
        if args.nice:
            extra += ["--nice", str(args.nice)]
    cmd = [sys.executable, str(BENCH / step.script), *extra, "--json", str(out)]
    print(f"\n===== {step.name}: {step.about}\n$ {shlex.join(cmd)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = round(time.monotonic() - t0, 1)
    tail = proc.stdout.strip().splitlines()[-40:]
    print("\n".join(tail))
    if proc.returncode:
        print(f"** {step.name} failed (exit {proc.returncode}) **\n{proc.stderr[-3000:]}")
    results: Any = None
    if out.exists():
        results = json.loads(out.read_text())
    return {
        "about": step.about,
        "command": shlex.join(cmd),
        "returncode": proc.returncode,
        "seconds": seconds,
        "results": results,
    }


def chart(report: dict[str, Any], path: Path) -> bool:
    """Throughput against clients per target, one panel per point-select step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nno chart: matplotlib is not installed (pip install -e '.[bench]')")
        return False
    steps = [s for s in ("point-text", "point-ps") if (report["steps"].get(s) or {}).get("results")]
    if not steps:
        return False
    fig, axes = plt.subplots(1, len(steps), figsize=(6.5 * len(steps), 4.5), squeeze=False)
    for ax, name in zip(axes[0], steps, strict=True):
        rows = report["steps"][name]["results"]["summary"]
        by: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["tps"]:
                tps = sorted(r["tps"])[len(r["tps"]) // 2]
                by.setdefault(r["target"], []).append((r["threads"], tps))
        for target, pts in by.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=target)
        ax.set_xscale("log")
        ax.set_xlabel("clients (sysbench threads)")
        ax.set_ylabel("statements per second (median of rounds)")
        ax.set_title(report["steps"][name]["about"], fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nchart: {path}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds per step (CI)")
    ap.add_argument("--only", help="comma-separated step names: " + ",".join(s.name for s in STEPS))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (run.py steps)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per run (run.py steps)")
    ap.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT[:PID]",
        help="another proxy measured in the point-select steps (see run.py --endpoint)",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run.py steps: run MariaDB, the proxies and sysbench at this (autogroup) nice "
        "value, e.g. -10 on a machine shared with other work (root)",
    )
    ap.add_argument("--json", metavar="PATH", help="write every step's results here")
    ap.add_argument("--chart", metavar="PATH", help="draw throughput against clients (PNG)")
    args = ap.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else {s.name for s in STEPS}
    unknown = wanted - {s.name for s in STEPS}
    if unknown:
        ap.error(f"--only: unknown steps {sorted(unknown)}")
    report: dict[str, Any] = {
        "command": shlex.join(sys.orig_argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": __import__("os").cpu_count(),
        },
        "smoke": args.smoke,
        "steps": {},
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tp-suite-") as tmp:
        for step in STEPS:
            if step.name in wanted:
                report["steps"][step.name] = run_step(step, args, Path(tmp))
    report["seconds"] = round(time.monotonic() - t0, 1)
    failed = [n for n, s in report["steps"].items() if s["returncode"]]
    print(
        f"\nsuite: {len(report['steps'])} steps in {report['seconds']} s; failed: {failed or 'none'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {args.json}")
    if args.chart:
        chart(report, Path(args.chart))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
