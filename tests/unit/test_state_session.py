"""The session model (state.session) and what one response teaches it (state.learn),
sans-IO: when a connection is held, given back as it is, reset, and what travels."""

from __future__ import annotations

from dataclasses import dataclass, field

from tainted_proxy.state.learn import Reports, ResponseSummary, learn, reported_changes
from tainted_proxy.state.session import SessionState
from tainted_proxy.state.settings import EMPTY, Baseline
from tainted_proxy.taint import classify
from tainted_proxy.wire.constants import SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS

BASE = Baseline.from_rows(
    [
        ("time_zone", "SYSTEM", "VARCHAR"),
        ("sql_mode", "STRICT_TRANS_TABLES", "SET"),
        ("character_set_connection", "utf8mb4", "ENUM"),
        ("collation_connection", "utf8mb4_general_ci", "ENUM"),
    ]
)


@dataclass
class Conn:
    settings: frozenset = EMPTY
    schema: str | None = "test"
    status: int = SERVER_STATUS_AUTOCOMMIT
    values_owner: tuple[int, int] | None = None
    insert_id: int | None = 0
    diagnostics_clean: bool = True
    foreign: set = field(default_factory=set)
    user_vars_of: int | None = None


def run(s: SessionState, conn: Conn, sql: str, reports: Reports | None = None, **resp) -> None:
    c = classify(sql)
    c = c if c.effects else None
    reports = reports or Reports()
    changes, ask = reported_changes(reports, c, BASE, {"latin1_bin": "latin1"}, s)
    s.next_statement()
    learn(s, conn, c, sql.encode(), reports, ResponseSummary(**resp), changes, ask and None, BASE)


def test_reported_settings_travel_with_the_session_and_do_not_hold_the_connection():
    s, conn = SessionState(1, mode="transaction"), Conn()
    run(s, conn, "SET time_zone = '+05:30'", Reports(variables={"time_zone": "+05:30"}))
    assert s.holds(conn) is None
    s.take_back(conn)
    assert dict(s.settings) == {"time_zone": "+05:30"}
    assert not s.release_needs_reset(conn)


def test_an_open_transaction_holds_and_a_release_inside_one_resets():
    s, conn = SessionState(1, mode="transaction"), Conn(status=SERVER_STATUS_IN_TRANS)
    run(s, conn, "BEGIN")
    assert s.holds(conn) == "transaction"
    assert s.release_needs_reset(conn)


def test_a_temporary_table_pins_until_dropped():
    s, conn = SessionState(1, mode="transaction"), Conn()
    run(s, conn, "CREATE TEMPORARY TABLE tt (a INT)", Reports(state_changed=True))
    assert s.holds(conn) == "temporary table"
    run(s, conn, "DROP TEMPORARY TABLE tt", Reports(state_changed=True))
    assert s.holds(conn) is None


def test_an_unexplained_state_change_pins_for_the_session():
    s, conn = SessionState(1, mode="transaction"), Conn()
    run(s, conn, "SELECT 1", Reports(state_changed=True))
    assert s.holds(conn) is not None


def test_a_charset_change_without_a_known_collation_asks_the_server_then_pins_if_unknown():
    s, conn = SessionState(1, mode="transaction"), Conn()
    reports = Reports(variables={"character_set_connection": "latin1"})
    changes, ask = reported_changes(reports, None, BASE, {}, s)
    assert ask == "latin1" and "collation_connection" not in changes
    learn(s, conn, None, b"CALL p()", reports, ResponseSummary(), changes, None, BASE)
    assert s.pins.reason() is not None


def test_nextval_makes_the_connection_go_back_through_a_reset():
    s, conn = SessionState(1, mode="transaction"), Conn()
    run(s, conn, "SELECT NEXTVAL(s)", resultset=True, last_resultset=True, rows=1)
    s.take_back(conn)
    assert s.release_needs_reset(conn)
    assert not s.release_needs_reset(conn)  # once


def test_start_forgets_everything_but_keeps_the_given_schema():
    s, conn = SessionState(1, mode="transaction"), Conn()
    run(s, conn, "CREATE TEMPORARY TABLE tt (a INT)", Reports(state_changed=True))
    s.start(EMPTY, "other")
    assert s.pins.reason() is None and s.schema == "other" and s.values.row_count == -1
