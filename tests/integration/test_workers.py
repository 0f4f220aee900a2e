"""`serve --workers N`: worker processes on one port sharing one upstream budget (issue 11).

The proxy runs as a real `tainted-proxy serve --workers 2` process in front of a private
MariaDB, whose own counters (Max_used_connections, Threads_connected) are the judge of
the global cap. Which worker serves a client is the kernel's choice (SO_REUSEPORT); a
client tells from its id: worker i gives out ids ≡ i (mod 2)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pymysql
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tainted_proxy.frontend.listener import FIRST_CLIENT_ID
from tainted_proxy.testing import serving
from tainted_proxy.testing.mariadb import MariaDBServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CAP = 4
OTHER_USER = """
[users.other]
password = "other-secret"
pool_mode = "transaction"
"""


def free_port(pair: bool = False) -> int:
    """A free port (``pair``: and the one after it, for worker 1's admin endpoint)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def write_config(
    path: Path,
    srv_port: int,
    port: int,
    admin: str = "",
    extra: str = "",
    checkout_timeout: float = 5,
) -> Path:
    path.write_text(
        f"""
[proxy]
listen = "127.0.0.1:{port}"
shutdown_timeout = 5
workers = 2

[upstream]
host = "127.0.0.1"
port = {srv_port}
max_connections = {CAP}
connect_timeout = 2

[pool]
checkout_timeout = {checkout_timeout}
idle_timeout = 600
health_check_idle = 0

[admin]
listen = "{admin}"

[users.app]
password = "app-secret"
pool_mode = "transaction"
{extra}
"""
    )
    return path


class Serving(serving.Serving):
    def wait_listening(self, timeout: float = 20.0) -> None:
        """Until both workers accept (a client of each has been seen)."""
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while time.monotonic() < deadline and len(seen) < 2:
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited: {self.proc.stderr.read()}")
            try:
                c = self.connect(connect_timeout=5)
            except pymysql.MySQLError:
                time.sleep(0.05)
                continue
            seen.add(worker_of(cid(c)))
            c.close()
        assert len(seen) == 2, "both workers never answered"


def q(c, sql, args=None):
    with c.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def cid(c) -> int:
    return int(q(c, "SELECT CONNECTION_ID()")[0][0])


def worker_of(client_id: int) -> int:
    return (client_id - FIRST_CLIENT_ID) % 2


def on_worker(
    p: Serving, worker: int, n: int, user: str = "app", database: str = "test"
) -> list[pymysql.connections.Connection]:
    """``n`` clients of ``user`` the kernel gave to ``worker`` (the others are closed)."""
    out = []
    for _ in range(200):
        c = connect_as(p, user, database)
        if worker_of(cid(c)) == worker:
            out.append(c)
            if len(out) == n:
                return out
        else:
            c.close()
    raise AssertionError(f"never {n} clients on worker {worker}")


def connect_as(p: Serving, user: str, database: str) -> pymysql.connections.Connection:
    return pymysql.connect(
        host="127.0.0.1",
        port=p.port,
        user=user,
        password=f"{user}-secret",
        database=database,
        autocommit=True,
        read_timeout=30,
    )


class Monitor:
    """One root connection to the server: Threads_connected sampled in a thread, and
    Max_used_connections since ``FLUSH STATUS`` (both count this connection too)."""

    def __init__(self, srv: MariaDBServer) -> None:
        self.conn = srv.connect()
        q(self.conn, "FLUSH STATUS")  # Max_used_connections starts again from now
        self.peak_threads = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _status(self, name: str) -> int:
        with self._lock:
            return int(q(self.conn, "SHOW GLOBAL STATUS LIKE %s", (name,))[0][1])

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_threads = max(self.peak_threads, self._status("Threads_connected"))

    def stop(self) -> tuple[int, int]:
        """(Max_used_connections, peak Threads_connected), minus this connection."""
        self._stop.set()
        self._thread.join(5)
        used = self._status("Max_used_connections")
        self.conn.close()
        return used - 1, self.peak_threads - 1


@pytest.fixture
def server(mariadb_factory) -> MariaDBServer:
    srv = mariadb_factory()
    srv.create_user("app", "app-secret")
    srv.create_user("other", "other-secret")
    srv.execute("CREATE TABLE test.counters (id INT PRIMARY KEY, n INT NOT NULL)")
    srv.execute("INSERT INTO test.counters VALUES " + ",".join(f"({i}, 0)" for i in range(20)))
    return srv


