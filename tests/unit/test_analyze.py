"""tainted-proxy analyze: reading general logs (file, CSV, TSV), the session model over
each connection, the per-user report, hints, the command line."""

from __future__ import annotations

import gzip
import json

import pytest

from tainted_proxy.analyze import analyze_lines, hint, main
from tainted_proxy.analyze.hints import NAMES
from tainted_proxy.analyze.logs import detect_format, read_events
from tainted_proxy.analyze.model import Session, TxState, mode_flags, touches_table
from tainted_proxy.analyze.report import Analyzer, Offenders
from tainted_proxy.taint.classifier import classify_flags
from tainted_proxy.taint.effects import PIN_REASONS, Effect
from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES

HEADER = (
    "/usr/sbin/mariadbd, Version: 10.11.19-MariaDB-0+deb12u1-log (Debian 12). started with:\n"
    "Tcp port: 3306  Unix socket: /run/mysqld/mysqld.sock\n"
    "Time\t\t    Id Command\tArgument\n"
)
LOCK = PIN_REASONS[Effect.ADVISORY_LOCK]


def events(text: str, fmt: str = "auto"):
    return list(read_events(text.encode().splitlines(keepends=True), fmt))


def report(text: str, fmt: str = "auto", **kw):
    return analyze_lines(text.encode().splitlines(keepends=True), fmt, **kw)


def user(r, name: str):
    for u in r["users"]:
        if u["user"] == name:
            return u
    raise AssertionError(f"no user {name} in {[u['user'] for u in r['users']]}")


def log(*entries: str, header: bool = True) -> str:
    return (HEADER if header else "") + "".join(
        e if e.endswith("\n") else e + "\n" for e in entries
    )


def q(conn: int, sql: str, cmd: str = "Query", time: str | None = None) -> str:
    prefix = f"{time}\t" if time else "\t\t"
    return f"{prefix}{conn:6d} {cmd}\t{sql}"


def connect(conn: int, user: str, db: str = "test", time: str | None = None) -> str:
    return q(conn, f"{user}@127.0.0.1 on {db} using TCP/IP", "Connect", time)


def quit_(conn: int, time: str | None = None) -> str:
    return q(conn, "", "Quit", time)


# -- reading the log file ----------------------------------------------------------------


def test_file_layout_entries_times_multiline_statements_and_headers():
    text = log(
        "261207  0:57:17\t     3 Connect\tapp@127.0.0.1 on test using TCP/IP",
        "\t\t     3 Query\tSELECT",
        " 2,",
        "\t'a'",  # a continuation line that starts with a tab
        "\t\t     4 Connect\tweb@10.0.0.2 on  using TCP/IP",
        "261207  0:57:18\t     3 Query\tINSERT INTO t VALUES ('x')",
        "\t\t     3 Quit\t",
        "\t\t     4 Quit",  # no trailing tab
    )
    evs = events(text)
    assert [(e.conn, e.command) for e in evs] == [
        (3, "Connect"),
        (3, "Query"),
        (4, "Connect"),
        (3, "Query"),
        (3, "Quit"),
        (4, "Quit"),
    ]
    assert evs[1].argument == "SELECT\n 2,\n\t'a'"
    assert evs[0].time is not None and evs[1].time == evs[0].time
    assert evs[3].time == evs[0].time + 1
    assert evs[4].argument == "" and evs[5].argument == ""


def test_file_layout_a_line_that_looks_like_an_entry_with_an_unknown_command_continues():
    text = log(
        q(3, "SELECT 'first"),
        "\t\t     7 Whatever\tline'",
        q(3, "SELECT 2"),
    )
    evs = events(text)
    assert [e.argument for e in evs] == ["SELECT 'first\n\t\t     7 Whatever\tline'", "SELECT 2"]


def test_file_layout_header_again_mid_file_ends_the_entry_and_is_skipped():
    text = log(q(3, "SELECT 1"), HEADER.rstrip("\n"), q(3, "SELECT 2"))
    assert [e.argument for e in events(text)] == ["SELECT 1", "SELECT 2"]


