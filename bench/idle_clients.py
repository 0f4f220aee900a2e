"""Memory per idle client: many logged-in clients held by one proxy process (issue 11).

``.venv/bin/python bench/idle_clients.py --clients 10000 [--json PATH]``:

* starts a private MariaDB (``tainted_proxy.testing.mariadb.MariaDBServer``) with the
  account ``app``/``app-secret`` and a database ``idle``;
* starts the proxy of this checkout as a subprocess (``python -m tainted_proxy serve``,
  transaction pool mode, admin off, ``max_client_connections`` above N);
* raises RLIMIT_NOFILE to its hard limit (the proxy inherits it) and logs N clients in
  over loopback with a minimal raw handshake (HandshakeResponse41 + mysql_native_password
  from ``tainted_proxy.wire``), spread over ``--workers`` processes, in two halves;
* reads the proxy's RSS (/proc/PID/status) before any client, after half of them and
  after all of them: KB per idle client is (all - before) / N, and the marginal cost
  (all - half) / (N/2) leaves out one-time costs (imports, caches, the first pool
  connection);
* runs a query on ``--queries`` of the idle clients and checks the answers, reads the RSS
  again, and prints the command line and the figures (``--json PATH`` saves them).

Everything it starts is stopped on exit, Ctrl-C included. Loopback only. Method and
figures: docs/benchmarks.md, "Idle clients".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

# the soak's proxy start-up check (same account: app / app-secret on 127.0.0.1)
from run import wait_for_login  # noqa: E402
from soak import HOST, PASSWORD, USER, free_port  # noqa: E402

from tainted_proxy.testing.mariadb import MariaDBNotFound, MariaDBServer  # noqa: E402
from tainted_proxy.wire.auth import native_password_response  # noqa: E402
from tainted_proxy.wire.codec import frame, read_lenenc_bytes, read_lenenc_int  # noqa: E402
from tainted_proxy.wire.constants import (  # noqa: E402
    CLIENT_CONNECT_WITH_DB,
    CLIENT_LONG_PASSWORD,
    CLIENT_MULTI_RESULTS,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_TRANSACTIONS,
)
from tainted_proxy.wire.packets import (  # noqa: E402
    ErrPacket,
    HandshakeResponse41,
    HandshakeV10,
    com_query,
)

DB = "idle"
# utf8mb4_general_ci: what most drivers send
CHARSET = 45
CAPABILITIES = (
    CLIENT_LONG_PASSWORD
    | CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_TRANSACTIONS
    | CLIENT_MULTI_RESULTS
)
# fds the proxy needs besides its clients (listener, upstream pool, logs, epoll, pipes)
PROXY_SPARE_FDS = 200


# --------------------------------------------------------------------------------------------
# A minimal blocking MySQL client (worker side)
# --------------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the proxy closed the connection")
        data += chunk
    return bytes(data)


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """(sequence id, payload) of the next packet (no payload here reaches 16 MiB)."""
    header = _recv_exact(sock, 4)
    length = int.from_bytes(header[:3], "little")
    return header[3], _recv_exact(sock, length)


def _raise_if_err(payload: bytes, what: str) -> None:
    if payload[:1] == b"\xff":
        err = ErrPacket.decode(payload)
        raise RuntimeError(f"{what}: ERR {err.code} {err.message}")


def login(port: int, database: str = DB) -> socket.socket:
    """A logged-in connection to the proxy (or a server): greeting, HandshakeResponse41
    with a mysql_native_password answer, OK."""
    sock = socket.create_connection((HOST, port), timeout=60)
    try:
        _seq, payload = read_packet(sock)
        _raise_if_err(payload, "greeting")
        greeting = HandshakeV10.decode(payload)
        response = HandshakeResponse41(
            capabilities=CAPABILITIES,
            max_packet=16 << 20,
            charset=CHARSET,
            username=USER,
            auth_response=native_password_response(PASSWORD, greeting.auth_data[:20]),
            database=database,
            auth_plugin="mysql_native_password",
        )
        sock.sendall(frame(response.encode(), 1)[0])
        _seq, payload = read_packet(sock)
        _raise_if_err(payload, "login")
        if payload[:1] != b"\x00":
            raise RuntimeError(f"login: expected OK, got {payload[:16]!r}")
    except BaseException:
        sock.close()
        raise
    return sock


def query_scalar(sock: socket.socket, sql: str) -> bytes | None:
    """Run ``sql`` (one column, one row) in the text protocol; the value. Without
    CLIENT_DEPRECATE_EOF: column count, definitions, EOF, rows, EOF."""
    sock.sendall(frame(com_query(sql.encode()), 0)[0])
    _seq, payload = read_packet(sock)
    _raise_if_err(payload, sql)
    columns, _ = read_lenenc_int(payload, 0)
    if columns != 1:
        raise RuntimeError(f"{sql}: {columns} columns")
    read_packet(sock)  # the column definition
    _seq, payload = read_packet(sock)
    if payload[:1] != b"\xfe":
        raise RuntimeError(f"{sql}: expected EOF after the column definitions")
    rows: list[bytes | None] = []
    while True:
        _seq, payload = read_packet(sock)
        _raise_if_err(payload, sql)
        if payload[:1] == b"\xfe" and len(payload) < 9:
            break
        rows.append(read_lenenc_bytes(payload, 0)[0])
    if len(rows) != 1:
        raise RuntimeError(f"{sql}: {len(rows)} rows")
    return rows[0]


def worker(port: int, index: int, pipe: Connection) -> None:
    """Hold this worker's share of the clients; obey the driver's commands:
    ("login", k), ("query", k), ("quit",)."""
    socks: list[socket.socket] = []
    try:
        while True:
            cmd = pipe.recv()
            try:
                if cmd[0] == "login":
                    t0 = time.monotonic()
                    for _ in range(cmd[1]):
                        socks.append(login(port))
                    pipe.send(("ok", len(socks), time.monotonic() - t0))
                elif cmd[0] == "query":
                    answers = []
                    for i, s in enumerate(socks[: cmd[1]]):
                        expected = f"{index}-{i}"
                        got = query_scalar(s, f"SELECT CONCAT('{index}-', {i})")
                        answers.append((expected, got.decode() if got is not None else None))
                    pipe.send(("ok", answers))
                else:
                    pipe.send(("ok",))
                    return
            except Exception as exc:
                pipe.send(("error", f"worker {index}: {type(exc).__name__}: {exc}"))
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------------------------
# The proxy and its memory (driver side)
# --------------------------------------------------------------------------------------------


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of ``pid`` in kB, from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); the limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Proxy:
    """tainted-proxy from this checkout, as a subprocess, transaction pool mode."""

    def __init__(self, workdir: Path, upstream_port: int, clients: int, upstream_max: int) -> None:
        self.port = free_port()
        self.config = workdir / "proxy.toml"
        self.log = workdir / "proxy.log"
        self.config.write_text(
            f"""[proxy]
