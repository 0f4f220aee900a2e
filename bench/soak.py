"""Soak: the proxy under client churn and database restarts (issue 10).

Starts a private MariaDB (``tainted_proxy.testing.mariadb.MariaDBServer``) and the proxy as a
real subprocess (``python -m tainted_proxy serve --config FILE``, user ``app`` in transaction
mode, ``upstream.max_connections = --cap``), everything on 127.0.0.1, then runs client threads
for ``--seconds``:

* ``orm``: SQLAlchemy ORM sessions over pymysql, short transactions (insert, query, update,
  commit or rollback);
* ``pin``: pymysql clients that pin their connection now and then: ``GET_LOCK`` /
  ``RELEASE_LOCK``, a temporary table created, filled, counted and dropped;
* ``ps``: mysql-connector-python (pure Python) with binary prepared statements
  (``cursor(prepared=True)``): insert and read back by id.

Every client sets a ``time_zone`` and a literal user variable of its own whenever it
(re)connects and, on every iteration, reads them back: a value that is not its own is a
*session-state violation* (must be 0). Meanwhile the database is killed (SIGKILL) and started
again every ``--restart-every`` seconds, and a random client's socket is shut down abruptly
now and then (the client reconnects). Errors are counted by kind; those the proxy promises
during an outage (1105 no upstream, 1317 statement in flight lost, 2013 / 2006 session ended
because it was inside a transaction or pinned) are expected, anything else is listed as
unexpected. A sampler reads the server's processlist for the proxy's upstream login (peak must
be <= the cap) and the proxy's RSS (``/proc/PID/status`` VmRSS).

Exit status: 0 when violations == 0, peak <= cap (in every sample) and the proxy stayed up;
1 otherwise.

    .venv/bin/python bench/soak.py --seconds 600 --json /tmp/soak.json

Bounded: at most 3600 s, 64 clients, a cap of 64; loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script from anywhere
from run import wait_for_login  # noqa: E402

HOST = "127.0.0.1"
USER = "app"
PASSWORD = "app-secret"
DB = "test"
MAX_SECONDS = 3600
MAX_CLIENTS = 64
MAX_CAP = 64
#: seconds: a count above the cap (a failure) is looked at again this much later, to tell
#: in the report a connection the server was still ending from one that stayed
RECHECK = 0.1

# Error codes the proxy promises while the database is away (docs/operations.md).
KIND_NAMES = {
    1105: "1105 upstream unavailable",
    1317: "1317 statement in flight lost",
    2013: "2013 lost connection (session ended)",
    2006: "2006 server gone away (session ended)",
    2055: "2055 lost connection (session ended)",
    1040: "1040 too many connections",
}
EXPECTED = set(KIND_NAMES.values()) | {"soak kill (own socket shut down)", "reconnect failed"}
DISCONNECTS = {2013, 2006, 2055, 2003, 0}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number of a pymysql / mysql-connector / SQLAlchemy error, if any."""
    orig = getattr(exc, "orig", None)
    if orig is not None and orig is not exc:
        return error_code(orig)
    if isinstance(exc, OSError):
        return None
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno > 0 and not isinstance(exc, OSError):
        return errno
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statements = 0
        self.iterations: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_by_client: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.violations: list[str] = []
        self.reconnects = 0
        self.kills = 0

    def ran(self, n: int = 1) -> None:
        with self.lock:
            self.statements += n

    def error(self, client: Client, exc: BaseException) -> str:
        code = error_code(exc)
        if client.killed.is_set():
            kind = "soak kill (own socket shut down)"
        elif code in KIND_NAMES:
            kind = KIND_NAMES[code]
        else:
            kind = f"other: {type(exc).__name__} {code} {str(exc)[:80]}"
        with self.lock:
            self.errors[kind] += 1
            self.errors_by_client[client.kind] += 1
            if kind not in EXPECTED and len(self.unexpected) < 30:
                self.unexpected.append(f"{client.name}: {type(exc).__name__}: {exc}"[:300])
        return kind

    def violation(self, client: Client, what: str) -> None:
        with self.lock:
            self.violations.append(f"{client.name}: {what}")


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


