"""A bounded, seeded fuzzer against a live tainted-proxy (issue 10, "Bad input").

``.venv/bin/python bench/fuzz_live.py --inputs 100000 --seed 1 --concurrency 4``

It starts a private MariaDB (``tainted_proxy.testing.mariadb.MariaDBServer``) and the proxy in
this process (``tainted_proxy.testing.proxy.ProxyThread``, transaction pool mode,
``max_packet_size`` 1 MiB so "oversized" is cheap to reach), then:

* ``--concurrency`` worker processes (spawned, so they do not share the proxy's GIL) send
  hostile input over raw TCP as the proxy user ``fuzz``, whose upstream login may only touch
  the schema ``fuzz`` (no SHUTDOWN, no PROCESS, no SUPER):

  - handshake phase: mutations of a real HandshakeResponse41 (built with ``wire.packets``
    from the proxy's own greeting, correct scramble): bit flips, truncation, random tails,
    random bytes, wrong sequence ids, a header announcing more bytes than are sent followed
    by EOF, a header announcing more than ``max_packet_size``, an SslRequest to a proxy
    without TLS, garbage before the greeting is read;
  - command phase, after a valid login (the connection is reused until the proxy drops it):
    SQL-ish token soup (COM_QUERY and COM_STMT_PREPARE), invalid UTF-8 SQL, random command
    bytes with random bodies, mutations of valid command packets, truncated and
    out-of-sequence packets, oversized headers;

  every input is one unit of ``--inputs``; its outcome is what the proxy answered first:
  ``error`` (an ERR packet), ``ok`` (anything else that parsed), ``disconnect`` (the proxy
  closed the connection) or ``timeout`` (no answer within ``--timeout`` s; after a command
  with no response, e.g. COM_STMT_CLOSE, silence is the answer and counts as ``ok``);

* ``--bystanders`` well-behaved pymysql clients (proxy user ``app``, another upstream login)
  run a checked workload the whole time (nonce round trips, user variables that must travel
  with the session, a transaction whose rows must be visible to itself only); any exception
  or wrong answer is a bystander error;

* at the end a brand-new pymysql login must work and answer, and the ``tainted_proxy``
  logger must not have logged ``unexpected error`` (the listener's catch-all for exceptions
  that escaped a client's session).

Exit status 0 when the proxy survived, bystanders saw no error, no unexpected-error line was
logged and no worker crashed; 1 otherwise.  ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import logging
import multiprocessing as mp
import os
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

FUZZ_USER = "fuzz"
FUZZ_PASSWORD = "fuzz-secret"
APP_USER = "app"
APP_PASSWORD = "app-secret"
MAX_PACKET = 1 << 20  # the proxy's max_packet_size in this run
# lock waits between fuzz clients (SELECT ... FOR UPDATE in an open transaction) end fast
SERVER_ARGS = ("--innodb-lock-wait-timeout=1", "--lock-wait-timeout=2")

# -- wire helpers (client side) -----------------------------------------------------------


class Closed(Exception):
    """The proxy closed the connection."""


class Refused(Exception):
    """The proxy greeted with an ERR packet (e.g. too many connections)."""


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise Closed
        out += chunk
    return bytes(out)


def read_packet(s: socket.socket) -> tuple[int, bytes]:
    header = _recv_exact(s, 4)
    length = int.from_bytes(header[:3], "little")
    return header[3], _recv_exact(s, length)


def packet(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload


# -- inputs ---------------------------------------------------------------------------------

# SQL-ish vocabulary: nothing that could stop the server, kill others or sleep for long
# (the fuzz account has no privilege for the first two anyway)
_WORDS = (
    "SELECT INSERT UPDATE DELETE REPLACE FROM WHERE INTO VALUES SET SESSION LOCAL GLOBAL "
    "BEGIN START TRANSACTION COMMIT ROLLBACK SAVEPOINT RELEASE WORK CHAIN READ ONLY WRITE "
    "PREPARE EXECUTE DEALLOCATE USING HANDLER OPEN CLOSE CREATE TEMPORARY TABLE DROP IF "
    "EXISTS VIEW PROCEDURE FUNCTION CALL DO SHOW WARNINGS ERRORS VARIABLES STATUS EXPLAIN "
    "USE fuzz test t1 a b c NULL TRUE FALSE AND OR NOT LIKE REGEXP IN BETWEEN CASE WHEN THEN "
    "ELSE END AS ON JOIN LEFT UNION ALL DISTINCT GROUP BY ORDER LIMIT OFFSET FOR UPDATE SHARE "
    "LOCK IN SHARE MODE NAMES CHARACTER utf8mb4 latin1 binary COLLATE autocommit sql_mode "
    "ANSI_QUOTES NO_BACKSLASH_ESCAPES time_zone SQL_CALC_FOUND_ROWS FOUND_ROWS ROW_COUNT "
    "LAST_INSERT_ID CONNECTION_ID DATABASE USER NEXTVAL SEQUENCE GET_LOCK RELEASE_LOCK "
    "IS_FREE_LOCK COUNT SUM CONCAT CHAR HEX UNHEX CAST CONVERT JSON_OBJECT WITH RECURSIVE "
    "DECLARE CURSOR SIGNAL SQLSTATE IMMEDIATE XA RECOVER TRIGGER EVENT"
).split()
_PUNCT = (
    "( ) , ; ; * = := <=> != <> + - / % . @ @@ @@session. @@global. ? ` ' \" \\ /* */ "
    "-- # /*! /*M! { } [ ] 0x 1e9 -1 18446744073709551616 'x' \"y\" `z` @v @`q` "
    "_utf8mb4'a' N'b' X'FF' b'01'"
).split()


def token_soup(rng: random.Random) -> bytes:
    n = rng.randint(1, 24)
    parts = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            parts.append(rng.choice(_WORDS))
        elif r < 0.9:
            parts.append(rng.choice(_PUNCT))
        else:
            parts.append(str(rng.randint(-5, 10**6)))
    sep = rng.choice((" ", " ", "", "\n", "\t"))
    return sep.join(parts).encode()


def invalid_utf8_sql(rng: random.Random) -> bytes:
    bad = rng.choice(
        (b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\0")
    )
    base = rng.choice(
        (b"SELECT '%s'", b"SELECT %s", b"SET @v = '%s'", b"SELECT 1 /* %s */", b"%s", b"SET %s")
    )
    return base.replace(b"%s", bad * rng.randint(1, 4) + rng.randbytes(rng.randint(0, 8)))


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2 and b:  # truncate
            del b[rng.randrange(len(b)) :]
        elif op == 3:  # insert random bytes
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and len(b) > 1:  # delete a span
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 8)]
        else:  # interesting values
            i = rng.randint(0, len(b))
            b[i:i] = rng.choice((b"\xff", b"\xfb", b"\xfc\xff\xff", b"\xfe" + b"\xff" * 8, b"\0"))
    return bytes(b)


@dataclass
class Stats:
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    inputs: int = 0
    connections: int = 0
    logins: int = 0

    def note(self, kind: str, outcome: str) -> None:
        self.inputs += 1
        self.outcomes[outcome] += 1
        self.by_kind[f"{kind}:{outcome}"] += 1


class Worker:
    """One fuzzing client loop (run in a spawned process)."""

    def __init__(self, port: int, seed: int, timeout: float) -> None:
        from tainted_proxy.wire import constants as c

        self.c = c
        self.port = port
        self.rng = random.Random(seed)
        self.timeout = timeout
        self.stats = Stats()
        self.sock: socket.socket | None = None  # a logged-in connection, when we have one
        self.refusals: list[str] = []

    # -- connections
    def connect(self) -> tuple[socket.socket, bytes]:
        """A raw connection and the proxy's greeting payload."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        s.settimeout(self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.connections += 1
        _seq, greeting = read_packet(s)
        if greeting[:1] == b"\xff":
            s.close()
            raise Refused(greeting[:200].decode("utf-8", "replace"))
        return s, greeting

    def handshake_response(self, greeting: bytes, password: str = FUZZ_PASSWORD) -> bytes:
        from tainted_proxy.wire.auth import native_password_response
        from tainted_proxy.wire.packets import HandshakeResponse41, HandshakeV10

        c = self.c
        hs = HandshakeV10.decode(greeting)
        caps = (
            c.CLIENT_LONG_PASSWORD
            | c.CLIENT_LONG_FLAG
            | c.CLIENT_CONNECT_WITH_DB
            | c.CLIENT_PROTOCOL_41
            | c.CLIENT_TRANSACTIONS
            | c.CLIENT_SECURE_CONNECTION
            | c.CLIENT_MULTI_STATEMENTS
            | c.CLIENT_MULTI_RESULTS
            | c.CLIENT_PS_MULTI_RESULTS
            | c.CLIENT_PLUGIN_AUTH
            | c.CLIENT_CONNECT_ATTRS
            | c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        ) & (hs.capabilities | c.CLIENT_CONNECT_ATTRS)
        return HandshakeResponse41(
            capabilities=caps,
            max_packet=1 << 24,
            charset=45,
            username=FUZZ_USER,
            auth_response=native_password_response(password, hs.auth_data[:20]),
            database="fuzz",
            auth_plugin="mysql_native_password",
            attributes={"_client_name": "fuzz_live", "_pid": str(os.getpid())},
        ).encode()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def login(self) -> socket.socket | None:
        s, greeting = self.connect()
        s.sendall(packet(self.handshake_response(greeting), 1))
        _seq, reply = read_packet(s)
        if reply[:1] != b"\x00":
            s.close()
            raise RuntimeError(f"valid fuzz login refused: {reply[:80]!r}")
        self.stats.logins += 1
        return s

    # -- reading what the proxy answers
    def first_answer(self, s: socket.socket) -> str:
        try:
            _seq, payload = read_packet(s)
        except Closed:
            return "disconnect"
        except ConnectionResetError:
            return "disconnect"
        except TimeoutError:
            return "timeout"
        return "error" if payload[:1] == b"\xff" else "ok"

    def resync(self, s: socket.socket) -> bool:
        """After any command: a nonce query, then skip everything up to its row and the
        end of its result. False when the connection is unusable (then it is dropped)."""
        nonce = f"sync-{self.rng.getrandbits(48)}".encode()
        try:
            s.sendall(packet(b"\x03SELECT '" + nonce + b"'", 0))
            seen = False
            while True:
                _seq, payload = read_packet(s)
                if not seen:
                    if payload[:1] == b"\xff":
                        # the fuzz command's last answer, or the sync query's own error
                        s.settimeout(0.5)
                    if nonce in payload and payload[:1] != b"\x03":
                        # column definition named after the value, or the row
                        if payload[1:] == nonce or payload == bytes([len(nonce)]) + nonce:
                            seen = True
                    continue
                if payload[:1] == b"\xfe" and len(payload) < 9:
                    return True
                if payload[:1] == b"\xff":
                    return False
            # (unreachable)
        except (Closed, OSError):
            return False
        finally:
            s.settimeout(self.timeout)

    # -- one input
    def run(self, n: int, deadline: float = 0.0) -> dict[str, Any]:
        for _ in range(n):
            if deadline and time.time() > deadline:
                break
            try:
                if self.sock is None or self.rng.random() < 0.08:
                    if self.rng.random() < 0.5 or self.sock is not None:
                        self.handshake_input()
                        continue
                    self.close()
                    self.sock = self.login()
                self.command_input()
            except (Closed, ConnectionResetError, BrokenPipeError):
                self.stats.note("setup", "disconnect")
                self.close()
            except TimeoutError:
                self.stats.note("setup", "timeout")
                self.close()
            except Refused as exc:
                self.stats.note("setup", "error")
                self.refusals.append(str(exc))
                self.close()
        self.close()
        st = self.stats
        return {
            "inputs": st.inputs,
            "outcomes": dict(st.outcomes),
            "by_kind": dict(st.by_kind),
            "connections": st.connections,
            "logins": st.logins,
            "refusals": self.refusals[:5],
            "refusal_count": len(self.refusals),
        }

    def handshake_input(self) -> None:
        rng = self.rng
        s, greeting = self.connect()
        try:
            good = self.handshake_response(greeting)
            kind = rng.choice(
                (
                    "hs-mutated",
                    "hs-mutated",
                    "hs-mutated",
                    "hs-random",
                    "hs-truncated-eof",
                    "hs-oversized",
                    "hs-bad-seq",
                    "hs-ssl-request",
                    "hs-wrong-password",
                    "hs-two-packets",
                )
            )
            if kind == "hs-mutated":
                s.sendall(packet(mutate(good, rng), 1))
            elif kind == "hs-random":
                s.sendall(packet(rng.randbytes(rng.randint(0, 200)), 1))
            elif kind == "hs-truncated-eof":
                wire = packet(good, 1)
                s.sendall(wire[: rng.randrange(len(wire))])
                s.shutdown(socket.SHUT_WR)
            elif kind == "hs-oversized":
                size = rng.choice((MAX_PACKET + 1, 0xFFFFFE, 0xFFFFFF))
                s.sendall(size.to_bytes(3, "little") + b"\x01" + good[:64])
            elif kind == "hs-bad-seq":
                s.sendall(packet(good, rng.choice((0, 2, 3, 0x7F, 0xFF))))
            elif kind == "hs-ssl-request":
                caps = int.from_bytes(good[:4], "little") | self.c.CLIENT_SSL
                s.sendall(packet(caps.to_bytes(4, "little") + good[4:32], 1))
                s.sendall(rng.randbytes(rng.randint(1, 64)))
            elif kind == "hs-wrong-password":
                s.sendall(packet(self.handshake_response(greeting, "wrong"), 1))
            else:  # the response split oddly / followed by garbage in the same write
                s.sendall(packet(good, 1) + rng.randbytes(rng.randint(1, 32)))
            self.stats.note(kind, self.first_answer(s))
        except (OSError, Closed):
            self.stats.note("hs-send", "disconnect")
        finally:
            s.close()

    def command_input(self) -> None:
        c = self.c
        rng = self.rng
        s = self.sock
        assert s is not None
        r = rng.random()
        no_response = False
        if r < 0.30:
            kind, wire = "query-soup", packet(b"\x03" + token_soup(rng), 0)
        elif r < 0.40:
            kind, wire = "query-bad-utf8", packet(b"\x03" + invalid_utf8_sql(rng), 0)
        elif r < 0.48:
            kind, wire = "prepare-soup", packet(b"\x16" + token_soup(rng), 0)
        elif r < 0.63:
            cmd = rng.randrange(256)
            kind = "cmd-random"
            if cmd in (c.COM_QUIT,):
                cmd = c.COM_PING
            body = rng.randbytes(rng.choice((0, 1, 4, 9, 14, rng.randint(0, 300))))
            wire = packet(bytes([cmd]) + body, 0)
            no_response = cmd in (c.COM_STMT_CLOSE, c.COM_STMT_SEND_LONG_DATA)
        elif r < 0.80:
            kind = "cmd-mutated"
            base = rng.choice(
                (
                    b"\x03SELECT 1",
                    b"\x03SET @a = 1",
                    b"\x02fuzz",
                    b"\x0e",
                    b"\x1f",
                    b"\x1b\x00\x00",
                    b"\x1b\x01\x00",
                    b"\x16SELECT ?",
                    b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00"
                    + (7).to_bytes(8, "little"),
                    b"\x19\x01\x00\x00\x00",
                    b"\x1c\x01\x00\x00\x00\x01\x00\x00\x00",
                    b"\x04t1\x00",
                    b"\x11fuzz\x00\x00fuzz\x00",
                    b"\x0c\x01\x00\x00\x00",
                )
            )
            body = mutate(base, rng)
            if body[:1] == b"\x01":
                body = b"\x0e" + body[1:]
            wire = packet(body, 0)
            no_response = body[:1] in (b"\x19", b"\x18")
        elif r < 0.88:
            kind = "cmd-bad-seq"
            wire = packet(b"\x03" + token_soup(rng), rng.randint(1, 255))
        elif r < 0.93:
            kind = "cmd-oversized"
            size = rng.choice((MAX_PACKET + 1, 0xFFFFFF))
            wire = size.to_bytes(3, "little") + b"\x00\x03SELECT 1"
        elif r < 0.97:
            kind = "cmd-truncated-eof"
            w = packet(b"\x03" + token_soup(rng), 0)
            wire = w[: rng.randrange(1, len(w))]
            s.sendall(wire)
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.stats.note(kind, self.first_answer(s))
            self.close()
            return
        else:
            kind = "cmd-pipelined-garbage"
            wire = packet(b"\x03" + token_soup(rng), 0) + rng.randbytes(rng.randint(1, 40))
        try:
            s.sendall(wire)
        except OSError:
            self.stats.note(kind, "disconnect")
            self.close()
            return
        if no_response:
            outcome = "ok"
        else:
            outcome = self.first_answer(s)
        self.stats.note(kind, outcome)
        if outcome in ("disconnect", "timeout") or kind == "cmd-pipelined-garbage":
            self.close()
            return
        if outcome == "error" and kind in ("query-soup", "prepare-soup", "query-bad-utf8"):
            # an ERR ends any response and the server's syntax errors keep the connection:
            # skip the sync round trip (a close after it is seen by the next input)
            return
        if not self.resync(s):
            self.close()


