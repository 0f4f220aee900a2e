"""Transaction pooling rules that specs/pooling.md states and the other suites do not
prove: the per-user pinned-connection cap, unexplained server-side state changes,
tracker data hidden from clients that did not ask for it, pings answered by the proxy."""

from __future__ import annotations

import time
from typing import Any

import pymysql
import pytest

from tainted_proxy.state import pins as pinreasons

from .conftest import APP_PASSWORD, APP_USER, connect

SSC = 0x4000  # SERVER_SESSION_STATE_CHANGED


def _proxy(factory: Any, **user: Any) -> Any:
    return factory(
        users={APP_USER: {"password": APP_PASSWORD, "pool_mode": "transaction", **user}},
        upstream={"max_connections": 3},
        pool={"checkout_timeout": 1.0},
    )


def _session_of(p: Any, conn: pymysql.connections.Connection) -> Any:
    return p.proxy.sessions[conn.thread_id()]


def _pin_of(p: Any, conn: pymysql.connections.Connection) -> str | None:
    """The session's pin once the proxy has finished with its last command (the client
    gets the response before the proxy records what it did)."""
    session = _session_of(p, conn)
    deadline = time.monotonic() + 2
    while session.busy or session.up is not None and session.pin_reason is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return session.pin_reason


def test_a_user_at_its_pinned_cap_gets_1040_naming_the_cap_and_the_reason(proxy_factory):
    p = _proxy(proxy_factory, max_pinned=1)
    a = connect(p, autocommit=True)
    b = connect(p, autocommit=True)
    try:
        a.cursor().execute("CREATE TEMPORARY TABLE pin_a (x int)")
        assert _pin_of(p, a) == "temporary table"
        with pytest.raises(pymysql.err.OperationalError) as exc:
            b.cursor().execute("CREATE TEMPORARY TABLE pin_b (x int)")
        code, message = exc.value.args
        assert code == 1040
        assert "max_pinned = 1" in message and "temporary table" in message
        # the refused statement never ran, and b still works without a pin
        with pytest.raises(pymysql.err.ProgrammingError):
            b.cursor().execute("SELECT * FROM pin_b")
        assert _pin_of(p, b) is None
        # once a lets go, b may pin
        a.cursor().execute("DROP TEMPORARY TABLE pin_a")
        assert _pin_of(p, a) is None
        b.cursor().execute("CREATE TEMPORARY TABLE pin_b (x int)")
        assert _pin_of(p, b) == "temporary table"
    finally:
        a.close()
        b.close()


def test_state_changed_by_a_function_in_a_select_pins_as_unexplained(proxy_factory, app_account):
    app_account.execute("DROP FUNCTION IF EXISTS test.sets_user_var")
    app_account.execute(
        "CREATE FUNCTION test.sets_user_var() RETURNS INT DETERMINISTIC "
        "BEGIN SET @hidden = 42; RETURN 1; END"
    )
    p = _proxy(proxy_factory)
    a = connect(p, autocommit=True)
    try:
        cur = a.cursor()
        cur.execute("SELECT test.sets_user_var()")
        assert cur.fetchall() == ((1,),)
        # the parser sees a plain SELECT; the server said the session changed
        assert _pin_of(p, a) == pinreasons.UNEXPLAINED
        cur.execute("SELECT @hidden")
        assert cur.fetchall() == ((42,),)
        assert p.proxy.stats.pins[pinreasons.UNEXPLAINED] >= 1
    finally:
        a.close()


def test_clients_without_session_track_never_see_tracker_flags(proxy_factory):
    p = _proxy(proxy_factory)
    a = connect(p, autocommit=True)
    try:
        cur = a.cursor()
        cur.execute("SET time_zone = '+03:00'")
        assert not a.server_status & SSC
        cur.execute("USE mysql")
        assert not a.server_status & SSC
        cur.execute("SELECT @@time_zone, DATABASE()")
        assert cur.fetchall() == (("+03:00", "mysql"),)
    finally:
        a.close()


def test_ping_without_a_connection_is_answered_by_the_proxy(proxy_factory):
    p = _proxy(proxy_factory)
    a = connect(p, autocommit=True)
    try:
        acquired = p.proxy.pool.stats.acquired
        a.ping(reconnect=False)
        assert p.proxy.pool.stats.acquired == acquired
    finally:
        a.close()


def test_a_session_that_leaves_pinned_gets_its_connection_reset_before_reuse(pooling_proxy):
    # one upstream connection, of a login of its own: the processlist shows which it is
    p = pooling_proxy("transaction", max_connections=1, checkout_timeout=1.0)

    def upstream_ids() -> list[int]:
        rows = p.server.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (p.upstream_user,)
        )
        return [int(r[0]) for r in rows]

    a = connect(p, autocommit=True)
    a.cursor().execute("CREATE TEMPORARY TABLE left_behind (x int)")
    a.cursor().execute("SET @mine = 'secret'")
    assert _pin_of(p, a) == "temporary table"  # holds the one connection until it leaves
    cur = a.cursor()
    cur.execute("SELECT @mine, COUNT(*) FROM left_behind")
    assert cur.fetchone() == ("secret", 0)
    (pinned_upstream,) = upstream_ids()
    a.close()
    for _ in range(3):
        b = connect(p, autocommit=True)
        try:
            cur = b.cursor()
            cur.execute("SELECT @mine")
            assert cur.fetchall() == ((None,),)
            with pytest.raises(pymysql.err.ProgrammingError) as e:
                cur.execute("SELECT * FROM left_behind")
            assert e.value.args[0] == 1146
            # the same server connection, reset: not a fresh one in its place
            assert upstream_ids() == [pinned_upstream]
        finally:
            b.close()