def test_file_layout_mysql8_iso_times():
    text = (
        "2026-12-07T00:57:17.123456Z\t    8 Connect\troot@localhost on  using Socket\n"
        "2026-12-07T00:57:18.000001Z\t    8 Query\tSELECT 1\n"
        "2026-12-07T00:57:18.500000Z\t    8 Quit\t\n"
    )
    evs = events(text, "file")
    assert [e.command for e in evs] == ["Connect", "Query", "Quit"]
    assert evs[1].time - evs[0].time == 1


def test_format_detection():
    assert detect_format([HEADER.splitlines()[0]]) == "file"
    assert detect_format(["", '"2026-12-07 00:57:17.140333","[root] @  [127.0.0.1]",3']) == "csv"
    assert detect_format(["event_time,user_host,thread_id"]) == "csv"
    assert detect_format(["2026-12-07 00:57:17.140333\t[root] @  [127.0.0.1]\t3\t1"]) == "tsv"
    assert detect_format(["event_time\tuser_host\tthread_id"]) == "tsv"
    assert detect_format(["\t\t     3 Query\tSELECT 1"]) == "file"


# -- reading the table exports -----------------------------------------------------------

# as the CSV engine keeps mysql.general_log on disk (general_log.CSV)
CSV_ENGINE = (
    '"2026-12-07 00:57:17.411830","[app] @  [127.0.0.1]",10,1,"Connect","app@127.0.0.1 on test using TCP/IP"\n'
    '"2026-12-07 00:57:17.413899","app[app] @  [127.0.0.1]",10,1,"Query","SELECT\\n 2"\n'
    '"2026-12-07 00:57:17.414031","app[app] @  [127.0.0.1]",10,1,"Query","INSERT INTO t VALUES (\'a\\\\nb\', \\"q\\")"\n'
    '"2026-12-07 00:57:18.414185","app[app] @  [127.0.0.1]",10,1,"Quit",""\n'
)


def test_csv_engine_file_escapes():
    evs = events(CSV_ENGINE)
    assert [(e.conn, e.command, e.user) for e in evs] == [
        (10, "Connect", "app"),
        (10, "Query", "app"),
        (10, "Query", "app"),
        (10, "Quit", "app"),
    ]
    assert evs[1].argument == "SELECT\n 2"
    assert evs[2].argument == "INSERT INTO t VALUES ('a\\nb', \"q\")"
    assert evs[3].time - evs[0].time == 1


def test_csv_into_outfile_backslash_newline_and_null():
    # SELECT * INTO OUTFILE ... FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"'
    text = (
        '"2026-12-07 00:57:17.1","app[app] @  [127.0.0.1]",10,1,"Query","SELECT\\\n'
        "  1,\\\n"
        "  'x,y'\"\n"
        '"2026-12-07 00:57:17.2","app[app] @  [127.0.0.1]",10,1,"Quit",\\N\n'
    )
    evs = events(text)
    assert [e.command for e in evs] == ["Query", "Quit"]
    assert evs[0].argument == "SELECT\n  1,\n  'x,y'"
    assert evs[1].argument == ""


def test_csv_with_header_and_doubled_quotes_and_real_newlines():
    text = (
        "event_time,user_host,thread_id,server_id,command_type,argument\n"
        '2026-12-07 00:57:17,web[web] @ host [10.0.0.1],5,1,Query,"SELECT ""a""\n'
        'FROM t"\n'
    )
    (ev,) = events(text)
    assert (ev.user, ev.conn, ev.argument) == ("web", 5, 'SELECT "a"\nFROM t')


def test_tsv_mariadb_batch_output_and_outfile_default():
    batch = (
        "event_time\tuser_host\tthread_id\tserver_id\tcommand_type\targument\n"
        "2026-12-07 00:57:17.140333\tapp[app] @  [127.0.0.1]\t3\t1\tQuery\tSELECT\\n\\t1\n"
        "2026-12-07 00:57:17.140334\tapp[app] @  [127.0.0.1]\t3\t1\tQuit\t\n"
    )
    evs = events(batch)
    assert [(e.command, e.argument) for e in evs] == [("Query", "SELECT\n\t1"), ("Quit", "")]
    outfile = (
        "2026-12-07 00:57:17.140333\tapp[app] @  [127.0.0.1]\t3\t1\tQuery\tSELECT\\\n"
        " 'a\\\\'\n"
        "2026-12-07 00:57:17.140334\tapp[app] @  [127.0.0.1]\t3\t1\tQuit\t\\N\n"
    )
    evs = events(outfile)
    assert [(e.command, e.argument) for e in evs] == [("Query", "SELECT\n 'a\\'"), ("Quit", "")]


