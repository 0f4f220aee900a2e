"""The session's copy of the per-statement values (state.values, state.answers, the value
rules of state.learn), sans-IO: what each response teaches, what must be read back before
the connection goes, what the proxy answers, and what it restores or refuses."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tainted_proxy.state import answers
from tainted_proxy.state.learn import ResponseSummary, learn_values
from tainted_proxy.state.session import SessionState
from tainted_proxy.state.settings import EMPTY
from tainted_proxy.state.values import (
    CONDITIONS,
    FOUND_ROWS,
    INSERT_ID,
    LASTVAL,
    ROW_COUNT,
    Condition,
    Outcome,
    Values,
    diagnostics_clean_after,
    sequence_names,
)
from tainted_proxy.taint import classify
from tainted_proxy.taint.effects import Effect


def learn(v: Values, sql: str, **outcome: object) -> Values:
    c = classify(sql)
    v.learn(c if c.effects else None, sql.encode(), Outcome(**outcome))  # type: ignore[arg-type]
    return v


# -- learning -------------------------------------------------------------------------------


def test_an_ok_packet_says_row_count_and_a_result_set_says_found_rows():
    v = learn(Values(), "UPDATE t SET a = 1", affected_rows=3)
    assert (v.row_count, v.pending) == (3, set())
    learn(v, "SELECT * FROM t", resultset=True, last_resultset=True, rows=7)
    assert (v.row_count, v.found_rows, v.pending) == (-1, 7, set())


def test_an_insert_id_in_the_ok_packet_is_ambiguous_and_read_back():
    # an explicit AUTO_INCREMENT value is in the OK packet but leaves LAST_INSERT_ID()
    v = learn(Values(), "INSERT INTO t (v) VALUES (1)", affected_rows=1, insert_id=5, insert_ids=1)
    assert INSERT_ID in v.pending and v.insert_id == 0
    v.absorb([[[b"5", b"1", b"0", b"0", b"0"]]])
    assert (v.insert_id, v.pending) == (5, set())


def test_last_insert_id_expr_and_sql_calc_found_rows_are_read_back():
    assert INSERT_ID in learn(Values(), "SELECT LAST_INSERT_ID(5)", resultset=True).pending
    v = learn(Values(), "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1", resultset=True, rows=1)
    assert FOUND_ROWS in v.pending


def test_an_error_or_warnings_make_the_diagnostics_pending():
    v = learn(Values(), "INSERT INTO t VALUES (1)", error=Condition("Error", 0, ""))
    assert CONDITIONS in v.pending and (v.row_count, v.error_count) == (-1, 1)
    v.absorb([[[b"0", b"-1", b"0", b"1", b"1"]], [[b"Error", b"1062", b"Duplicate"]]])
    assert v.conditions == (Condition("Error", 1062, "Duplicate"),)
    assert v.fetch_queries() == []


@pytest.mark.parametrize(
    ("sql", "kept"),
    [("SELECT 1", True), ("DO 0", True), ("BEGIN", True), ("SELECT * FROM t", False)],
)
def test_a_statement_without_a_table_keeps_the_previous_conditions_as_mariadb_does(sql, kept):
    v = Values(conditions=(Condition("Warning", 1265, "x"),), warning_count=1)
    learn(v, sql, resultset=True, last_resultset=True)
    assert bool(v.conditions) is kept
    assert diagnostics_clean_after(False, classify(sql), sql.encode(), False, 0) is not kept


def test_nextval_reads_lastval_back_and_resets_the_connection():
    v = learn(Values(), "SELECT NEXTVAL(`s`), NEXT VALUE FOR db.q", resultset=True, rows=1)
    assert LASTVAL in v.pending and v.sequence_state
    assert v.fetch_queries()[-1] == b"SELECT PREVIOUS VALUE FOR `s`, PREVIOUS VALUE FOR db.q"
    assert sequence_names(b"SELECT nextval(a.b)") == [b"a.b"]


def test_lost_values_are_never_answered_until_learned_again():
    v = learn(Values(), "INSERT INTO t (v) VALUES (1)", affected_rows=1, insert_id=9, insert_ids=1)
    v.lose_pending()
    assert v.lost == {INSERT_ID}
    learn(v, "SELECT LAST_INSERT_ID(3)", resultset=True)
    assert v.lost == set()


# -- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "columns", "row"),
    [
        ("SELECT LAST_INSERT_ID()", ["LAST_INSERT_ID()"], [42]),
        ("select last_insert_id() AS id;", ["id"], [42]),
        ("SELECT @@identity, ROW_COUNT() n", ["@@identity", "n"], [42, 2]),
        ("SELECT FOUND_ROWS()", ["FOUND_ROWS()"], [11]),
        ("SELECT CONNECTION_ID()", ["CONNECTION_ID()"], [2_000_000_007]),
        (
            "SELECT @@warning_count, @@session.error_count",
            ["@@warning_count", "@@session.error_count"],
            [2, 1],
        ),
        ("SHOW COUNT(*) ERRORS", ["@@session.error_count"], [1]),
        ("SELECT LASTVAL(`s`)", ["LASTVAL(`s`)"], [5]),
        ("SELECT PREVIOUS VALUE FOR nope", ["PREVIOUS VALUE FOR nope"], [None]),
    ],
)
def test_plain_reads_are_answered_from_the_copy(sql, columns, row):
    v = Values(insert_id=42, row_count=2, found_rows=11, warning_count=2, error_count=1)
    v.lastvals[b"s"] = 5
    read = answers.match(sql.encode())
    assert read is not None
    assert answers.answer(read, v, 2_000_000_007) == (columns, [row])


def test_show_warnings_and_errors_with_limit():
    conds = (
        Condition("Warning", 1265, "a"),
        Condition("Error", 1062, "b"),
        Condition("Note", 1051, "c"),
    )
    v = Values(conditions=conds)
    read = answers.match(b"SHOW WARNINGS LIMIT 1, 1")
    assert read is not None and not read.select
    assert answers.answer(read, v, 1)[1] == [["Error", 1062, "b"]]
    errors = answers.match(b"show errors")
    assert errors is not None and answers.answer(errors, v, 1)[1] == [["Error", 1062, "b"]]


@pytest.mark.parametrize(
    "sql",
    ["SELECT LAST_INSERT_ID() + 0", "SELECT ROW_COUNT() FROM t", "SELECT LAST_INSERT_ID(), 1"],
)
def test_larger_statements_are_not_answered_locally(sql):
    assert answers.match(sql.encode()) is None


# -- restore ---------------------------------------------------------------------------------


def test_restore_sets_last_insert_id_and_clears_foreign_diagnostics_in_order():
    v = Values(insert_id=7, row_count=-1)
    plan = v.restore_plan(
        frozenset((Effect.LAST_INSERT_ID, Effect.WARNINGS, Effect.ROW_COUNT)),
        conn_insert_id=3,
        conn_diagnostics_clean=False,
        client_id=1,
        may_set_thread_id=True,
        best_effort=False,
    )
    assert plan == [
        b"DO (SELECT 1 FROM information_schema.CHARACTER_SETS LIMIT 0)",
        b"SET SESSION last_insert_id = 7",
        b"SELECT 1 FROM DUAL WHERE 0",
    ]


def test_restore_refuses_what_it_cannot_rebuild():
    v = Values(row_count=3)
    got = v.restore_plan(frozenset((Effect.ROW_COUNT,)), 0, True, 1, True, best_effort=False)
    assert isinstance(got, str) and "ROW_COUNT()" in got
    v = Values(conditions=(Condition("Warning", 1, "w"),), warning_count=1)
    assert isinstance(v.restore_plan(frozenset((Effect.WARNINGS,)), 0, True, 1, True, False), str)
    assert isinstance(
        Values().restore_plan(frozenset((Effect.CONNECTION_ID,)), 0, True, 1, False, False), str
    )


def test_restore_of_found_rows_uses_a_sequence_table():
    plan = Values(found_rows=12).restore_plan(
        frozenset((Effect.FOUND_ROWS,)), 0, True, 1, True, False
    )
    assert plan == [b"SELECT SQL_CALC_FOUND_ROWS 1 FROM seq_0_to_11 LIMIT 0"]


# -- ownership of a connection's values (state.learn) ---------------------------------------------


@dataclass
class Conn:
    settings: frozenset = EMPTY
    schema: str | None = None
    status: int = 2
    values_owner: tuple[int, int] | None = None
    insert_id: int | None = 0
    diagnostics_clean: bool = True
    foreign: set = field(default_factory=set)
    user_vars_of: int | None = None


def test_a_connection_holds_the_values_of_the_statement_that_ran_on_it_last():
    s = SessionState(5, mode="transaction")
    conn = Conn()
    s.next_statement()
    learn_values(s, conn, None, b"UPDATE t SET a=1", ResponseSummary(affected_rows=1))
    assert conn.values_owner == (5, 1)
    s.next_statement()
    assert s.owns_values_of(conn)  # the next statement may read them there
    s.next_statement()
    assert not s.owns_values_of(conn)  # a statement the proxy answered came in between


def test_an_ambiguous_insert_id_leaves_the_connections_value_unknown():
    s = SessionState(5, mode="transaction")
    conn = Conn()
    s.next_statement()
    learn_values(
        s, conn, None, b"INSERT INTO t VALUES (1)", ResponseSummary(insert_id=4, insert_ids=1)
    )
    assert conn.insert_id is None and ROW_COUNT not in s.values.pending


def test_restore_never_overwrites_a_value_pending_on_the_held_connection():
    # the held connection ran the INSERT: its LAST_INSERT_ID() is the session's, unread
    v = Values(insert_id=2, pending={INSERT_ID})
    assert v.restore_plan(frozenset((Effect.LAST_INSERT_ID,)), None, True, 1, True, False) == []
    v = Values(row_count=-1, pending={ROW_COUNT})
    assert v.restore_plan(frozenset((Effect.ROW_COUNT,)), 0, True, 1, True, False) == []


def test_restore_refuses_values_lost_with_their_connection():
    v = Values(insert_id=2, lost={INSERT_ID})
    got = v.restore_plan(frozenset((Effect.LAST_INSERT_ID,)), 0, True, 1, True, False)
    assert isinstance(got, str) and "lost" in got


def test_uses_table_answers_the_same_from_memory_and_keeps_no_long_text():
    from tainted_proxy.state import values as v

    for sql, expected in [
        (b"SELECT c FROM sbtest1 WHERE id=1", True),
        (b"SELECT 1 FROM DUAL", False),
        (b"SELECT 1 INTO @x", False),
    ]:
        assert v.uses_table(sql) is expected
        assert v.uses_table(sql) is expected  # remembered
    long = b"SELECT '" + b"x" * 2000 + b"' FROM t"
    assert v.uses_table(long) and long not in v._USES_TABLE_SEEN
