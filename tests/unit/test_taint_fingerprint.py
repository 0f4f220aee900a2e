"""Fingerprint tests."""

from __future__ import annotations

import pytest

from tainted_proxy.taint import fingerprint

CASES = [
    ("SELECT 1", "SELECT ?"),
    ("select  *\n from t\twhere id=5", "SELECT * FROM t WHERE id = ?"),
    ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (...)"),
    ("SELECT * FROM t WHERE id in ('a','b')", "SELECT * FROM t WHERE id IN (...)"),
    (
        "SELECT * FROM t WHERE id IN (SELECT a FROM u)",
        "SELECT * FROM t WHERE id IN (SELECT a FROM u)",
    ),
    ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')", "INSERT INTO t(a, b) VALUES (...)"),
    ("INSERT INTO t VALUES (1, NULL)", "INSERT INTO t VALUES (...)"),
    ("SELECT a FROM t WHERE b = -1", "SELECT a FROM t WHERE b = ?"),
    ("SELECT a - 1 FROM t", "SELECT a - ? FROM t"),
    ("SELECT _utf8mb4'x', N'y', X'0F', 0x1F, b'1'", "SELECT ?, ?, ?, ?, ?"),
    ("SELECT 'a' 'b'", "SELECT ?"),
    ("SELECT NULL, TRUE, false", "SELECT NULL, TRUE, FALSE"),
    ("SELECT count(*) FROM `Orders` o", "SELECT COUNT(*) FROM `Orders` o"),
    ("SELECT /* hi */ 1 -- there", "SELECT ?"),
    ("/*!40101 SET NAMES utf8 */", "SET NAMES utf8"),
    ("SET @X = 1, @@SESSION.Time_Zone = '+00:00'", "SET @x = ?, @@session.time_zone = ?"),
    ("SELECT 1; SELECT 2;", "SELECT ?; SELECT ?"),
    ("SELECT get_lock('a', 10)", "SELECT GET_LOCK(?, ?)"),
    ("UPDATE t SET a = a + 1 WHERE id = 9", "UPDATE t SET a = a + ? WHERE id = ?"),
    (
        "SELECT t.a, u.b FROM t JOIN u ON t.id = u.id",
        "SELECT t.a, u.b FROM t JOIN u ON t.id = u.id",
    ),
]


@pytest.mark.parametrize(("sql", "fp"), CASES)
def test_fingerprint(sql: str, fp: str) -> None:
    assert fingerprint(sql) == fp


def test_same_shape_same_fingerprint() -> None:
    a = fingerprint("SELECT * FROM users WHERE id = 1 AND name = 'bob'")
    b = fingerprint("select *   from users where id=2 and name='alice'")
    assert a == b
    assert fingerprint(b"SELECT 1") == fingerprint("SELECT 2")


def test_quoting_mode() -> None:
    assert fingerprint('SELECT "a" FROM t') == "SELECT ? FROM t"
    assert fingerprint('SELECT "a" FROM t', ansi_quotes=True) == 'SELECT "a" FROM t'
