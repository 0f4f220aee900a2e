"""Session pooling end to end with pymysql: login, queries, errors, upstream reuse."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest


def upstream_ids(p: Any) -> list[int]:
    """Server thread ids of the upstream connections of ``p`` (a ``pooling_proxy``, whose
    upstream login is its own), read from the server's processlist."""
    rows = p.server.execute(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s ORDER BY ID",
        (p.upstream_user,),
    )
    return [int(r[0]) for r in rows]


def session_proxy(pooling_proxy: Any) -> Any:
    """A session-mode proxy with ONE upstream connection of a login of its own: every client
    runs on that connection, one after the other, and the processlist shows which it is."""
    return pooling_proxy("session", max_connections=1)


def test_select_through_proxy_returns_rows_nulls_and_strings(proxy, connect):
    with connect(proxy) as c, c.cursor() as cur:
        cur.execute("SELECT 1, 'x', NULL")
        assert cur.fetchall() == ((1, "x", None),)


def test_wrong_password_is_refused_with_1045(proxy, connect):
    with pytest.raises(pymysql.err.OperationalError) as e:
        connect(proxy, password="nope")
    assert e.value.args[0] == 1045


def test_unknown_database_is_refused_with_1049(proxy, connect):
    with pytest.raises(pymysql.err.OperationalError) as e:
        connect(proxy, database="no_such_db")
    assert e.value.args[0] == 1049


def test_connect_without_database_has_no_schema_selected(proxy, connect):
    with connect(proxy, database=None) as c, c.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)


def test_next_client_sees_fresh_session_after_previous_one_changed_state(pooling_proxy, connect):
    p = session_proxy(pooling_proxy)
    with connect(p) as c, c.cursor() as cur:
        cur.execute("SET time_zone = '+05:30', sql_mode = 'ANSI'")
        cur.execute("SET @leak = 42")
        cur.execute("CREATE TEMPORARY TABLE leak_tmp (a int)")
        cur.execute("SELECT GET_LOCK('leak_lock', 0)")
        assert cur.fetchone() == (1,)
        cur.execute("USE mysql")
        (first_upstream,) = upstream_ids(p)  # the one connection the state was left on
        cur.execute("SELECT @@time_zone, @leak")
        assert cur.fetchone() == ("+05:30", 42)
    # the released connection is reset before anyone else gets it
    for _ in range(3):
        with connect(p) as c2, c2.cursor() as cur:
            cur.execute(
                "SELECT @@time_zone, @@sql_mode LIKE '%ANSI%', @leak, "
                "DATABASE(), IS_USED_LOCK('leak_lock')"
            )
            assert cur.fetchone() == ("SYSTEM", 0, None, "test", None)
            # the same server connection (the login has only one), reset, not replaced
            assert upstream_ids(p) == [first_upstream]
            with pytest.raises(pymysql.err.ProgrammingError) as e:
                cur.execute("SELECT * FROM leak_tmp")
            assert e.value.args[0] == 1146


def test_server_error_is_passed_through_with_code_and_message(proxy, connect):
    with connect(proxy) as c, c.cursor() as cur:
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.execute("SELECT * FROM no_such_table_xyz")
        assert e.value.args[0] == 1146
        assert "no_such_table_xyz" in e.value.args[1]
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)


def test_role_set_by_one_client_is_gone_for_the_next(pooling_proxy, connect, app_account):
    p = session_proxy(pooling_proxy)
    app_account.execute("CREATE ROLE IF NOT EXISTS leak_role")
    app_account.execute(f"GRANT leak_role TO '{p.upstream_user}'@'%'")
    with connect(p) as c, c.cursor() as cur:
        cur.execute("SET ROLE leak_role")
        cur.execute("SELECT CURRENT_ROLE()")
        assert cur.fetchone() == ("leak_role",)
        (first_upstream,) = upstream_ids(p)
    with connect(p) as c, c.cursor() as cur:
        cur.execute("SELECT CURRENT_ROLE()")
        assert cur.fetchone() == (None,)  # same connection (below), role reset
    assert upstream_ids(p) == [first_upstream]


def test_multi_statements_switched_on_by_com_set_option_do_not_reach_the_next_client(
    pooling_proxy, connect
):
    p = session_proxy(pooling_proxy)
    with connect(p) as c:
        c._execute_command(0x1B, b"\x00\x00")  # COM_SET_OPTION MULTI_STATEMENTS_ON
        assert c._read_packet().is_eof_packet()  # the server's answer to COM_SET_OPTION
        with c.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2")  # the option is on for this client
            assert cur.fetchall() == ((1,),)
            assert cur.nextset() and cur.fetchall() == ((2,),)
        (first_upstream,) = upstream_ids(p)
    # the option survives COM_RESET_CONNECTION and COM_CHANGE_USER on the server, so the
    # proxy cannot reset it away: it closes that connection and opens a fresh one
    with connect(p) as c, c.cursor() as cur:
        (second_upstream,) = upstream_ids(p)  # the cap held: the old one is gone
        assert second_upstream != first_upstream
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.execute("SELECT 1; SELECT 2")
        assert e.value.args[0] == 1064


def test_load_data_local_infile_inside_a_multi_statement_batch(proxy, connect, tmp_path):
    f = tmp_path / "rows.tsv"
    f.write_text("1\ta\n2\tb\n")
    flags = pymysql.constants.CLIENT.MULTI_STATEMENTS
    with connect(proxy, client_flag=flags, local_infile=True) as c, c.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE li_batch (id int, v text)")
        cur.execute(f"LOAD DATA LOCAL INFILE '{f}' INTO TABLE li_batch; SELECT 42")
        cur.nextset()
        assert cur.fetchall() == ((42,),)
        cur.execute("SELECT COUNT(*) FROM li_batch")
        assert cur.fetchone() == (2,)