class Client(threading.Thread):
    kind = "?"

    def __init__(self, idx: int, port: int, stats: Stats, stop: threading.Event, seed: int):
        super().__init__(name=f"{self.kind}{idx}", daemon=True)
        self.idx = idx
        self.port = port
        self.stats = stats
        self.stop_event = stop
        self.rng = random.Random(seed)
        self.killed = threading.Event()
        self.gen = 0
        # a time zone of its own: +HH:MM, read back as written
        self.tz = f"+{idx % 13:02d}:{(idx * 7) % 60:02d}"
        self.me = ""

    # -- to override ---------------------------------------------------------------------
    def connect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def sock(self) -> socket.socket | None:
        raise NotImplementedError

    def iteration(self) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def kill_socket(self) -> bool:
        """Shut the client's socket down from outside (the owner thread closes it)."""
        s = self.sock()
        if s is None:
            return False
        self.killed.set()
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        return True

    def next_identity(self) -> None:
        self.gen += 1
        self.me = f"{self.name}-g{self.gen}"

    def check(self, tz: Any, me: Any) -> None:
        if isinstance(me, bytes | bytearray):
            me = me.decode()
        if isinstance(tz, bytes | bytearray):
            tz = tz.decode()
        if tz != self.tz or me != self.me:
            self.stats.violation(
                self, f"read time_zone={tz!r} @soak_me={me!r}, expected {self.tz!r} {self.me!r}"
            )

    def run(self) -> None:
        connected = False
        while not self.stop_event.is_set():
            try:
                if not connected:
                    self.connect()
                    connected = True
                    with self.stats.lock:
                        self.stats.reconnects += 1
                self.iteration()
                with self.stats.lock:
                    self.stats.iterations[self.kind] += 1
            except Exception as exc:  # noqa: BLE001 - every error is counted by kind
                if self.stop_event.is_set():
                    break
                kind = self.stats.error(self, exc)
                code = error_code(exc)
                if (
                    not connected
                    or self.killed.is_set()
                    or code in DISCONNECTS
                    or code is None
                    or kind.startswith("other")
                ):
                    self.close()
                    connected = False
                    self.killed.clear()
                else:
                    self.after_error()
                time.sleep(0.05 + self.rng.random() * 0.1)
            time.sleep(self.rng.random() * 0.004)
        with contextlib.suppress(Exception):
            self.close()

    def after_error(self) -> None:
        """The session survived an error (1105, 1317...): its SETs may not have run."""
        self.needs_set = True


class PinClient(Client):
    """pymysql; pins by GET_LOCK and by temporary tables."""

    kind = "pin"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.conn: pymysql.connections.Connection | None = None
        self.needs_set = True

    def connect(self) -> None:
        self.conn = pymysql.connect(
            host=HOST,
            port=self.port,
            user=USER,
            password=PASSWORD,
            database=DB,
            autocommit=True,
            connect_timeout=5,
            read_timeout=30,
            write_timeout=30,
        )
        self.needs_set = True

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if conn._sock is not None:
                    conn._sock.close()
                conn._sock = None
                conn._rfile = None

    def sock(self) -> socket.socket | None:
        conn = self.conn
        return getattr(conn, "_sock", None) if conn is not None else None

    def q(self, sql: str, args: Any = None) -> tuple[Any, ...]:
        assert self.conn is not None
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        self.stats.ran()
        return rows

    def set_state(self) -> None:
        self.next_identity()
        self.q(f"SET time_zone = '{self.tz}'")
        self.q(f"SET @soak_me = '{self.me}'")
        self.needs_set = False

    def iteration(self) -> None:
        if self.needs_set:
            # an earlier error may have left a lock or a table behind (the session survived)
            self.q("DO RELEASE_LOCK(%s)", (f"soak_lock_{self.idx}",))
            self.q(f"DROP TEMPORARY TABLE IF EXISTS soak_tmp_{self.idx}")
            self.set_state()
        (tz, me), *_ = self.q("SELECT @@session.time_zone, @soak_me")
        self.check(tz, me)
        if self.rng.random() < 0.2:
            # a longer autocommit statement: the one in flight when the database dies
            ((_, me),) = self.q("SELECT SLEEP(0.05), @soak_me")
            self.check(self.tz, me)
        if self.rng.random() < 0.5:
            lock = f"soak_lock_{self.idx}"
            ((got,),) = self.q("SELECT GET_LOCK(%s, 5)", (lock,))
            if got != 1:
                self.stats.violation(self, f"GET_LOCK({lock}) returned {got!r}")
            (tz, me), *_ = self.q("SELECT @@session.time_zone, @soak_me")
            self.check(tz, me)
            ((rel,),) = self.q("SELECT RELEASE_LOCK(%s)", (lock,))
            if rel != 1:
                self.stats.violation(self, f"RELEASE_LOCK({lock}) returned {rel!r}")
        else:
            t = f"soak_tmp_{self.idx}"
            n = self.rng.randint(1, 5)
            self.q(f"CREATE TEMPORARY TABLE {t} (x INT)")
            self.q(f"INSERT INTO {t} VALUES " + ",".join(["(1)"] * n))
            ((count,),) = self.q(f"SELECT COUNT(*) FROM {t}")
            if count != n:
                self.stats.violation(self, f"temporary table has {count} rows, inserted {n}")
            (tz, me), *_ = self.q("SELECT @@session.time_zone, @soak_me")
            self.check(tz, me)
            self.q(f"DROP TEMPORARY TABLE {t}")