def test_the_three_layouts_give_the_same_report():
    file_text = log(
        connect(10, "app", time="261207  0:57:17"),
        q(10, "SELECT GET_LOCK('j', 1)"),
        q(10, "SELECT\n 2"),
        q(10, "SELECT RELEASE_LOCK('j')"),
        quit_(10),
    )
    rows = [
        ("Connect", "app@127.0.0.1 on test using TCP/IP"),
        ("Query", "SELECT GET_LOCK('j', 1)"),
        ("Query", "SELECT\\n 2"),
        ("Query", "SELECT RELEASE_LOCK('j')"),
        ("Quit", ""),
    ]
    csv_text = "".join(
        f'"2026-12-07 00:57:17.{i}","app[app] @  [127.0.0.1]",10,1,"{c}","{a}"\n'
        for i, (c, a) in enumerate(rows)
    )
    tsv_text = "".join(
        f"2026-12-07 00:57:17.{i}\tapp[app] @  [127.0.0.1]\t10\t1\t{c}\t{a}\n"
        for i, (c, a) in enumerate(rows)
    )
    reports = [report(t) for t in (file_text, csv_text, tsv_text)]
    for r in reports:
        r.pop("first_time"), r.pop("last_time")
    assert reports[0] == reports[1] == reports[2]
    u = user(reports[0], "app")
    assert u["modes"]["transaction"]["pin_reasons"] == {LOCK: 1}
    assert u["modes"]["transaction"]["pinned_statements"]["max"] == 3


# -- the session model -------------------------------------------------------------------


def test_touches_table():
    assert touches_table("SELECT * FROM t")
    assert touches_table("select a from `db`.`t` where 1")
    assert touches_table("INSERT INTO t VALUES (1)")
    assert touches_table("UPDATE t SET a = 1")
    assert touches_table("(SELECT a FROM t) UNION (SELECT 1)")
    assert touches_table("SELECT 1 FROM (SELECT 2) x")
    assert not touches_table("SELECT 1")
    assert not touches_table("SELECT @@tx_isolation")
    assert not touches_table("SELECT 1 FROM DUAL")
    assert not touches_table("SELECT * FROM information_schema.tables")
    assert not touches_table("SHOW TABLES")
    assert not touches_table("SET NAMES utf8mb4")
    assert not touches_table("SELECT 'FROM t'")


def run(tx: TxState, sql: str) -> None:
    tx.run(classify_flags(sql), sql, 0)


def test_transactions_explicit_autocommit_off_and_batches():
    tx = TxState()
    run(tx, "SELECT * FROM t")
    assert not tx.open
    run(tx, "BEGIN")
    assert tx.open
    run(tx, "COMMIT")
    assert not tx.open
    run(tx, "SET autocommit=0")
    assert not tx.open and not tx.autocommit
    run(tx, "SELECT 1")
    assert not tx.open  # touches no table
    run(tx, "SELECT * FROM t")
    assert tx.open
    run(tx, "ROLLBACK")
    assert not tx.open
    run(tx, "UPDATE t SET a = 1")
    assert tx.open
    run(tx, "SET autocommit=1")  # commits
    assert not tx.open and tx.autocommit
    run(tx, "BEGIN; INSERT INTO t VALUES (1); COMMIT")
    assert not tx.open
    run(tx, "START TRANSACTION; INSERT INTO t VALUES (1)")
    assert tx.open
    run(tx, "CREATE TABLE x (a INT)")  # implicit commit
    assert not tx.open


def test_sql_mode_flags():
    assert mode_flags("ANSI_QUOTES,STRICT_TRANS_TABLES", 0, "") == ANSI_QUOTES
    assert mode_flags("ANSI", 0, "") == ANSI_QUOTES
    assert mode_flags("NO_BACKSLASH_ESCAPES", ANSI_QUOTES, "") == NO_BACKSLASH_ESCAPES
    assert mode_flags("DEFAULT", ANSI_QUOTES, "", default=0) == 0
    assert mode_flags(None, 0, "SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')") == ANSI_QUOTES
    assert mode_flags(None, NO_BACKSLASH_ESCAPES, "SET sql_mode = @x") == NO_BACKSLASH_ESCAPES


