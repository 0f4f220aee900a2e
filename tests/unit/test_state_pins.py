"""Pins (tainted_proxy.state.pins): which session state ties a client session to its
upstream connection, and when that state is provably gone.

Statements are classified by the real classifier, then fed to ``Pins.after_statement``
with what the server would have said (error, warnings, state_change)."""

from __future__ import annotations

import pytest

from tainted_proxy.state.pins import ROUTINE_STATE, UNEXPLAINED, Pins
from tainted_proxy.taint import PIN_REASONS, Effect, classify
from tainted_proxy.taint.classifier import classify_flags

TEMP = PIN_REASONS[Effect.TEMP_TABLE]
LOCK = PIN_REASONS[Effect.ADVISORY_LOCK]
TABLE_LOCK = PIN_REASONS[Effect.TABLE_LOCK]
PREPARE = PIN_REASONS[Effect.PREPARE]
HANDLER = PIN_REASONS[Effect.HANDLER]
XA = PIN_REASONS[Effect.XA]
USER_VAR = PIN_REASONS[Effect.USER_VAR]


def run(
    pins: Pins,
    sql: str,
    *,
    failed: bool = False,
    state_changed: bool = False,
) -> str | None:
    """One completed COM_QUERY; returns the pin reason afterwards."""
    pins.after_statement(classify(sql), failed=failed, state_changed=state_changed)
    return pins.reason()


def test_fresh_session_is_not_pinned():
    assert Pins().reason() is None


def test_clean_statements_do_not_pin():
    p = Pins()
    assert run(p, "SELECT 1") is None
    assert run(p, "SELECT * FROM t WHERE id = 1") is None
    assert run(p, "INSERT INTO t VALUES (1)") is None


# -- temporary tables --------------------------------------------------------------


def test_temp_table_pins_until_dropped():
    p = Pins()
    assert run(p, "CREATE TEMPORARY TABLE t1 (a int)", state_changed=True) == TEMP
    assert run(p, "SELECT * FROM t1") == TEMP
    assert run(p, "DROP TEMPORARY TABLE t1", state_changed=True) is None


def test_temp_table_drop_of_a_differently_cased_name_keeps_the_pin():
    # lower_case_table_names=0 (the Linux default): Orders and ORDERS are two tables;
    # with =1 the exact comparison only over-pins
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE `Orders` (a int)", state_changed=True)
    assert run(p, "DROP TEMPORARY TABLE ORDERS", state_changed=True) == TEMP


def test_dropping_another_temp_table_keeps_the_pin():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE t1 (a int)", state_changed=True)
    assert run(p, "DROP TEMPORARY TABLE IF EXISTS t2") == TEMP


def test_two_temp_tables_need_two_drops():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE a (x int)", state_changed=True)
    run(p, "CREATE TEMPORARY TABLE b (x int)", state_changed=True)
    assert run(p, "DROP TEMPORARY TABLE a", state_changed=True) == TEMP
    assert run(p, "DROP TEMPORARY TABLE b", state_changed=True) is None


def test_one_drop_of_two_temp_tables_clears_both():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE a (x int)", state_changed=True)
    run(p, "CREATE TEMPORARY TABLE b (x int)", state_changed=True)
    assert run(p, "DROP TEMPORARY TABLE a, b", state_changed=True) is None


def test_plain_drop_table_also_clears_a_temp_table():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE t1 (a int)", state_changed=True)
    assert run(p, "DROP TABLE t1", state_changed=True) is None


def test_create_and_drop_in_one_batch_leaves_no_pin():
    p = Pins()
    sql = "CREATE TEMPORARY TABLE a (x int); DROP TEMPORARY TABLE a"
    assert run(p, sql, state_changed=True) is None


def test_temp_tables_differing_only_in_case_are_two_tables():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE T1 (a int)", state_changed=True)
    run(p, "CREATE TEMPORARY TABLE t1 (a int)", state_changed=True)
    assert run(p, "DROP TEMPORARY TABLE t1", state_changed=True) == TEMP


