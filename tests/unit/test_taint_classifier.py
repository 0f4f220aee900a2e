"""Classifier details beyond the effects table: pins, values, names, cache."""

from __future__ import annotations

import pytest

from tainted_proxy.taint import (
    PIN_REASONS,
    Classification,
    Effect,
    classifier,
    classify,
    classify_flags,
    crosscheck,
    flags_from_status,
    rules,
)
from tainted_proxy.taint.classifier import analyse
from tainted_proxy.taint.effects import clean_classification

PINS = [
    ("SET NAMES utf8mb4", None),
    ("SET autocommit=0", None),
    ("SET GLOBAL x = 1", None),
    ("USE db", None),
    ("BEGIN", None),
    ("COMMIT", None),
    ("SAVEPOINT s", None),
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "one-shot SET TRANSACTION (until the next transaction)",
    ),
    ("SET @x = 1", "user variable"),
    ("SELECT 1 INTO @x", "user variable"),
    ("CREATE TEMPORARY TABLE t (a int)", "temporary table"),
    ("DROP TEMPORARY TABLE t", None),
    ("SELECT GET_LOCK('a', 1)", "advisory lock (GET_LOCK)"),
    ("SELECT RELEASE_LOCK('a')", None),
    ("LOCK TABLES t READ", "table lock (LOCK TABLES)"),
    ("FLUSH TABLES WITH READ LOCK", "global read lock (FLUSH TABLES WITH READ LOCK)"),
    ("FLUSH TABLES t FOR EXPORT", "table lock (FLUSH TABLES ... FOR EXPORT)"),
    ("BACKUP STAGE START", "backup lock (BACKUP STAGE / BACKUP LOCK / LOCK INSTANCE)"),
    ("UNLOCK TABLES", None),
    ("XA START 'x'", "XA transaction"),
    ("XA END 'x'", "XA transaction"),
    ("XA PREPARE 'x'", "XA transaction"),
    ("XA COMMIT 'x'", None),
    ("XA ROLLBACK 'x'", None),
    ("PREPARE s FROM 'SELECT 1'", "prepared statement (PREPARE)"),
    ("DEALLOCATE PREPARE s", None),
    ("EXECUTE s", "prepared statement (EXECUTE)"),
    ("EXECUTE IMMEDIATE @q", "dynamic SQL (EXECUTE IMMEDIATE)"),
    ("HANDLER t OPEN", "open HANDLER"),
    ("HANDLER t READ FIRST", "open HANDLER"),
    ("HANDLER t CLOSE", None),
    ("CALL p()", "stored procedure (CALL)"),
    ("BEGIN NOT ATOMIC SELECT 1", "compound statement (BEGIN NOT ATOMIC)"),
    # the proxy reads FOUND_ROWS() / LAST_INSERT_ID() back before the connection goes
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t", None),
    ("SELECT FOUND_ROWS()", None),
    ("SELECT LAST_INSERT_ID()", None),
    ("SELECT LAST_INSERT_ID(5)", None),
    ("DO LAST_INSERT_ID(5)", None),
    # in INSERT/UPDATE the OK packet reports the value: the proxy can answer
    ("UPDATE seq SET id = LAST_INSERT_ID(id + 1)", None),
    ("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)", None),
    ("SELECT ROW_COUNT()", None),
    ("SHOW WARNINGS", None),
    ("SET session_track_schema = OFF", "session tracking changed (session_track_*)"),
    ("SET ROLE r", "current role (SET ROLE)"),
    ("SET insert_id = 5", "one-shot insert id (SET insert_id / last_insert_id)"),
    ("FOO", "unclassified statement"),
    ("SELECT 1; FOO; SET @x = 1", "unclassified statement"),
    ("SELECT GET_LOCK('a', 1); SET @x = 1", "advisory lock (GET_LOCK)"),
]


@pytest.mark.parametrize(("sql", "pin"), PINS)
def test_pin(sql: str, pin: str | None) -> None:
    assert classify(sql).pin == pin


def test_effect_names_are_plain_strings() -> None:
    c = classify("SET @x = 1; SELECT FOUND_ROWS()")
    assert all(type(e) is str for e in c.effects | c.needs)


def test_every_pin_reason_is_documented_stable_text() -> None:
    for effect, reason in PIN_REASONS.items():
        assert effect in {e.value for e in Effect}
        assert reason and reason == reason.strip()


