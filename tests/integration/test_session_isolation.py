"""Sessions sharing one upstream connection see only their own per-statement values.

Differential tests: the same script of statements by two users, ``alice`` and ``bob``,
runs once on two direct MariaDB connections and once through the proxy, where both
users log in upstream with the same account and the pool holds ONE upstream connection
(so every statement of one user runs on the connection the other just used). Every step
must answer the same: LAST_INSERT_ID(), ROW_COUNT(), FOUND_ROWS(), LASTVAL(), the
diagnostics (SHOW WARNINGS / SHOW ERRORS / SHOW COUNT(*) ... / @@warning_count /
@@error_count / GET DIAGNOSTICS), in plain reads and inside larger statements, in
transaction and statement pooling (specs/pooling.md, "Values of the last statement").
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from tainted_proxy.testing.mariadb import MariaDBServer
from tainted_proxy.testing.proxy import ProxyThread

pytestmark = pytest.mark.integration

CLI = shutil.which("mariadb") or shutil.which("mysql")
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
_logins = itertools.count(1)
_tables = itertools.count(1)

Step = tuple[str, str]  # (who, sql)


@pytest.fixture(params=["transaction", "statement"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def shared(proxy_factory: Callable[..., ProxyThread], app_account: MariaDBServer, mode: str):
    """A proxy whose users alice and bob share one upstream login and one connection."""
    login = f"tp_iso_{next(_logins)}"
    app_account.create_user(login, "iso-up-secret")

    def make(max_connections: int = 1, **pool: Any) -> ProxyThread:
        users = {
            name: {
                "password": pw,
                "pool_mode": mode,
                "upstream_user": login,
                "upstream_password": "iso-up-secret",
            }
            for name, pw in PASSWORDS.items()
        }
        p = proxy_factory(
            users=users,
            upstream={"max_connections": max_connections},
            pool={"checkout_timeout": 3.0, **pool},
        )
        p.login = login  # type: ignore[attr-defined]
        return p

    return make


@pytest.fixture
def table(app_account: MariaDBServer) -> Iterator[str]:
    name = f"iso_{next(_tables)}"
    app_account.execute(
        f"CREATE TABLE test.{name} (id INT AUTO_INCREMENT PRIMARY KEY, "
        "email VARCHAR(64) UNIQUE, v BIGINT)"
    )
    yield name
    app_account.execute(f"DROP TABLE IF EXISTS test.{name}")


def _run(conn: pymysql.connections.Connection, sql: str) -> Any:
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return ("rows", tuple(tuple(r) for r in (cur.fetchall() or ())))
    except pymysql.MySQLError as exc:
        return ("error", exc.args[0])


def play(script: list[Step], connect: Callable[[str], pymysql.connections.Connection]) -> list[Any]:
    conns = {who: connect(who) for who in PASSWORDS}
    try:
        return [_run(conns[who], sql) for who, sql in script]
    finally:
        for c in conns.values():
            c.close()


def direct_and_proxied(
    srv: MariaDBServer, p: ProxyThread, script: list[Step], reset: list[str]
) -> tuple[list[Any], list[Any]]:
    def direct(who: str) -> pymysql.connections.Connection:
        return srv.connect(database="test")

    def proxied(who: str) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=p.port,
            user=who,
            password=PASSWORDS[who],
            database="test",
            autocommit=True,
            read_timeout=30,
        )

    for sql in reset:
        srv.execute(sql)
    want = play(script, direct)
    for sql in reset:
        srv.execute(sql)
    return want, play(script, proxied)


def assert_same(srv: MariaDBServer, p: ProxyThread, script: list[Step]) -> list[Any]:
    """Run ``script`` directly, then through the proxy (each on fresh tables: every
    ``iso_*`` table the script names is truncated first); every step answers the same."""
    names = sorted(
        {w.strip(",;()") for _, sql in script for w in sql.split() if w.startswith("iso_")}
    )
    reset = [f"TRUNCATE TABLE test.{n}" for n in names if not n.endswith("_seq")]
    reset += [f"ALTER SEQUENCE test.{n} RESTART" for n in names if n.endswith("_seq")]
    want, got = direct_and_proxied(srv, p, script, reset)
    for step, w, g in zip(script, want, got, strict=True):
        assert g == w, f"{step}: direct MariaDB {w}, through the proxy {g}"
    return got


# -- diagnostics ---------------------------------------------------------------------------


def dup_key(t: str, who: str = "alice") -> list[Step]:
    return [
        (who, f"INSERT INTO {t} (email) VALUES ('a.secret@example.com')"),
        (who, f"INSERT INTO {t} (email) VALUES ('a.secret@example.com')"),
    ]


@pytest.mark.parametrize(
    "read",
    [
        "SHOW WARNINGS",
        "SHOW ERRORS",
        "SHOW COUNT(*) WARNINGS",
        "SHOW COUNT(*) ERRORS",
        "SELECT @@warning_count",
        "SELECT @@error_count",
        "SELECT @@session.error_count AS e",
        "SELECT @@error_count, 1",
        "SHOW WARNINGS LIMIT 1",
    ],
)
def test_another_users_error_is_never_visible(shared, app_account, table, read):
    p = shared()
    got = assert_same(app_account, p, [*dup_key(table), ("bob", read)])
    assert "secret" not in repr(got[-1])


def test_get_diagnostics_reads_only_the_sessions_own_conditions(shared, app_account, table):
    p = shared()
    got = assert_same(
        app_account,
        p,
        [
            *dup_key(table),
            ("bob", "GET DIAGNOSTICS @n = NUMBER"),
            ("bob", "SELECT @n"),
        ],
    )
    assert got[-1] == ("rows", ((0,),))


@pytest.mark.parametrize(
    "read", ["SHOW WARNINGS", "SELECT @@error_count", "SHOW ERRORS LIMIT 0, 1"]
)
def test_a_users_own_error_stays_readable_after_another_user_ran(shared, app_account, table, read):
    p = shared()
    got = assert_same(
        app_account,
        p,
        [*dup_key(table), ("bob", f"SELECT COUNT(*) FROM {table}"), ("alice", read)],
    )
    assert got[-1] != ("rows", ())


def test_warnings_survive_a_statement_without_a_table_as_on_the_server(shared, app_account, table):
    p = shared()
    assert_same(
        app_account,
        p,
        [
            ("alice", f"INSERT IGNORE INTO {table} (email) VALUES ('w@x'), ('w@x')"),
            ("bob", "SELECT 1"),
            ("alice", "SELECT 1"),
            ("alice", "SHOW WARNINGS"),
            ("alice", f"SELECT COUNT(*) FROM {table}"),
            ("alice", "SHOW WARNINGS"),
        ],
    )


def test_warnings_of_an_idle_session_hold_no_connection(shared, app_account, table):
    """INSERT IGNORE leaves a warning and alice goes quiet: bob still gets the only
    upstream connection (no pin waits for alice's next statement)."""
    p = shared()
    got = assert_same(
        app_account,
        p,
        [
            ("alice", f"INSERT IGNORE INTO {table} (email) VALUES ('i@x'), ('i@x')"),
            ("bob", f"SELECT COUNT(*) FROM {table}"),
            ("bob", "SHOW WARNINGS"),
            ("alice", "SHOW WARNINGS"),
        ],
    )
    assert got[1] == ("rows", ((1,),))
    assert got[3][1][0][1] == 1062


# -- LAST_INSERT_ID(), ROW_COUNT(), FOUND_ROWS() ---------------------------------------------


@pytest.mark.parametrize(
    "read",
    [
        "SELECT LAST_INSERT_ID()",
        "SELECT LAST_INSERT_ID() + 0",
        "SELECT @@identity",
        "SELECT LAST_INSERT_ID(), ROW_COUNT()",
    ],
)
def test_last_insert_id_of_another_user_never_leaks(shared, app_account, table, read):
    p = shared()
    steps = [("alice", f"INSERT INTO {table} (v) VALUES (1)") for _ in range(3)]
    assert_same(app_account, p, [*steps, ("bob", read), ("alice", read)])


def test_last_insert_id_written_by_a_statement_is_the_sessions_own(shared, app_account, table):
    p = shared()
    got = assert_same(
        app_account,
        p,
        [
            ("alice", f"INSERT INTO {table} (v) VALUES (1), (2), (3)"),
            ("bob", f"INSERT INTO {table} (v) VALUES (LAST_INSERT_ID())"),
            ("alice", f"INSERT INTO {table} (v) VALUES (LAST_INSERT_ID())"),
            ("alice", f"SELECT v FROM {table} ORDER BY id"),
        ],
    )
    assert got[-1][1][3:] == ((0,), (1,))


def test_explicit_auto_increment_value_leaves_last_insert_id(shared, app_account, table):
    p = shared()
    assert_same(
        app_account,
        p,
        [
            ("alice", f"INSERT INTO {table} (v) VALUES (7)"),
            ("alice", f"INSERT INTO {table} (id, v) VALUES (100, 8)"),
            ("bob", f"INSERT INTO {table} (v) VALUES (9)"),
            ("alice", "SELECT LAST_INSERT_ID()"),
            ("alice", "SELECT LAST_INSERT_ID() + 0"),
            ("alice", "SELECT LAST_INSERT_ID(42)"),
            ("bob", "SELECT LAST_INSERT_ID()"),
            ("alice", "SELECT LAST_INSERT_ID()"),
        ],
    )


@pytest.mark.parametrize("read", ["SELECT ROW_COUNT()", "SELECT ROW_COUNT() AS n"])
def test_row_count_is_the_sessions_own(shared, app_account, table, read):
    p = shared()
    assert_same(
        app_account,
        p,
        [
            ("alice", f"INSERT INTO {table} (v) VALUES (1), (2), (3)"),
            ("bob", f"UPDATE {table} SET v = v + 1 WHERE v < 3"),
            ("alice", read),
            ("bob", read),
            ("bob", "SET @x = 1"),
            ("bob", read),
        ],
    )


def test_found_rows_is_the_sessions_own(shared, app_account, table):
    p = shared()
    assert_same(
        app_account,
        p,
        [
            ("alice", f"INSERT INTO {table} (v) VALUES (1), (2), (3), (4)"),
            ("alice", f"SELECT SQL_CALC_FOUND_ROWS v FROM {table} LIMIT 1"),
            ("bob", f"SELECT v FROM {table} LIMIT 2"),
            ("alice", "SELECT FOUND_ROWS()"),
            ("bob", "SELECT FOUND_ROWS()"),
            ("alice", "SELECT FOUND_ROWS() + 0"),
        ],
    )


def test_sequence_lastval_is_the_sessions_own(shared, app_account, table):
    seq = f"{table}_seq"
    app_account.execute(f"CREATE SEQUENCE test.{seq}")
    p = shared()
    try:
        got = assert_same(
            app_account,
            p,
            [
                ("alice", f"SELECT NEXTVAL({seq})"),
                ("bob", f"SELECT LASTVAL({seq})"),
                ("bob", f"SELECT PREVIOUS VALUE FOR {seq}"),
                ("alice", f"SELECT LASTVAL({seq})"),
            ],
        )
        assert got[1] == ("rows", ((None,),))
    finally:
        app_account.execute(f"DROP SEQUENCE IF EXISTS test.{seq}")


# -- CONNECTION_ID() -----------------------------------------------------------------------


def test_connection_id_is_one_id_per_session_wherever_it_appears(shared, app_account, table):
    p = shared()
    kw = {"host": "127.0.0.1", "port": p.port, "database": "test", "autocommit": True}
    c = pymysql.connect(user="alice", password=PASSWORDS["alice"], **kw)
    killer = pymysql.connect(user="alice", password=PASSWORDS["alice"], **kw)
    try:
        plain = _run(c, "SELECT CONNECTION_ID()")[1][0][0]
        assert _run(c, "SELECT CONNECTION_ID(), 1")[1][0][0] == plain
        _run(killer, f"INSERT INTO {table} (v) VALUES (1)")
        assert _run(c, f"SELECT v FROM {table} WHERE CONNECTION_ID() = {plain}")[1] == ((1,),)
        assert _run(killer, f"KILL {plain}") == ("rows", ())
        with pytest.raises(pymysql.MySQLError):
            _run_raising(c, "SELECT 1")
    finally:
        c.close()
        killer.close()


def _run_raising(conn: pymysql.connections.Connection, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


# -- the mariadb CLI -----------------------------------------------------------------------


def cli(port: int, user: str, sql: str) -> subprocess.CompletedProcess[str]:
    assert CLI is not None
    return subprocess.run(
        [
            CLI,
            "--no-defaults",
            "-h127.0.0.1",
            f"-P{port}",
            f"-u{user}",
            f"-p{PASSWORDS.get(user, '')}" if user in PASSWORDS else "-p",
            "--batch",
            "-D",
            "test",
            "-e",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.skipif(CLI is None, reason="the mariadb CLI is not installed")
def test_cli_sees_no_other_sessions_warnings(shared, app_account, table):
    p = shared()
    first = cli(p.port, "alice", dup_key(table)[0][1] + "; " + dup_key(table)[1][1])
    assert first.returncode == 1 and "1062" in first.stderr
    for read in ("SHOW WARNINGS", "SELECT @@error_count", "SELECT LAST_INSERT_ID() + 0"):
        bob = cli(p.port, "bob", read)
        assert bob.returncode == 0, bob.stderr
        assert "secret" not in bob.stdout
    assert cli(p.port, "bob", "SHOW WARNINGS").stdout == ""
    assert cli(p.port, "bob", "SELECT @@error_count").stdout.split() == ["@@error_count", "0"]
    assert cli(p.port, "bob", "SELECT LAST_INSERT_ID() + 0").stdout.split()[-1] == "0"


@pytest.mark.skipif(CLI is None, reason="the mariadb CLI is not installed")
def test_cli_batch_reads_its_own_insert_id_and_row_count(shared, app_account, table, mode):
    """A one-client batch over many upstream connections: the CLI sends each statement
    separately, so the SELECT may run on another connection than the INSERT."""
    p = shared(max_connections=12)
    sql = f"INSERT INTO {table} (v) VALUES (1), (2), (3); SELECT LAST_INSERT_ID(), ROW_COUNT();"
    via = cli(p.port, "alice", sql)
    assert via.returncode == 0, via.stderr
    assert via.stdout.split()[-2:] == ["1", "3"]


def test_connection_id_in_a_larger_statement_without_the_privilege_is_refused_clearly(
    proxy_factory, app_account, table, mode
):
    login = f"tp_iso_np_{next(_logins)}"
    app_account.create_user(login, "np-secret", grants="ALL PRIVILEGES ON test.*")
    users = {
        "alice": {
            "password": PASSWORDS["alice"],
            "pool_mode": mode,
            "upstream_user": login,
            "upstream_password": "np-secret",
        }
    }
    p = proxy_factory(users=users, upstream={"max_connections": 1})
    c = pymysql.connect(
        host="127.0.0.1",
        port=p.port,
        user="alice",
        password=PASSWORDS["alice"],
        database="test",
        autocommit=True,
    )
    try:
        plain = _run(c, "SELECT CONNECTION_ID()")[1][0][0]
        assert plain >= 2_000_000_000
        got = _run(c, "SELECT CONNECTION_ID(), 1")
        assert got == ("error", 1235)
        assert _run(c, "SELECT 2") == ("rows", ((2,),))
    finally:
        c.close()


# -- SQL-level prepared statements (virtualized: no pin) ---------------------------------------


def test_sql_prepared_statements_with_one_name_are_each_sessions_own(shared, app_account, table):
    p = shared()
    got = assert_same(
        app_account,
        p,
        [
            ("alice", "PREPARE s1 FROM 'SELECT ? + 1'"),
            ("bob", "EXECUTE s1 USING 1"),  # bob never prepared s1: 1243
            ("bob", "PREPARE s1 FROM 'SELECT ? * 10'"),
            ("alice", "EXECUTE s1 USING 1"),
            ("bob", "EXECUTE s1 USING 1"),
            ("alice", "SET @x = 5"),
            ("alice", "EXECUTE s1 USING @x"),
            ("bob", "DEALLOCATE PREPARE s1"),
            ("bob", "EXECUTE s1 USING 1"),
            ("bob", "DEALLOCATE PREPARE s1"),
            ("alice", "EXECUTE s1 USING 2"),
            ("alice", "DROP PREPARE s1"),
            ("alice", "EXECUTE s1 USING 2"),
        ],
    )
    assert got[3] == ("rows", ((2,),)) and got[4] == ("rows", ((10,),))


def test_sql_prepared_statement_keeps_the_schema_and_sql_mode_it_was_prepared_under(
    shared, app_account, table
):
    p = shared()
    assert_same(
        app_account,
        p,
        [
            ("alice", f"INSERT INTO {table} (v) VALUES (7)"),
            ("alice", f"PREPARE q FROM 'SELECT v FROM {table} WHERE v = ?'"),
            ("alice", "PREPARE lit FROM 'SELECT \"dq\"'"),
            ("bob", "SET sql_mode = 'ANSI_QUOTES'"),
            ("bob", "PREPARE lit FROM 'SELECT 1'"),
            ("alice", "USE mysql"),
            ("alice", "EXECUTE q USING 7"),
            ("alice", "EXECUTE lit"),
            ("bob", "EXECUTE lit"),
            ("alice", "SELECT DATABASE()"),
        ],
    )


def test_failed_prepare_drops_the_old_statement_of_that_name(shared, app_account, table):
    p = shared()
    assert_same(
        app_account,
        p,
        [
            ("alice", "PREPARE s FROM 'SELECT 1'"),
            ("alice", "PREPARE s FROM 'SELEC nonsense'"),
            ("alice", "EXECUTE s"),
        ],
    )


def test_sql_prepare_from_a_literal_does_not_pin(shared, app_account, table):
    """With one upstream connection, bob runs while alice holds a prepared statement."""
    p = shared()
    got = assert_same(
        app_account,
        p,
        [
            ("alice", "PREPARE s FROM 'SELECT 42'"),
            ("bob", "SELECT 1"),
            ("alice", "EXECUTE s"),
        ],
    )
    assert got[1] == ("rows", ((1,),))
    assert p.call(lambda: p.proxy.stats.pins.get("prepared statement (PREPARE)", 0)) == 0


# -- the same rows through the mariadb CLI (one process per user: alice's session has
# ended when bob connects, and her connection went back to the pool unreset) -------------


def cli_direct(srv: MariaDBServer, sql: str) -> subprocess.CompletedProcess[str]:
    assert CLI is not None
    return subprocess.run(
        [CLI, "--no-defaults", "-h127.0.0.1", f"-P{srv.port}", "-uroot", "--batch", "-D", "test"]
        + ["-e", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )


CLI_ROWS = {
    "duplicate-key-warnings": (
        "INSERT INTO {t} (email) VALUES ('a.secret@example.com');"
        "INSERT IGNORE INTO {t} (email) VALUES ('a.secret@example.com')",
        "SHOW WARNINGS; SHOW ERRORS; SELECT @@error_count, @@warning_count",
    ),
    "last-insert-id": (
        "INSERT INTO {t} (v) VALUES (1); INSERT INTO {t} (v) VALUES (2)",
        "SELECT LAST_INSERT_ID() + 0; SELECT LAST_INSERT_ID(); SELECT @@identity",
    ),
    "found-rows": (
        "INSERT INTO {t} (v) VALUES (1), (2), (3); SELECT SQL_CALC_FOUND_ROWS v FROM {t} LIMIT 1",
        "SELECT FOUND_ROWS()",
    ),
    "sequence": (
        "SELECT NEXTVAL({t}_seq)",
        "SELECT LASTVAL({t}_seq); SELECT PREVIOUS VALUE FOR {t}_seq",
    ),
}


@pytest.mark.skipif(CLI is None, reason="the mariadb CLI is not installed")
@pytest.mark.parametrize("row", CLI_ROWS)
def test_cli_user_sees_only_its_own_values(shared, app_account, table, row):
    alice_sql, bob_sql = (x.format(t=table) for x in CLI_ROWS[row])
    app_account.execute(f"CREATE SEQUENCE IF NOT EXISTS test.{table}_seq")
    try:
        p = shared()

        def reset() -> None:
            app_account.execute(f"TRUNCATE TABLE test.{table}")
            app_account.execute(f"ALTER SEQUENCE test.{table}_seq RESTART")

        reset()
        cli_direct(app_account, alice_sql)
        direct = cli_direct(app_account, bob_sql)
        reset()
        assert cli(p.port, "alice", alice_sql).returncode == 0
        bob = cli(p.port, "bob", bob_sql)
        if row == "found-rows":
            # a new MariaDB connection reads FOUND_ROWS() left in the cached server thread
            # by an earlier connection (not reset at connect): a new session through the
            # proxy reads 0, its own
            direct.stdout = "FOUND_ROWS()\n0\n"
        assert (bob.returncode, bob.stdout) == (direct.returncode, direct.stdout), bob.stderr
        assert "secret" not in bob.stdout
    finally:
        app_account.execute(f"DROP SEQUENCE IF EXISTS test.{table}_seq")
