"""admin.console without a server: statement parsing, LIKE, the client-init statements,
errors. (The views over a running proxy: tests/integration/test_admin_console.py.)"""

from __future__ import annotations

import pytest

from tainted_proxy.admin import console
from tainted_proxy.admin.console import ConsoleError, ConsoleSession, Ok, ResultSet
from tainted_proxy.app import Proxy
from tainted_proxy.config import parse_config


@pytest.fixture(scope="module")
def proxy() -> Proxy:
    return Proxy(
        parse_config(
            '[admin]\nusers = ["ops"]\n[users.ops]\npassword = "ops-secret"\n'
            '[users.app]\npassword = "app-secret"\nupstream_password = "up-secret"\n'
        )
    )


def run(proxy: Proxy, sql: str, session: ConsoleSession | None = None) -> ResultSet | Ok:
    return console.execute(proxy, session or ConsoleSession("ops", 7), sql)


def rows(proxy: Proxy, sql: str) -> list[list[object]]:
    r = run(proxy, sql)
    assert isinstance(r, ResultSet)
    return r.rows


@pytest.mark.parametrize(
    "pattern, value, matches",
    [
        ("tp%", "tp_pool_1", True),
        ("TP%", "tp_pool_1", True),  # case-insensitive
        ("tp", "tp_pool_1", False),  # the whole value
        ("%pool%", "tp_pool_1", True),
        ("tp_pool__", "tp_pool_1", True),  # _ is one character
        ("tp_pool__", "tp_pool_12", False),
        ("tp\\_%", "tp_pool", True),
        ("tp\\_%", "tpxpool", False),  # \_ is a literal _
        ("50\\%", "50%", True),
        ("a.b", "axb", False),  # regex characters are literal
        ("%", "", True),
        ("x%", None, False),
        ("%\n%", "a\nb", True),
    ],
)
def test_like(pattern: str, value: str | None, matches: bool) -> None:
    assert console.like(value, pattern) is matches


def test_is_console_login() -> None:
    assert console.is_console_login(["ops"], "ops", "tainted_proxy")
    assert not console.is_console_login(["ops"], "app", "tainted_proxy")
    assert not console.is_console_login(["ops"], "ops", "test")
    assert not console.is_console_login(["ops"], "ops", None)


def test_views_parse_case_comments_semicolons_and_like(proxy: Proxy) -> None:
    for sql in (
        "SHOW POOLS",
        "show pools;",
        "  Show   Pools  ;; ",
        "/* hi */ SHOW POOLS -- trailing\n",
        "SHOW POOLS LIKE '%'",
        'SHOW POOLS LIKE "x"',
    ):
        r = run(proxy, sql)
        assert isinstance(r, ResultSet) and r.columns[0] == "upstream_user", sql
    for what, first in (
        ("SESSIONS", "id"),
        ("SERVERS", "thread_id"),
        ("TAINTS", "user"),
        ("SETTINGS", "upstream_user"),
        ("STATS", "name"),
        ("CONFIG", "name"),
        ("HELP", "statement"),
    ):
        r = run(proxy, f"SHOW {what}")
        assert isinstance(r, ResultSet) and r.columns[0] == first
    assert [r[0] for r in rows(proxy, "SHOW HELP")][-1] == "SHOW HELP"


def test_config_has_no_secret(proxy: Proxy) -> None:
    config = dict(rows(proxy, "SHOW CONFIG"))  # type: ignore[arg-type]
    assert config["users.app.password"] == "(set)"
    assert config["users.app.upstream_password"] == "(set)"
    assert config["admin.users"] == "ops"
    assert not any("secret" in str(v) for v in config.values())
    assert rows(proxy, "SHOW CONFIG LIKE 'USERS.OPS.%'")[0] == ["users.ops.password", "(set)"]


def test_stats_like(proxy: Proxy) -> None:
    assert rows(proxy, "SHOW STATS LIKE 'pool.opened'") == [["pool.opened", "0"]]
    assert {r[0] for r in rows(proxy, "SHOW STATS LIKE 'wait\\_seconds.%'")} == {
        "wait_seconds.p50",
        "wait_seconds.p90",
        "wait_seconds.p99",
        "wait_seconds.max",
    }


