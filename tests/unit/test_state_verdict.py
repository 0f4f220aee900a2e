"""state.verdict: what the proxy does with one statement, per pool mode, decided by the
same rules the proxy runs (Pins, carried_user_vars, opens_transaction)."""

from __future__ import annotations

import pytest

from tainted_proxy.state import pins as pinreasons
from tainted_proxy.state.pins import Pins
from tainted_proxy.state.settings import UNKEYABLE, carried_user_vars
from tainted_proxy.state.verdict import (
    MODES,
    UNTIL_COMMIT,
    UNTIL_COMMIT_AUTOCOMMIT_OFF,
    UNTIL_SESSION_ENDS,
    Verdict,
    opens_transaction,
    statement_mode_refusal,
    verdict,
)
from tainted_proxy.taint import PIN_REASONS, Effect, classify
from tainted_proxy.taint.classifier import classify_flags

TEMP = PIN_REASONS[Effect.TEMP_TABLE]
LOCK = PIN_REASONS[Effect.ADVISORY_LOCK]
USER_VAR = PIN_REASONS[Effect.USER_VAR]


def v(sql: str, mode: str = "transaction") -> Verdict:
    return verdict(classify(sql), sql, mode)


# -- the examples ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_literal_user_variable_is_carried_not_pinned(mode: str) -> None:
    got = v("SET @rank = 0", mode)
    assert got.pins is None and got.holds is None and got.refused is None
    assert got.carried == ("@rank",)
    assert got.kind == "carried"
    # the classifier's rule alone says it pins: the verdict says why it does not
    assert classify("SET @rank = 0").pin == USER_VAR
    assert any("carries it" in n for n in got.notes)


def test_user_variable_from_an_expression_pins_until_cleared() -> None:
    got = v("SET @x = NOW()")
    assert got.pins == USER_VAR and got.kind == "pins"
    assert got.holds == "until SET @v = NULL (or a literal) for @x"
    assert got.carried == ()


def test_autocommit_off_holds_until_commit_in_transaction_mode() -> None:
    got = v("SET autocommit=0")
    assert got.pins is None and got.refused is None
    assert got.holds == UNTIL_COMMIT_AUTOCOMMIT_OFF and got.kind == "holds"
    assert got.carried == ("autocommit",)


@pytest.mark.parametrize(
    "sql",
    ["SET autocommit=0", "SET autocommit = OFF", "SET autocommit=@v", "BEGIN", "XA START 'x'"],
)
def test_opening_a_transaction_is_refused_in_statement_mode(sql: str) -> None:
    got = v(sql, "statement")
    assert got.kind == "refused"
    assert got.refused is not None and got.refused.startswith("ERROR 1235 (42000): ")
    assert statement_mode_refusal("<user>") in got.refused
    assert got.pins is None and got.carried == () and got.holds is None


def test_begin_holds_until_commit() -> None:
    assert v("BEGIN").holds == UNTIL_COMMIT
    assert v("START TRANSACTION READ ONLY").holds == UNTIL_COMMIT
    assert v("SET autocommit=1").holds is None
    assert v("COMMIT").holds is None


def test_a_batch_that_commits_holds_nothing_but_is_still_refused_in_statement_mode() -> None:
    sql = "BEGIN; INSERT INTO t VALUES (1); COMMIT"
    assert v(sql).holds is None and v(sql).kind == "clean"
    # as the proxy does: the whole text is refused when any part opens a transaction
    assert v(sql, "statement").kind == "refused"
    assert v("INSERT INTO t VALUES (1); BEGIN").holds == UNTIL_COMMIT


def test_temporary_table_pins_until_dropped() -> None:
    for mode in ("transaction", "statement"):
        got = v("CREATE TEMPORARY TABLE t (a INT)", mode)
        assert got.pins == TEMP
        assert got.holds == "until DROP TEMPORARY TABLE t"


