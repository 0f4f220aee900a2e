"""Lexer and gate unit tests."""

from __future__ import annotations

import pytest

from tainted_proxy.taint.gate import is_clean
from tainted_proxy.taint.lexer import (
    ANSI_QUOTES,
    NO_BACKSLASH_ESCAPES,
    decode,
    split_statements,
    tokenize,
    unescape,
)


def kinds(sql: str, flags: int = 0) -> list[tuple[str, str]]:
    return [(t.kind, t.value) for t in tokenize(sql, flags).tokens]


def test_words_are_upper_cased_and_literals_decoded() -> None:
    assert kinds("select 'it''s', \"a\\\"b\", 1.5e3, x'0F', 0x1f, b'01', `a``b`") == [
        ("word", "SELECT"),
        ("string", "it's"),
        ("op", ","),
        ("string", 'a"b'),
        ("op", ","),
        ("number", "1.5e3"),
        ("op", ","),
        ("hex", "x'0F'"),
        ("op", ","),
        ("hex", "0x1f"),
        ("op", ","),
        ("hex", "b'01'"),
        ("op", ","),
        ("qident", "a`b"),
    ]


def test_variables() -> None:
    assert kinds("@x @`A b` @'q' @@session.sql_mode @@Time_Zone @a.b") == [
        ("uservar", "x"),
        ("uservar", "a b"),
        ("uservar", "q"),
        ("sysvar", "session.sql_mode"),
        ("sysvar", "time_zone"),
        ("uservar", "a.b"),
    ]


def test_identifiers_may_start_with_digits() -> None:
    assert kinds("SELECT 1abc, 1e5, 12") == [
        ("word", "SELECT"),
        ("word", "1ABC"),
        ("op", ","),
        ("number", "1e5"),
        ("op", ","),
        ("number", "12"),
    ]


def test_comments_are_dropped_and_double_dash_needs_a_space() -> None:
    assert kinds("SELECT 1 -- x\n, 2 # y\n, 3 /* z */") == kinds("SELECT 1, 2, 3")
    assert kinds("SELECT 1--1") == [
        ("word", "SELECT"),
        ("number", "1"),
        ("op", "-"),
        ("op", "-"),
        ("number", "1"),
    ]


def test_a_nul_byte_ends_a_line_comment() -> None:
    # MariaDB's lexer stops a -- or # comment at NUL as well as at newline.
    assert kinds("SELECT 1 -- a\x00, 2")[-1] == ("number", "2")
    assert kinds("SELECT 1 # a\x00, 2")[-1] == ("number", "2")


def test_executable_comments_are_code() -> None:
    assert kinds("/*!40101 SET NAMES utf8 */") == kinds("SET NAMES utf8")
    assert kinds("/*M!100100 SET @x=1 */") == kinds("SET @x=1")
    assert kinds("/*!SET @x=1*/") == kinds("SET @x=1")
    assert kinds("SELECT 1 /*!, 2 */, 3") == kinds("SELECT 1, 2, 3")
    # a string inside may contain */
    assert kinds("/*!40101 SET @a = '*/' */") == kinds("SET @a = '*/'")
    # outside an executable comment */ is just operators
    assert kinds("SELECT 2*/1") == kinds("SELECT 2 * / 1")


def test_quoting_modes() -> None:
    sql = 'SELECT "a\\" ; SET @x=1; -- "'
    assert [k for k, _ in kinds(sql)] == ["word", "string"]
    assert kinds(sql, ANSI_QUOTES)[1] == ("qident", "a\\")
    sql = "SELECT 'a\\'; SET @x=1; -- '"
    assert [k for k, _ in kinds(sql)] == ["word", "string"]
    assert kinds(sql, NO_BACKSLASH_ESCAPES)[1] == ("string", "a\\")
    # backticks never take backslash escapes
    assert kinds("SELECT `a\\`")[1] == ("qident", "a\\")


def test_problems_are_reported() -> None:
    assert tokenize("SELECT 'abc").problems == [(7, "unterminated quoted string or identifier")]
    assert tokenize("SELECT 1 /* abc").problems == [(9, "unterminated comment")]
    assert tokenize("/*!40101 SET @x = 1").problems == [(0, "unterminated executable comment")]
    assert tokenize("SELECT 'a' /* b */ `c`").problems == []


