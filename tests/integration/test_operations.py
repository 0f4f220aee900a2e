"""Operating the proxy process: signals (graceful shutdown, a second signal, reload on
SIGHUP), the upstream down at start, `check` and `--version`. The proxy runs as a real
`tainted-proxy serve` process."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBServer
from tainted_proxy.testing.serving import BIN, Serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    path: Path, srv_port: int, port: int, password: str = "app-secret", extra: str = ""
) -> Path:
    path.write_text(
        f"""
[proxy]
listen = "127.0.0.1:{port}"
shutdown_timeout = 5

[upstream]
host = "127.0.0.1"
port = {srv_port}
max_connections = 4
connect_timeout = 1

[pool]
checkout_timeout = 2

[admin]
listen = ""

[users.app]
password = "{password}"
pool_mode = "transaction"
upstream_user = "app"
upstream_password = "app-secret"
{extra}
"""
    )
    return path


@pytest.fixture
def server(mariadb_factory) -> MariaDBServer:
    srv = mariadb_factory()
    srv.create_user("app", "app-secret")
    return srv


def q(c, sql):
    with c.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_lets_a_transaction_finish_tells_idle_sessions_and_exits_0(
    server, tmp_path, sig
):
    port = free_port()
    p = Serving(write_config(tmp_path / "p.toml", server.port, port), port)
    p.wait_listening()
    idle, busy = p.connect(), p.connect()
    q(busy, "BEGIN")
    q(busy, "SELECT 1")
    result: dict[str, object] = {}

    def finish_transaction() -> None:
        result["sleep"] = q(busy, "SELECT SLEEP(1)")
        q(busy, "COMMIT")
        result["done"] = True

    t = threading.Thread(target=finish_transaction)
    t.start()
    time.sleep(0.2)
    p.proc.send_signal(sig)
    t.join(10)
    assert result.get("done"), result
    with pytest.raises(pymysql.MySQLError) as e:
        q(idle, "SELECT 1")
    assert e.value.args[0] in (1053, 2013)
    code, err = p.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert "event=shutdown " in err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)


def test_a_statement_still_running_at_the_deadline_is_killed_upstream(server, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "p.toml", server.port, port)
    cfg.write_text(cfg.read_text().replace("shutdown_timeout = 5", "shutdown_timeout = 0.5"))
    p = Serving(cfg, port)
    p.wait_listening()
    c = p.connect()
    t = threading.Thread(target=lambda: pytest.raises(pymysql.MySQLError, q, c, "SELECT SLEEP(30)"))
    t.start()
    time.sleep(0.5)
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0, err
    assert "killed_queries=1" in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = server.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(30)%'"
        )
        if rows[0][0] == 0:
            break
        time.sleep(0.1)
    assert rows[0][0] == 0
    t.join(5)


def test_a_second_signal_stops_at_once(server, tmp_path):
    port = free_port()
    p = Serving(write_config(tmp_path / "p.toml", server.port, port), port)
    p.wait_listening()
    c = p.connect()
    q(c, "BEGIN")
    q(c, "SELECT 1")  # holds: a graceful shutdown would wait for it
    p.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0 and time.monotonic() - t0 < 3, err
    assert "event=shutdown_now" in err


def test_sighup_reloads_users_without_dropping_clients_and_rejects_a_bad_file(server, tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "p.toml", server.port, port)
    p = Serving(cfg, port)
    p.wait_listening()
    c = p.connect()
    q(c, "SET time_zone = '+09:00'")
    write_config(cfg, server.port, port, password="new-secret")
    p.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        try:
            p.connect(password="new-secret").close()
            break
        except pymysql.MySQLError:
            assert time.monotonic() < deadline, "the new password never worked"
            time.sleep(0.1)
    with pytest.raises(pymysql.MySQLError):
        p.connect(password="app-secret")
    assert q(c, "SELECT @@time_zone") == (("+09:00",),)  # still connected, its state kept
    cfg.write_text("[users.app]\npassword = 3\n")  # invalid
    p.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    p.connect(password="new-secret").close()  # the old configuration keeps running
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0 and "event=reload_failed" in err and "event=reloaded" in err


def test_upstream_down_at_start_the_proxy_serves_as_soon_as_it_is_up(server, tmp_path):
    port = free_port()
    server.stop()
    p = Serving(write_config(tmp_path / "p.toml", server.port, port), port)
    p.wait_listening()
    with pytest.raises(pymysql.MySQLError) as e:
        p.connect()
    assert e.value.args[0] == 1105
    server.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            c = p.connect()
            break
        except pymysql.MySQLError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert q(c, "SELECT 1") == ((1,),)
    c.close()
    p.proc.send_signal(signal.SIGTERM)
    code, err = p.finish()
    assert code == 0 and "event=upstream_unavailable_at_start" in err


def test_fail_fast_exits_1_when_the_upstream_is_down(server, tmp_path):
    port = free_port()
    server.stop()
    p = Serving(write_config(tmp_path / "p.toml", server.port, port), port, "--fail-fast")
    code, err = p.finish()
    assert code == 1 and "Traceback" not in err
    server.start()


def test_check_validates_a_config_and_tries_upstream_logins(server, tmp_path):
    good = write_config(tmp_path / "good.toml", server.port, free_port())
    r = subprocess.run(
        [*BIN, "check", "--config", str(good), "--upstream"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "upstream login 'app' ok" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[proxy]\nlisten = 'nope'\n")
    r = subprocess.run([*BIN, "check", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "listen" in r.stderr
    wrong = write_config(tmp_path / "wrong.toml", server.port, free_port(), extra="")
    wrong.write_text(
        wrong.read_text().replace('upstream_password = "app-secret"', 'upstream_password = "nope"')
    )
    r = subprocess.run(
        [*BIN, "check", "--config", str(wrong), "--upstream"], capture_output=True, text=True
    )
    assert r.returncode == 1 and "FAILED" in r.stdout
    r = subprocess.run([*BIN, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("tainted-proxy ")