def test_session_settings_vector_carried_user_variables_and_pins():
    s = Session(1, 7, "app", "test", 0.0)
    for sql in ("SET NAMES utf8mb4", "SET time_zone = '+01:00'", "SET @a = 1"):
        assert not s.run(classify_flags(sql), sql)
    assert s.tx_reason is None  # settings and literal user variables are carried
    key = s.key()
    assert ("time_zone", "+01:00") in key and ("schema", "test") in key
    s.run(classify_flags("SET time_zone = DEFAULT"), "SET time_zone = DEFAULT")
    assert all(name != "time_zone" for name, _ in s.key())
    s.run(classify_flags("SET @b = NOW()"), "SET @b = NOW()")
    assert s.tx_reason == PIN_REASONS[Effect.USER_VAR]
    s.run(classify_flags("SET @b = NULL"), "SET @b = NULL")
    assert s.tx_reason is None
    assert s.run(classify_flags("SET autocommit = 0"), "SET autocommit = 0")  # refused


# -- the report over connections ---------------------------------------------------------


def test_interleaved_connections_pins_and_how_long_they_last():
    r = report(
        log(
            connect(3, "app", time="261207  0:57:17"),
            connect(4, "app"),
            connect(5, "web"),
            q(3, "SELECT GET_LOCK('job', 10)"),
            q(4, "SELECT * FROM t WHERE id = 1"),
            q(3, "UPDATE t SET a = 1"),
            q(5, "CREATE TEMPORARY TABLE tt (a INT)"),
            q(3, "SELECT RELEASE_LOCK('job')"),
            q(4, "SELECT 2"),
            q(3, "SELECT 3"),
            quit_(3),
            quit_(4),
            q(5, "SELECT * FROM tt"),
            quit_(5),
        )
    )
    assert r["sessions"] == 3 and r["statements"] == 8
    app, web = user(r, "app"), user(r, "web")
    tx = app["modes"]["transaction"]
    assert (app["sessions"], app["statements"]) == (2, 6)
    assert tx["pinned_sessions"] == 1 and tx["pinned_share"] == 0.5
    assert tx["pin_reasons"] == {LOCK: 1}
    # GET_LOCK, UPDATE, RELEASE_LOCK: three statements on the pinned connection
    assert tx["pinned_statements"] == {"count": 1, "median": 3, "p95": 3, "max": 3}
    assert tx["pinned_until_session_end"] == 0
    wtx = web["modes"]["transaction"]
    assert wtx["pin_reasons"] == {PIN_REASONS[Effect.TEMP_TABLE]: 1}
    assert wtx["pinned_until_session_end"] == 1 and wtx["pinned_statements"]["max"] == 2
    assert app["modes"]["session"]["peak_connections"] == 2
    assert app["modes"]["transaction"]["peak_holding"] == 1
    top = r["top_offenders"]
    assert {(o["user"], o["reason"], o["fingerprint"]) for o in top} == {
        ("app", LOCK, "SELECT GET_LOCK(?, ?)"),
        ("web", PIN_REASONS[Effect.TEMP_TABLE], "CREATE TEMPORARY TABLE tt(a INT)"),
    }
    assert app["recommended"]["mode"] == "session"  # 50% of sessions pin


def test_autocommit_off_client_is_refused_in_statement_mode_and_holds_transactions():
    r = report(
        log(
            connect(3, "py", time="261207  0:57:17"),
            q(3, "SET NAMES utf8mb4"),
            q(3, "SET AUTOCOMMIT = 0"),
            q(3, "SELECT 1"),
            q(3, "SELECT * FROM t"),
            q(3, "INSERT INTO t VALUES (1)"),
            q(3, "COMMIT"),
            q(3, "SELECT * FROM t", time="261207  0:57:19"),
            quit_(3),
        )
    )
    u = user(r, "py")
    st, tx = u["modes"]["statement"], u["modes"]["transaction"]
    assert st["refused_statements"] == 1 and st["refused"] == {"autocommit": 1}
    assert st["refused_sessions"] == 1
    assert tx["pinned_sessions"] == 0
    assert tx["autocommit_off_sessions"] == 1
    # SELECT..INSERT..COMMIT, then a SELECT left open at the end of the session
    assert tx["transactions"]["count"] == 2
    assert tx["transactions"]["max"] == 3
    assert tx["transactions_open_at_session_end"] == 1
    assert u["recommended"]["mode"] == "transaction"
    assert "refused in statement mode" in u["recommended"]["reason"]
    (o,) = [o for o in r["top_offenders"] if o["kind"] == "refused"]
    assert o["fingerprint"] == "SET AUTOCOMMIT = ?"
    assert "switches autocommit off" in o["hint"]


