"""``tainted-proxy classify`` tests, through main(argv)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tainted_proxy.classify import main, split_sql
from tainted_proxy.taint.lexer import ANSI_QUOTES


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
        [sys.executable, "-m", "tainted_proxy.classify", "SET autocommit=0"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(r.stdout)
    assert out["effects"] == ["autocommit"] and out["settings"] == {"autocommit": "0"}


# -- the proxy's verdict -------------------------------------------------------------------


def test_verdict_field_and_the_proxys_pin(capsys: pytest.CaptureFixture[str]) -> None:
    out = [json.loads(x) for x in run(capsys, ["SET @rank = 0", "SET @x = NOW()"])]
    # the classifier's rule says "user variable"; the proxy carries a literal
    assert out[0]["pin"] is None
    assert out[0]["verdict"]["kind"] == "carried" and out[0]["verdict"]["carried"] == ["@rank"]
    assert out[0]["verdict"]["mode"] == "transaction"
    assert out[1]["pin"] == "user variable" and out[1]["verdict"]["pins"] == "user variable"
    assert "source" not in out[0]


def test_mode(capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SET autocommit=0"
    tx = json.loads(run(capsys, [sql])[0])["verdict"]
    assert tx["kind"] == "holds" and tx["holds"].startswith("until COMMIT or ROLLBACK")
    st = json.loads(run(capsys, ["--mode", "statement", sql])[0])["verdict"]
    assert st["kind"] == "refused" and st["refused"].startswith("ERROR 1235 (42000)")
    se = json.loads(run(capsys, ["--mode", "session", "CREATE TEMPORARY TABLE t (a INT)"])[0])
    assert se["pin"] == "temporary table"  # the top-level pin is transaction mode's
    assert se["verdict"]["pins"] is None and se["verdict"]["resets"] == ["temporary table t"]


def test_pretty_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    text = "\n".join(run(capsys, ["--pretty", "SET @rank = 0"]))
    assert "pin:         no" in text
    assert "verdict:     transaction mode: carried with the session" in text
    assert "carried:     @rank" in text
    text = "\n".join(run(capsys, ["--pretty", "--mode", "statement", "BEGIN"]))
    assert "verdict:     statement mode: refused with ERR 1235" in text
    text = "\n".join(run(capsys, ["--pretty", "--mode", "session", "SELECT GET_LOCK('a', 1)"]))
    assert "pin:         no (session mode" in text
    assert "resets:      advisory lock 'a'" in text


# -- statements from files -----------------------------------------------------------------

SCRIPT = """\
-- a comment line
/*!40101 SET NAMES utf8mb4 */;
SELECT id,
       name
  FROM users
 WHERE note = 'a; b' -- trailing comment
 ORDER BY id;

SET @rank = 0; SELECT GET_LOCK('job', 10);
DELIMITER $$
CREATE PROCEDURE p()
BEGIN
  SELECT 1;