def test_two_workers_share_one_cap_and_unique_ids_under_load_then_stop_on_sigterm(server, tmp_path):
    port, admin = free_port(), free_port(pair=True)
    p = Serving(write_config(tmp_path / "p.toml", server.port, port, f"127.0.0.1:{admin}"), port)
    p.wait_listening()
    # one admin endpoint per worker: port + index
    for w in (0, 1):
        with urllib.request.urlopen(f"http://127.0.0.1:{admin + w}/metrics", timeout=5) as r:
            assert r.status == 200
    mon = Monitor(server)
    errors: list[BaseException] = []
    ids: list[int] = []
    statements = 300

    def client(i: int) -> None:
        try:
            c = p.connect()
            ids.append(cid(c))
            for k in range(statements // 3):
                if k % 2:
                    q(c, "BEGIN")
                    q(c, "UPDATE counters SET n = n + 1 WHERE id = %s", (i,))
                    q(c, "COMMIT")
                else:
                    assert q(c, "SELECT n >= 0 FROM counters WHERE id = %s", (i,)) == ((1,),)
                    q(c, "SELECT 1")
                    q(c, "SELECT 2")
            c.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - t0
    used, threads_peak = mon.stop()
    assert not errors, errors[:3]
    assert used <= CAP and threads_peak <= CAP, (used, threads_peak)
    assert len(ids) == 20 and len(set(ids)) == 20
    assert {worker_of(i) for i in ids} == {0, 1}, ids  # both workers served clients
    rows = server.execute("SELECT SUM(n) FROM test.counters")
    assert int(rows[0][0]) == 20 * (statements // 6)
    print(f"20 clients x {statements} statements: {elapsed:.1f}s, server peak {used}")
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count("event=shutdown ") == 2 and "event=workers_stopped" in err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)


def test_a_worker_holding_idle_connections_up_to_the_cap_does_not_starve_the_other(
    server, tmp_path
):
    port = free_port()
    p = Serving(write_config(tmp_path / "p.toml", server.port, port), port)
    p.wait_listening()
    mon = Monitor(server)
    # worker 0 opens the whole cap, then its clients go idle: 4 idle connections there
    a = on_worker(p, 0, CAP)
    for c in a:
        q(c, "BEGIN")
        q(c, "SELECT 1")
    for c in a:
        q(c, "COMMIT")
    b = on_worker(p, 1, CAP)
    t0 = time.monotonic()
    for c in b:  # each holds its connection: worker 0 must give up all four
        q(c, "BEGIN")
        q(c, "SELECT 1")
    waited = time.monotonic() - t0
    assert waited < 5, waited  # pool.checkout_timeout
    for c in b:
        q(c, "COMMIT")
    # and back: worker 0's clients get connections while worker 1's sit idle
    for c in a:
        q(c, "BEGIN")
        q(c, "SELECT 1")
        q(c, "COMMIT")
    used, threads_peak = mon.stop()
    assert used <= CAP and threads_peak <= CAP, (used, threads_peak)
    for c in a + b:
        c.close()
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0, err


def test_max_pinned_counts_the_pinned_sessions_of_every_worker(server, tmp_path):
    port = free_port()
    cfg = write_config(
        tmp_path / "p.toml", server.port, port, extra="max_pinned = 1", checkout_timeout=1
    )
    p = Serving(cfg, port)
    p.wait_listening()
    (a,) = on_worker(p, 0, 1)
    (b,) = on_worker(p, 1, 1)
    q(a, "CREATE TEMPORARY TABLE pin_a (x INT)")
    q(a, "SELECT 1")  # answered after the proxy has counted the pin of the statement before
    t0 = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as e:
        q(b, "CREATE TEMPORARY TABLE pin_b (x INT)")
    waited = time.monotonic() - t0
    code, message = e.value.args
    assert code == 1040, message
    assert "holds 1 pinned connections over all 2 workers" in message, message
    assert "max_pinned = 1" in message and "temporary table" in message, message
    assert 0.9 < waited < 3, waited  # pool.checkout_timeout
    with pytest.raises(pymysql.err.ProgrammingError):
        q(b, "SELECT * FROM pin_b")  # the refused statement never ran
    # b waits again; a lets go of its pin meanwhile: b's statement runs, within the timeout
    done: list[float] = []

    def pin_b() -> None:
        q(b, "CREATE TEMPORARY TABLE pin_b (x INT)")
        done.append(time.monotonic())

    t = threading.Thread(target=pin_b)
    t.start()
    time.sleep(0.3)
    assert not done  # still waiting for worker 0's pin
    unpinned = time.monotonic()
    q(a, "DROP TEMPORARY TABLE pin_a")
    t.join(5)
    assert done and done[0] - unpinned < 0.5, (done, unpinned)
    q(b, "SELECT 1")
    # the other way round: worker 1 holds the pin until its client disconnects
    with pytest.raises(pymysql.err.OperationalError) as e:
        q(a, "CREATE TEMPORARY TABLE pin_a (x INT)")
    assert e.value.args[0] == 1040
    b.close()
    q(a, "CREATE TEMPORARY TABLE pin_a (x INT)")  # waits at most until worker 1 noticed
    a.close()
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0, err
    assert err.count("event=max_pinned_refused") == 2, err


def test_kill_reaches_a_session_of_the_other_worker_and_of_the_same_user_only(server, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "p.toml", server.port, port, extra=OTHER_USER)
    p = Serving(cfg, port)
    p.wait_listening()
    (mine,) = on_worker(p, 0, 1)
    (victim,) = on_worker(p, 1, 1)
    (stranger,) = on_worker(p, 1, 1, user="other")
    # another user's session on the other worker: unknown, as on one process
    with pytest.raises(pymysql.MySQLError) as e:
        q(mine, f"KILL {cid(stranger)}")
    assert e.value.args[0] == 1094 and "Unknown thread id" in e.value.args[1]
    assert q(stranger, "SELECT 1") == ((1,),)
    # KILL QUERY: the other worker's running statement is interrupted, its session goes on
    victim_id = cid(victim)
    errors: list[int] = []
    sleeping = threading.Thread(target=_sleep_result, args=(victim, errors), daemon=True)
    sleeping.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    q(mine, f"KILL QUERY {victim_id}")
    sleeping.join(10)
    assert not sleeping.is_alive() and time.monotonic() - t0 < 5
    assert errors == [1317], errors  # ER_QUERY_INTERRUPTED
    assert q(victim, "SELECT 1") == ((1,),)
    # by the server thread id the statement runs on (any worker's session may hold it):
    # every other worker is asked
    errors.clear()
    sleeping = threading.Thread(target=_sleep_result, args=(victim, errors), daemon=True)
    sleeping.start()
    thread_id = _running(server, "SELECT SLEEP(30)")
    q(mine, f"KILL QUERY {thread_id}")
    sleeping.join(10)
    assert errors == [1317], errors
    # KILL CONNECTION: the session ends
    q(mine, f"KILL {victim_id}")
    with pytest.raises(pymysql.MySQLError):
        q(victim, "SELECT 1")
    # an id of the killer's own worker that is gone: unknown, nobody asked
    gone = cid(mine) + 2 * 1000
    with pytest.raises(pymysql.MySQLError) as e:
        q(mine, f"KILL {gone}")
    assert e.value.args[0] == 1094
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0, err
    assert "event=killed_for_worker" in err and "Traceback" not in err


def _running(server: MariaDBServer, sql: str) -> int:
    """The server thread running ``sql`` (waited for: its client just sent it)."""
    for _ in range(100):
        rows = server.execute(f"SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = '{sql}'")
        if rows:
            return int(rows[0][0])
        time.sleep(0.05)
    raise AssertionError(f"{sql!r} never ran")


def _sleep_result(c, errors: list[int]) -> None:
    try:
        q(c, "SELECT SLEEP(30)")
        errors.append(0)
    except pymysql.MySQLError as exc:
        errors.append(exc.args[0])


def test_the_admin_surface_of_either_worker_shows_every_worker(server, tmp_path):
    port, admin = free_port(), free_port(pair=True)
    ops = '[users.ops]\npassword = "ops-secret"\nupstream_user = "app"\nupstream_password = "app-secret"\n'
    cfg = write_config(tmp_path / "p.toml", server.port, port, f"127.0.0.1:{admin}", extra=ops)
    cfg.write_text(cfg.read_text().replace("[admin]\n", '[admin]\nusers = ["ops"]\n'))
    p = Serving(cfg, port)
    p.wait_listening()
    a = on_worker(p, 0, 2)
    b = on_worker(p, 1, 3)
    ids = {cid(c): w for w, cs in ((0, a), (1, b)) for c in cs}
    q(b[0], "SELECT GET_LOCK('tp_workers_admin', 5)")  # a pin on worker 1: in the ledger
    q(a[0], "SELECT 1")

    def get(w: int, path: str) -> tuple[Any, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin + w}{path}", timeout=5) as r:
            return r.headers, r.read()

    for w in (0, 1):  # the same picture from either endpoint
        headers, body = get(w, "/sessions")
        assert "X-Tainted-Proxy-Workers-Missing" not in headers
        rows = {r["id"]: r["worker"] for r in json.loads(body) if r["user"] == "app"}
        assert rows == ids, (w, rows)
        pools = json.loads(get(w, "/pools")[1])
        assert pools["totals"]["client_sessions"] == 5
        (app_pool,) = [r for r in pools["pools"] if r["upstream_user"] == "app"]
        assert (
            app_pool["pinned"] == 1 and app_pool["clients_active"] + app_pool["clients_idle"] == 5
        )
        report = json.loads(get(w, "/report")[1])
        assert any("GET_LOCK" in e["reason"] for e in report["ledger"]), report["ledger"]
        stats = json.loads(get(w, "/stats")[1])
        assert stats["accepted"] >= 5
        # /metrics: every worker's samples, each with its worker label (a real parser)
        fams = {f.name: f for f in text_string_to_metric_families(get(w, "/metrics")[1].decode())}
        sessions = [s for s in fams["tainted_proxy_client_sessions"].samples]
        assert {s.labels["worker"] for s in sessions} == {"0", "1"}
        assert sum(s.value for s in sessions) == 5
        up = fams["tainted_proxy_worker_up"].samples
        assert {(s.labels["worker"], s.value) for s in up} == {("0", 1), ("1", 1)}
    # the SQL console on either worker lists both workers' sessions
    for w in (0, 1):
        (console,) = on_worker(p, w, 1, user="ops", database="tainted_proxy")
        rows = q(console, "SHOW SESSIONS LIKE 'app'")
        assert {r[0] for r in rows} == set(ids), rows
        console.close()
    # a worker that does not answer is left out, and the header says which
    worker1 = worker_pid(p, 1)
    os.kill(worker1, signal.SIGSTOP)
    try:
        headers, body = get(0, "/sessions")
        assert headers.get("X-Tainted-Proxy-Workers-Missing") == "1"
        assert {r["worker"] for r in json.loads(body)} == {0}
        text = get(0, "/metrics")[1].decode()
        up = {f.name: f for f in text_string_to_metric_families(text)}["tainted_proxy_worker_up"]
        assert {(s.labels["worker"], s.value) for s in up.samples} == {("0", 1), ("1", 0)}
    finally:
        os.kill(worker1, signal.SIGCONT)
    for c in a + b:
        c.close()
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0, err
    assert "event=admin_worker_unavailable worker=1" in err and "Traceback" not in err


def worker_pid(p: Serving, index: int) -> int:
    """The pid of worker ``index`` (a child of the parent with ``--worker-index index``)."""
    children = Path(f"/proc/{p.proc.pid}/task/{p.proc.pid}/children").read_text().split()
    for pid in map(int, children):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv[argv.index(b"--worker-index") + 1] == str(index).encode():
            return pid
    raise AssertionError(f"no worker {index} among {children}")


def test_a_worker_that_cannot_start_stops_the_set_with_its_code(server, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "p.toml", server.port, port)
    server.stop()
    p = Serving(cfg, port, "--fail-fast")
    code, err = p.finish()
    assert code == 1 and "event=worker_exited" in err and "Traceback" not in err
    server.start()


def test_sighup_reaches_every_worker(server, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "p.toml", server.port, port)
    p = Serving(cfg, port)
    p.wait_listening()
    p.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0 and err.count("event=reloaded") == 2, err