def test_change_user_starts_a_session_of_the_new_user_with_fresh_state():
    r = report(
        log(
            connect(11, "app", time="261207  0:57:17"),
            q(11, "SET time_zone = '+02:00'"),
            q(11, "SELECT GET_LOCK('x', 1)"),
            q(11, "other@127.0.0.1 on test using TCP/IP", "Change user"),
            q(11, "SELECT * FROM t"),
            quit_(11),
        )
    )
    app, other = user(r, "app"), user(r, "other")
    assert (app["sessions"], app["statements"]) == (1, 2)
    assert (other["sessions"], other["statements"]) == (1, 1)
    # the lock was the old session's: it ended with it
    assert app["modes"]["transaction"]["pinned_until_session_end"] == 1
    assert other["modes"]["transaction"]["pinned_sessions"] == 0
    assert other["settings_keys"] == 1  # schema only: the time zone went with the old session
    assert other["recommended"]["mode"] == "statement"


def test_failed_login_is_not_a_session_and_unknown_connections_are_kept():
    r = report(
        log(
            connect(10, "app", db="", time="261207  0:57:17"),
            q(10, "Access denied for user 'app'@'127.0.0.1' (using password: YES)", "Connect"),
            q(12, "SELECT 1"),  # connected before the log began
            q(12, "newdb", "Init DB"),
            q(12, "SELECT 2"),
        )
    )
    assert r["failed_logins"] == 1
    assert [u["user"] for u in r["users"]] == ["(unknown)"]
    assert r["sessions"] == 1  # ended by the end of the log
    assert user(r, "(unknown)")["settings_keys"] == 2  # no schema, then newdb


def test_settings_keys_and_the_settings_hint():
    entries = [connect(1, "web", time="261207  0:57:17")]
    for i in range(1, 5):
        entries += [
            connect(i, "web"),
            q(i, "SET NAMES utf8mb4"),
            q(i, f"SET time_zone = '+0{i}:00'"),
            q(i, "SELECT * FROM t"),
            quit_(i),
        ]
    r = report(log(*entries[1:]))
    u = user(r, "web")
    assert u["settings_keys"] == 4
    names = {s["name"]: s for s in u["settings"]}
    assert names["time_zone"]["values"] == 4 and names["time_zone"]["sessions"] == 4
    assert names[NAMES]["values"] == 1
    (o,) = [o for o in r["top_offenders"] if o["kind"] == "settings"]
    assert o["hint"] == (
        "every session of user web runs `SET time_zone = ?` with 4 distinct values: set "
        "time_zone on the server or in the app's connection URL so they share one sub-pool"
    )
    assert u["recommended"]["mode"] == "statement"