END$$
DELIMITER ;
CALL p();
"""


def test_file_whole_statements(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "app.sql"
    f.write_text(SCRIPT)
    out = [json.loads(x) for x in run(capsys, ["-f", str(f)])]
    assert [o["sql"] for o in out] == [
        "/*!40101 SET NAMES utf8mb4 */",
        "SELECT id,\n       name\n  FROM users\n WHERE note = 'a; b' -- trailing comment\n ORDER BY id",
        "SET @rank = 0",
        "SELECT GET_LOCK('job', 10)",
        "CREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\nEND",
        "CALL p()",
    ]
    assert [o["source"] for o in out] == [f"{f}:{n}" for n in (2, 3, 9, 9, 11, 16)]
    select = out[1]
    assert select["statements"] == 1 and select["effects"] == []
    assert select["fingerprint"] == "SELECT id, name FROM users WHERE note = ? ORDER BY id"
    assert out[0]["effects"] == ["settings"]


def test_files_and_args_in_order(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = tmp_path / "a.sql"
    a.write_text("SELECT 1;\nSELECT 2")
    b = tmp_path / "b.sql"
    b.write_text("SELECT 3;")
    out = [json.loads(x) for x in run(capsys, ["SELECT 0", "-f", str(a), "--file", str(b)])]
    assert [o["sql"] for o in out] == ["SELECT 0", "SELECT 1", "SELECT 2", "SELECT 3"]


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["-f", str(tmp_path / "nope.sql")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_stdin_statements(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "SELECT a,\n  b\nFROM t;\nSET @x = 1;\n"
    for argv in ([], ["-"], ["-f", "-"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        out = [json.loads(x) for x in run(capsys, argv)]
        assert [o["sql"] for o in out] == ["SELECT a,\n  b\nFROM t", "SET @x = 1"], argv
        assert [o["source"] for o in out] == ["<stdin>:1", "<stdin>:4"]


def test_explicit_stdin_without_semicolons_is_one_statement(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("SELECT a\nFROM t\nWHERE b = 1\n"))
    out = [json.loads(x) for x in run(capsys, ["-f", "-"])]
    assert [o["sql"] for o in out] == ["SELECT a\nFROM t\nWHERE b = 1"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("  -- only a comment\n/* and another */ ;; ", []),
        ("SELECT ';' ; SELECT `a;b`", ["SELECT ';'", "SELECT `a;b`"]),
        ("SELECT 1 /* ; */ + 1; # ;\nSELECT 2", ["SELECT 1 /* ; */ + 1", "SELECT 2"]),
        ("SELECT 'open; SELECT 2", ["SELECT 'open; SELECT 2"]),
        (
            "/*!40101 SET @a = 1 */;\n/*M!100100 SET @b = 2 */",
            ["/*!40101 SET @a = 1 */", "/*M!100100 SET @b = 2 */"],
        ),
        ("DELIMITER //\nSELECT 1; SELECT 2//\nSELECT 3//", ["SELECT 1; SELECT 2", "SELECT 3"]),
        ("delimiter ;;\nSELECT ';;';;\ndelimiter ;\nSELECT 4;", ["SELECT ';;'", "SELECT 4"]),
        ("SELECT 'x\nDELIMITER //\ny'; SELECT 5", ["SELECT 'x\nDELIMITER //\ny'", "SELECT 5"]),
    ],
)
def test_split_sql(text: str, expected: list[str]) -> None:
    assert [s for _, s in split_sql(text)] == expected


def test_split_sql_quoting_modes() -> None:
    text = 'SELECT "a\\" ; SELECT 2'
    assert [s for _, s in split_sql(text)] == [text]
    assert [s for _, s in split_sql(text, ANSI_QUOTES)] == ['SELECT "a\\"', "SELECT 2"]


def test_unterminated_statement_is_unknown(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = tmp_path / "bad.sql"
    f.write_text("SELECT 1;\nSET @x = 'open")
    out = [json.loads(x) for x in run(capsys, ["-f", str(f)])]
    assert out[1]["sql"] == "SET @x = 'open" and "unknown" in out[1]["effects"]


# -- --summary ------------------------------------------------------------------------------

SUMMARY_SCRIPT = """\
SET time_zone = '+00:00';
SET @rank = 0;
SELECT GET_LOCK('job', 10);
SELECT * FROM t WHERE id = 1;
SELECT GET_LOCK('other', 5);
CREATE TEMPORARY TABLE scratch (a INT);
SET autocommit = 0;
SELECT RELEASE_LOCK('job');
"""


def test_summary_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "s.sql"
    f.write_text(SUMMARY_SCRIPT)
    lines = run(capsys, ["--summary", "-f", str(f)])
    assert len(lines) == 1
    s = json.loads(lines[0])
    assert s["mode"] == "transaction" and s["statements"] == 8
    assert s["verdicts"] == {
        "clean": 2,
        "carried": 2,
        "resets": 0,
        "holds": 1,
        "pins": 3,
        "refused": 0,
    }
    assert s["pins"] == {"advisory lock (GET_LOCK)": 2, "temporary table": 1}
    assert s["carried"] == {"time_zone": 1, "@rank": 1, "autocommit": 1}
    top = s["top_pinning"]
    assert [(t["fingerprint"], t["count"]) for t in top] == [
        ("SELECT GET_LOCK(?, ?)", 2),
        ("CREATE TEMPORARY TABLE scratch(a INT)", 1),
    ]
    assert top[0]["reason"] == "advisory lock (GET_LOCK)"
    assert top[0]["first"] == f"{f}:3"
    assert "RELEASE_LOCK" in top[0]["hint"] and "promptly" in top[0]["hint"]
    assert "DROP TEMPORARY TABLE" in top[1]["hint"]
    assert "top_refused" not in s


def test_summary_statement_mode_and_top(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "s.sql"
    f.write_text(SUMMARY_SCRIPT)
    s = json.loads(run(capsys, ["--summary", "--mode", "statement", "--top", "1", "-f", str(f)])[0])
    assert s["verdicts"]["refused"] == 1 and s["verdicts"]["holds"] == 0
    assert len(s["top_pinning"]) == 1
    assert s["top_refused"][0]["fingerprint"] == "SET autocommit = ?"


def test_summary_pretty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "s.sql"
    f.write_text(SUMMARY_SCRIPT)
    text = "\n".join(run(capsys, ["--summary", "--pretty", "-f", str(f)]))
    assert text.startswith("8 statements, judged in transaction mode")
    assert "pins, by reason:" in text
    assert "top pinning statements:" in text
    assert "SELECT GET_LOCK(?, ?)" in text
    assert "hint: advisory locks pin until RELEASE_LOCK; release them promptly" in text