def _worker_main(port: int, seed: int, n: int, timeout: float, deadline: float) -> dict[str, Any]:
    return Worker(port, seed, timeout).run(n, deadline)


# -- bystanders -----------------------------------------------------------------------------


class Bystanders:
    """Well-behaved clients with a checked workload; any deviation is an error."""

    def __init__(self, port: int, count: int, pause: float = 0.02) -> None:
        self.port = port
        self.pause = pause
        self.count = count
        self.statements = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"bystander-{i}", daemon=True)
            for i in range(count)
        ]

    def connect(self) -> Any:
        import pymysql

        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=APP_USER,
            password=APP_PASSWORD,
            database="app",
            autocommit=True,
            connect_timeout=10,
            read_timeout=30,
            write_timeout=30,
        )

    def _run(self, i: int) -> None:
        rng = random.Random(1000 + i)
        n = 0
        try:
            conn = self.connect()
        except Exception as exc:  # noqa: BLE001 - everything counts
            self._error(f"bystander {i}: connect: {exc!r}")
            return
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS b{i} (id INT PRIMARY KEY, v INT)")
                cur.execute(f"DELETE FROM b{i}")
                cur.execute("SET @mine = %s", (i,))
                self._count(3)
                while not self._stop.is_set():
                    n += 1
                    nonce = rng.getrandbits(40)
                    cur.execute("SELECT %s, @mine", (nonce,))
                    got = cur.fetchone()
                    if got != (nonce, i):
                        self._error(f"bystander {i}: SELECT nonce/@mine gave {got!r}")
                    cur.execute("BEGIN")
                    cur.execute(f"INSERT INTO b{i} VALUES (%s, %s)", (n, nonce & 0xFFFF))
                    cur.execute(f"SELECT COUNT(*) FROM b{i}")
                    cnt = cur.fetchone()[0]
                    cur.execute("ROLLBACK" if n % 2 else "COMMIT")
                    cur.execute(f"SELECT COUNT(*) FROM b{i}")
                    after = cur.fetchone()[0]
                    want = n // 2  # committed rows after this iteration
                    if cnt != (n - 1) // 2 + 1 or after != want:
                        self._error(f"bystander {i}: counts {cnt}/{after}, want {want}")
                    self._count(7)
                    if self.pause:
                        time.sleep(self.pause)
        except Exception as exc:  # noqa: BLE001 - everything counts
            self._error(f"bystander {i}: {exc!r}")
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _count(self, k: int) -> None:
        with self._lock:
            self.statements += k

    def _error(self, msg: str) -> None:
        with self._lock:
            self.errors.append(msg)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