class PSClient(Client):
    """mysql-connector-python (pure), binary prepared statements."""

    kind = "ps"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.conn: Any = None
        self.needs_set = True

    def connect(self) -> None:
        import mysql.connector

        self.conn = mysql.connector.connect(
            host=HOST,
            port=self.port,
            user=USER,
            password=PASSWORD,
            database=DB,
            autocommit=True,
            use_pure=True,
            connection_timeout=10,
            ssl_disabled=True,
        )
        # the pure-Python driver writes a prepared statement's packets separately: without
        # TCP_NODELAY each round trip waits for a delayed ACK (40 ms), proxy or not
        with contextlib.suppress(Exception):
            self.conn._socket.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.needs_set = True

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn._socket.sock.close()
            with contextlib.suppress(Exception):
                conn.disconnect()

    def sock(self) -> socket.socket | None:
        conn = self.conn
        try:
            return conn._socket.sock if conn is not None else None
        except AttributeError:
            return None

    def set_state(self) -> None:
        self.next_identity()
        cur = self.conn.cursor()
        cur.execute(f"SET time_zone = '{self.tz}'")
        self.stats.ran()
        cur.execute(f"SET @soak_me = '{self.me}'")
        self.stats.ran()
        cur.close()
        self.needs_set = False

    def iteration(self) -> None:
        if self.needs_set:
            self.set_state()
        cur = self.conn.cursor(prepared=True)
        try:
            tag = self.rng.randint(1, 10**9)
            cur.execute("SELECT ?, @@session.time_zone, @soak_me", (tag,))
            ((got, tz, me),) = cur.fetchall()
            self.stats.ran()
            if int(got) != tag:
                self.stats.violation(self, f"prepared SELECT ? returned {got!r}, sent {tag}")
            self.check(tz, me)
            cur.execute("INSERT INTO soak_ps (owner, v) VALUES (?, ?)", (self.name, tag))
            self.stats.ran()
            new_id = cur.lastrowid
            cur.execute("SELECT owner, v FROM soak_ps WHERE id = ?", (new_id,))
            rows = cur.fetchall()
            self.stats.ran()
            if new_id and rows:
                owner, v = rows[0]
                owner = owner.decode() if isinstance(owner, bytes | bytearray) else owner
                if owner != self.name or int(v) != tag:
                    self.stats.violation(
                        self,
                        f"row {new_id} reads ({owner!r}, {v!r}), inserted ({self.name}, {tag})",
                    )
        finally:
            with contextlib.suppress(Exception):
                cur.close()


