"""A bounded, seeded fuzzer against a live tainted-proxy (issue 10, "Bad input").

``.venv/bin/python bench/fuzz_live.py --inputs 100000 --seed 1 --concurrency 8``

It starts a private MariaDB (``tainted_proxy.testing.mariadb.MariaDBServer``) and the proxy
(transaction pool mode, ``max_packet_size`` 1 MiB so "oversized" is cheap to reach) as
``tainted-proxy serve`` in its own process with this checkout's code (``--proxy thread``:
``tainted_proxy.testing.proxy.ProxyThread`` in this process, sharing its GIL), then:

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
  with no response, e.g. COM_STMT_CLOSE, silence is the answer and counts as ``ok``).
  Commands are sent one at a time on a login's connection: after an ERR (a whole answer)
  the next input follows at once, after any other answer a nonce query re-synchronises the
  stream, after a connection error (08S01, e.g. 1153 "packet too large") the worker
  half-closes and waits for the proxy to close. The time spent per kind and on logins is
  reported (``seconds_by_kind``), with the CPU seconds of each process;

* ``--bystanders`` well-behaved pymysql clients (proxy user ``app``, another upstream login)
  run a checked workload the whole time (nonce round trips, user variables that must travel
  with the session, a transaction whose rows must be visible to itself only); any exception
  or wrong answer is a bystander error;

* at the end the proxy process must still be running, a brand-new pymysql login must work
  and answer, and the proxy's log must hold no ``unexpected error`` (the listener's
  catch-all for exceptions that escaped a client's session) and no error with a traceback.

``--nice 19`` lowers the autogroup CPU share of the run's sessions (this one with its
workers, the proxy's, MariaDB's): with sched_autogroup_enabled=1 a plain ``nice`` does not
keep a long run from slowing other sessions' benchmarks.

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
import re
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
ER_TOO_LARGE = (1153).to_bytes(2, "little")  # ER_NET_PACKET_TOO_LARGE, as an ERR carries it
# lock waits between fuzz clients (SELECT ... FOR UPDATE in an open transaction) end fast
SERVER_ARGS = ("--innodb-lock-wait-timeout=1", "--lock-wait-timeout=2")

# -- wire helpers (client side) -----------------------------------------------------------


class Closed(Exception):
    """The proxy closed the connection."""


class Refused(Exception):
    """The proxy greeted with an ERR packet (e.g. too many connections)."""


class LoginRefused(Exception):
    """A valid fuzz login got an ERR (e.g. the upstream server did not answer in time)."""


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
    seconds: collections.Counter[str] = field(default_factory=collections.Counter)
    inputs: int = 0
    connections: int = 0
    logins: int = 0
    last_kind: str = "setup"
    login_seconds: float = 0.0  # of the current input, counted under "(login)"

    def note(self, kind: str, outcome: str) -> None:
        self.last_kind = kind
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
        self.login_refusals: list[str] = []
        self.last_answer = b""  # the payload first_answer() read

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
        t0 = time.monotonic()
        s, greeting = self.connect()
        s.sendall(packet(self.handshake_response(greeting), 1))
        _seq, reply = read_packet(s)
        if reply[:1] != b"\x00":
            s.close()
            if reply[:1] == b"\xff":  # counted, with the reason; anything else is a bug
                raise LoginRefused(reply[3:200].decode("utf-8", "replace"))
            raise RuntimeError(f"valid fuzz login answered {reply[:80]!r}")
        self.stats.logins += 1
        dt = time.monotonic() - t0
        self.stats.seconds["(login)"] += dt
        self.stats.login_seconds += dt
        return s

    # -- reading what the proxy answers
    def expect_close(self, s: socket.socket) -> None:
        """Half-close our side and read until the proxy closes (or the timeout)."""
        try:
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass

    def first_answer(self, s: socket.socket) -> str:
        self.last_answer = b""
        try:
            _seq, payload = read_packet(s)
            self.last_answer = payload
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
            t0 = time.monotonic()
            try:
                self.one_input()
            finally:
                st = self.stats
                st.seconds[st.last_kind] += time.monotonic() - t0 - st.login_seconds
                st.login_seconds = 0.0
        self.close()
        st = self.stats
        return {
            "inputs": st.inputs,
            "outcomes": dict(st.outcomes),
            "by_kind": dict(st.by_kind),
            "seconds_by_kind": dict(st.seconds),
            "connections": st.connections,
            "logins": st.logins,
            "refusals": self.refusals[:5],
            "refusal_count": len(self.refusals),
            "login_refusals": self.login_refusals[:5],
            "login_refusal_count": len(self.login_refusals),
        }

    def one_input(self) -> None:
        try:
            if self.sock is None or self.rng.random() < 0.08:
                if self.rng.random() < 0.5 or self.sock is not None:
                    self.handshake_input()
                    return
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
        except LoginRefused as exc:
            self.stats.note("login", "error")
            self.login_refusals.append(str(exc))

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
        if outcome == "error":
            ans = self.last_answer
            if ans[1:3] == ER_TOO_LARGE or ans[3:9] in (b"#08S01", b"#70100"):
                # a connection error: the proxy ends the session. After a 1153 it first
                # reads and drops what we might still send, for up to 1 s: say we are done
                # (EOF) and see it close, rather than sending into the drain and waiting
                self.expect_close(s)
                self.close()
            # else an ERR ends any response (a first packet that is an ERR is the whole
            # answer) and the session goes on: no sync round trip; should the proxy close
            # after it all the same, the next input sees it
            return
        if not self.resync(s):
            self.close()


def _worker_main(port: int, seed: int, n: int, timeout: float, deadline: float) -> dict[str, Any]:
    cpu = _self_cpu()
    r = Worker(port, seed, timeout).run(n, deadline)
    r["cpu_seconds"] = _self_cpu() - cpu
    return r


def _self_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of another process so far, 0.0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


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


_LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)"
)


class LogWatch(logging.Handler):
    """Counts log records by logger and level, and keeps those that matter: an ``unexpected
    error`` (the listener's catch-all) or an error with a traceback. A handler on the
    ``tainted_proxy`` logger (proxy in this process), or ``read_file`` for the log of
    ``tainted-proxy serve`` (the default text format)."""

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
            self._keep(text)

    def _keep(self, text: str) -> None:
        if len(self.unexpected) < 20:
            self.unexpected.append(text)
        else:
            self.unexpected.append("...")

    def read_file(self, path: str) -> None:
        record: tuple[str, str] | None = None  # (level, line) of the record being read
        extra: list[str] = []  # the lines after it: a traceback, or stray output

        def finish() -> None:
            traceback = any(x.startswith("Traceback (most recent call last)") for x in extra)
            if traceback:
                self.tracebacks += 1
            if record is None:
                if extra:  # output that is not a log record (e.g. a crash before logging)
                    self.counts["unparsed"] += len(extra)
                    self._keep("".join(extra[:40]))
                return
            level, line = record
            if "unexpected error" in line or (traceback and level in ("ERROR", "CRITICAL")):
                self._keep(line + "".join(extra[:40]))
            elif extra and not traceback:
                self.counts["unparsed"] += len(extra)

        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = _LOG_LINE.match(line)
                if m is None:
                    extra.append(line)
                    continue
                finish()
                self.counts[f"{m.group(2)}:{m.group(1)}"] += 1
                record, extra = (m.group(1), line), []
        finish()


# -- the run --------------------------------------------------------------------------------


def setup_server(srv: Any) -> None:
    srv.execute("CREATE DATABASE IF NOT EXISTS fuzz")
    srv.execute("CREATE DATABASE IF NOT EXISTS app")
    srv.execute("CREATE TABLE IF NOT EXISTS fuzz.t1 (a INT, b VARCHAR(20), c BLOB)")
    srv.execute("INSERT INTO fuzz.t1 VALUES (1, 'x', 'y'), (2, NULL, NULL)")
    srv.create_user("fuzz_up", "fuzz-up-secret", grants="ALL PRIVILEGES ON fuzz.*")
    srv.create_user("app_up", "app-up-secret", grants="ALL PRIVILEGES ON app.*")


def proxy_settings(srv: Any) -> dict[str, Any]:
    """The proxy's configuration for this run, as ``config_for`` keyword arguments."""
    return {
        "users": {
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
        "upstream": {"max_connections": 60},
        # every fuzz client comes from 127.0.0.1: no blocking after failed logins
        "proxy": {"max_packet_size": MAX_PACKET, "auth_timeout": 5, "max_login_failures": 0},
        "pool": {"checkout_timeout": 10},
    }


def proxy_config(srv: Any) -> Any:
    from tainted_proxy.testing.proxy import config_for

    return config_for(srv.host, srv.port, **proxy_settings(srv))


def proxy_toml(srv: Any, port: int) -> str:
    """The same configuration as a TOML file for ``tainted-proxy serve --config``."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v) if isinstance(v, int | float) else json.dumps(str(v))

    st = proxy_settings(srv)
    tables = {
        "proxy": {"listen": f"127.0.0.1:{port}", **st["proxy"]},
        "upstream": {"host": srv.host, "port": srv.port, **st["upstream"]},
        "pool": st["pool"],
        "admin": {"listen": ""},
        **{f"users.{name}": u for name, u in st["users"].items()},
    }
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in t.items()) + "\n"
        for name, t in tables.items()
    )


def set_autogroup_nice(pid: int | None, nice: int) -> None:
    """Lower the CPU share of ``pid``'s autogroup (its session). With
    sched_autogroup_enabled=1 the scheduler shares CPU between sessions first, so a plain
    ``nice`` does not keep a long run from slowing other sessions' benchmarks."""
    if nice and pid:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(f"{nice}\n")
        except OSError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    """``tainted-proxy serve`` in its own process (its own GIL, like production) with this
    checkout's code, logging at info level to a file that ``LogFile`` reads afterwards."""

    def __init__(self, srv: Any, workdir: str) -> None:
        self.srv = srv
        self.config_path = os.path.join(workdir, "proxy.toml")
        self.log_path = os.path.join(workdir, "proxy.log")
        self.port = 0
        self.proc: Any = None

    def start(self, nice: int = 0) -> ProxyProcess:
        import subprocess

        self.port = _free_port()
        with open(self.config_path, "w") as f:
            f.write(proxy_toml(self.srv, self.port))
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "tainted_proxy", "serve", "--config", self.config_path]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--log-level", "info"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # its own autogroup, niced below
            )
        set_autogroup_nice(self.proc.pid, nice)
        deadline = time.monotonic() + 30
        while final_check(self.port, timeout=2) is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.log_path, errors="replace") as f:
                    tail = f.read()[-3000:]
                raise RuntimeError(f"the proxy did not start:\n{tail}")
            time.sleep(0.1)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def final_check(port: int, timeout: float = 10) -> str | None:
    import pymysql

    try:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=port,
            user=APP_USER,
            password=APP_PASSWORD,
            database="app",
            connect_timeout=timeout,
            read_timeout=timeout,
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
    proxy_mode: str = "process",
    nice: int = 0,
    keep_log: bool = False,
) -> dict[str, Any]:
    """Fuzz a proxy in front of ``server`` (a started MariaDBServer; best with
    ``SERVER_ARGS``), or of a private server started and destroyed here.

    ``proxy_mode`` "process" runs ``tainted-proxy serve`` in its own process and reads its
    log file afterwards; "thread" runs it in this process (``ProxyThread``, sharing the GIL
    with the bystanders) and watches the ``tainted_proxy`` logger. ``nice`` (1-19) lowers the
    autogroup CPU share of this process's session, the proxy's and the private server's."""
    import shutil
    import tempfile

    from tainted_proxy.testing.mariadb import MariaDBServer
    from tainted_proxy.testing.proxy import ProxyThread

    if proxy_mode not in ("process", "thread"):
        raise ValueError(f"proxy_mode {proxy_mode!r}")
    set_autogroup_nice(os.getpid(), nice)
    watch = LogWatch()
    logger = logging.getLogger("tainted_proxy")
    old_level = logger.level
    if proxy_mode == "thread":
        logger.addHandler(watch)
        logger.setLevel(logging.INFO)
    workdir = tempfile.mkdtemp(prefix="fuzz-live-")
    t0 = time.monotonic()
    result: dict[str, Any] = {}
    own = server is None
    srv = server or MariaDBServer(max_connections=200, extra_args=SERVER_ARGS).start()
    if own:
        set_autogroup_nice(srv.pid, nice)
    alive = True
    try:
        setup_server(srv)
        p: Any
        if proxy_mode == "process":
            p = ProxyProcess(srv, workdir).start(nice)
        else:
            p = ProxyThread(proxy_config(srv)).start()
        try:
            by = Bystanders(p.port, bystanders, bystander_pause)
            by.start()
            totals: collections.Counter[str] = collections.Counter()
            by_kind: collections.Counter[str] = collections.Counter()
            kind_seconds: collections.Counter[str] = collections.Counter()
            done = connections = logins = refusals = 0
            refusal_samples: list[str] = []
            login_refusals = 0
            login_samples: list[str] = []
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
            proxy_pid = p.proc.pid if proxy_mode == "process" else None
            cpu0 = {"proxy": _proc_cpu(proxy_pid), "mariadb": _proc_cpu(srv.pid)}
            cpu0["main"] = _self_cpu()
            worker_cpu = 0.0
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
                    kind_seconds.update(r["seconds_by_kind"])
                    connections += r["connections"]
                    worker_cpu += r["cpu_seconds"]
                    logins += r["logins"]
                    refusals += r["refusal_count"]
                    refusal_samples.extend(r["refusals"][: max(0, 5 - len(refusal_samples))])
                    login_refusals += r["login_refusal_count"]
                    login_samples.extend(r["login_refusals"][: max(0, 5 - len(login_samples))])
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
            cpu = {
                "proxy": _proc_cpu(proxy_pid) - cpu0["proxy"],
                "mariadb": _proc_cpu(srv.pid) - cpu0["mariadb"],
                # the bystanders' threads, and the proxy when it runs in this process
                "main": _self_cpu() - cpu0["main"],
                "workers": worker_cpu,
            }
            by.stop()
            final = final_check(p.port)
            if proxy_mode == "process":
                alive = p.alive()
        finally:
            p.stop()
            if proxy_mode == "thread":
                logger.removeHandler(watch)
                logger.setLevel(old_level)
    finally:
        if own:
            srv.close()
    if proxy_mode == "process":
        watch.read_file(p.log_path)
    result = {
        "inputs": done,
        "requested": inputs,
        "seed": seed,
        "concurrency": concurrency,
        "outcomes": dict(totals),
        "by_kind": dict(sorted(by_kind.items())),
        "seconds_by_kind": {k: round(v, 1) for k, v in sorted(kind_seconds.items())},
        "connections": connections,
        "fuzz_logins": logins,
        "fuzz_seconds": round(fuzz_seconds, 1),
        "rate": round(done / fuzz_seconds, 1) if fuzz_seconds else 0.0,
        # CPU seconds while fuzzing, by process; a figure that other load on the machine
        # changes less than the rate
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_ms_per_input": round(1000 * sum(cpu.values()) / done, 2) if done else 0.0,
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
        # valid fuzz logins answered with an ERR: counted, not a failure of the run (e.g.
        # "cannot open an upstream connection: timed out" when the server is starved)
        "login_refusals": login_refusals,
        "login_refusal_samples": login_samples,
        "proxy_mode": proxy_mode,
        "proxy_alive_at_end": alive,
        "proxy_log": None,
    }
    result["passed"] = (
        alive and final is None and not by.errors and not watch.unexpected and not crashes
    )
    if proxy_mode == "process" and (keep_log or not result["passed"]):
        result["proxy_log"] = p.log_path
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def report(r: dict[str, Any]) -> str:
    lines = [
        f"inputs tried: {r['inputs']:,} (seed {r['seed']}, concurrency {r['concurrency']}, "
        f"{r['fuzz_seconds']} s, {r['rate']:,}/s, {r['connections']:,} connections, "
        f"{r['fuzz_logins']:,} valid fuzz logins)",
        "outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["outcomes"].items())),
        "by kind: " + ", ".join(f"{k} {v:,}" for k, v in r["by_kind"].items()),
        f"CPU while fuzzing: {r['cpu_seconds']} s, {r['cpu_ms_per_input']} ms per input",
        f"bystanders: {r['bystanders']} clients, {r['bystander_statements']:,} statements, "
        f"{r['bystander_error_count']} errors",
        f"proxy log: {r['log_counts']}, tracebacks {r['log_tracebacks']}, "
        f"unexpected-error lines {len(r['unexpected_error_lines'])}",
        f"proxy ({r['proxy_mode']}) alive at the end: {r['proxy_alive_at_end']}"
        + (f", log {r['proxy_log']}" if r["proxy_log"] else ""),
        f"final new login: {'ok' if r['final_check_error'] is None else r['final_check_error']}",
        f"greetings refused: {r['greeting_refusals']:,} {r['greeting_refusal_samples'][:2]}",
        f"valid fuzz logins refused: {r['login_refusals']:,} {r['login_refusal_samples'][:3]}",
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
    ap.add_argument(
        "--proxy",
        choices=("process", "thread"),
        default="process",
        help="run tainted-proxy serve in its own process (default) or in this one",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="autogroup nice (1-19) for this run's processes, so it yields to other work",
    )
    ap.add_argument("--keep-log", action="store_true", help="keep the proxy's log file")
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
        proxy_mode=a.proxy,
        nice=a.nice,
        keep_log=a.keep_log,
    )
    print(report(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
