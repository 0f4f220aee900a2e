"""``tainted-proxy report`` without a proxy: rendering of the three views, argument
checks, URL and token from a config file, and what it says when the endpoint is not there."""

from __future__ import annotations

import socket

import pytest
from rich.console import Console

from tainted_proxy.admin import report_cli

LOCK = "advisory lock (GET_LOCK)"
DATA = {
    "url": "http://127.0.0.1:6034",
    "report": {
        "generated_at": 1_800_000_000.0,
        "window_minutes": 5,
        "ledger": [
            {
                "user": "app",
                "program": "shop-web",
                "mode": "transaction",
                "fingerprint": "SELECT GET_LOCK(?, ?)",
                "reason": LOCK,
                "count": 12,
                "pinned_seconds": 3.5,
                "longest_pin_seconds": 1.0,
                "first_seen": 1_799_999_000.0,
                "last_seen": 1_799_999_990.0,
                "hint": "12 × advisory lock (GET_LOCK) of user app by `SELECT GET_LOCK(?, ?)`: "
                "advisory locks pin until RELEASE_LOCK; release them promptly",
            }
        ],
        "ledger_entries": 1,
        "recent": [{"user": "app", "reason": LOCK, "count": 4}],
        "series": [],
        "pins_by_reason": {LOCK: 12},
        "sessions_by_user": {"app": 2},
    },
    "pools": {
        "totals": {
            "client_sessions": 2,
            "upstream_connections": 1,
            "upstream_cap": 4,
            "upstream_idle": 0,
            "waiting": 0,
            "pinned": 1,
            "multiplexing_ratio": 2.0,
            "wait_seconds": {"p50": 0.0, "p90": 0.0, "p99": 0.25, "max": 0.3},
            "history": [],
        },
        "pools": [
            {
                "upstream_user": "app_rw",
                "users": ["app"],
                "modes": ["transaction"],
                "clients_active": 1,
                "clients_idle": 1,
                "clients_waiting": 0,
                "pinned": 1,
                "upstream_in_use": 1,
                "upstream_idle": 0,
                "cap": 4,
                "subpools": [{"settings": "time_zone=+01:00; schema=shop", "idle": 0, "in_use": 1}],
                "multiplexing_ratio": 2.0,
            }
        ],
    },
    "sessions": [
        {
            "id": 7,
            "user": "app",
            "address": "127.0.0.1",
            "program": "pymysql",
            "mode": "transaction",
            "state": "idle",
            "upstream_thread_id": None,
            "pin": None,
            "pin_reasons": [],
            "pin_objects": [],
            "pin_age_seconds": None,
            "statement": None,
            "statement_age_seconds": None,
            "connected_seconds": 10.0,
            "statements": 3,
        },
        {
            "id": 9,
            "user": "app",
            "address": "127.0.0.1",
            "program": "shop-web",
            "mode": "transaction",
            "state": "holding",
            "upstream_thread_id": 41,
            "pin": LOCK,
            "pin_reasons": [LOCK],
            "pin_objects": ["lock 'orders'"],
            "pin_age_seconds": 2.5,
            "statement": "SELECT SLEEP(?)",
            "statement_age_seconds": 0.4,
            "connected_seconds": 12.0,
            "statements": 30,
        },
    ],
}


def rendered() -> str:
    console = Console(record=True, width=220, color_system=None)
    report_cli.render(DATA, console)
    return console.export_text()


def test_render_tables():
    out = rendered()
    assert "2 client sessions on 1 upstream connections (cap 4, 0 idle)" in out
    assert "multiplexing ratio 2.00, 1 pinned" in out
    assert "p99 250 ms" in out
    for title in ("Pools", "Sub-pools", "Sessions (2, 1 pinned)", "Taint ledger (1 entries"):
        assert title in out, title
    assert "time_zone=+01:00; schema=shop" in out
    # the pinned session comes first, with its reasons and objects
    assert out.index("shop-web") < out.index("pymysql")
    assert "advisory lock (GET_LOCK); lock 'orders'" in out
    assert "SELECT SLEEP(?)" in out
    # the hint without its prefix, next to the ledger row
    assert "release them promptly" in out
    assert "12 × advisory lock" not in out


def test_render_empty_ledger():
    data = {**DATA, "report": {**DATA["report"], "ledger": [], "recent": []}}
    console = Console(record=True, width=200, color_system=None)
    report_cli.render(data, console)
    assert "nothing has pinned" in console.export_text()


def test_minutes_argument(capsys):
    with pytest.raises(SystemExit):
        report_cli.main(["--minutes", "0"])
    assert "must be from 1 to 60" in capsys.readouterr().err


def test_unreachable_endpoint(capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    assert report_cli.main(["--url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}" in err
    assert "[admin] listen" in err


def test_url_and_token_from_config(tmp_path, monkeypatch):
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[users.app]\npassword = "x"\n[admin]\nlisten = "0.0.0.0:7001"\ntoken = "tok-1"\n'
    )
    assert report_cli._from_config(str(cfg)) == ("http://127.0.0.1:7001", "tok-1")
    cfg.write_text('[users.app]\npassword = "x"\n[admin]\nlisten = "[::]:7002"\n token = "t"\n')
    assert report_cli._from_config(str(cfg)) == ("http://[::1]:7002", "t")
    cfg.write_text('[users.app]\npassword = "x"\n[admin]\nlisten = ""\n')
    with pytest.raises(report_cli.ReportError, match="admin endpoint is off"):
        report_cli._from_config(str(cfg))