class OrmClient(Client):
    """SQLAlchemy ORM sessions over pymysql: short transactions."""

    kind = "orm"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.engine: Any = None
        self.dbapi: Any = None  # the current pymysql connection (for the soak's kills)
        self.needs_set = False

    def connect(self) -> None:
        from sqlalchemy import create_engine, event

        if self.engine is not None:
            return
        self.engine = create_engine(
            f"mysql+pymysql://{USER}:{PASSWORD}@{HOST}:{self.port}/{DB}",
            pool_size=1,
            max_overflow=0,
            pool_timeout=30,
            connect_args={"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30},
        )

        @event.listens_for(self.engine, "connect")
        def on_connect(dbapi_conn: Any, record: Any) -> None:
            self.next_identity()
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET time_zone = '{self.tz}'")
                cur.execute(f"SET @soak_me = '{self.me}'")
            self.stats.ran(2)
            record.info["soak_me"] = self.me
            self.dbapi = dbapi_conn

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            dbapi, self.dbapi = self.dbapi, None
            if dbapi is not None:
                with contextlib.suppress(Exception):
                    dbapi._sock.close()
            with contextlib.suppress(Exception):
                engine.dispose(close=False)

    def sock(self) -> socket.socket | None:
        return getattr(self.dbapi, "_sock", None)

    def iteration(self) -> None:
        from sqlalchemy import select, text
        from sqlalchemy.orm import Session

        with Session(self.engine) as session:
            session.begin()
            tz, me = session.execute(text("SELECT @@session.time_zone, @soak_me")).one()
            self.stats.ran()
            self.check(tz, me)
            item = SoakItem(owner=self.name, val=self.rng.randint(1, 10**6))
            session.add(item)
            session.flush()
            self.stats.ran()
            got = session.scalars(select(SoakItem).where(SoakItem.id == item.id)).one()
            self.stats.ran()
            if got.owner != self.name:
                self.stats.violation(self, f"row {item.id} owned by {got.owner!r}")
            got.val = got.val + 1
            session.flush()
            self.stats.ran()
            tz, me = session.execute(text("SELECT @@session.time_zone, @soak_me")).one()
            self.stats.ran()
            self.check(tz, me)
            if self.rng.random() < 0.2:
                session.rollback()
            else:
                session.commit()
            self.stats.ran()  # COMMIT / ROLLBACK


SoakItem: Any = None


def _orm_model() -> None:
    global SoakItem
    from sqlalchemy import Column, Integer, String
    from sqlalchemy.orm import declarative_base

    Base = declarative_base()

    class _SoakItem(Base):  # type: ignore[misc, valid-type]
        __tablename__ = "soak_items"
        id = Column(Integer, primary_key=True, autoincrement=True)
        owner = Column(String(40), nullable=False)
        val = Column(Integer, nullable=False)

    SoakItem = _SoakItem


# --------------------------------------------------------------------------------------------
# The proxy process and the samplers
# --------------------------------------------------------------------------------------------


class Proxy:
    def __init__(self, workdir: Path, upstream_port: int, cap: int, pin_cap: int) -> None:
        self.port = free_port()
        self.config = workdir / "proxy.toml"
        self.log = workdir / "proxy.log"
        self.config.write_text(
            f"""[proxy]
listen = "{HOST}:{self.port}"
shutdown_timeout = 5

[upstream]
host = "{HOST}"
port = {upstream_port}
max_connections = {cap}
connect_timeout = 1

[pool]
checkout_timeout = 5

[admin]
listen = ""

[users.{USER}]
password = "{PASSWORD}"
pool_mode = "transaction"
upstream_user = "{USER}"
upstream_password = "{PASSWORD}"
max_pinned = {pin_cap}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tainted_proxy", "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for_login(self.proc, self.port, self.log_tail, database=None)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_counts(self) -> dict[str, int]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return {}
        lines = text.splitlines()
        return {
            "lines": len(lines),
            "tracebacks": text.count("Traceback (most recent call last)"),
            "error_lines": sum(1 for ln in lines if " ERROR " in ln or " CRITICAL " in ln),
        }

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Sampler(threading.Thread):
    """The proxy's upstream connections as the server sees them, and the proxy's RSS."""

    def __init__(
        self, server: Any, proxy: Proxy, cap: int, stop: threading.Event, every: float = 0.05
    ):
        super().__init__(name="sampler", daemon=True)
        self.cap = cap
        #: processlist snapshots (id, command, time ms, state, info) with more than the cap
        self.over_cap: list[dict[str, Any]] = []
        self.over_cap_count = 0
        #: the peak, where a count above the cap counts only the connections present in
        #: two looks RECHECK seconds apart
        self.peak_sustained = 0
        self.server = server
        self.proxy = proxy
        self.stop_event = stop
        self.every = every
        self.peak = 0
        self.samples = 0
        self.rss: list[tuple[float, int]] = []
        self.t0 = time.monotonic()
        self.db_lock = threading.Lock()  # held while the database restarts

    def _rows(self, conn: Any) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ID, COMMAND, CAST(TIME_MS AS UNSIGNED), STATE, LEFT(INFO, 60) "
                "FROM information_schema.PROCESSLIST WHERE USER = %s",
                (USER,),
            )
            return list(cur.fetchall())

    def recheck(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """More than the cap (the run fails): look again after RECHECK seconds, so the
        report says which connections lasted. The pool keeps a closed connection's slot
        until the server has let go of it, so neither kind should be seen at all; one
        gone by then was a connection the server was still ending (docs/operations.md,
        "Soak")."""
        time.sleep(RECHECK)
        again = self._rows(conn)
        lasting = {r[0] for r in rows} & {r[0] for r in again}
        self.peak = max(self.peak, len(again))
        self.peak_sustained = max(self.peak_sustained, len(lasting))
        self.over_cap_count += 1
        if len(self.over_cap) < 10:
            self.over_cap.append(
                {
                    "at_seconds": round(time.monotonic() - self.t0, 1),
                    "rows": [list(r) for r in rows],
                    "gone_after_recheck": sorted({r[0] for r in rows} - lasting),
                    "count_after_recheck": len(again),
                }
            )

    def run(self) -> None:
        conn = None
        last_rss = 0.0
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now - last_rss >= 5.0:
                kb = rss_kb(self.proxy.pid)
                if kb is not None:
                    self.rss.append((round(now - self.t0, 1), kb))
                last_rss = now
            try:
                if conn is None:
                    conn = pymysql.connect(
                        host=HOST,
                        port=self.server.port,
                        user="root",
                        password="",
                        connect_timeout=1,
                        read_timeout=2,
                        autocommit=True,
                    )
                rows = self._rows(conn)
                n = len(rows)
                self.samples += 1
                self.peak = max(self.peak, n)
                if n > self.cap:
                    self.recheck(conn, rows)
                else:
                    self.peak_sustained = max(self.peak_sustained, n)
            except (pymysql.MySQLError, OSError):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                time.sleep(0.2)
            time.sleep(self.every)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="duration (default 30)")
    p.add_argument("--clients", type=int, default=12, help="client threads (default 12)")
    p.add_argument("--cap", type=int, default=6, help="upstream.max_connections (default 6)")
    p.add_argument(
        "--restart-every",
        type=float,
        default=10.0,
        help="kill and start the database every N seconds (default 10; 0 = never)",
    )
    p.add_argument(
        "--kill-every",
        type=float,
        default=0.5,
        help="shut a random client's socket every N seconds on average (default 0.5; 0 = never)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.add_argument("--proxy-log", metavar="PATH", help="keep a copy of the proxy's log")
    args = p.parse_args(argv)
    if not 1 <= args.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be within 1..{MAX_SECONDS}")
    if not 3 <= args.clients <= MAX_CLIENTS:
        p.error(f"--clients must be within 3..{MAX_CLIENTS}")
    if not 2 <= args.cap <= MAX_CAP:
        p.error(f"--cap must be within 2..{MAX_CAP}")
    return args


def make_clients(n: int, port: int, stats: Stats, stop: threading.Event, seed: int) -> list[Client]:
    kinds = [OrmClient, PinClient, PSClient]
    return [kinds[i % 3](i, port, stats, stop, seed * 1000 + i) for i in range(n)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tainted_proxy.testing.mariadb import MariaDBServer

    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="tpsoak-"))
    stats = Stats()
    stop = threading.Event()
    server = MariaDBServer(max_connections=max(50, args.cap + args.clients + 20))
    proxy: Proxy | None = None
    sampler: Sampler | None = None
    clients: list[Client] = []
    restarts = 0
    restart_seconds: list[float] = []
    proxy_died = False
    rc_proxy: int | None = None
    started = time.monotonic()
    try:
        server.start()
        server.create_user(USER, PASSWORD)
        server.execute(
            "CREATE TABLE soak_items (id INT AUTO_INCREMENT PRIMARY KEY, "
            "owner VARCHAR(40) NOT NULL, val INT NOT NULL)"
        )
        server.execute(
            "CREATE TABLE soak_ps (id INT AUTO_INCREMENT PRIMARY KEY, "
            "owner VARCHAR(40) NOT NULL, v BIGINT NOT NULL)"
        )
        _orm_model()
        pin_clients = sum(1 for i in range(args.clients) if i % 3 == 1)
        pin_cap = max(1, min(pin_clients, args.cap - 2))
        proxy = Proxy(workdir, server.port, args.cap, pin_cap)
        proxy.start()
        sampler = Sampler(server, proxy, args.cap, stop)
        clients = make_clients(args.clients, proxy.port, stats, stop, args.seed)
        t0 = time.monotonic()
        setup_seconds = t0 - started
        sampler.start()
        for c in clients:
            c.start()
        deadline = t0 + args.seconds
        next_restart = t0 + args.restart_every if args.restart_every > 0 else float("inf")
        mid_rss: int | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if not proxy.alive():
                proxy_died = True
                break
            if mid_rss is None and now >= t0 + args.seconds / 2:
                mid_rss = rss_kb(proxy.pid)
            if now >= next_restart and deadline - now > 2.0:
                r0 = time.monotonic()
                server.kill()
                time.sleep(0.5)  # an outage clients can notice
                server.start()
                restarts += 1
                restart_seconds.append(round(time.monotonic() - r0, 2))
                next_restart = time.monotonic() + args.restart_every
                continue
            if args.kill_every > 0 and rng.random() < 0.1 / args.kill_every:
                if rng.choice(clients).kill_socket():
                    with stats.lock:
                        stats.kills += 1
            time.sleep(0.1)
        t_end = time.monotonic()
        elapsed = t_end - t0
        end_rss = rss_kb(proxy.pid) if proxy.alive() else None
        stop.set()
        for c in clients:
            c.join(timeout=40)
        sampler.join(timeout=10)
        # after all that, the proxy must still serve a fresh client
        healthy = False
        if proxy.alive():
            for _ in range(50):
                try:
                    c = pymysql.connect(
                        host=HOST, port=proxy.port, user=USER, password=PASSWORD, database=DB
                    )
                    with c.cursor() as cur:
                        cur.execute("SELECT @soak_me, @@session.time_zone = @@global.time_zone")
                        row = cur.fetchone()
                    c.close()
                    healthy = row == (None, 1)
                    break
                except pymysql.MySQLError:
                    time.sleep(0.2)
        else:
            proxy_died = True
        start_rss = sampler.rss[0][1] if sampler.rss else None
        log_counts = proxy.log_counts()
        if args.proxy_log:
            shutil.copyfile(proxy.log, args.proxy_log)
        rc_proxy = proxy.stop()
        if args.proxy_log:  # with the shutdown lines
            shutil.copyfile(proxy.log, args.proxy_log)
        teardown_seconds = time.monotonic() - t_end
        report: dict[str, Any] = {
            "seconds": round(elapsed, 1),
            "clients": {k: sum(1 for c in clients if c.kind == k) for k in ("orm", "pin", "ps")},
            "cap": args.cap,
            "max_pinned": pin_cap,
            "seed": args.seed,
            "server_version": server.version,
            "statements": stats.statements,
            "statements_per_second": round(stats.statements / elapsed, 1) if elapsed else 0,
            "iterations": dict(stats.iterations),
            "restarts": restarts,
            "restart_seconds": restart_seconds,
            "client_kills": stats.kills,
            "reconnects": stats.reconnects,
            "errors_by_kind": dict(stats.errors.most_common()),
            "errors_by_client": dict(stats.errors_by_client),
            "unexpected_errors": sum(n for k, n in stats.errors.items() if k not in EXPECTED),
            "unexpected_samples": stats.unexpected,
            "violations": len(stats.violations),
            "violation_samples": stats.violations[:30],
            "peak_upstream_connections": sampler.peak,
            "peak_upstream_connections_sustained": sampler.peak_sustained,
            "processlist_samples": sampler.samples,
            "over_cap_samples": sampler.over_cap_count,
            "over_cap_snapshots": sampler.over_cap,
            "proxy_rss_kb": {"start": start_rss, "middle": mid_rss, "end": end_rss},
            "proxy_rss_kb_samples": sampler.rss,
            "proxy_alive": not proxy_died,
            "proxy_healthy_after": healthy,
            "proxy_exit_code": rc_proxy,
            "proxy_log": log_counts,
            "setup_seconds": round(setup_seconds, 1),
            "teardown_seconds": round(teardown_seconds, 1),
        }
        if proxy_died:
            report["proxy_log_tail"] = proxy.log_tail()
        return report
    finally:
        stop.set()
        if proxy is not None:
            proxy.stop()
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


def verdict(report: dict[str, Any]) -> list[str]:
    failures = []
    if report["violations"]:
        failures.append(f"{report['violations']} session-state violations")
    if report["peak_upstream_connections"] > report["cap"]:
        failures.append(
            f"the server saw {report['peak_upstream_connections']} upstream connections "
            f"with a cap of {report['cap']} ({report['peak_upstream_connections_sustained']} "
            f"of them still there {RECHECK} s later)"
        )
    if not report["proxy_alive"]:
        failures.append("the proxy died")
    elif not report["proxy_healthy_after"]:
        failures.append("the proxy did not serve a fresh client cleanly after the run")
    return failures


def render(report: dict[str, Any]) -> str:
    rss = report["proxy_rss_kb"]
    lines = [
        f"soak: {report['seconds']} s, clients {report['clients']}, cap {report['cap']}, "
        f"seed {report['seed']}, {report['server_version']}",
        f"  statements            {report['statements']} ({report['statements_per_second']}/s)",
        f"  iterations            {report['iterations']}",
        f"  database restarts     {report['restarts']} (took {report['restart_seconds']} s)",
        f"  client sockets killed {report['client_kills']}, (re)connects {report['reconnects']}",
        "  errors by kind:",
    ]
    for kind, n in report["errors_by_kind"].items():
        mark = "" if kind in EXPECTED else "   <- unexpected"
        lines.append(f"    {n:7d}  {kind}{mark}")
    if not report["errors_by_kind"]:
        lines.append("    none")
    lines += [
        f"  session-state violations  {report['violations']}",
        f"  peak upstream connections {report['peak_upstream_connections']} (cap {report['cap']}, "
        f"{report['processlist_samples']} processlist samples, {report['over_cap_samples']} "
        f"above the cap), sustained for {RECHECK} s: "
        f"{report['peak_upstream_connections_sustained']}",
        f"  proxy RSS kB              start {rss['start']}, middle {rss['middle']}, end {rss['end']}",
        f"  proxy log                 {report['proxy_log']}",
    ]
    for snap in report["over_cap_snapshots"][:3]:
        lines.append(
            f"  above the cap at {snap['at_seconds']} s: {snap['rows']}; gone "
            f"{RECHECK} s later: {snap['gone_after_recheck']}"
        )
    for v in report["violation_samples"][:10]:
        lines.append(f"  VIOLATION {v}")
    for u in report["unexpected_samples"][:10]:
        lines.append(f"  unexpected: {u}")
    failures = verdict(report)
    lines.append("RESULT: " + ("FAIL: " + "; ".join(failures) if failures else "ok"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SQLAlchemy logs the failed ROLLBACK of a connection the soak killed: counted, not noise
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    try:
        report = run(args)
    except Exception:
        traceback.print_exc()
        return 2
    print(render(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if verdict(report) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