def test_split_statements() -> None:
    text = "SELECT 1; ;SELECT ';' ; /*!40101 SET @x=1 */;"
    stmts = split_statements(tokenize(text).tokens, len(text))
    assert [[t.value for t in s.tokens] for s in stmts] == [
        ["SELECT", "1"],
        ["SELECT", ";"],
        ["SET", "x", "=", "1"],
    ]
    # the empty statement after the first ";" belongs to nothing: skip it
    assert stmts[0].next_start == text.index("; ;") + 3

    assert stmts[-1].next_start == len(text)


def test_unescape() -> None:
    assert unescape("a\\nb\\tc\\\\d\\'e''f\\%", "'", True) == "a\nb\tc\\d'e'f\\%"
    assert unescape("a\\nb''c", "'", False) == "a\\nb'c"


def test_decode() -> None:
    assert decode("x") == "x"
    assert decode("é".encode()) == "é"
    assert decode(b"\xff") == "\xff"


GATE_CLEAN = [
    "SELECT 1",
    "select * from t where id = 5",
    "  (SELECT a FROM t) UNION (SELECT b FROM u)",
    "INSERT INTO t (a, b) VALUES (1, 'x')",
    "UPDATE t SET a = 1 WHERE b = 2",
    "DELETE FROM t WHERE id IN (1, 2, 3)",
    "REPLACE INTO t VALUES (1)",
    "WITH c AS (SELECT 1) SELECT * FROM c",
    "SELECT 1;",
    "SELECT 1 ; \n",
    "SELECT * FROM t WHERE email = 'bob@example.com'",
    "SELECT * FROM t WHERE note = 'a; b'",
    "/* app=shop */ SELECT 1",
    "SELECT 1 -- @x := 1",
    "SELECT 1 # GET_LOCK",
    "SELECT `@weird` FROM t",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "SELECT * FROM t FOR UPDATE",
    # one string literal when backslash escapes are on (the default)
    "SELECT 'a\\'; SET @x=1; -- '",
    'SELECT "a\\" ; SET @x=1; -- "',
    b"SELECT 1",
    b"SELECT * FROM t WHERE name = '\xc3\xa9@x'",
]

GATE_UNSURE = [
    "SET NAMES utf8mb4",
    "COMMIT",
    "SELECT @x",
    "SELECT @@sql_mode",
    "SELECT 1; SELECT 2",
    "SELECT GET_LOCK('a', 1)",
    "SELECT RELEASE_ALL_LOCKS()",
    "SELECT SQL_CALC_FOUND_ROWS * FROM t",
    "SELECT FOUND_ROWS()",
    "SELECT LAST_INSERT_ID()",
    "SELECT ROW_COUNT()",
    "SELECT LASTVAL(s)",
    "SELECT PREVIOUS VALUE FOR s",
    "SELECT 1 /*!, @x := 1 */",
    "SELECT 1 /*M!, @x := 1 */",
    "SELECT 1 --@x",
    "SELECT 'unterminated @x",
    "SELECTED @x",
    "CALL p()",
    "SHOW WARNINGS",
    "HANDLER t OPEN",
    b"SET @x = 1",
]


@pytest.mark.parametrize("sql", GATE_CLEAN)
def test_gate_clean(sql: str | bytes) -> None:
    assert is_clean(sql)


@pytest.mark.parametrize("sql", GATE_UNSURE)
def test_gate_unsure(sql: str | bytes) -> None:
    assert not is_clean(sql)


def test_gate_follows_the_quoting_mode() -> None:
    nbe_trap = "SELECT 'a\\'; SET @x=1; -- '"
    assert not is_clean(nbe_trap, NO_BACKSLASH_ESCAPES)
    ansi_trap = 'SELECT "a\\" ; SET @x=1; -- "'
    assert not is_clean(ansi_trap, ANSI_QUOTES)
    assert is_clean(ansi_trap, 0)
    assert is_clean('SELECT "a@b" FROM t', ANSI_QUOTES)