def test_commit_and_rollback_without_a_held_connection_are_answered_by_the_proxy(
    proxy_factory,
):
    p = _proxy(proxy_factory)
    a = connect(p, autocommit=False)
    try:
        cur = a.cursor()
        acquired = p.proxy.pool.stats.acquired
        a.rollback()
        a.commit()
        cur.execute("ROLLBACK WORK")
        assert p.proxy.pool.stats.acquired == acquired
        # inside a transaction they reach the server
        cur.execute("CREATE TABLE IF NOT EXISTS test.rules_commit (a int)")
        cur.execute("INSERT INTO test.rules_commit VALUES (1)")
        assert _session_of(p, a).up is not None
        a.rollback()
        cur.execute("SELECT COUNT(*) FROM test.rules_commit")
        assert cur.fetchall() == ((0,),)
        a.commit()
    finally:
        a.close()


def test_literal_user_variables_travel_with_the_session_without_pinning(proxy_factory):
    p = proxy_factory(
        users={APP_USER: {"password": APP_PASSWORD, "pool_mode": "transaction"}},
        upstream={"max_connections": 1},
        pool={"checkout_timeout": 2.0},
    )
    a = connect(p, autocommit=True)
    b = connect(p, autocommit=True)
    try:
        a.cursor().execute("SET @v = 'from a', @n = 1")
        b.cursor().execute("SET @v = 'from b'")
        assert _pin_of(p, a) is None and _pin_of(p, b) is None
        for _ in range(3):  # both sessions share the one upstream connection in turns
            for conn, want in ((a, ("from a", 1)), (b, ("from b", None))):
                cur = conn.cursor()
                cur.execute("SELECT @v, @n")
                assert cur.fetchall() == (want,)
        a.cursor().execute("SET @v = NULL, @n = NULL")
        c = connect(p, autocommit=True)
        try:
            cur = c.cursor()
            cur.execute("SELECT @v, @n")
            assert cur.fetchall() == ((None, None),)
        finally:
            c.close()
        # a value the proxy cannot re-send as written still pins
        a.cursor().execute("SET @v = CONCAT('x', 'y')")
        assert _pin_of(p, a) == "user variable"
    finally:
        a.close()
        b.close()


def test_user_variables_over_1024_characters_or_16_kib_in_all_pin_instead_of_travelling(
    proxy_factory,
):
    p = _proxy(proxy_factory)
    a = connect(p, autocommit=True)
    b = connect(p, autocommit=True)
    try:
        short, long = "s" * 1022, "l" * 5000
        a.cursor().execute(f"SET @v = '{short}'")  # 1,024 characters quoted: carried
        assert _pin_of(p, a) is None
        b.cursor().execute(f"SET @v = '{long}'")
        assert _pin_of(p, b) == "user variable"
        for conn, want in ((a, short), (b, long), (a, short)):
            cur = conn.cursor()
            cur.execute("SELECT @v")
            assert cur.fetchall() == ((want,),)
        b.cursor().execute("SET @v = NULL")
        assert _pin_of(p, b) is None
        # short ones, but more than 16 KiB of them together: the ones past it pin
        cur = b.cursor()
        for i in range(15):
            cur.execute(f"SET @w{i} = '{'w' * 1000}'")
        assert _pin_of(p, b) is None
        cur.execute(f"SET @w15 = '{'w' * 1000}', @w16 = '{'w' * 1000}'")
        assert _pin_of(p, b) == "user variable"
        cur.execute("SELECT LENGTH(CONCAT(@w0, @w14, @w16))")
        assert cur.fetchall() == ((3000,),)
    finally:
        a.close()
        b.close()


def test_long_texts_are_classified_as_short_ones_are(proxy_factory):
    """Texts over frontend.classification.OFFLOAD_MIN are analysed in a worker thread:
    the same verdicts, a pin where a short one pins and none where it does not."""
    p = _proxy(proxy_factory)
    a = connect(p, autocommit=True)
    b = connect(p, autocommit=True)
    try:
        text = "x" * 300_000
        cur = a.cursor()
        cur.execute(f"SELECT LENGTH('{text}') INTO @total")
        assert _pin_of(p, a) == "user variable"
        cur.execute("SELECT @total")
        assert cur.fetchall() == ((300_000,),)
        # a bulk INSERT whose column name the gate stops at ("next_id"): analysed, clean
        cur = b.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS long_rows (id INT, next_id INT)")
        rows = ",".join(f"({i},{i + 1})" for i in range(40_000))
        assert len(rows) > 256 * 1024
        cur.execute(f"INSERT INTO long_rows (id, next_id) VALUES {rows}")
        assert cur.rowcount == 40_000
        assert _pin_of(p, b) is None
        cur.execute("SELECT @total")
        assert cur.fetchall() == ((None,),)
        cur.execute("DROP TABLE long_rows")
    finally:
        a.close()
        b.close()
