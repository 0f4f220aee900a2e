"""Property tests: text inside a literal, identifier or comment is never code.

Whatever statement text hypothesis puts inside a string literal (properly
escaped for the quoting mode), a quoted identifier or a comment, it must
never create an effect; and the lexical gate must never call a statement
clean that the full classifier finds effects in.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tainted_proxy.taint import classify
from tainted_proxy.taint.classifier import analyse
from tainted_proxy.taint.gate import is_clean
from tainted_proxy.taint.lexer import tokenize

# Fragments that make dangerous statements when they escape their literal.
FRAGMENTS = [
    "SET NAMES utf8",
    "SET @x = 1",
    "@x := 1",
    "SELECT GET_LOCK('a', 1)",
    " GET_LOCK(",
    "LOCK TABLES t WRITE",
    "CREATE TEMPORARY TABLE t (a int)",
    "SQL_CALC_FOUND_ROWS",
    "LAST_INSERT_ID(",
    "INTO @v",
    "XA START 'x'",
    "HANDLER t OPEN",
    "CALL p()",
    "BEGIN",
    "USE db",
    ";",
    "'",
    '"',
    "`",
    "\\",
    "\\'",
    "''",
    '""',
    "``",
    "*/",
    "/*",
    "/*!",
    "/*!40101 ",
    "/*M!",
    "-- ",
    "--",
    "#",
    "\n",
    "\r\n",
    " ",
    "@",
    "@@",
    "(",
    ")",
    ",",
    "=",
]

sqlish = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=10).map("".join),
)

FLAGS = st.sampled_from([(False, False), (True, False), (False, True), (True, True)])

# TAINT_PROPERTY_EXAMPLES=5000 for a long run; the default keeps the suite fast.
SETTINGS = settings(
    max_examples=int(os.environ.get("TAINT_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def single_quoted(text: str, no_backslash_escapes: bool) -> str:
    if not no_backslash_escapes:
        text = text.replace("\\", "\\\\")
    return "'" + text.replace("'", "''") + "'"


def double_quoted(text: str, ansi: bool, no_backslash_escapes: bool) -> str:
    if not (ansi or no_backslash_escapes):
        text = text.replace("\\", "\\\\")
    return '"' + text.replace('"', '""') + '"'


def backticked(text: str) -> str:
    return "`" + text.replace("`", "``") + "`"


@SETTINGS
@given(sqlish, FLAGS)
def test_text_in_a_string_literal_has_no_effect(text: str, flags: tuple[bool, bool]) -> None:
    ansi, nbe = flags
    for sql in (
        f"SELECT {single_quoted(text, nbe)}",
        f"SELECT * FROM t WHERE a = {single_quoted(text, nbe)} AND b = 1",
        f"INSERT INTO t (a) VALUES ({single_quoted(text, nbe)})",
        f"SELECT {double_quoted(text, ansi, nbe)}",
        f"SELECT a AS {backticked(text)} FROM {backticked(text)}",
    ):
        c = classify(sql, ansi_quotes=ansi, no_backslash_escapes=nbe)
        assert c.effects == frozenset(), (sql, c.unknown_reason)
        assert c.pin is None
        c = classify(sql.encode(), ansi_quotes=ansi, no_backslash_escapes=nbe)
        assert c.effects == frozenset(), sql


@SETTINGS
@given(sqlish, FLAGS)
def test_text_in_a_literal_adds_nothing_to_an_effectful_statement(
    text: str, flags: tuple[bool, bool]
) -> None:
    ansi, nbe = flags
    lit = single_quoted(text, nbe)
    c = classify(f"SET time_zone = {lit}", ansi_quotes=ansi, no_backslash_escapes=nbe)
    assert c.effects == {"settings"}
    assert dict(c.settings) == {"time_zone": text}
    c = classify(f"SET @v = {lit}", ansi_quotes=ansi, no_backslash_escapes=nbe)
    assert c.effects == {"user_var"} and c.user_vars["v"] == lit


@SETTINGS
@given(sqlish)
def test_text_in_a_comment_has_no_effect(text: str) -> None:
    block = text.replace("*/", "* /")
    line = text.replace("\n", " ").replace("\r", " ").replace("\x00", " ")  # NUL ends it
    for sql in (
        f"SELECT 1 /* {block} */",
        f"/* {block} */ SELECT 1",
        f"SELECT /*{block}*/ 1 FROM t",
        f"SELECT 1 -- {line}",
        f"SELECT 1 # {line}",
        f"SELECT 1 #{line}\nFROM t",
    ):
        if block.startswith(("!", "M!", "m!")) and "/*" + block in sql:
            continue  # /*!… is an executable comment, not a comment
        c = classify(sql)
        assert c.effects == frozenset(), (sql, c.unknown_reason)


@SETTINGS
@given(
    st.sampled_from(
        [
            "SELECT ",
            "INSERT INTO t ",
            "UPDATE t SET a = ",
            "DELETE FROM t WHERE ",
            "(SELECT ",
            "WITH ",
            "/* c */ SELECT ",
            "-- c\nSELECT ",
            "# c\n(SELECT ",
            "'x' SELECT ",
        ]
    ),
    sqlish,
    FLAGS,
)
def test_the_gate_never_calls_an_effect_clean(
    head: str, tail: str, flags: tuple[bool, bool]
) -> None:
    ansi, nbe = flags
    f = int(ansi) | (int(nbe) << 1)
    sql = head + tail
    if is_clean(sql, f):
        a = analyse(sql, f)
        if tokenize(sql, f).problems:
            # an unterminated construct: the server rejects the statement
            assert a.effects <= {"unknown"}, sql
        else:
            assert a.effects == frozenset(), (sql, a.unknown_reason)


@SETTINGS
@given(sqlish, FLAGS)
def test_lexer_tokens_are_ordered_and_within_the_text(text: str, flags: tuple[bool, bool]) -> None:
    f = int(flags[0]) | (int(flags[1]) << 1)
    last = 0
    for t in tokenize(text, f).tokens:
        assert last <= t.start < t.end <= len(text)
        last = t.end


@SETTINGS
@given(st.integers(), st.text(max_size=30), st.lists(st.integers(), min_size=1, max_size=8))
def test_fingerprint_ignores_literal_values(n: int, s: str, ids: list[int]) -> None:
    from tainted_proxy.taint import fingerprint

    lit = single_quoted(s, False)
    sql = f"SELECT * FROM t WHERE a = {n} AND b = {lit} AND id IN ({', '.join(map(str, ids))})"
    assert fingerprint(sql) == "SELECT * FROM t WHERE a = ? AND b = ? AND id IN (...)"
