"""The admin HTTP endpoint of a live proxy in transaction mode in front of the private
MariaDB: every view shows the sessions, pins, sub-pools and ledger the clients made (checked
against the server's processlist), /metrics agrees with /pools, the token is required, and
``tainted-proxy report`` prints it all from the same endpoint."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tainted_proxy.admin import report_cli

from .conftest import q

TOKEN = "adm-9f1c2e7b"
LOCK = "advisory lock (GET_LOCK)"
TEMP = "temporary table"
ADMIN = {"listen": "127.0.0.1:0", "token": TOKEN}


def get(url: str, path: str, token: str | None = TOKEN) -> Any:
    req = urllib.request.Request(url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read().decode()
        return (
            json.loads(body) if r.headers["Content-Type"].startswith("application/json") else body
        )


def status(url: str, path: str, token: str | None) -> int:
    try:
        get(url, path, token)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def by_id(rows: list[dict[str, Any]], ident: int) -> dict[str, Any]:
    (row,) = [r for r in rows if r["id"] == ident]
    return row


@pytest.fixture
def scene(pooling_proxy, connect, caplog):
    """A proxy with three sessions: one pinned by GET_LOCK and a temporary table, one in a
    transaction with its own time zone, one idle (the views test makes it run a statement)."""
    caplog.set_level(logging.INFO, logger="tainted_proxy")
    p = pooling_proxy("transaction", max_connections=3, admin=ADMIN)
    url = p.proxy.admin_url
    holder = connect(p, program_name="lock-holder", autocommit=True)
    q(holder, "SELECT GET_LOCK('tp_admin_http', 5)")
    q(holder, "CREATE TEMPORARY TABLE tp_admin_scratch (v INT)")
    other = connect(p, program_name="slow-report", autocommit=True)
    zoned = connect(p, autocommit=True)
    q(zoned, "SET time_zone = '+05:30'")
    q(zoned, "BEGIN")  # holds a connection with that time zone: a sub-pool of its own
    try:
        yield p, url, {"holder": holder, "zoned": zoned, "other": other}, caplog
    finally:
        for c in (holder, zoned, other):
            c.close()


def test_views_show_sessions_pins_subpools_and_ledger(scene, wait_until):
    p, url, conns, caplog = scene
    assert any(
        f"tainted-proxy admin HTTP listening on {url} (token required)" in r.getMessage()
        for r in caplog.get_records("setup")
    )
    t = threading.Thread(target=q, args=(conns["other"], "SELECT SLEEP(1.5)"), daemon=True)
    t.start()
    try:
        wait_until(
            lambda: any(s["statement"] for s in get(url, "/sessions")),
            timeout=5,
            what="the sleeping statement shows in /sessions",
        )
        sessions = get(url, "/sessions")
        servers = get(url, "/servers")
        pools = get(url, "/pools")
        report = get(url, "/report?minutes=10")
        stats = get(url, "/stats")
        plist = dict(
            p.server.execute(
                "SELECT ID, COALESCE(INFO, '') FROM information_schema.PROCESSLIST WHERE USER = %s",
                (p.upstream_user,),
            )
        )
    finally:
        t.join(5)

    holder = by_id(sessions, conns["holder"].thread_id())
    assert holder["program"] == "lock-holder"
    assert holder["mode"] == "transaction" and holder["user"] == "app"
    assert holder["address"] == "127.0.0.1"
    assert holder["pin"] in (LOCK, TEMP)
    assert set(holder["pin_reasons"]) == {LOCK, TEMP}
    assert "lock 'tp_admin_http'" in holder["pin_objects"]
    assert any("tp_admin_scratch" in o for o in holder["pin_objects"])
    assert holder["pin_age_seconds"] >= 0 and holder["statement"] is None

    sleeper = by_id(sessions, conns["other"].thread_id())
    assert sleeper["program"] == "slow-report" and sleeper["state"] == "active"
    assert sleeper["statement"] == "SELECT SLEEP(?)"  # the fingerprint, no values
    assert sleeper["statement_age_seconds"] >= 0

    # the upstream thread ids are the server's: the processlist agrees
    assert holder["upstream_thread_id"] in plist
    assert plist[sleeper["upstream_thread_id"]].startswith("SELECT SLEEP")
    held = {s["client_id"]: s["thread_id"] for s in servers if s["state"] == "in use"}
    assert held[holder["id"]] == holder["upstream_thread_id"]
    assert {s["thread_id"] for s in servers} == set(plist)

    totals = pools["totals"]
    assert totals["client_sessions"] == 3 and totals["pinned"] == 1
    assert totals["upstream_connections"] == len(plist) and totals["upstream_cap"] == 3
    (pool,) = pools["pools"]
    assert pool["upstream_user"] == p.upstream_user and pool["users"] == ["app"]
    assert pool["pinned"] == 1 and pool["cap"] == 3
    settings = {sp["settings"]: sp for sp in pool["subpools"]}
    assert any("time_zone=+05:30" in k for k in settings), pool["subpools"]
    assert sum(sp["idle"] + sp["in_use"] for sp in pool["subpools"]) == len(plist)

    lock_rows = [e for e in report["ledger"] if e["reason"] == LOCK]
    assert lock_rows and lock_rows[0]["program"] == "lock-holder"
    assert lock_rows[0]["fingerprint"] == "SELECT GET_LOCK(?, ?)"
    assert "RELEASE_LOCK" in lock_rows[0]["hint"]
    assert report["window_minutes"] == 10 and len(report["series"]) == 10
    assert sum(m["by_reason"].get(LOCK, 0) for m in report["series"]) == 1
    assert {"user": "app", "reason": LOCK, "count": 1} in report["recent"]
    assert stats["pins"][LOCK] == 1 and stats["pinned_now"] == 1


def test_metrics_agree_with_the_views(scene):
    p, url, conns, _ = scene
    text = get(url, "/metrics")
    pools = get(url, "/pools")
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        found = [
            s.value
            for s in fams[family].samples
            if (sample is None or s.name == sample)
            and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, (family, labels, fams[family].samples)
        return found[0]

    login = p.upstream_user
    pins = "tainted_proxy_pins_total"
    common = {"user": "app", "upstream_user": login, "mode": "transaction"}
    assert value("tainted_proxy_pins", pins, program="lock-holder", reason=LOCK, **common) == 1
    # the temporary table came while the lock held the pin already: one pin, counted once
    assert not [s for s in fams["tainted_proxy_pins"].samples if s.labels["reason"] == TEMP]
    (pool,) = pools["pools"]
    for state, key in (("active", "clients_active"), ("idle", "clients_idle")):
        assert value("tainted_proxy_sessions", upstream_user=login, state=state) == pool[key]
    for state, key in (("in_use", "upstream_in_use"), ("idle", "upstream_idle")):
        got = value("tainted_proxy_upstream_connections", upstream_user=login, state=state)
        assert got == pool[key]
    assert value("tainted_proxy_pinned") == 1
    assert value("tainted_proxy_pinned_sessions", user="app") == 1
    assert value("tainted_proxy_client_sessions") == 3
    assert value("tainted_proxy_multiplexing_ratio") == pools["totals"]["multiplexing_ratio"]
    assert value("tainted_proxy_clients_accepted", "tainted_proxy_clients_accepted_total") == 3
    # process metrics come along (CPU, memory, file descriptors)
    assert "process_resident_memory_bytes" in fams
    # the classifier cache, which an RSS that climbs for the first hour usually is
    cache = get(url, "/stats")["classifier_cache"]
    assert cache["entries"] >= 1  # GET_LOCK and the temporary table are kept
    assert value("tainted_proxy_classifier_cache_entries") == cache["entries"]
    assert value("tainted_proxy_classifier_cache_bytes") == cache["bytes"] > 2048


def test_token_is_required_on_every_route(scene):
    _, url, _, _ = scene
    for path in ("/report", "/pools", "/sessions", "/servers", "/stats", "/metrics", "/"):
        assert status(url, path, None) == 401, path
        assert status(url, path, "wrong") == 401, path
        assert status(url, path, TOKEN) == 200, path


def test_report_command_against_the_live_proxy(scene, capsys):
    _, url, conns, _ = scene
    assert report_cli.main(["--url", url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert "3 client sessions" in out and "1 pinned" in out
    for text in ("Pools", "Sub-pools", "Sessions (3, 1 pinned)", "Taint ledger"):
        assert text in out, text
    assert "lock-holder" in out and "SELECT GET_LOCK(?, ?)" in out
    assert "release them promptly" in out  # the hint
    assert "time_zone=+05:30" in out

    assert report_cli.main(["--url", url, "--token", "nope"]) == 1
    assert "401 unauthorized (wrong token)" in capsys.readouterr().err

    # the installed command, as an operator runs it (token from the environment)
    env = {"TAINTED_PROXY_ADMIN_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "tainted_proxy", "report", "--url", url, "--json", "--minutes", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"url", "report", "pools", "sessions"}
    assert data["report"]["window_minutes"] == 3
    assert conns["holder"].thread_id() in {s["id"] for s in data["sessions"]}


def test_loopback_endpoint_without_a_token_is_open(pooling_proxy):
    p = pooling_proxy("transaction", admin={"listen": "127.0.0.1:0"})
    assert status(p.proxy.admin_url, "/stats", None) == 200
    assert status(p.proxy.admin_url, "/metrics", None) == 200


def test_admin_endpoint_off(pooling_proxy):
    p = pooling_proxy("transaction")  # the test default: [admin] listen = ""
    assert p.proxy.admin_url is None


def test_admin_port_in_use_stops_the_start_with_the_key_named(tmp_path):
    """``tainted-proxy serve`` exits 1 naming [admin] listen (no traceback), before any
    client is accepted."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    upstream_port = free.getsockname()[1]
    free.close()  # nothing there: the proxy starts anyway, retrying the upstream
    cfg = tmp_path / "proxy.toml"
    cfg.write_text(
        f'[proxy]\nlisten = "127.0.0.1:0"\n[upstream]\nport = {upstream_port}\n'
        f'[admin]\nlisten = "127.0.0.1:{port}"\n'
        '[users.app]\npassword = "x"\n'
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tainted_proxy", "serve", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        taken.close()
    assert done.returncode == 1, done.stderr
    assert f"[admin] listen = '127.0.0.1:{port}'" in done.stderr
    assert "Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