# -- the log --------------------------------------------------------------------------------


class LogWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.name}:{record.levelname}"] += 1
        msg = record.getMessage()
        if record.exc_info:
            self.tracebacks += 1
        if "unexpected error" in msg or (record.exc_info and record.levelno >= logging.ERROR):
            text = msg
            if record.exc_info:
                text += "\n" + self.format(record)
            if len(self.unexpected) < 20:
                self.unexpected.append(text)
            else:
                self.unexpected.append("...")


# -- the run --------------------------------------------------------------------------------


def setup_server(srv: Any) -> None:
    srv.execute("CREATE DATABASE IF NOT EXISTS fuzz")
    srv.execute("CREATE DATABASE IF NOT EXISTS app")
    srv.execute("CREATE TABLE IF NOT EXISTS fuzz.t1 (a INT, b VARCHAR(20), c BLOB)")
    srv.execute("INSERT INTO fuzz.t1 VALUES (1, 'x', 'y'), (2, NULL, NULL)")
    srv.create_user("fuzz_up", "fuzz-up-secret", grants="ALL PRIVILEGES ON fuzz.*")
    srv.create_user("app_up", "app-up-secret", grants="ALL PRIVILEGES ON app.*")


def proxy_config(srv: Any) -> Any:
    from tainted_proxy.testing.proxy import config_for

    return config_for(
        srv.host,
        srv.port,
        users={
            FUZZ_USER: {
                "password": FUZZ_PASSWORD,
                "pool_mode": "transaction",
                "upstream_user": "fuzz_up",
                "upstream_password": "fuzz-up-secret",
            },
            APP_USER: {
                "password": APP_PASSWORD,
                "pool_mode": "transaction",
                "upstream_user": "app_up",
                "upstream_password": "app-up-secret",
            },
        },
        upstream={"max_connections": 60},
        # every fuzz client comes from 127.0.0.1: no blocking after failed logins
        proxy={"max_packet_size": MAX_PACKET, "auth_timeout": 5, "max_login_failures": 0},
        pool={"checkout_timeout": 10},
    )