listen = "{HOST}:{self.port}"
max_client_connections = {clients + 100}

[upstream]
host = "{HOST}"
port = {upstream_port}
max_connections = {upstream_max}

[pool]
checkout_timeout = 60.0

[admin]
listen = ""

[users.{USER}]
password = "{PASSWORD}"
pool_mode = "transaction"
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tainted_proxy", "serve", "--config", str(self.config)]

    def start(self) -> None:
        # this checkout's code, whatever the venv's editable install points at
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # a Ctrl-C is for us; we stop it by pid
            )
        wait_for_login(self.proc, self.port, self.log_tail, database=None)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    def log_problems(self) -> list[str]:
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").splitlines()
            return [ln for ln in lines if " ERROR " in ln or " WARNING " in ln or "Traceback" in ln]
        return []


class Workers:
    """The client processes, each holding its share of the N connections."""

    def __init__(self, port: int, count: int) -> None:
        ctx = mp.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for i in range(count):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=worker, args=(port, i, theirs), daemon=True)
            p.start()
            theirs.close()
            self.pipes.append(mine)
            self.procs.append(p)

    def ask(self, commands: list[tuple[Any, ...]], timeout: float) -> list[tuple[Any, ...]]:
        """Send one command to each worker (in order), wait for all answers."""
        for pipe, cmd in zip(self.pipes, commands, strict=False):
            pipe.send(cmd)
        answers = []
        deadline = time.monotonic() + timeout
        for pipe, _ in zip(self.pipes, commands, strict=False):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"a worker did not answer within {timeout:.0f} s")
            answer = pipe.recv()
            if answer[0] != "ok":
                raise RuntimeError(answer[1])
            answers.append(answer)
        return answers

    def login(self, total: int, timeout: float) -> float:
        """Log ``total`` more clients in, spread over the workers; the wall time."""
        n = len(self.pipes)
        t0 = time.monotonic()
        self.ask([("login", total // n + (i < total % n)) for i in range(n)], timeout)
        return time.monotonic() - t0

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("quit",))
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10_000, help="idle clients (default 10000)")
    ap.add_argument("--workers", type=int, default=4, help="client processes (default 4)")
    ap.add_argument(
        "--queries", type=int, default=10, help="idle clients that then run a query (10)"
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=2.5,
        help="seconds before each RSS reading (idle sessions give back their receive buffer after 1-2 s)",
    )
    ap.add_argument(
        "--hold", type=float, default=0.0, help="keep the clients connected this long at the end"
    )
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.clients < 2 or args.workers < 1 or args.queries < 0:
        ap.error("need --clients >= 2, --workers >= 1, --queries >= 0")
    args.workers = min(args.workers, args.clients)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    print(f"command: {command}")
    nofile = raise_nofile()
    per_worker = -(-args.clients // args.workers)
    if args.clients + PROXY_SPARE_FDS > nofile or per_worker + 50 > nofile:
        print(
            f"error: RLIMIT_NOFILE hard limit is {nofile}: the proxy needs "
            f"{args.clients + PROXY_SPARE_FDS} fds (use fewer --clients)",
            file=sys.stderr,
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="tp-idle-"))
    srv = MariaDBServer(max_connections=100)
    proxy: Proxy | None = None
    workers: Workers | None = None
    result: dict[str, Any] = {"clients": args.clients, "workers": args.workers}
    try:
        try:
            srv.start()
        except MariaDBNotFound as exc:
            print(f"error: MariaDB not available: {exc}", file=sys.stderr)
            return 2
        srv.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
        srv.create_user(USER, PASSWORD)
        proxy = Proxy(workdir, srv.port, args.clients, upstream_max=args.workers + 8)
        proxy.start()
        print(
            f"MariaDB {srv.version} on {HOST}:{srv.port}; proxy pid {proxy.pid} on port {proxy.port}"
        )
        time.sleep(args.settle)
        rss = {"before": memory_kb(proxy.pid)}

        workers = Workers(proxy.port, args.workers)
        half = args.clients // 2
        login_s = workers.login(half, timeout=600)
        time.sleep(args.settle)
        rss["half"] = memory_kb(proxy.pid)
        login_s += workers.login(args.clients - half, timeout=600)
        time.sleep(args.settle)
        rss["all"] = memory_kb(proxy.pid)
        print(f"logged in {args.clients} clients in {login_s:.1f} s")

        # the first few clients of each worker run one query each
        per = [
            args.queries // args.workers + (i < args.queries % args.workers)
            for i in range(args.workers)
        ]
        answers = [
            a for ans in workers.ask([("query", k) for k in per], timeout=120) for a in ans[1]
        ]
        wrong = [(want, got) for want, got in answers if want != got]
        time.sleep(args.settle)
        rss["after_queries"] = memory_kb(proxy.pid)

        n = args.clients
        per_client = (rss["all"]["VmRSS"] - rss["before"]["VmRSS"]) / n
        marginal = (rss["all"]["VmRSS"] - rss["half"]["VmRSS"]) / (n - half)
        anon = (rss["all"]["RssAnon"] - rss["before"]["RssAnon"]) / n
        result.update(
            {
                "command": command,
                "rss_kb": rss,
                "kb_per_idle_client": round(per_client, 2),
                "kb_per_idle_client_marginal": round(marginal, 2),
                "anon_kb_per_idle_client": round(anon, 2),
                "login_seconds": round(login_s, 2),
                "logins_per_second": round(n / login_s, 1),
                "queries": len(answers),
                "wrong_answers": wrong,
                "proxy_alive": proxy.alive(),
                "proxy_log_problems": proxy.log_problems()[:20],
                "environment": {
                    "mariadb": srv.version,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "kernel": platform.release(),
                    "rlimit_nofile": nofile,
                    "commit": _commit(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                },
            }
        )
        print(
            f"proxy RSS kB: before {rss['before']['VmRSS']:,}, {half:,} clients "
            f"{rss['half']['VmRSS']:,}, {n:,} clients {rss['all']['VmRSS']:,}, "
            f"after {len(answers)} queries {rss['after_queries']['VmRSS']:,}"
        )
        print(
            f"KB per idle client: {per_client:.2f} (marginal, second half: {marginal:.2f}; "
            f"anonymous memory: {anon:.2f})"
        )
        print(f"queries on idle clients: {len(answers)}, wrong answers: {len(wrong)}")
        ok = not wrong and len(answers) == args.queries and proxy.alive()
        result["ok"] = ok
        if args.hold:
            print(f"holding the clients for {args.hold:.0f} s (proxy pid {proxy.pid})")
            time.sleep(args.hold)
        print(f"RESULT: {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        if workers is not None:
            workers.close()
        if proxy is not None:
            proxy.stop()
        srv.close()
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _commit() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return ""


if __name__ == "__main__":
    sys.exit(main())