def test_sql_mode_set_by_the_session_decides_how_its_statements_are_lexed():
    tricky = "SELECT 'a\\', GET_LOCK('k', 1) -- '"
    r = report(
        log(
            connect(1, "plain", time="261207  0:57:17"),
            q(1, tricky),  # one string: nothing happens
            quit_(1),
            connect(2, "nbe"),
            q(2, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'"),
            q(2, tricky),  # 'a\' then GET_LOCK: a lock
            quit_(2),
        )
    )
    assert user(r, "plain")["modes"]["transaction"]["pinned_sessions"] == 0
    assert user(r, "nbe")["modes"]["transaction"]["pin_reasons"] == {LOCK: 1}


def test_binary_protocol_execute_is_a_statement_prepare_is_not():
    r = report(
        log(
            connect(1, "app", time="261207  0:57:17"),
            q(1, "SELECT GET_LOCK(?, 1)", "Prepare"),
            q(1, "", "Reset stmt"),
            q(1, "SELECT GET_LOCK('lk', 1)", "Execute"),
            q(1, "", "Close stmt"),
            quit_(1),
        )
    )
    u = user(r, "app")
    assert u["statements"] == 1
    assert u["modes"]["transaction"]["pin_reasons"] == {LOCK: 1}


def test_peaks_holding_sessions_at_once_and_statements_in_flight():
    entries = [connect(i, "app", time="261207  0:57:17" if i == 1 else None) for i in (1, 2, 3)]
    entries += [q(1, "BEGIN"), q(2, "BEGIN"), q(3, "SELECT 1")]
    entries += [q(1, "COMMIT", time="261207  0:57:18"), q(2, "COMMIT"), q(3, "SELECT 1")]
    entries += [quit_(i) for i in (1, 2, 3)]
    # sequential connections in the next second: one at a time
    for i in (4, 5, 6):
        entries += [connect(i, "app", time="261207  0:57:19" if i == 4 else None)]
        entries += [q(i, "SELECT 1"), quit_(i)]
    u = user(report(log(*entries)), "app")
    m = u["modes"]
    assert m["session"]["peak_connections"] == 3
    tx = m["transaction"]
    assert tx["peak_holding"] == 2
    # two held + one statement in flight (10 ms assumed: ceil(1 x 10 / 1000) = 1)
    assert tx["peak_connections"] == 3 and tx["peak_connections_upper"] == 3
    st = m["statement"]
    assert st["refused_statements"] == 2 and st["peak_holding"] == 0
    assert st["peak_connections"] == 1  # three statements in flight, 10 ms each
    assert st["peak_connections_upper"] == 3
    # with a strict upper bound the allowance is every session active in the second
    u2 = user(report(log(*entries), statement_ms=1000), "app")
    assert u2["modes"]["statement"]["peak_connections"] == 3


def test_recommendations():
    def one(*stmts: str):
        entries = [connect(1, "u", time="261207  0:57:17")]
        entries += [q(1, s) for s in stmts]
        entries.append(quit_(1))
        return user(report(log(*entries)), "u")["recommended"]

    assert one("SELECT 1", "SET time_zone = '+01:00'", "SELECT * FROM t")["mode"] == "statement"
    assert one("BEGIN", "UPDATE t SET a = 1", "COMMIT")["mode"] == "transaction"
    assert one("SELECT GET_LOCK('a', 1)")["mode"] == "session"
    # a rare pin: below the threshold
    entries = [connect(1, "u", time="261207  0:57:17"), q(1, "SELECT GET_LOCK('a', 1)")]
    entries += [quit_(1)]
    for i in range(2, 22):
        entries += [connect(i, "u"), q(i, "BEGIN"), q(i, "COMMIT"), quit_(i)]
    rec = user(report(log(*entries)), "u")["recommended"]
    assert rec["mode"] == "transaction"
    assert "1 of 21 sessions (4.8%) pin" in rec["reason"]
    rec = user(report(log(*entries), pin_threshold=0.01), "u")["recommended"]
    assert rec["mode"] == "session"
    # every session pins, but briefly: 2 of 22 statements run pinned
    entries = [connect(1, "u", time="261207  0:57:17")]
    entries += [q(1, "SELECT GET_LOCK('a', 1)"), q(1, "SELECT RELEASE_LOCK('a')")]
    entries += [q(1, f"SELECT * FROM t WHERE id = {i}") for i in range(20)]
    entries += [quit_(1)]
    u = user(report(log(*entries)), "u")
    assert u["modes"]["transaction"]["pinned_share"] == 1.0
    assert u["modes"]["transaction"]["pinned_statement_share"] == round(2 / 22, 4)
    assert u["recommended"]["mode"] == "transaction"
    assert "for 2 of 22 statements (9.1%): pins are rare" in u["recommended"]["reason"]


def test_offenders_are_bounded_with_an_other_bucket():
    o = Offenders(capacity=4)
    for i in range(10):
        for _ in range(i + 1):
            o.add(("pin", "u", "r", f"fp{i}"), "sql", True)
    assert len(o.entries) <= 4
    assert ("pin", "u", "r", "fp9") in o.entries
    kept = sum(e.statements for e in o.entries.values())
    assert kept + o.other["pin", "u"] == sum(range(1, 11))


def test_report_counts_the_shapes_it_did_not_keep():
    # twelve sessions, each pinned by a statement of its own shape; room for four shapes
    entries = [connect(i, "u", time="261207  0:57:17" if i == 1 else None) for i in range(1, 13)]
    entries += [q(i, f"CREATE TEMPORARY TABLE t{i} (a INT)") for i in range(1, 13)]
    r = report(log(*entries), offenders=4)
    (other,) = r["other_offenders"]
    assert (other["kind"], other["user"]) == ("pin", "u")
    assert len(r["top_offenders"]) <= 4
    kept = sum(o["statements"] for o in r["top_offenders"])
    assert kept + other["statements"] == 12


def test_analyzer_memory_is_per_open_connection():
    a = Analyzer()
    for ev in read_events(
        log(*[x for i in range(200) for x in (connect(i, "u"), q(i, "SELECT 1"), quit_(i))])
        .encode()
        .splitlines(keepends=True)
    ):
        a.feed(ev)
    assert a.open == {}
    assert a.sessions == 200


# -- hints -------------------------------------------------------------------------------


def test_hint_texts():
    assert hint(LOCK, user="app", sessions=412, fingerprint="SELECT GET_LOCK(?, ?)") == (
        "412 sessions of user app pinned by `SELECT GET_LOCK(?, ?)`: advisory locks pin until "
        "RELEASE_LOCK; release them promptly, or use row locks (SELECT ... FOR UPDATE) inside a "
        "transaction"
    )
    assert hint(
        "settings",
        user="web",
        sessions=30,
        total_sessions=30,
        fingerprint="SET time_zone = ?",
        name="time_zone",
        values=24,
    ) == (
        "every session of user web runs `SET time_zone = ?` with 24 distinct values: set "
        "time_zone on the server or in the app's connection URL so they share one sub-pool"
    )
    assert hint(Effect.TX_BEGIN, user="batch", statements=12, fingerprint="BEGIN") == (
        "user batch: 12 multi-statement transactions refused in statement mode (`BEGIN`); "
        "use transaction mode for this user"
    )
    assert "1 session switches autocommit off" in hint(
        Effect.AUTOCOMMIT, user="py", sessions=1, fingerprint="SET AUTOCOMMIT = ?"
    )
    assert "XA transaction" in hint(Effect.XA, user="x", statements=1)
    assert "the character set" in hint("settings", user="u", sessions=2, name=NAMES, values=2)
    assert hint(PIN_REASONS[Effect.TEMP_TABLE], user="u", sessions=1).startswith(
        "1 session of user u pinned by a statement: temporary tables pin until dropped"
    )


# -- the command line --------------------------------------------------------------------

SMALL = log(
    connect(3, "app", time="261207  0:57:17"),
    q(3, "SELECT GET_LOCK('job', 10)"),
    q(3, "SELECT RELEASE_LOCK('job')"),
    quit_(3),
    connect(4, "web"),
    q(4, "SELECT 1"),
    quit_(4),
)


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "g.log"
    path.write_text(SMALL)
    assert main(["--json", str(path)]) == 0
    out = capsys.readouterr()
    r = json.loads(out.out)
    assert [u["user"] for u in r["users"]] == ["app", "web"]
    assert out.err == ""  # no progress bar when not on a terminal


def test_cli_text_tables_and_user_filter(tmp_path, capsys):
    path = tmp_path / "g.log"
    path.write_text(SMALL)
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    for title in ("Per user", "Transaction mode", "Statement mode", "Top offenders", "Hints"):
        assert title in out
    assert "SELECT GET_LOCK(?, ?)" in out
    assert main(["--json", "--user", "web", str(path)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [u["user"] for u in r["users"]] == ["web"] and r["top_offenders"] == []


def test_cli_gzip_and_errors(tmp_path, capsys):
    path = tmp_path / "g.log.gz"
    with gzip.open(path, "wt") as f:
        f.write(SMALL)
    assert main(["--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == 2
    assert main([str(tmp_path / "missing.log")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_entry_point_dispatches_analyze(tmp_path, capsys):
    from tainted_proxy.cli import main as cli_main

    path = tmp_path / "g.log"
    path.write_text(SMALL)
    assert cli_main(["analyze", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["statements"] == 3


@pytest.mark.parametrize("fmt", ["file", "csv", "tsv"])
def test_empty_logs(fmt):
    r = report("", fmt)
    assert r["users"] == [] and r["sessions"] == 0