def test_temp_tables_of_the_same_name_in_two_schemas_are_two_tables():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE t (a int)", state_changed=True)  # in db1
    run(p, "USE db2", state_changed=True)
    run(p, "CREATE TEMPORARY TABLE t (a int)", state_changed=True)  # in db2
    assert run(p, "DROP TEMPORARY TABLE t", state_changed=True) == TEMP


# -- advisory locks ----------------------------------------------------------------


def test_get_lock_pins_until_release_lock():
    p = Pins()
    assert run(p, "SELECT GET_LOCK('job', 10)") == LOCK
    assert run(p, "SELECT RELEASE_LOCK('job')") is None


def test_releasing_one_of_two_locks_keeps_the_pin():
    p = Pins()
    run(p, "SELECT GET_LOCK('a', 0)")
    run(p, "SELECT GET_LOCK('b', 0)")
    assert run(p, "SELECT RELEASE_LOCK('a')") == LOCK
    assert run(p, "SELECT RELEASE_LOCK('b')") is None


def test_release_all_locks_clears_every_lock():
    p = Pins()
    run(p, "SELECT GET_LOCK('a', 0)")
    run(p, "SELECT GET_LOCK('b', 0)")
    assert run(p, "SELECT RELEASE_ALL_LOCKS()") is None


def test_lock_with_a_computed_name_pins_for_good():
    p = Pins()
    assert run(p, "SELECT GET_LOCK(CONCAT('a', 'b'), 0)") == LOCK
    assert run(p, "SELECT RELEASE_ALL_LOCKS()") == LOCK


def test_release_lock_of_a_differently_cased_name_keeps_the_pin():
    p = Pins()
    run(p, "SELECT GET_LOCK('JOB', 0)")
    assert run(p, "SELECT RELEASE_LOCK('job')") == LOCK


# -- LOCK TABLES, PREPARE, HANDLER, XA ---------------------------------------------


def test_lock_tables_pins_until_unlock_tables():
    p = Pins()
    assert run(p, "LOCK TABLES t READ") == TABLE_LOCK
    assert run(p, "SELECT * FROM t") == TABLE_LOCK
    assert run(p, "UNLOCK TABLES") is None


def test_prepare_from_a_literal_is_virtualized_and_never_pins():
    p = Pins()
    assert run(p, "PREPARE s FROM 'SELECT 1'", state_changed=True) is None
    assert run(p, "EXECUTE s", state_changed=True) is None
    assert run(p, "DEALLOCATE PREPARE S", state_changed=True) is None


def test_prepare_from_a_variable_pins_until_deallocate():
    p = Pins()
    assert run(p, "PREPARE s FROM @q", state_changed=True) == PREPARE
    assert run(p, "DEALLOCATE PREPARE S", state_changed=True) is None


def test_execute_pins_for_good_its_text_may_leave_state_behind():
    p = Pins()
    run(p, "PREPARE s FROM 'CREATE TEMPORARY TABLE t (v INT)'", state_changed=True)
    assert run(p, "EXECUTE s", state_changed=True) is not None
    assert run(p, "DEALLOCATE PREPARE s", state_changed=True) == "prepared statement (EXECUTE)"


def test_get_lock_taken_twice_needs_two_releases():
    p = Pins()
    run(p, "SELECT GET_LOCK('l', 0)")
    run(p, "SELECT GET_LOCK('l', 0)")
    assert run(p, "SELECT RELEASE_LOCK('l')") == LOCK
    assert run(p, "SELECT RELEASE_LOCK('l')") is None


def test_renaming_while_temp_tables_are_held_pins_for_good():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE ta (a int)", state_changed=True)
    run(p, "ALTER TABLE ta RENAME TO tb")
    run(p, "CREATE TEMPORARY TABLE ta (a int)", state_changed=True)
    assert run(p, "DROP TEMPORARY TABLE ta", state_changed=True) == TEMP


def test_drop_prepare_also_deallocates():
    p = Pins()
    run(p, "PREPARE s1 FROM @one", state_changed=True)
    run(p, "PREPARE s2 FROM @two", state_changed=True)
    assert run(p, "DROP PREPARE s1", state_changed=True) == PREPARE
    assert run(p, "DROP PREPARE s2", state_changed=True) is None