def final_check(port: int) -> str | None:
    import pymysql

    try:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=port,
            user=APP_USER,
            password=APP_PASSWORD,
            database="app",
            connect_timeout=10,
            read_timeout=10,
        )
        with conn.cursor() as cur:
            cur.execute("SELECT 'alive', 6 * 7")
            got = cur.fetchone()
        conn.close()
        if got != ("alive", 42):
            return f"final login answered {got!r}"
    except Exception as exc:  # noqa: BLE001
        return f"final login failed: {exc!r}"
    return None


def run(
    inputs: int,
    seed: int,
    concurrency: int,
    bystanders: int = 3,
    timeout: float = 5.0,
    chunk: int = 2000,
    progress: bool = True,
    use_processes: bool = True,
    max_seconds: float = 0.0,
    bystander_pause: float = 0.02,
    server: Any = None,
) -> dict[str, Any]:
    """Fuzz a proxy in front of ``server`` (a started MariaDBServer; best with
    ``SERVER_ARGS``), or of a private server started and destroyed here."""
    from tainted_proxy.testing.mariadb import MariaDBServer
    from tainted_proxy.testing.proxy import ProxyThread

    watch = LogWatch()
    logger = logging.getLogger("tainted_proxy")
    old_level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    t0 = time.monotonic()
    result: dict[str, Any] = {}
    own = server is None
    srv = server or MariaDBServer(max_connections=200, extra_args=SERVER_ARGS).start()
    try:
        setup_server(srv)
        p = ProxyThread(proxy_config(srv)).start()
        try:
            by = Bystanders(p.port, bystanders, bystander_pause)
            by.start()
            totals: collections.Counter[str] = collections.Counter()
            by_kind: collections.Counter[str] = collections.Counter()
            done = connections = logins = refusals = 0
            refusal_samples: list[str] = []
            crashes: list[str] = []
            jobs = []
            left = inputs
            k = 0
            while left > 0:
                n = min(chunk, left)
                jobs.append((k, n))
                left -= n
                k += 1
            if use_processes:
                ex: concurrent.futures.Executor = concurrent.futures.ProcessPoolExecutor(
                    concurrency, mp_context=mp.get_context("spawn")
                )
            else:
                ex = concurrent.futures.ThreadPoolExecutor(concurrency)
            t_fuzz = time.monotonic()
            last = t_fuzz
            deadline = time.time() + max_seconds if max_seconds else 0.0
            with ex:
                futs = [
                    ex.submit(_worker_main, p.port, seed * 1_000_003 + j, n, timeout, deadline)
                    for j, n in jobs
                ]
                for f in concurrent.futures.as_completed(futs):
                    try:
                        r = f.result()
                    except Exception as exc:  # noqa: BLE001 - a worker bug, reported
                        crashes.append(repr(exc))
                        continue
                    done += r["inputs"]
                    totals.update(r["outcomes"])
                    by_kind.update(r["by_kind"])
                    connections += r["connections"]
                    logins += r["logins"]
                    refusals += r["refusal_count"]
                    refusal_samples.extend(r["refusals"][: max(0, 5 - len(refusal_samples))])
                    now = time.monotonic()
                    if progress and now - last > 10:
                        last = now
                        rate = done / (now - t_fuzz)
                        print(
                            f"[{now - t0:7.0f} s] {done:,} inputs ({rate:,.0f}/s), "
                            f"{dict(totals)}, bystander statements {by.statements:,}, "
                            f"errors {len(by.errors)}",
                            flush=True,
                        )
            fuzz_seconds = time.monotonic() - t_fuzz
            by.stop()
            final = final_check(p.port)
        finally:
            p.stop()
            logger.removeHandler(watch)
            logger.setLevel(old_level)
    finally:
        if own:
            srv.close()
    result = {
        "inputs": done,
        "requested": inputs,
        "seed": seed,
        "concurrency": concurrency,
        "outcomes": dict(totals),
        "by_kind": dict(sorted(by_kind.items())),
        "connections": connections,
        "fuzz_logins": logins,
        "fuzz_seconds": round(fuzz_seconds, 1),
        "rate": round(done / fuzz_seconds, 1) if fuzz_seconds else 0.0,
        "bystanders": bystanders,
        "bystander_statements": by.statements,
        "bystander_errors": by.errors[:20],
        "bystander_error_count": len(by.errors),
        "final_check_error": final,
        "log_counts": dict(watch.counts),
        "log_tracebacks": watch.tracebacks,
        "unexpected_error_lines": watch.unexpected,
        "worker_crashes": crashes,
        "greeting_refusals": refusals,
        "greeting_refusal_samples": refusal_samples,
    }
    result["passed"] = final is None and not by.errors and not watch.unexpected and not crashes
    return result


