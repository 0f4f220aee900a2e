"""``tainted-proxy classify`` tests, through main(argv)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from tainted_proxy.taint.cli import main


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    assert main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_issue_example(capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(capsys, ["SET NAMES utf8mb4", "SELECT 1"])
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["sql"] == "SET NAMES utf8mb4"
    assert first["effects"] == ["settings"]
    assert first["settings"]["character_set_client"] == "utf8mb4"
    assert first["settings"]["collation_connection"] is None
    assert first["pin"] is None
    assert first["fingerprint"] == "SET NAMES utf8mb4"
    assert second["effects"] == [] and second["pin"] is None and second["settings"] == {}
    assert second["fingerprint"] == "SELECT ?"


def test_required_fields_and_order(capsys: pytest.CaptureFixture[str]) -> None:
    sqls = ["SELECT GET_LOCK('a', 1)", "SET @x = 1; SET autocommit=0", "FOO"]
    out = [json.loads(x) for x in run(capsys, sqls)]
    assert [o["sql"] for o in out] == sqls
    for o in out:
        assert {"sql", "effects", "settings", "pin", "fingerprint"} <= o.keys()
        assert o["effects"] == sorted(o["effects"])
    assert out[0]["pin"] == "advisory lock (GET_LOCK)"
    assert out[1]["effects"] == ["autocommit", "user_var"]
    assert out[1]["user_vars"] == {"x": "1"}
    assert out[2]["effects"] == ["unknown"] and out[2]["unknown_reason"]


def test_stdin_one_per_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("SET NAMES utf8mb4\n\nSELECT 1\r\nCOMMIT"))
    out = [json.loads(x) for x in run(capsys, [])]
    assert [o["sql"] for o in out] == ["SET NAMES utf8mb4", "SELECT 1", "COMMIT"]
    assert [o["effects"] for o in out] == [["settings"], [], ["tx_end"]]


def test_pretty(capsys: pytest.CaptureFixture[str]) -> None:
    text = "\n".join(run(capsys, ["--pretty", "SELECT GET_LOCK('a', 1)", "SELECT 1"]))
    assert "effects:     advisory_lock" in text
    assert "pin:         advisory lock (GET_LOCK)" in text
    assert "effects:     none (clean)" in text
    assert "fingerprint: SELECT GET_LOCK(?, ?)" in text


def test_quoting_flags(capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT 'a\\'; SET @x=1; -- '"
    assert json.loads(run(capsys, [sql])[0])["effects"] == []
    out = run(capsys, ["--no-backslash-escapes", sql])
    assert json.loads(out[0])["effects"] == ["user_var"]
    sql = 'SELECT "a\\" ; SET @x=1; -- "'
    assert json.loads(run(capsys, ["--ansi-quotes", sql])[0])["effects"] == ["user_var"]


def test_non_ascii_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    out = json.loads(run(capsys, ["SET @x = 'héllo'"])[0])
    assert out["sql"] == "SET @x = 'héllo'" and out["user_vars"] == {"x": "'héllo'"}


def test_python_dash_m() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tainted_proxy.taint.cli", "SET autocommit=0"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(r.stdout)
    assert out["effects"] == ["autocommit"] and out["settings"] == {"autocommit": "0"}