def test_handler_open_pins_until_close():
    p = Pins()
    assert run(p, "HANDLER t OPEN AS h") == HANDLER
    assert run(p, "HANDLER h READ FIRST") == HANDLER
    assert run(p, "HANDLER H CLOSE") is None


def test_xa_pins_from_start_to_commit():
    p = Pins()
    assert run(p, "XA START 'x'") == XA
    assert run(p, "INSERT INTO t VALUES (1)") == XA
    assert run(p, "XA END 'x'") == XA
    assert run(p, "XA PREPARE 'x'") == XA
    assert run(p, "XA COMMIT 'x'") is None


def test_xa_rollback_ends_the_pin():
    p = Pins()
    run(p, "XA START 'x'")
    assert run(p, "XA ROLLBACK 'x'") is None


# -- user variables ----------------------------------------------------------------


def test_user_variable_pins_until_set_to_null():
    p = Pins()
    assert run(p, "SET @a = 1", state_changed=True) == USER_VAR
    assert run(p, "SET @A = NULL", state_changed=True) is None


def test_every_user_variable_must_be_cleared():
    p = Pins()
    run(p, "SET @a = 1, @b = 'x'", state_changed=True)
    assert run(p, "SET @a = NULL", state_changed=True) == USER_VAR
    assert run(p, "SET @b = NULL", state_changed=True) is None


def test_user_variable_assigned_in_select_pins():
    # the server reports nothing for SELECT @a := 1
    p = Pins()
    assert run(p, "SELECT @a := 1") == USER_VAR
    assert run(p, "SET @a = NULL", state_changed=True) is None


def test_select_into_user_variable_pins():
    p = Pins()
    assert run(p, "SELECT 1 INTO @z") == USER_VAR


# -- values of the last statement never pin (state.values carries them) ---------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
        "INSERT INTO t VALUES ('x')",
        "SELECT LAST_INSERT_ID(5)",
        "DO LAST_INSERT_ID(5)",
        "SELECT NEXTVAL(s)",
    ],
)
def test_statement_leaving_a_value_for_the_next_one_does_not_pin(sql: str):
    p = Pins()
    assert run(p, sql) is None


# -- failures ----------------------------------------------------------------------


def test_failed_single_statement_keeps_what_it_may_have_added_and_removes_nothing():
    p = Pins()
    assert run(p, "CREATE TEMPORARY TABLE t1 (a int)", failed=True) == TEMP
    run(p, "CREATE TEMPORARY TABLE t2 (a int)", state_changed=True)
    assert run(p, "DROP TEMPORARY TABLE t2", failed=True) == TEMP
    assert p.temp_tables == {"t1", "t2"}


def test_failed_batch_keeps_additions_but_not_removals():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE a (x int)", state_changed=True)
    sql = "DROP TEMPORARY TABLE a; CREATE TEMPORARY TABLE b (x int)"
    assert run(p, sql, failed=True) == TEMP
    assert p.temp_tables == {"a", "b"}


def test_failed_batch_does_not_trust_unlock_release_or_deallocate():
    p = Pins()
    run(p, "SELECT GET_LOCK('l', 0)")
    run(p, "PREPARE s FROM @q", state_changed=True)
    run(p, "SET @v = 1", state_changed=True)
    run(p, "XA START 'x'")
    sql = "SELECT RELEASE_LOCK('l'); DEALLOCATE PREPARE s; SET @v = NULL; XA COMMIT 'x'"
    assert run(p, sql, failed=True) is not None
    assert p.locks == {"l": 1} and p.prepared == {"s"} and p.user_vars == {"v"} and p.xa


def test_failed_batch_keeps_a_table_lock_it_may_have_taken():
    p = Pins()
    assert run(p, "SELECT 1; LOCK TABLES t WRITE", failed=True) == TABLE_LOCK


def test_failed_single_statement_may_still_have_taken_a_lock():
    p = Pins()
    assert run(p, "SELECT GET_LOCK('x', 0), (SELECT 1 UNION SELECT 2)", failed=True) == LOCK


