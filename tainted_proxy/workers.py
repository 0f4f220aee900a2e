"""``tainted-proxy serve --workers N``: the parent process.

The parent binds nothing clients reach and runs no Trio loop: it creates the file the
workers share their upstream budget through, in a private directory (pool.shared; each
worker's Unix socket for the others, tainted_proxy.peers, sits beside it), starts N workers (this same
command again, with hidden ``--worker-*`` flags), forwards SIGTERM, SIGINT and SIGHUP to
them, zeroes the pinned counts of each worker that exited (its sessions are gone), and
exits once they all have: 0 when every worker stopped cleanly after a signal, else 1 (or
the first failing worker's code). A worker that exits on its own (a start-up
failure, a crash) stops the others: a supervisor (systemd, the container runtime)
restarts the whole set, which starts from an empty budget.

Workers run in their own process group, so a Ctrl-C in a terminal (SIGINT to the
foreground group) reaches the parent only, and each worker gets it once, forwarded: a
second one means "stop now", as with one process.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from tainted_proxy.config import parse_listen
from tainted_proxy.pool import shared

__all__ = ["supervise", "worker_command"]

log = logging.getLogger("tainted_proxy.workers")

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_POLL = 0.05


def worker_command(
    argv: list[str], index: int, count: int, path: str, listen: str | None
) -> list[str]:
    """The command line of worker ``index``: the parent's own ``serve`` arguments (so
    every override applies the same), the listen address the parent resolved (port 0),
    and the hidden flags naming its role."""
    extra = ["--listen", listen] if listen is not None else []
    return [
        sys.executable,
        "-m",
        "tainted_proxy",
        *argv,
        *extra,
        "--worker-index",
        str(index),
        "--worker-count",
        str(count),
        "--worker-shared",
        path,
        "--worker-parent",
        str(os.getpid()),
    ]


def _hold_port(listen: str) -> tuple[socket.socket, str]:
    """``listen`` asks for port 0 (any free port): every worker must get the same one.
    Bound here with SO_REUSEPORT and never listened on (the kernel gives connections to
    listening sockets only), so the port stays reserved while the workers run."""
    host, _ = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    return sock, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def supervise(argv: list[str], listen: str, workers: int) -> int:
    """Run ``workers`` worker processes until they have all exited; the exit code."""
    path = shared.create_file(workers)
    holder: socket.socket | None = None
    resolved: str | None = None
    if parse_listen(listen)[1] == 0:
        holder, resolved = _hold_port(listen)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False
    failed: int | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    try:
        for i in range(workers):
            if stopping:
                break
            procs.append(
                subprocess.Popen(
                    worker_command(argv, i, workers, path, resolved),
                    stdin=subprocess.DEVNULL,
                    process_group=0,
                )
            )
        log.info(
            "event=workers_started workers=%d pids=%s listen=%s",
            len(procs),
            ",".join(str(p.pid) for p in procs),
            resolved or listen,
        )
        done: set[int] = set()
        while len(done) < len(procs):
            for i, p in enumerate(procs):
                code = p.poll()
                if code is None or i in done:
                    continue
                done.add(i)
                shared.clear_pinned(path, i)  # its sessions, and their pins, are gone
                if stopping and code == 0:
                    continue
                log.warning(
                    "event=worker_exited worker=%d pid=%d code=%d%s",
                    i,
                    p.pid,
                    code,
                    "" if stopping else "; stopping the other workers",
                )
                if failed is None:
                    failed = code if code > 0 else 1
                if not stopping:
                    stopping = True
                    for q in procs:
                        if q.poll() is None:
                            q.send_signal(signal.SIGTERM)
            time.sleep(_POLL)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for p in procs:  # only if the loop above was interrupted by an exception
            if p.poll() is None:
                p.kill()
                p.wait()
        if holder is not None:
            holder.close()
        shared.remove_file(path)
    log.info("event=workers_stopped workers=%d code=%d", len(procs), failed or 0)
    return failed or 0