NEEDS = [
    ("SELECT FOUND_ROWS()", {"found_rows"}),
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t", set()),
    ("SELECT LAST_INSERT_ID()", {"last_insert_id"}),
    ("SELECT LAST_INSERT_ID(7)", set()),
    ("INSERT INTO c VALUES (LAST_INSERT_ID(), 1)", {"last_insert_id"}),
    ("SELECT @@identity", {"last_insert_id"}),
    ("SELECT ROW_COUNT()", {"row_count"}),
    ("SELECT LASTVAL(s), PREVIOUS VALUE FOR s", {"lastval"}),
    ("SHOW WARNINGS", {"warnings"}),
    ("SHOW COUNT(*) ERRORS", {"warnings"}),
    ("SELECT @@warning_count", {"warnings"}),
    ("GET DIAGNOSTICS @n = NUMBER", {"warnings"}),
    ("SELECT 1", set()),
]


@pytest.mark.parametrize(("sql", "needs"), NEEDS)
def test_needs(sql: str, needs: set[str]) -> None:
    assert classify(sql).needs == needs


USER_VARS = [
    ("SET @x = 1", {"x": "1"}),
    ("SET @x := 'a b'", {"x": "'a b'"}),
    ("SET @X = NULL", {"x": "NULL"}),
    ("SET @x = -5", {"x": "-5"}),
    ("SET @x = _utf8mb4'z'", {"x": "_utf8mb4'z'"}),
    ("SET @x = X'0F'", {"x": "X'0F'"}),
    ("SET @x = TRUE", {"x": "TRUE"}),
    ("SET @x = 1 + 1", {"x": None}),
    ("SET @x = @@sql_mode", {"x": None}),
    ("SET @`My Var` = 2, @b = 'q'", {"my var": "2", "b": "'q'"}),
    ("SELECT @y := 1", {"y": None}),
    ("SELECT a, b INTO @a, @b FROM t", {"a": None, "b": None}),
    ("CALL p(@out, 1)", {"out": None}),
    ("SET @x = @y := 2", {"x": None, "y": None}),
]


@pytest.mark.parametrize(("sql", "values"), USER_VARS)
def test_user_var_values(sql: str, values: dict[str, str | None]) -> None:
    assert dict(classify(sql).user_vars) == values