def test_failed_batch_that_sets_then_clears_a_user_variable_keeps_it_pinned():
    p = Pins()
    assert run(p, "SET @a = 1; SELECT bad_col FROM t; SET @a = NULL", failed=True) == USER_VAR


# -- server-reported state changes -------------------------------------------------


def test_state_change_of_a_gate_clean_statement_pins_as_unexplained():
    sql = "SELECT * FROM t WHERE id = 1"
    assert classify_flags(sql) is None  # the gate proved it clean: the session passes None
    p = Pins()
    p.after_statement(None, failed=False, state_changed=True)
    assert p.reason() == UNEXPLAINED


def test_unexplained_state_change_is_sticky():
    p = Pins()
    p.after_statement(None, failed=False, state_changed=True)
    run(p, "SET @a = 1", state_changed=True)
    run(p, "SET @a = NULL", state_changed=True)
    run(p, "SELECT 1")
    assert p.reason() == UNEXPLAINED


def test_state_change_of_a_statement_without_stateful_effects_is_unexplained():
    p = Pins()
    assert run(p, "SELECT GET_LOCK('a', 0)", state_changed=True) == UNEXPLAINED
    run(p, "SELECT RELEASE_LOCK('a')")
    assert p.reason() == UNEXPLAINED


def test_call_that_changed_state_pins_for_good():
    p = Pins()
    assert run(p, "CALL p()", state_changed=True) == ROUTINE_STATE
    run(p, "SELECT 1")
    assert p.reason() == ROUTINE_STATE


def test_call_without_state_change_does_not_pin():
    p = Pins()
    assert run(p, "CALL p()") is None


def test_set_time_zone_with_state_change_does_not_pin():
    p = Pins()
    assert run(p, "SET time_zone = '+01:00'", state_changed=True) is None
    assert run(p, "SET SESSION sql_mode = 'ANSI'", state_changed=True) is None
    assert run(p, "USE test", state_changed=True) is None


def test_statement_with_an_unrepeatable_pin_is_sticky():
    p = Pins()
    reason = run(p, "SET insert_id = 5")
    assert reason is not None
    run(p, "SELECT 1")
    assert p.reason() == reason


# -- reset -------------------------------------------------------------------------


def test_clear_forgets_everything():
    p = Pins()
    run(p, "CREATE TEMPORARY TABLE t1 (a int)", state_changed=True)
    run(p, "SELECT GET_LOCK('l', 0)")
    run(p, "LOCK TABLES t READ")
    run(p, "PREPARE s FROM 'SELECT 1'", state_changed=True)
    run(p, "HANDLER t OPEN")
    run(p, "SET @a = 1", state_changed=True)
    run(p, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", state_changed=True)
    p.after_statement(None, failed=False, state_changed=True)
    p.protocol = "open cursor (COM_STMT_EXECUTE)"
    assert p.reason() == UNEXPLAINED
    p.clear()
    assert p.reason() is None
    assert not (p.temp_tables or p.locks or p.prepared or p.handlers or p.user_vars)
    assert not p.table_locks and p.sticky is None and p.protocol is None
    assert not p.xa and not p.next_tx


def test_backup_unlock_leaves_lock_tables_pinned():
    p = Pins()
    run(p, "LOCK TABLES t WRITE")
    run(p, "BACKUP LOCK t")
    assert run(p, "BACKUP UNLOCK") == TABLE_LOCK
    assert run(p, "UNLOCK TABLES") is None


def test_execute_of_a_text_proven_clean_at_prepare_time_does_not_pin_for_good():
    p = Pins()
    run(p, "PREPARE s FROM 'SELECT 40 + ?'", state_changed=True)
    assert run(p, "EXECUTE s USING 2") is None
    assert run(p, "DEALLOCATE PREPARE s", state_changed=True) is None


def test_execute_of_a_text_from_a_variable_pins_for_good():
    p = Pins()
    run(p, "PREPARE s FROM @q", state_changed=True)
    run(p, "EXECUTE s", state_changed=True)
    assert run(p, "DEALLOCATE PREPARE s", state_changed=True) == "prepared statement (EXECUTE)"