@pytest.mark.parametrize(
    "sql, columns, row",
    [
        (
            "SELECT @@version_comment LIMIT 1",
            ["@@version_comment"],
            ["tainted-proxy admin console"],
        ),
        ("select @@max_allowed_packet", ["@@max_allowed_packet"], [64 << 20]),
        (
            "SELECT @@session.autocommit, @@GLOBAL.time_zone tz",
            ["@@session.autocommit", "tz"],
            [1, "SYSTEM"],
        ),
        (
            "SELECT DATABASE(), USER(), CURRENT_USER, CONNECTION_ID() AS id",
            ["DATABASE()", "USER()", "CURRENT_USER", "id"],
            ["tainted_proxy", "ops@localhost", "ops@%", 7],
        ),
        ("SELECT 1", ["1"], [1]),
        ("SELECT 'x' AS `a b`", ["a b"], ["x"]),
        ("SELECT VERSION()", ["VERSION()"], ["5.5.5-10.11.0-MariaDB-tainted-proxy"]),
    ],
)
def test_client_init_selects(proxy: Proxy, sql: str, columns: list[str], row: list) -> None:
    r = run(proxy, sql)
    assert isinstance(r, ResultSet)
    assert (r.columns, r.rows) == (columns, [row])


def test_set_is_ok_and_autocommit_is_remembered(proxy: Proxy) -> None:
    s = ConsoleSession("ops", 7)
    for sql in (
        "SET NAMES utf8mb4",
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
        "SET character_set_results = NULL",
        "SET sql_mode = concat(@@sql_mode, ',STRICT_TRANS_TABLES')",
    ):
        assert isinstance(console.execute(proxy, s, sql), Ok), sql
    assert s.autocommit
    console.execute(proxy, s, "SET @@session.autocommit = OFF")
    assert not s.autocommit
    r = console.execute(proxy, s, "SELECT @@autocommit")
    assert isinstance(r, ResultSet) and r.rows == [[0]]
    console.execute(proxy, s, "set autocommit=1")
    assert s.autocommit
    console.execute(proxy, s, "SET AUTOCOMMIT = 0")
    assert not s.autocommit


def test_server_statements_clients_send(proxy: Proxy) -> None:
    assert rows(proxy, "SHOW VARIABLES LIKE 'version_comment'") == [
        ["version_comment", "tainted-proxy admin console"]
    ]
    assert rows(proxy, "SHOW SESSION VARIABLES LIKE 'tx\\_isolation'") == [
        ["tx_isolation", "REPEATABLE-READ"]
    ]
    assert rows(proxy, "SHOW WARNINGS") == []
    assert rows(proxy, "SHOW DATABASES") == [["tainted_proxy"]]
    assert rows(proxy, "SHOW TABLES") == []
    for sql in ("COMMIT", "rollback", "BEGIN", "START TRANSACTION", "USE tainted_proxy"):
        assert isinstance(run(proxy, sql), Ok), sql


@pytest.mark.parametrize(
    "sql, code",
    [
        ("SELECT * FROM t", 1064),
        ("SHOW PROCESSLIST", 1064),
        ("SHOW POOLS WHERE x = 1", 1064),
        ("SHOW POOLS LIKE", 1064),
        ("SHOW HELP LIKE 'x'", 1064),
        ("DROP TABLE x", 1064),
        ("SHOW POOLS; SHOW STATS", 1064),
        ("SELECT @@nonesuch", 1193),
        ("SELECT NOW()", 1064),
        ("USE test", 1049),
        ("", 1065),
        ("  ; ", 1065),
    ],
)
def test_errors(proxy: Proxy, sql: str, code: int) -> None:
    with pytest.raises(ConsoleError) as e:
        run(proxy, sql)
    assert e.value.code == code
    if code == 1064:
        assert "SHOW POOLS|SESSIONS|SERVERS|TAINTS|SETTINGS|STATS|CONFIG" in e.value.message


@pytest.mark.parametrize(
    ("sql", "parts"),
    [
        ("SHOW SESSIONS", ("sessions",)),
        ("/* ApplicationName=DBeaver */ show pools like 'a%'", ("pools", "servers")),
        ("SHOW STATS", ("totals", "stats")),
        ("SHOW HELP", ()),
        ("SHOW VARIABLES", ()),
        ("SELECT 1", ()),
        ("SHOW 'unterminated", ()),
    ],
)
def test_the_parts_a_statement_reads_are_known_before_it_runs(sql, parts):
    assert console.parts_needed(sql) == parts