def test_settings_are_carried() -> None:
    got = v("SET time_zone = '+00:00'")
    assert got.pins is None and got.carried == ("time_zone",) and got.kind == "carried"
    assert v("USE shop").carried == ("schema",)
    names = v("SET NAMES utf8mb4").carried
    assert "character_set_client" in names and "collation_connection" in names


def test_advisory_lock_lifetime_names_the_lock() -> None:
    got = v("SELECT GET_LOCK('job', 10)")
    assert got.pins == LOCK and got.holds == "until RELEASE_LOCK('job')"


# -- values of the previous statement: carried or read back, never pinned -------------------


def test_nextval_resets_the_connection_before_reuse() -> None:
    got = v("SELECT NEXTVAL(s)")
    assert got.pins is None and got.kind == "resets"
    assert any("NEXTVAL" in r for r in got.resets)


@pytest.mark.parametrize(
    "sql, word",
    [
        ("SELECT LAST_INSERT_ID(5)", "LAST_INSERT_ID(expr)"),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1", "SQL_CALC_FOUND_ROWS"),
    ],
)
def test_session_values_are_read_back_not_pinned(sql: str, word: str) -> None:
    got = v(sql)
    assert got.pins is None
    assert any(word in n and "read back" in n for n in got.notes)


def test_reads_of_the_previous_statement() -> None:
    got = v("SELECT LAST_INSERT_ID()")
    assert got.pins is None and any("answered by the proxy" in n for n in got.notes)
    got = v("SELECT ROW_COUNT() + 1")
    assert got.pins is None and any("restores" in n for n in got.notes)


# -- the server's part ----------------------------------------------------------------------


def test_call_pins_only_when_the_server_reports_a_state_change() -> None:
    got = v("CALL p()")
    assert got.pins is None and got.may_pin == pinreasons.ROUTINE_STATE
    # measured: CALL p(@out) sets @out without a state change report
    got = v("CALL p(@out)")
    assert got.pins == USER_VAR and got.may_pin == pinreasons.ROUTINE_STATE


@pytest.mark.parametrize("name", ["timestamp", "insert_id", "rand_seed1"])
def test_variables_that_cannot_be_carried_pin_for_good(name: str) -> None:
    assert name in UNKEYABLE
    got = v(f"SET {name} = 5")
    assert got.pins == f"{pinreasons.UNKEYABLE_VAR} ({name})"
    assert got.holds == UNTIL_SESSION_ENDS
    assert name not in got.carried


# -- session mode -----------------------------------------------------------------------------


def test_session_mode_never_pins_and_says_what_logout_resets() -> None:
    got = v("CREATE TEMPORARY TABLE t (a INT)", "session")
    assert got.pins is None and got.holds is None and got.refused is None
    assert got.resets == ("temporary table t",) and got.kind == "resets"
    assert any(TEMP in n for n in got.notes)
    assert v("SET @rank = 0", "session").resets == ("@rank",)
    assert v("SET time_zone = '+00:00'", "session").resets == ("time_zone",)
    assert v("SELECT GET_LOCK('a', 1)", "session").resets == ("advisory lock 'a'",)
    assert v("BEGIN", "session").resets == ("the open transaction (rolled back)",)
    assert v("SET autocommit=0", "session").refused is None
    assert v("SELECT 1", "session") == Verdict("session")


def test_clean_and_gate_clean() -> None:
    for mode in MODES:
        assert verdict(None, "SELECT 1", mode) == Verdict(mode)
        assert verdict(classify_flags("SELECT * FROM t"), "SELECT * FROM t", mode).kind == "clean"


def test_unknown_mode() -> None:
    with pytest.raises(ValueError):
        verdict(None, "SELECT 1", "connection")


def test_as_dict() -> None:
    d = v("SET autocommit=0", "statement").as_dict()
    assert list(d) == [
        "mode",
        "kind",
        "pins",
        "may_pin",
        "carried",
        "holds",
        "refused",
        "resets",
        "notes",
    ]
    assert d["mode"] == "statement" and d["kind"] == "refused" and d["carried"] == []