def test_next_tx_characteristics() -> None:
    c = classify("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    assert dict(c.next_tx) == {"tx_isolation": "SERIALIZABLE"} and not c.settings
    c = classify("SET TRANSACTION READ ONLY, ISOLATION LEVEL READ COMMITTED")
    assert dict(c.next_tx) == {"tx_read_only": "ON", "tx_isolation": "READ-COMMITTED"}
    # with a scope it is a session setting, not a one-shot
    c = classify("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    assert not c.next_tx and dict(c.settings) == {"tx_isolation": "SERIALIZABLE"}


def test_set_statement_variables_are_reported_not_settings() -> None:
    c = classify("SET STATEMENT max_statement_time=10, @@sql_mode='' FOR SELECT * FROM t")
    assert c.statement_vars == {"max_statement_time", "sql_mode"}
    assert not c.settings and not c.effects
    c = classify("SET STATEMENT transaction_isolation='SERIALIZABLE' FOR SET @x = 1")
    assert c.statement_vars == {"tx_isolation"} and c.effects == {"user_var"}
    # the FOR inside the value expression is not the statement's FOR
    c = classify("SET STATEMENT x = SUBSTRING('abc' FROM 1 FOR 2) FOR SELECT 1")
    assert c.statement_vars == {"x"} and not c.effects


OBJECTS = [
    ("CREATE TEMPORARY TABLE IF NOT EXISTS db.t1 (a INT)", [("temp_table", "db.t1")]),
    (
        "DROP TEMPORARY TABLE IF EXISTS t1, `t 2`",
        [("temp_table_drop", "t1"), ("temp_table_drop", "t 2")],
    ),
    ("DROP TABLE t1", [("drop_table", "t1")]),
    ("PREPARE s1 FROM 'SELECT 1'", [("prepare", "s1")]),
    ("DEALLOCATE PREPARE s1", [("deallocate", "s1")]),
    ("DROP PREPARE s1", [("deallocate", "s1")]),
    ("EXECUTE s1 USING @a", [("execute", "s1")]),
    ("HANDLER t OPEN AS h", [("handler_open", "h")]),
    ("HANDLER h READ NEXT", [("handler_read", "h")]),
    ("HANDLER h CLOSE", [("handler_close", "h")]),
    (
        "SELECT GET_LOCK('job', 1), GET_LOCK(@n, 1)",
        [("advisory_lock", "job"), ("advisory_lock", None)],
    ),
    ("DO RELEASE_LOCK('job')", [("advisory_unlock", "job")]),
    ("SELECT RELEASE_ALL_LOCKS()", [("advisory_unlock_all", None)]),
    ("USE `Shop`", [("schema", "Shop")]),
    ("XA START 'x1'", [("xa_start", "x1")]),
    ("XA COMMIT 'x1' ONE PHASE", [("xa_commit", "x1")]),
    ("XA RECOVER", [("xa_recover", None)]),
    ("SAVEPOINT sp1", [("savepoint", "sp1")]),
    ("ROLLBACK TO SAVEPOINT sp1", [("rollback_to", "sp1")]),
    ("RELEASE SAVEPOINT sp1", [("release_savepoint", "sp1")]),
    (
        "CREATE TEMPORARY TABLE a (x int); DROP TEMPORARY TABLE a",
        [("temp_table", "a"), ("temp_table_drop", "a")],
    ),
]


@pytest.mark.parametrize(("sql", "objects"), OBJECTS)
def test_objects(sql: str, objects: list[tuple[str, str | None]]) -> None:
    assert list(classify(sql).objects) == objects


EMULABLE = [
    ("SELECT LAST_INSERT_ID()", ("last_insert_id", "LAST_INSERT_ID()")),
    ("select last_insert_id()", ("last_insert_id", "last_insert_id()")),
    ("SELECT LAST_INSERT_ID() AS id", ("last_insert_id", "id")),
    ("SELECT LAST_INSERT_ID() `new id`", ("last_insert_id", "new id")),
    ("SELECT LAST_INSERT_ID();", ("last_insert_id", "LAST_INSERT_ID()")),
    ("SELECT @@IDENTITY", ("last_insert_id", "@@IDENTITY")),
    ("SELECT @@session.last_insert_id AS x", ("last_insert_id", "x")),
    ("SELECT ROW_COUNT()", ("row_count", "ROW_COUNT()")),
    ("SELECT FOUND_ROWS() AS 'total'", ("found_rows", "total")),
    ("SELECT LAST_INSERT_ID() + 1", None),
    ("SELECT LAST_INSERT_ID(), 1", None),
    ("SELECT LAST_INSERT_ID(5)", None),
    ("SELECT LAST_INSERT_ID() FROM t", None),
    ("SELECT ROW_COUNT(); SELECT 1", None),
    ("INSERT INTO t VALUES (LAST_INSERT_ID())", None),
]


@pytest.mark.parametrize(("sql", "expected"), EMULABLE)
def test_emulable(sql: str, expected: tuple[str, str] | None) -> None:
    assert classify(sql).emulable == expected


def test_statement_count() -> None:
    assert classify("SELECT 1").statements == 1
    assert classify("SELECT 1; SELECT 2;").statements == 2
    assert classify("SET NAMES utf8; SET @x = 1; SELECT 3").statements == 3
    assert classify("SET sql_mode = CONCAT(@@sql_mode, ''); SELECT 1; SELECT 2").statements == 3


# ---------------------------------------------------------- quoting modes

ANSI_TRAP = 'SELECT "a\\" ; SET @x=1; -- "'
NBE_TRAP = "SELECT 'a\\'; SET @x=1; -- '"


def test_ansi_quotes_changes_what_is_code() -> None:
    assert classify(ANSI_TRAP).effects == frozenset()
    assert classify(ANSI_TRAP, ansi_quotes=True).effects == {"user_var"}
    # under ANSI_QUOTES, "..." is an identifier: still not code
    assert classify('SELECT "GET_LOCK(1)" FROM t', ansi_quotes=True).effects == frozenset()
    assert classify('SELECT 1 AS "@x := 1"', ansi_quotes=True).effects == frozenset()


def test_no_backslash_escapes_changes_what_is_code() -> None:
    assert classify(NBE_TRAP).effects == frozenset()
    assert classify(NBE_TRAP, no_backslash_escapes=True).effects == {"user_var"}
    assert classify(NBE_TRAP.encode(), no_backslash_escapes=True).effects == {"user_var"}


def test_flags_from_status() -> None:
    assert flags_from_status(0x0002) == 0
    assert flags_from_status(0x8002) == 1
    assert flags_from_status(0x0202) == 2
    assert flags_from_status(0x8202) == 3
    assert classify_flags(NBE_TRAP, flags_from_status(0x0202)).effects == {"user_var"}  # type: ignore[union-attr]


# ---------------------------------------------------------------- cache


def test_cache_returns_the_same_object_and_gate_results_are_not_cached() -> None:
    classifier.cache_clear()
    a = classify("SET NAMES utf8mb4")
    assert classify("SET NAMES utf8mb4") is a
    assert classifier.cache_len() == 1
    assert classify_flags("SELECT * FROM t WHERE id = 1") is None
    c = classify("SELECT * FROM t WHERE id = 1")
    assert c.clean and c.fingerprint == "SELECT * FROM t WHERE id = ?"
    assert classifier.cache_len() == 1
    # flags are part of the key
    assert classify(ANSI_TRAP).effects != classify(ANSI_TRAP, ansi_quotes=True).effects


def test_cache_is_bounded_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    classifier.cache_clear()
    monkeypatch.setattr(classifier, "CACHE_SIZE", 3)
    a = classify("SET @a = 1")
    classify("SET @b = 1")
    classify("SET @c = 1")
    assert classify("SET @a = 1") is a  # touch: a is now most recent
    classify("SET @d = 1")  # evicts b, the least recently used
    assert classifier.cache_len() == 3
    assert classify("SET @a = 1") is a
    assert "SET @b = 1" not in classifier._caches[0]
    classifier.cache_clear()


def test_cache_is_bounded_by_bytes_so_long_statements_cannot_fill_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    classifier.cache_clear()
    texts = [f"SET @v{i} = '{'x' * 5000}'".encode() for i in range(5)]
    cost = classifier.entry_cost(texts[0], classifier.analyse(texts[0]))
    # the text, its fingerprint's allowance, the 5,002-character value, the overhead
    assert cost > 2 * 5000 + 5000 + classifier.ENTRY_OVERHEAD
    monkeypatch.setattr(classifier, "CACHE_BYTES", 3 * cost + 100)
    monkeypatch.setattr(classifier, "CACHE_ENTRY_MAX", 2 * cost)
    for t in texts:
        assert classify_flags(t).effects == {"user_var"}  # type: ignore[union-attr]
    # three fit in the bytes, the oldest two went
    assert classifier.cache_len() == 3
    assert classifier.cache_bytes() == 3 * cost
    assert texts[1] not in classifier._caches[0] and texts[4] in classifier._caches[0]
    # an entry that alone would cost over CACHE_ENTRY_MAX is analysed, not kept
    huge = b"SET @big = '" + b"y" * 20_000 + b"'"
    assert classify_flags(huge).effects == {"user_var"}  # type: ignore[union-attr]
    assert huge not in classifier._caches[0] and classifier.cache_len() == 3
    classifier.cache_clear()
    assert classifier.cache_bytes() == 0


def test_a_value_outside_latin1_counts_four_bytes_a_character() -> None:
    ascii_text, wide_text = (
        b"SET @v = '" + b"a" * 5000 + b"'",
        "SET @v = '\U0001f600" + "a" * 4999 + "'",
    )
    a = classifier.entry_cost(ascii_text, classifier.analyse(ascii_text))
    w = classifier.entry_cost(wide_text.encode(), classifier.analyse(wide_text.encode()))
    assert w - a > 3 * 5000


def test_a_batch_asks_sqlglot_only_about_statements_the_gate_cannot_clear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    real = classifier._second_opinion
    monkeypatch.setattr(
        classifier, "_second_opinion", lambda sql, acc: (asked.append(sql), real(sql, acc))
    )
    batch = ";".join(f"INSERT INTO t (a) VALUES ({i})" for i in range(50))
    c = classifier.analyse(batch + "; SELECT a FROM t WHERE b = @x")
    assert c.statements == 51 and not c.effects
    # the 50 INSERTs are gate-clean on their own: one parse, for the SELECT
    assert asked == ["SELECT a FROM t WHERE b = @x"]
    # a text of one statement got past the gate already: its parse is not skipped
    asked.clear()
    classifier.analyse("INSERT INTO t (a) VALUES (1)")
    assert asked == ["INSERT INTO t (a) VALUES (1)"]


def test_a_text_over_the_analysis_limit_that_the_gate_cannot_clear_counts_as_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert classifier.ANALYSE_MAX == 8 * 1024 * 1024
    monkeypatch.setattr(classifier, "ANALYSE_MAX", 1000)
    expr = "+".join(str(i) for i in range(300))
    c = classifier.analyse(f"SELECT {expr} INTO @x")
    assert c.effects == {"unknown"} and c.pin == "unclassified statement"
    assert c.unknown_reason is not None and "over the 1,000 analysed" in c.unknown_reason
    # a text the gate clears is not analysed at all, whatever its length
    assert classify_flags(f"SELECT {expr} FROM t") is None


def test_bytes_like_inputs() -> None:
    assert classify(bytearray(b"SET @x = 1")).effects == {"user_var"}
    assert classify(memoryview(b"SET @x = 1")).effects == {"user_var"}
    # not valid UTF-8: read as Latin-1, still classified
    c = classify(b"SET @x = '\xff\xfe'; SET NAMES latin1")
    assert c.effects == {"user_var", "settings"}


def test_classification_is_immutable_and_fingerprint_lazy() -> None:
    c = classify("SET time_zone = '+01:00'")
    with pytest.raises(TypeError):
        c.settings["time_zone"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        c.pin = "x"  # type: ignore[misc]
    assert c.fingerprint == "SET time_zone = ?"
    assert c.fingerprint is c.fingerprint
    d = c.as_dict()
    assert d["effects"] == ["settings"] and d["settings"] == {"time_zone": "+01:00"}


def test_fast_clean_equals_constructor() -> None:
    assert clean_classification("SELECT 1", 2) == Classification(sql="SELECT 1", flags=2)


# ---------------------------------------------------- the sqlglot opinion


def test_crosscheck_findings() -> None:
    assert (Effect.USER_VAR, "pin") in crosscheck.findings("SELECT @x := 1")
    assert (Effect.USER_VAR, "pin") in crosscheck.findings("SELECT 1 INTO @z")
    assert (Effect.ADVISORY_LOCK, "pin") in crosscheck.findings("SELECT GET_LOCK('a', 1)")
    assert (Effect.FOUND_ROWS, "pin") in crosscheck.findings("SELECT SQL_CALC_FOUND_ROWS a FROM t")
    assert (Effect.LAST_INSERT_ID, "needs") in crosscheck.findings("SELECT LAST_INSERT_ID()")
    assert crosscheck.findings("SELECT a FROM t WHERE b = @x") == []
    assert crosscheck.findings("XA START 'x'") == []  # sqlglot cannot parse it: no opinion


def test_crosscheck_adds_what_the_rules_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a rule bug: the token rules forget GET_LOCK.
    funcs = dict(rules.FUNCTIONS)
    del funcs["GET_LOCK"]
    monkeypatch.setattr(rules, "FUNCTIONS", funcs)
    sql = "SELECT GET_LOCK('crosscheck-test', 1) + 0"
    assert analyse(sql).effects == {"advisory_lock"}
    monkeypatch.setattr(classifier, "SQLGLOT_CROSSCHECK", False)
    assert analyse(sql).effects == frozenset()


def test_sqlglot_is_never_trusted_for_the_traps() -> None:
    # sqlglot gives both the same AST; the tokens decide.
    assert classify("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE").effects == {"settings"}
    assert classify("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").effects == {"next_tx"}
    # sqlglot raises on these / turns them into Command
    assert classify("XA START 'x'").effects == {"xa"}
    assert classify("HANDLER t OPEN").effects == {"handler"}
    assert classify("LOCK TABLES t WRITE").effects >= {"table_lock"}
    assert classify("PREPARE s FROM 'SELECT 1'").effects == {"prepare"}
    assert classify("SET STATEMENT max_statement_time=1 FOR SELECT 1").effects == frozenset()