def report(r: dict[str, Any]) -> str:
    lines = [
        f"inputs tried: {r['inputs']:,} (seed {r['seed']}, concurrency {r['concurrency']}, "
        f"{r['fuzz_seconds']} s, {r['rate']:,}/s, {r['connections']:,} connections, "
        f"{r['fuzz_logins']:,} valid fuzz logins)",
        "outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["outcomes"].items())),
        "by kind: " + ", ".join(f"{k} {v:,}" for k, v in r["by_kind"].items()),
        f"bystanders: {r['bystanders']} clients, {r['bystander_statements']:,} statements, "
        f"{r['bystander_error_count']} errors",
        f"proxy log: {r['log_counts']}, tracebacks {r['log_tracebacks']}, "
        f"unexpected-error lines {len(r['unexpected_error_lines'])}",
        f"final new login: {'ok' if r['final_check_error'] is None else r['final_check_error']}",
        f"greetings refused: {r['greeting_refusals']:,} {r['greeting_refusal_samples'][:2]}",
        f"worker crashes: {len(r['worker_crashes'])}",
        "PASSED" if r["passed"] else "FAILED",
    ]
    for e in r["bystander_errors"]:
        lines.append(f"  bystander error: {e}")
    for u in r["unexpected_error_lines"]:
        lines.append(f"  unexpected: {u}")
    for c in r["worker_crashes"]:
        lines.append(f"  worker crash: {c}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=4, help="fuzzing worker processes")
    ap.add_argument("--bystanders", type=int, default=3)
    ap.add_argument(
        "--bystander-pause", type=float, default=0.02, help="seconds between workload rounds"
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    ap.add_argument("--chunk", type=int, default=2000, help="inputs per worker job")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="stop fuzzing after this long even if fewer inputs were tried (0 = no limit)",
    )
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    r = run(
        a.inputs,
        a.seed,
        a.concurrency,
        a.bystanders,
        a.timeout,
        a.chunk,
        max_seconds=a.max_seconds,
        bystander_pause=a.bystander_pause,
    )
    print(report(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