# -- opens_transaction (the statement-mode refusal) -----------------------------------------


@pytest.mark.parametrize(
    "sql, opens",
    [
        ("BEGIN", True),
        ("START TRANSACTION", True),
        ("COMMIT AND CHAIN", True),
        ("XA START 'x'", True),
        ("SET autocommit=0", True),
        ("SET autocommit=OFF", True),
        ("SET autocommit=@v", True),
        ("SET autocommit=1", False),
        ("SET autocommit=ON", False),
        ("SET time_zone='+00:00'", False),
        ("COMMIT", False),
        ("SELECT 1", False),
    ],
)
def test_opens_transaction(sql: str, opens: bool) -> None:
    assert opens_transaction(classify(sql)) is opens


# -- consistency: the verdict's pin is what Pins gives ----------------------------------------

TABLE = [
    "SELECT 1",
    "SELECT * FROM t WHERE id = 7",
    "SET @rank = 0",
    "SET @a = 'x', @b = NULL",
    "SET @x = NOW()",
    "SELECT @x := 1",
    "SELECT a INTO @v FROM t",
    "SET @a = 'x'; SET @b = 2",
    "SET @a = 'x', time_zone = '+01:00'",
    "SET time_zone = '+00:00'",
    "SET NAMES utf8mb4",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET autocommit=0",
    "USE shop",
    "BEGIN",
    "COMMIT",
    "CREATE TEMPORARY TABLE t (a INT)",
    "DROP TEMPORARY TABLE t",
    "SELECT GET_LOCK('a', 1)",
    "SELECT RELEASE_LOCK('a')",
    "LOCK TABLES t WRITE",
    "UNLOCK TABLES",
    "FLUSH TABLES WITH READ LOCK",
    "PREPARE s FROM 'SELECT 1'",
    "PREPARE s FROM @sql",
    "EXECUTE s",
    "DEALLOCATE PREPARE s",
    "EXECUTE IMMEDIATE @sql",
    "HANDLER t OPEN",
    "XA START 'x'",
    "SELECT SQL_CALC_FOUND_ROWS * FROM t",
    "SELECT FOUND_ROWS()",
    "SELECT LAST_INSERT_ID(5)",
    "SELECT LAST_INSERT_ID()",
    "SELECT NEXTVAL(s)",
    "SHOW WARNINGS",
    "CALL p()",
    "CALL p(@out)",
    "SET ROLE r",
    "SET session_track_schema = OFF",
    "SET insert_id = 5",
    "SET GLOBAL max_connections = 10",
    "BEGIN NOT ATOMIC SELECT 1; END",
    "FROBNICATE",
]


def pins_gives(sql: str) -> str | None:
    """What state.learn.learn would leave in Pins after ``sql`` as the first
    statement of a session (no error; the state_change report the statement's effects
    imply; the server reports the variables that cannot be carried first)."""
    c = classify(sql)
    p = Pins()
    for name in c.settings:
        if name in UNKEYABLE:
            p.pin_sticky(f"{pinreasons.UNKEYABLE_VAR} ({name})")
    carried = carried_user_vars(c)
    p.after_statement(
        c,
        failed=False,
        state_changed=bool(c.effects & pinreasons._STATEFUL) and Effect.ROUTINE not in c.effects,
        carried=frozenset(n[1:] for n in carried) if carried else frozenset(),
    )
    return p.reason()


@pytest.mark.parametrize("sql", TABLE)
def test_verdict_pin_is_what_pins_gives(sql: str) -> None:
    expected = pins_gives(sql)
    for mode in ("transaction", "statement"):
        got = v(sql, mode)
        if got.refused:
            assert mode == "statement" and got.pins is None
        else:
            assert got.pins == expected, (sql, mode)
    assert v(sql, "session").pins is None


def test_the_table_covers_pins_and_non_pins() -> None:
    reasons = {pins_gives(sql) for sql in TABLE}
    assert None in reasons and len(reasons) >= 10
