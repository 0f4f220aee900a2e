"""Per-connection server state in the pooled modes: one test (at least) per item of the
inventory in specs/pooling.md, "Per-connection server state" (rules C1-C55; each test
names the rules it proves).

Differential style, as in test_session_isolation.py: the same script of steps by the
clients alice, bob and carol runs once on direct MariaDB connections (one per client,
logged in as the proxy's upstream login, so privileges are the same) and once through the
proxy, where the three users log in upstream with that one login and the pool holds ONE
upstream connection (every statement of one client runs where the others just ran), or
two where a pinned client must leave room for the others. Every step must answer the same:
rows, the affected-row count, or the error code. Where the server itself is not the
reference (a reset connection, the upstream thread id), the test states what a client
must see instead.

Tests marked ``xfail(strict=True)`` reproduce real leaks or wrong answers of the proxy;
their reason says what goes wrong.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from tainted_proxy.testing.mariadb import MariaDBNotFound, MariaDBServer
from tainted_proxy.testing.proxy import ProxyThread

from .conftest import session_state, wait_until

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
UP_PASSWORD = "inv-up-secret"
QUIT = "QUIT"  # a step that closes the client's connection
CLI = shutil.which("mariadb") or shutil.which("mysql")
P = "inv"  # prefix of every object this file creates

_logins = itertools.count(1)
_names = itertools.count(1)

pooled = pytest.mark.parametrize("mode", ["transaction", "statement"])
all_modes = pytest.mark.parametrize("mode", ["session", "transaction", "statement"])

Step = tuple[str, str]  # (who, sql or QUIT)


def unique(stem: str) -> str:
    return f"{P}_{stem}_{os.getpid()}_{next(_names)}"


# -- the proxy and the clients ------------------------------------------------------------


@dataclass
class Shared:
    """A proxy whose users alice, bob and carol log in upstream as one login."""

    proxy: ProxyThread
    server: MariaDBServer
    login: str
    mode: str
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _kw(self, who: str, kw: dict[str, Any]) -> dict[str, Any]:
        args = {"database": "test", "autocommit": True, "read_timeout": 30}
        args.update(self.clients.get(who, {}))
        args.update(kw)
        return args

    def proxied(self, who: str, **kw: Any) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.proxy.port,
            user=who,
            password=PASSWORDS[who],
            **self._kw(who, kw),
        )

    def direct(self, who: str, **kw: Any) -> pymysql.connections.Connection:
        return pymysql.connect(
            host=self.server.host,
            port=self.server.port,
            user=self.login,
            password=UP_PASSWORD,
            **self._kw(who, kw),
        )

    def upstream_ids(self) -> list[int]:
        """Server thread ids of the proxy's upstream connections, now."""
        rows = self.server.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s ORDER BY ID",
            (self.login,),
        )
        return [int(r[0]) for r in rows]

    def pin(self, conn: pymysql.connections.Connection) -> str | None:
        """The pin reason of ``conn``'s proxy session, once the proxy has finished with
        its last command (the client gets the response before the proxy records it):
        the first value read twice in a row 50 ms apart."""
        cid = conn.thread_id()
        last = session_state(self.proxy, cid)
        deadline = time.monotonic() + 2
        while True:
            time.sleep(0.05)
            now = session_state(self.proxy, cid)
            if now == last or time.monotonic() > deadline:
                return now[0]
            last = now

    def thread_of(self, conn: pymysql.connections.Connection) -> int:
        """The server thread id of the upstream connection a statement of ``conn`` runs
        on (read from the processlist row of that very statement)."""
        marker = unique("here")
        ((tid,),) = rows_of(
            run(
                conn,
                f"SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%'",
            )
        )
        return int(tid)


@pytest.fixture
def shared(
    proxy_factory: Callable[..., ProxyThread], app_account: MariaDBServer
) -> Callable[..., Shared]:
    def make(
        mode: str,
        max_connections: int = 1,
        *,
        server: MariaDBServer | None = None,
        grants: str | None = "ALL PRIVILEGES ON *.*",
        checkout_timeout: float = 3.0,
        clients: dict[str, dict[str, Any]] | None = None,
        login: str | None = None,
    ) -> Shared:
        srv = server or app_account
        if login is None:
            login = f"{P}_up_{os.getpid()}_{next(_logins)}"
            srv.create_user(login, UP_PASSWORD, grants=grants)
        users = {
            name: {
                "password": pw,
                "pool_mode": mode,
                "upstream_user": login,
                "upstream_password": UP_PASSWORD,
            }
            for name, pw in PASSWORDS.items()
        }
        p = proxy_factory(
            server=server,
            users=users,
            upstream={"max_connections": max_connections},
            pool={"checkout_timeout": checkout_timeout},
        )
        return Shared(p, srv, login, mode, clients or {})

    return make


def run(conn: pymysql.connections.Connection, sql: str, typed: bool = False) -> Any:
    """("rows", rows, affected-or-row count[, column types]) or ("error", code)."""
    try:
        with conn.cursor() as cur:
            n = cur.execute(sql)
            rows = tuple(tuple(r) for r in (cur.fetchall() or ()))
            if typed:
                types = tuple(tuple(d[1:]) for d in (cur.description or ()))
                return ("rows", rows, n, types)
            return ("rows", rows, n)
    except pymysql.MySQLError as exc:
        return ("error", exc.args[0])


def close(*conns: pymysql.connections.Connection) -> None:
    for c in conns:
        if c.open:
            c.close()


def rows_of(result: Any) -> Any:
    assert result[0] == "rows", result
    return result[1]


def play(
    script: list[Step],
    connect: Callable[[str], pymysql.connections.Connection],
    typed: bool = False,
) -> list[Any]:
    conns: dict[str, pymysql.connections.Connection] = {}
    out: list[Any] = []
    try:
        for who, sql in script:
            if sql == QUIT:
                conns.pop(who).close()
                out.append(QUIT)
                continue
            if who not in conns:
                conns[who] = connect(who)
            out.append(run(conns[who], sql, typed))
    finally:
        for c in conns.values():
            c.close()
    return out


def assert_same(
    s: Shared, script: list[Step], setup: list[str] = (), typed: bool = False
) -> list[Any]:
    """Run ``script`` directly, then through the proxy (``setup`` runs as root before
    each run, e.g. to empty the tables); every step answers the same."""
    for sql in setup:
        s.server.execute(sql)
    want = play(script, s.direct, typed)
    for sql in setup:
        s.server.execute(sql)
    got = play(script, s.proxied, typed)
    for step, w, g in zip(script, want, got, strict=True):
        assert g == w, f"{step}: direct MariaDB {w}, through the proxy {g}"
    return got


@pytest.fixture
def table(app_account: MariaDBServer) -> Iterator[str]:
    """``test.<name>``: id AUTO_INCREMENT, v INT; five rows v = 1..5."""
    name = unique("t")
    app_account.execute(
        f"CREATE TABLE test.{name} (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB"
    )
    yield name
    app_account.execute(f"SET STATEMENT lock_wait_timeout=5 FOR DROP TABLE IF EXISTS test.{name}")


def refill(t: str) -> list[str]:
    return [f"TRUNCATE TABLE test.{t}", f"INSERT INTO test.{t} (v) VALUES (1),(2),(3),(4),(5)"]


@pytest.fixture(scope="module")
def private_server() -> Iterator[MariaDBServer]:
    """A server of this module's own, started with interactive_timeout=123: for the XA
    test (a regression there would leave an orphaned prepared transaction) and the
    CLIENT_INTERACTIVE test."""
    srv = MariaDBServer(max_connections=60, extra_args=("--interactive-timeout=123",))
    try:
        srv.start()
    except MariaDBNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is required in CI: {exc}", pytrace=False)
        pytest.skip(f"MariaDB not available: {exc}")
    try:
        yield srv
    finally:
        srv.close()


# == C1-C10: connection and protocol level ================================================


@pooled
def test_c1_c14_handshake_charsets_of_clients_sharing_one_connection_are_each_their_own(
    shared, table, mode
):
    s = shared(mode, clients={"alice": {"charset": "latin1"}, "bob": {"charset": "utf8mb4"}})
    cs = "SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection"
    assert_same(
        s,
        [
            ("alice", cs),
            ("bob", cs),
            ("alice", "SELECT 'é', HEX('é'), CHARSET('é')"),
            ("bob", "SELECT 'é', HEX('é'), CHARSET('é')"),
            ("carol", "SET NAMES utf8mb4 COLLATE utf8mb4_bin"),
            ("alice", cs),
            ("carol", cs),
            ("bob", cs),
        ],
    )


def _com_set_option(conn: pymysql.connections.Connection, on: bool) -> None:
    conn._execute_command(0x1B, b"\x00\x00" if on else b"\x01\x00")  # COM_SET_OPTION
    assert conn._read_packet().is_eof_packet()  # the server answers with an EOF


@pooled
def test_c2_com_set_option_pins_and_its_connection_is_closed_not_reused(shared, mode):
    s = shared(mode)
    a = s.proxied("alice")
    try:
        _com_set_option(a, on=True)
        assert rows_of(run(a, "SELECT 1; SELECT 2")) == ((1,),)  # the first result
        assert s.pin(a) == "COM_SET_OPTION (multi-statements switched)"
        (used,) = s.upstream_ids()
    finally:
        close(a)
    wait_until(lambda: used not in s.upstream_ids(), 5, "the connection is closed")
    # the next client (same capabilities: the same pool key) parses as it asked to
    got = assert_same(s, [("bob", "SELECT 1; SELECT 2"), ("bob", "SELECT 3")])
    assert got[0] == ("error", 1064)


@pooled
def test_c3_c35_client_found_rows_clients_never_share_a_connection_with_others(shared, table, mode):
    s = shared(mode, clients={"alice": {"client_flag": CLIENT.FOUND_ROWS}})
    script = [
        ("alice", f"UPDATE {table} SET v = v WHERE id <= 2"),
        ("alice", "SELECT ROW_COUNT()"),
        ("bob", f"UPDATE {table} SET v = v WHERE id <= 2"),
        ("bob", "SELECT ROW_COUNT()"),
        ("alice", f"UPDATE {table} SET v = v WHERE id <= 3"),
        ("bob", "SELECT ROW_COUNT()"),
        ("alice", "SELECT ROW_COUNT()"),
    ]
    got = assert_same(s, script, refill(table))
    assert got[0][2] == 2 and got[2][2] == 0  # matched rows vs changed rows

    # and, through the proxy, the two never ran on one upstream connection
    ids: dict[str, set[int]] = {"alice": set(), "bob": set()}
    conns = {who: s.proxied(who) for who in ids}
    try:
        for who, sql in script:
            run(conns[who], sql)
            ids[who].add(s.thread_of(conns[who]))
    finally:
        for c in conns.values():
            c.close()
    assert ids["alice"] and ids["bob"] and not ids["alice"] & ids["bob"]


@all_modes
def test_c4_ignore_space_survives_a_reset_of_the_clients_connection(shared, table, mode):
    s = shared(mode, clients={w: {"client_flag": CLIENT.IGNORE_SPACE} for w in PASSWORDS})
    script = [
        ("alice", f"SELECT COUNT (*) FROM {table}"),
        ("alice", "CREATE TEMPORARY TABLE inv_c4 (a INT)"),  # session mode: any state
        ("alice", QUIT),  # the connection is reset before bob gets it
        ("bob", f"SELECT COUNT (*) FROM {table}"),
        ("bob", "SELECT FIND_IN_SET('IGNORE_SPACE', @@sql_mode) > 0"),
    ]
    assert_same(s, script, refill(table))


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_c5_interactive_client_reads_interactive_timeout_after_a_reset(
    shared, private_server, mode
):
    s = shared(
        mode,
        server=private_server,
        clients={w: {"client_flag": CLIENT.INTERACTIVE} for w in PASSWORDS},
    )
    got = assert_same(
        s,
        [
            ("alice", "SELECT @@wait_timeout"),
            ("alice", "CREATE TEMPORARY TABLE inv_c5 (a INT)"),
            ("alice", QUIT),
            ("bob", "SELECT @@wait_timeout"),
        ],
    )
    assert rows_of(got[0]) == ((123,),)


@pooled
def test_c6_load_data_local_infile_in_pooled_modes_as_on_the_server(shared, table, mode, tmp_path):
    data = tmp_path / "rows.tsv"
    data.write_text("10\t100\n11\t110\n12\t120\n")
    s = shared(mode, clients={"alice": {"local_infile": True}})
    load = f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE {table}"
    assert_same(
        s,
        [
            ("alice", load),
            ("alice", "SELECT ROW_COUNT()"),
            ("bob", load),  # bob did not advertise CLIENT_LOCAL_FILES: refused
            ("alice", f"SELECT COUNT(*), SUM(v) FROM {table}"),
        ],
        refill(table),
    )


@pooled
def test_c8_c43_is_used_lock_shows_the_upstream_thread_id_not_the_clients_id(shared, mode):
    """A documented limit: CONNECTION_ID() is the client's id everywhere, but the server
    returns its own thread id from IS_USED_LOCK() (and PROCESSLIST)."""
    s = shared(mode, max_connections=2)
    name = unique("lock")
    a, b = s.proxied("alice"), s.proxied("bob")
    try:
        ((got, cid),) = rows_of(run(a, f"SELECT GET_LOCK('{name}', 0), CONNECTION_ID()"))
        assert got == 1 and cid == a.thread_id()
        ((holder,),) = rows_of(run(b, f"SELECT IS_USED_LOCK('{name}')"))
        assert holder != cid and holder in s.upstream_ids()
        assert rows_of(run(a, f"SELECT IS_USED_LOCK('{name}') = CONNECTION_ID()")) == ((0,),)
        assert rows_of(run(a, f"SELECT RELEASE_LOCK('{name}')")) == ((1,),)
    finally:
        close(a, b)


@pooled
def test_c9_user_shows_the_upstream_login_not_the_proxy_user(shared, mode):
    """A documented limit: pools are per upstream login; USER() names it and the proxy's
    address, CURRENT_USER() its account."""
    s = shared(mode)
    a = s.proxied("alice")
    try:
        assert rows_of(run(a, "SELECT USER(), CURRENT_USER()")) == (
            (f"{s.login}@127.0.0.1", f"{s.login}@%"),
        )
    finally:
        close(a)


# == C11-C12: identity and security ========================================================


@pytest.fixture
def role_setup(app_account: MariaDBServer) -> Iterator[tuple[str, str, str]]:
    """(login, role, table): a login that may only use the role, which may read table."""
    login, role, t = unique("low"), unique("role"), unique("sec")
    srv = app_account
    srv.execute(f"CREATE TABLE test.{t} (s VARCHAR(32))")
    srv.execute(f"CREATE TABLE test.{t}_pub (s VARCHAR(32))")
    srv.execute(f"INSERT INTO test.{t} VALUES ('role-secret')")
    srv.execute(f"CREATE ROLE {role}")
    srv.execute(f"GRANT SELECT ON test.{t} TO {role}")
    # the login may use schema test (the proxy's login checks it) but not read t
    srv.create_user(login, UP_PASSWORD, grants=f"SELECT ON test.{t}_pub")
    srv.execute(f"GRANT {role} TO '{login}'@'%'")
    yield login, role, t
    srv.execute(f"DROP USER IF EXISTS '{login}'@'%'")
    srv.execute(f"DROP ROLE IF EXISTS {role}")
    srv.execute(f"DROP TABLE IF EXISTS test.{t}, test.{t}_pub")


@pooled
def test_c11_set_role_pins_and_never_reaches_the_next_session(shared, role_setup, mode):
    login, role, t = role_setup
    s = shared(mode, login=login)
    a = s.proxied("alice")
    try:
        run(a, f"SET ROLE {role}")
        assert rows_of(run(a, f"SELECT s FROM {t}")) == (("role-secret",),)
        assert s.pin(a) == "current role (SET ROLE)"
        (used,) = s.upstream_ids()
    finally:
        close(a)
    script = [("bob", "SELECT CURRENT_ROLE()"), ("bob", f"SELECT s FROM {t}")]
    got = assert_same(s, script)
    assert got == [("rows", ((None,),), 1), ("error", 1142)]
    b = s.proxied("bob")
    try:
        assert run(b, f"SELECT s FROM {t}") == ("error", 1142)
        assert s.upstream_ids() == [used]  # the same connection, reset
    finally:
        close(b)


@pooled
def test_c12_default_role_is_back_for_the_next_session_after_set_role_none(
    shared, role_setup, app_account, mode
):
    login, role, t = role_setup
    app_account.execute(f"SET DEFAULT ROLE {role} FOR '{login}'@'%'")
    s = shared(mode, login=login)
    a = s.proxied("alice")
    try:
        assert rows_of(run(a, "SELECT CURRENT_ROLE()")) == ((role,),)
        run(a, "SET ROLE NONE")
        assert run(a, f"SELECT s FROM {t}") == ("error", 1142)
        (used,) = s.upstream_ids()
    finally:
        close(a)
    b = s.proxied("bob")
    try:
        assert rows_of(run(b, "SELECT CURRENT_ROLE()")) == ((role,),)
        assert rows_of(run(b, f"SELECT s FROM {t}")) == (("role-secret",),)
        assert s.upstream_ids() == [used]
    finally:
        close(b)


# == C13-C28: session system variables ======================================================


@pooled
def test_c13_c27_c53_unusual_session_variables_are_each_sessions_own(shared, mode):
    s = shared(mode)
    read = (
        "SELECT @@in_predicate_conversion_threshold, @@div_precision_increment, "
        "@@lc_time_names, @@group_concat_max_len, @@query_cache_type"
    )
    assert_same(
        s,
        [
            ("alice", "SET in_predicate_conversion_threshold = 3, div_precision_increment = 9"),
            ("alice", "SET lc_time_names = 'de_DE', group_concat_max_len = 77"),
            ("alice", "SET SESSION query_cache_type = OFF"),  # the cache is global (off)
            ("bob", read),
            ("alice", read),
            ("bob", "SELECT 1 / 3, DATE_FORMAT('2024-03-01', '%M')"),
            ("alice", "SELECT 1 / 3, DATE_FORMAT('2024-03-01', '%M')"),
        ],
    )


@pooled
def test_c15_set_timestamp_pins_and_is_the_sessions_own(shared, mode):
    s = shared(mode, max_connections=2)
    got = assert_same(
        s,
        [
            ("alice", "SET timestamp = 1000000000"),
            ("alice", "SELECT UNIX_TIMESTAMP(), @@timestamp, NOW()"),
            ("bob", "SELECT UNIX_TIMESTAMP() > 1000000000, @@timestamp > 1000000000"),
            ("alice", "SELECT UNIX_TIMESTAMP()"),
            ("alice", "SET timestamp = DEFAULT"),
            ("alice", "SELECT UNIX_TIMESTAMP() > 1000000000"),
        ],
    )
    assert rows_of(got[2]) == ((1, 1),)


@pooled
def test_c16_c33_set_insert_id_is_used_by_the_sessions_own_next_insert_only(shared, table, mode):
    s = shared(mode, max_connections=2)
    assert_same(
        s,
        [
            ("alice", "SET insert_id = 500"),
            ("alice", "SELECT @@insert_id"),
            ("bob", "SELECT @@insert_id"),
            ("bob", f"INSERT INTO {table} (v) VALUES (6)"),
            ("bob", "SELECT LAST_INSERT_ID(), @@identity"),
            ("alice", "SELECT @@insert_id"),
            ("alice", f"INSERT INTO {table} (v) VALUES (7)"),
            ("alice", "SELECT LAST_INSERT_ID(), @@identity, @@last_insert_id, @@insert_id"),
            ("bob", "SELECT LAST_INSERT_ID()"),
            ("alice", f"SELECT id FROM {table} WHERE v = 7"),
        ],
        refill(table),
    )


@pooled
def test_c17_c33_identity_and_last_insert_id_assignments_are_each_sessions_own(shared, mode):
    s = shared(mode, max_connections=2)
    assert_same(
        s,
        [
            ("alice", "SET @@identity = 43"),  # the tracker reports nothing for this one
            ("alice", "SELECT LAST_INSERT_ID(), @@identity, @@last_insert_id"),
            ("bob", "SELECT LAST_INSERT_ID(), @@identity, @@last_insert_id"),
            ("bob", "SELECT @@identity"),
            ("bob", "SELECT @@last_insert_id + 0"),
            ("alice", "SELECT @@last_insert_id"),
            ("carol", "SET last_insert_id = 44"),
            ("carol", "SELECT @@session.identity + 0"),
            ("bob", "SELECT @@last_insert_id"),
            ("alice", "SELECT @@identity + 0"),
        ],
    )


@pooled
def test_c18_c52_rand_seeds_pin_and_give_the_sessions_own_sequence(shared, mode):
    s = shared(mode, max_connections=2)
    assert_same(
        s,
        [
            ("alice", "SET rand_seed1 = 12345, rand_seed2 = 678"),
            ("bob", "SELECT RAND(7)"),
            ("alice", "SELECT RAND()"),
            ("bob", "SELECT RAND(7)"),
            ("alice", "SELECT RAND()"),
            ("alice", "SELECT RAND(7)"),
        ],
    )


@pooled
def test_c19_privileged_session_variables_are_each_sessions_own(shared, mode):
    s = shared(mode)
    read = "SELECT @@sql_log_bin, @@skip_replication, @@binlog_format"
    assert_same(
        s,
        [
            ("alice", "SET sql_log_bin = 0"),
            ("alice", "SET skip_replication = 1, binlog_format = 'ROW'"),
            ("bob", read),
            ("alice", read),
            ("bob", "SET sql_log_bin = 1"),
            ("carol", read),
            ("alice", read),
        ],
    )


@pooled
def test_c19_variables_that_cannot_be_carried_pin_and_stay_the_sessions_own(shared, mode):
    s = shared(mode, max_connections=2)
    read = "SELECT @@gtid_domain_id, @@server_id = @@global.server_id"
    got = assert_same(
        s,
        [
            ("alice", "SET gtid_domain_id = 7"),
            ("alice", "SET server_id = 4242"),
            ("bob", read),
            ("alice", read),
        ],
    )
    assert rows_of(got[2]) == ((0, 1),)


@pooled
def test_c20_c48_profiling_history_never_shows_another_sessions_statements(shared, mode):
    s = shared(mode, 2)  # profiling pins alice's connection: bob gets the other one
    assert_same(
        s,
        [
            ("alice", "SET profiling = 1"),
            ("alice", "SELECT 'alice-profiled-secret'"),
            ("bob", "SHOW PROFILES"),
            ("bob", "SELECT COUNT(*) FROM information_schema.PROFILING"),
            ("alice", "SELECT COUNT(*) FROM information_schema.PROFILING WHERE QUERY_ID = 1"),
        ],
    )


@all_modes
def test_c48_a_new_session_on_a_reset_connection_has_no_profiling_history(shared, mode):
    s = shared(mode)
    assert_same(
        s,
        [
            ("alice", "SET profiling = 1"),
            ("alice", "SELECT 'alice-profiled-secret'"),
            ("alice", "CREATE TEMPORARY TABLE inv_c48 (a INT)"),  # pins: reset on quit
            ("alice", QUIT),
            ("bob", "SELECT @@profiling"),
            ("bob", "SHOW PROFILES"),
        ],
    )


@pooled
def test_c21_c49_optimizer_trace_never_shows_another_sessions_query(shared, table, mode):
    s = shared(mode, 2)  # the trace pins alice's connection: bob gets the other one
    assert_same(
        s,
        [
            ("alice", "SET optimizer_trace = 'enabled=on'"),
            ("alice", f"SELECT 'alice-traced-secret' FROM {table} WHERE v = 1"),
            ("bob", "SELECT QUERY FROM information_schema.OPTIMIZER_TRACE"),
            ("alice", "SELECT QUERY FROM information_schema.OPTIMIZER_TRACE"),
        ],
        refill(table),
    )


@pooled
def test_c22_session_track_changes_pin_and_the_reset_turns_tracking_back_on(shared, mode):
    s = shared(mode)
    a = s.proxied("alice")
    try:
        run(a, "SET session_track_system_variables = ''")
        assert s.pin(a) == "session tracking changed (session_track_*)"
        run(a, "SET time_zone = '+01:00'")  # unreported: the pin keeps it on one connection
        assert rows_of(run(a, "SELECT @@time_zone")) == (("+01:00",),)
        (used,) = s.upstream_ids()
    finally:
        close(a)
    # bob gets the reset connection: trackers on again, so his setting is carried and
    # carol, on the same connection, never sees it
    got = assert_same(
        s,
        [
            ("bob", "SELECT @@time_zone"),
            ("bob", "SET time_zone = '+02:00'"),
            ("carol", "SELECT @@time_zone"),
            ("bob", "SELECT @@time_zone"),
        ],
    )
    assert rows_of(got[0])[0][0] == "SYSTEM"
    assert s.upstream_ids() == [used]


@pytest.mark.xfail(
    strict=True,
    reason="C22: the proxy switches session tracking on for its own bookkeeping on every "
    "pooled upstream connection, and a client reads those values: "
    "@@session_track_system_variables = '*' and @@session_track_state_change = 1 instead "
    "of the server's defaults ('autocommit,character_set_client,...,time_zone', 0)",
)
@pooled
def test_c22_session_track_variables_read_as_the_servers_defaults(shared, mode):
    s = shared(mode)
    assert_same(
        s,
        [
            (
                "alice",
                "SELECT @@session_track_system_variables, @@session_track_state_change, "
                "@@session_track_schema",
            )
        ],
    )


def test_c23_completion_type_chain_keeps_the_chained_transaction_on_its_connection(shared, table):
    s = shared("transaction")
    assert_same(
        s,
        [
            ("alice", "SET completion_type = 'CHAIN'"),
            ("alice", "BEGIN"),
            ("alice", f"INSERT INTO {table} (v) VALUES (100)"),
            ("alice", "COMMIT"),  # chains: a new transaction is open
            ("alice", "SELECT @@in_transaction"),
            ("alice", f"INSERT INTO {table} (v) VALUES (101)"),
            ("alice", "ROLLBACK"),  # chains too
            ("alice", "SELECT @@in_transaction"),
            ("alice", "SET completion_type = 'NO_CHAIN'"),
            ("alice", "COMMIT"),
            ("alice", "SELECT @@in_transaction"),
            ("bob", f"SELECT COUNT(*) FROM {table} WHERE v >= 100"),
            ("bob", "SELECT @@completion_type"),
        ],
        refill(table),
    )


@pooled
def test_c23_commit_release_never_hands_the_closed_connection_to_another_session(shared, mode):
    """The server closes the connection after COMMIT RELEASE (or a COMMIT under
    completion_type=RELEASE): no other session may get it. The client that sent it goes
    on, on another connection (a direct client is disconnected; rarely, its next
    statement lands on the closing connection and gets ERR 2013, as a direct client
    would: documented)."""
    s = shared(mode)
    a, b = s.proxied("alice"), s.proxied("bob")

    def alice_goes_on(i: int) -> None:
        nonlocal a
        got = run(a, f"SELECT {i}")
        if got == ("error", 2013):
            close(a)
            a = s.proxied("alice")
        else:
            assert rows_of(got) == ((i,),)

    try:
        for i in range(10):
            assert run(a, "COMMIT RELEASE")[0] == "rows"
            assert rows_of(run(b, f"SELECT {i}, @@completion_type")) == ((i, "NO_CHAIN"),)
            alice_goes_on(i)
        if mode == "transaction":  # (statement mode refuses BEGIN)
            for i in range(10):
                run(a, "SET completion_type = 'RELEASE'")
                assert run(a, "BEGIN")[0] == "rows"
                assert run(a, "COMMIT")[0] == "rows"
                assert rows_of(run(b, f"SELECT {i}, @@completion_type")) == ((i, "NO_CHAIN"),)
                alice_goes_on(i)
    finally:
        close(a, b)


@pooled
def test_c24_a_short_wait_timeout_never_hands_a_dead_connection_to_anyone(shared, mode):
    s = shared(mode)
    a, b = s.proxied("alice"), s.proxied("bob")
    try:
        run(a, "SET SESSION wait_timeout = 1")
        assert rows_of(run(a, "SELECT @@wait_timeout")) == ((1,),)
        time.sleep(2.2)  # the server closes the idle pooled connection meanwhile
        assert rows_of(run(b, "SELECT 1, @@wait_timeout")) == ((1, 28800),)
        assert rows_of(run(a, "SELECT 2, @@wait_timeout")) == ((2, 1),)
    finally:
        close(a, b)


@pooled
def test_c25_c38_max_error_count_and_sql_notes_are_each_sessions_own(shared, mode):
    s = shared(mode)
    assert_same(
        s,
        [
            ("alice", "SET max_error_count = 0"),
            ("alice", "DROP TABLE IF EXISTS inv_c25_missing"),
            ("bob", "SELECT 1"),
            ("alice", "SHOW WARNINGS"),
            ("alice", "SELECT @@warning_count"),
            ("alice", "SET sql_notes = 0"),
            ("alice", "DROP TABLE IF EXISTS inv_c25_missing"),
            ("bob", "DROP TABLE IF EXISTS inv_c25_missing"),
            ("alice", "SELECT @@warning_count"),
            ("bob", "SHOW WARNINGS"),
            ("alice", "SHOW WARNINGS"),
        ],
    )


# == C31-C32: transactions ==================================================================


@pooled
def test_c31_one_shot_read_only_pins_and_is_the_sessions_own(shared, table, mode):
    s = shared(mode, max_connections=2)
    ins = f"INSERT INTO {table} (v) VALUES (9)"
    assert_same(
        s,
        [
            ("alice", "SET TRANSACTION READ ONLY"),
            ("alice", ins),  # ERR 1792, and the one-shot survives it
            ("bob", ins),
            ("alice", ins),
            ("alice", "COMMIT"),  # ends the one-shot
            ("alice", ins),
            ("bob", f"SELECT COUNT(*) FROM {table} WHERE v = 9"),
        ],
        refill(table),
    )


def _row_is_share_locked(srv: MariaDBServer, table: str) -> bool:
    """Another connection's UPDATE of row id=1 waits for a lock (SERIALIZABLE reads take
    shared locks; REPEATABLE READ reads take none)."""
    probe = srv.connect(database="test")
    try:
        with probe.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
            try:
                cur.execute(f"UPDATE {table} SET v = v WHERE id = 1")
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1205, exc.args
                return True
            return False
    finally:
        probe.close()


def test_c31_one_shot_isolation_level_applies_to_the_sessions_next_transaction_only(
    shared, table, app_account
):
    s = shared("transaction", max_connections=2)
    for sql in refill(table):
        app_account.execute(sql)
    a, b = s.proxied("alice"), s.proxied("bob")
    read = f"SELECT v FROM {table} WHERE id = 1"
    try:
        run(a, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        assert s.pin(a) == "one-shot SET TRANSACTION (until the next transaction)"
        for sql in ("BEGIN", read):  # bob: his own (default) isolation level
            run(b, sql)
        assert not _row_is_share_locked(app_account, table)
        run(b, "COMMIT")
        for sql in ("BEGIN", read):
            run(a, sql)
        assert _row_is_share_locked(app_account, table)
        run(a, "COMMIT")
        for sql in ("BEGIN", read):  # consumed: the next one is REPEATABLE READ again
            run(a, sql)
        assert not _row_is_share_locked(app_account, table)
        run(a, "COMMIT")
        assert s.pin(a) is None
        # left pending by a session that quits: the reset clears it
        run(a, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        b.close()
        a.close()
        c = s.proxied("carol")
        for sql in ("BEGIN", read):
            run(c, sql)
        assert not _row_is_share_locked(app_account, table)
        c.close()
    finally:
        close(a, b)


def test_c32_xa_prepared_by_a_client_that_leaves_is_recoverable_not_orphaned(
    shared, private_server
):
    srv = private_server
    t = unique("xa")
    srv.execute(f"CREATE TABLE test.{t} (id INT PRIMARY KEY) ENGINE=InnoDB")
    s = shared("transaction", server=srv)
    xid = unique("xid")
    a = s.proxied("alice")
    try:
        for sql in (f"XA START '{xid}'", f"INSERT INTO {t} VALUES (1)", f"XA END '{xid}'"):
            assert run(a, sql)[0] == "rows", sql
        assert run(a, f"XA PREPARE '{xid}'")[0] == "rows"
        assert s.pin(a) == "XA transaction"
        (used,) = s.upstream_ids()
    finally:
        close(a)
    # the connection is closed, not reset (a reset would orphan the prepared branch)
    wait_until(lambda: used not in s.upstream_ids(), 5, "the XA connection is closed")
    assert [r[3] for r in srv.execute("XA RECOVER")] == [xid.encode()]
    b = s.proxied("bob")
    try:
        assert run(b, f"XA COMMIT '{xid}'")[0] == "rows"
        assert rows_of(run(b, f"SELECT COUNT(*) FROM {t}")) == ((1,),)
    finally:
        close(b)
    assert srv.execute("XA RECOVER") == []
    time.sleep(0.12)  # INNODB_TRX is a cache refreshed at most every 0.1 s
    assert srv.execute("SELECT COUNT(*) FROM information_schema.INNODB_TRX")[0][0] == 0
    # an ACTIVE branch left by a client that quits is rolled back
    a = s.proxied("alice")
    try:
        for sql in (f"XA START '{xid}2'", f"INSERT INTO {t} VALUES (2)"):
            assert run(a, sql)[0] == "rows", sql
    finally:
        close(a)
    wait_until(
        lambda: (
            srv.execute(f"SELECT COUNT(*) FROM test.{t}")[0][0] == 1
            and srv.execute("XA RECOVER") == []
        ),
        5,
        "the active branch is rolled back",
    )
    srv.execute(f"DROP TABLE test.{t}")


def test_c32_xa_start_is_refused_in_statement_mode(shared):
    s = shared("statement")
    a = s.proxied("alice")
    try:
        assert run(a, "XA START 'inv_c32'") == ("error", 1235)
        assert rows_of(run(a, "SELECT 1")) == ((1,),)
        assert s.pin(a) is None
    finally:
        close(a)
    assert s.server.execute("XA RECOVER") == []


# == C33-C40: values of the last statement ==================================================


@pooled
@pytest.mark.parametrize(
    ("first", "read", "rule"),
    [
        ("UPDATE {t} SET v = v + 1 WHERE id < 3", "SELECT ROW_COUNT() + 0", "C35"),
        ("INSERT IGNORE INTO {t} (id, v) VALUES (1, 1)", "SELECT @@warning_count, 1", "C38"),
        (
            "INSERT INTO {t} (id, v) VALUES (1, 1)",
            "GET DIAGNOSTICS CONDITION 1 @e = MYSQL_ERRNO",
            "C38",
        ),
        ("SELECT NEXTVAL({t}_seq)", "SELECT LASTVAL({t}_seq) + 0", "C37"),
    ],
    ids=["row_count", "warnings", "get_diagnostics", "lastval"],
)
def test_c35_c37_c38_values_that_cannot_be_restored_in_a_larger_statement_are_refused(
    shared, table, app_account, mode, first, read, rule
):
    """A documented limit: after the connection that ran the statement served another
    session, these reads inside a larger statement get ERR 1235 (never a wrong value);
    the plain reads are answered (test_session_isolation.py)."""
    app_account.execute(f"CREATE SEQUENCE test.{table}_seq")
    try:
        for sql in refill(table):
            app_account.execute(sql)
        s = shared(mode)
        a, b = s.proxied("alice"), s.proxied("bob")
        try:
            run(a, first.format(t=table))
            rows_of(run(b, f"SELECT COUNT(*) FROM {table}"))  # bob uses the connection
            got = run(a, read.format(t=table))
            assert got == ("error", 1235), (rule, got)
            assert rows_of(run(a, "SELECT 1")) == ((1,),)  # the session goes on
        finally:
            close(a, b)
    finally:
        app_account.execute(f"DROP SEQUENCE IF EXISTS test.{table}_seq")


@pooled
def test_c36_found_rows_of_a_new_session_is_zero_even_on_a_reset_connection(shared, table, mode):
    """COM_RESET_CONNECTION keeps FOUND_ROWS() (and MariaDB even hands a new connection
    the value of the thread it reuses): the proxy answers a session's FOUND_ROWS() from
    its own values, so bob never reads alice's count."""
    s = shared(mode)
    for sql in refill(table):
        s.server.execute(sql)
    a = s.proxied("alice")
    try:
        run(a, "CREATE TEMPORARY TABLE inv_c36 (a INT)")  # pins: reset when alice quits
        assert rows_of(run(a, f"SELECT SQL_CALC_FOUND_ROWS v FROM {table} LIMIT 1")) == ((1,),)
        (used,) = s.upstream_ids()
    finally:
        close(a)
    b = s.proxied("bob")
    try:
        assert rows_of(run(b, "SELECT FOUND_ROWS()")) == ((0,),)
        assert s.upstream_ids() == [used]
    finally:
        close(b)


@pooled
@pytest.mark.parametrize("between", ["SET @x = 1", "DO 1", "UPDATE {t} SET v = v WHERE id = 1"])
def test_c36_found_rows_in_a_larger_statement_is_never_another_sessions(
    shared, table, mode, between
):
    s = shared(mode)
    assert_same(
        s,
        [
            ("bob", "SELECT 1 FROM DUAL WHERE 0"),  # bob's FOUND_ROWS() is 0
            ("alice", f"SELECT v FROM {table} LIMIT 3"),
            ("bob", between.format(t=table)),
            ("bob", "SELECT FOUND_ROWS() + 0"),
        ],
        refill(table),
    )


@pooled
@pytest.mark.parametrize("between", ["SET @x = 1", "DO 1", "SELECT 1"])
def test_c38_diagnostics_read_by_a_statement_are_never_another_sessions(
    shared, app_account, mode, between
):
    t = unique("dup")
    app_account.execute(f"CREATE TABLE test.{t} (id INT PRIMARY KEY, email VARCHAR(64) UNIQUE)")
    try:
        s = shared(mode)
        insert = f"INSERT INTO {t} VALUES (%d, 'alice.secret@example.com')"
        got = assert_same(
            s,
            [
                ("bob", f"SELECT COUNT(*) FROM {t}"),  # bob's diagnostics area is empty
                ("alice", insert % 1),
                ("alice", insert % 2),  # ERR 1062
                ("bob", between),
                ("bob", "GET DIAGNOSTICS @n = NUMBER"),
                ("bob", "GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT"),
                ("bob", "SELECT @n, @m"),
                ("bob", "SELECT @@warning_count, @@error_count, 1"),
            ],
            [f"TRUNCATE TABLE test.{t}"],
        )
        assert "secret" not in repr(got[-2:])
    finally:
        app_account.execute(f"DROP TABLE IF EXISTS test.{t}")


@pytest.mark.skipif(CLI is None, reason="the mariadb CLI is not installed")
@pooled
def test_c38_cli_show_warnings_reports_the_clis_own_warnings(shared, table, mode):
    """The CLI with --show-warnings sends SHOW WARNINGS after every statement whose OK
    counted warnings; through the proxy that read may run on another connection than the
    statement, after another session left an error on it."""
    s = shared(mode)
    sql = (
        f"INSERT IGNORE INTO {table} (id, v) VALUES (1, 1), (1, 2); "
        "DO 1; SELECT @@warning_count; "
        f"INSERT INTO {table} (id, v) VALUES (7, 'x'); SELECT 1"
    )

    def cli(port: int, user: str, password: str, host: str) -> tuple[int, str, str]:
        assert CLI is not None
        done = subprocess.run(
            [CLI, "--no-defaults", f"-h{host}", f"-P{port}", f"-u{user}", f"-p{password}"]
            + ["--batch", "--show-warnings", "--force", "-D", "test", "-e", sql],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode, done.stdout, done.stderr

    for sql_ in refill(table):
        s.server.execute(sql_)
    want = cli(s.server.port, s.login, UP_PASSWORD, s.server.host)
    for sql_ in refill(table):
        s.server.execute(sql_)
    bob = s.proxied("bob")
    try:
        assert run(bob, f"INSERT INTO {table} (id, v) VALUES (1, 9)") == ("error", 1062)
        got = cli(s.proxy.port, "alice", PASSWORDS["alice"], "127.0.0.1")
    finally:
        close(bob)
    assert got == want
    assert "Duplicate entry '1'" in want[1] and "1366" in want[2]


@pooled
def test_c39_c40_in_transaction_and_last_gtid_are_each_sessions_own(shared, table, mode):
    s = shared(mode, max_connections=2)
    script = [
        ("alice", "SELECT @@in_transaction, @@last_gtid"),
        ("alice", f"INSERT INTO {table} (v) VALUES (6)"),
        ("alice", "SELECT @@in_transaction, @@last_gtid"),
        ("bob", "SELECT @@in_transaction, @@last_gtid"),
    ]
    if mode == "transaction":
        script += [
            ("alice", "BEGIN"),
            ("alice", "SELECT @@in_transaction"),
            ("bob", "SELECT @@in_transaction"),
            ("alice", "COMMIT"),
            ("alice", "SELECT @@in_transaction"),
        ]
    assert_same(s, script, refill(table))


# == C41-C50: named objects, locks and other per-connection state ===========================

USER_VARIABLE_LITERALS = [
    "42",
    "-7",
    "18446744073709551615",
    "1.5",
    "-0.25",
    "1e0",
    "X'41'",
    "0x41",
    "b'101'",
    "_latin1'y'",
    "_binary'b'",
    "'abc'",
    "''",
    "CAST(1 AS UNSIGNED)",
    "TRUE",
    "DATE'2024-01-02'",
    "_utf8mb4'é' COLLATE utf8mb4_bin",
    "CONVERT('x' USING latin1)",
]


@pooled
@pytest.mark.parametrize("charset", ["utf8mb4", "latin1"])
def test_c41_user_variables_of_every_type_keep_their_type_value_and_collation(
    shared, mode, charset
):
    s = shared(mode, max_connections=2, clients={"alice": {"charset": charset}})
    read = "SELECT @v, HEX(@v), CHARSET(@v), COLLATION(@v), @v IS NULL, @v + 0"
    script: list[Step] = []
    for lit in USER_VARIABLE_LITERALS:
        script += [
            ("alice", f"SET @v = {lit}"),
            ("bob", "SET @v = 'bob'"),
            ("bob", "SELECT @v, COLLATION(@v)"),
            ("alice", read),
        ]
    assert_same(s, script, typed=True)


@pooled
def test_c41_a_variable_another_session_cleared_reads_as_never_set(shared, mode):
    s = shared(mode)
    assert_same(
        s,
        [
            ("bob", "SET @z = 'x'"),
            ("bob", "SET @z = NULL"),
            ("alice", "SELECT @z, CHARSET(@z), COLLATION(@z)"),
            ("carol", "SET @w = 'y'"),
            ("alice", "SELECT @w, CHARSET(@w), COLLATION(@w)"),
        ],
        typed=True,
    )


@pooled
def test_c41_user_variables_table_lists_only_the_sessions_own(shared, mode):
    s = shared(mode)
    read = "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.USER_VARIABLES ORDER BY 1"
    assert_same(
        s,
        [
            ("alice", "SET @alice_secret_name = 'x'"),
            ("bob", read),
            ("alice", read),
            ("alice", "SET @alice_secret_name = NULL"),
            ("bob", read),
        ],
    )


@pooled
def test_c42_temporary_tables_with_one_name_in_two_sessions_are_each_sessions_own(
    shared, table, mode
):
    s = shared(mode, max_connections=2)
    assert_same(
        s,
        [
            ("alice", "CREATE TEMPORARY TABLE inv_tt (a VARCHAR(10))"),
            ("bob", "CREATE TEMPORARY TABLE inv_tt (a VARCHAR(10))"),
            ("alice", "INSERT INTO inv_tt VALUES ('alice')"),
            ("bob", "INSERT INTO inv_tt VALUES ('bob')"),
            ("alice", "SELECT * FROM inv_tt"),
            ("bob", "SELECT * FROM inv_tt"),
            ("alice", "DROP TEMPORARY TABLE inv_tt"),
            ("bob", "SELECT * FROM inv_tt"),
            ("alice", "SELECT * FROM inv_tt"),
            # a temporary table shadows the base table of its name, for its session only
            ("alice", f"CREATE TEMPORARY TABLE {table} (v INT)"),
            ("alice", f"SELECT COUNT(*) FROM {table}"),
            ("bob", f"SELECT COUNT(*) FROM {table}"),
            ("alice", f"DROP TEMPORARY TABLE {table}"),
            ("alice", f"SELECT COUNT(*) FROM {table}"),
        ],
        refill(table),
    )


@pooled
def test_c42_temporary_sequences_shadow_the_base_sequence_for_their_session_only(
    shared, app_account, mode
):
    seq = unique("seq")
    app_account.execute(f"CREATE SEQUENCE test.{seq}")
    try:
        s = shared(mode, max_connections=2)
        a = s.proxied("alice")
        try:
            run(a, f"CREATE TEMPORARY SEQUENCE {seq} START WITH 777")
            assert s.pin(a) == "temporary table"
        finally:
            close(a)
        assert_same(
            s,
            [
                ("alice", f"CREATE TEMPORARY SEQUENCE {seq} START WITH 777"),
                ("alice", f"SELECT NEXTVAL({seq})"),
                ("bob", f"SELECT NEXTVAL({seq}) < 777"),
                ("alice", f"SELECT NEXTVAL({seq})"),
                ("alice", f"DROP TEMPORARY SEQUENCE {seq}"),
                ("alice", f"SELECT NEXTVAL({seq}) < 777"),
            ],
            [f"ALTER SEQUENCE test.{seq} RESTART"],
        )
    finally:
        app_account.execute(f"DROP SEQUENCE IF EXISTS test.{seq}")


@pooled
def test_c43_get_lock_names_recursion_and_release_all_as_on_the_server(shared, mode):
    s = shared(mode, max_connections=2)
    n1, n2 = unique("n1"), unique("n2")
    assert_same(
        s,
        [
            ("alice", f"SELECT GET_LOCK('{n1}', 0), GET_LOCK('{n1}', 0), GET_LOCK('{n2}', 0)"),
            ("bob", f"SELECT IS_FREE_LOCK('{n1}'), GET_LOCK('{n1}', 0), IS_FREE_LOCK('{n1}x')"),
            ("alice", f"SELECT RELEASE_LOCK('{n1}')"),  # once of twice: still held
            ("bob", f"SELECT IS_FREE_LOCK('{n1}'), GET_LOCK('{n2}', 0)"),
            ("alice", "SELECT RELEASE_ALL_LOCKS()"),  # the remaining count of both names
            ("bob", f"SELECT IS_FREE_LOCK('{n1}'), IS_FREE_LOCK('{n2}'), GET_LOCK('{n1}', 0)"),
            ("alice", f"SELECT GET_LOCK('{n1}', 0), RELEASE_LOCK('{n2}')"),
            ("bob", f"SELECT RELEASE_LOCK('{n1}')"),
            ("alice", f"SELECT GET_LOCK('{n1}', 0), RELEASE_LOCK('{n1}')"),
        ],
    )


@pooled
@pytest.mark.parametrize(
    ("lock", "unlock", "reason"),
    [
        (
            "FLUSH TABLES WITH READ LOCK",
            "UNLOCK TABLES",
            "global read lock (FLUSH TABLES WITH READ LOCK)",
        ),
        (
            "BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT",
            "BACKUP STAGE END",
            "backup lock (BACKUP STAGE / BACKUP LOCK / LOCK INSTANCE)",
        ),
    ],
    ids=["ftwrl", "backup-stage"],
)
def test_c44_global_locks_block_others_until_their_unlock(
    shared, table, mode, lock, unlock, reason
):
    s = shared(mode, max_connections=2)
    write = f"SET STATEMENT lock_wait_timeout = 1 FOR INSERT INTO {table} (v) VALUES (8)"
    script: list[Step] = [("alice", sql.strip()) for sql in lock.split(";")]
    script += [
        ("bob", write),
        ("alice", f"SELECT COUNT(*) FROM {table}"),
        ("alice", unlock),
        ("bob", write),
        ("bob", f"SELECT COUNT(*) FROM {table}"),
    ]
    got = assert_same(s, script, refill(table))
    assert got[len(script) - 5] == ("error", 1205)
    a = s.proxied("alice")
    try:
        for sql in lock.split(";"):
            run(a, sql.strip())
        assert s.pin(a) == reason
        run(a, unlock)
        assert s.pin(a) is None
    finally:
        close(a)


@pooled
def test_c47_handler_pins_and_its_cursor_is_the_sessions_own(shared, table, mode):
    s = shared(mode, max_connections=2)
    got = assert_same(
        s,
        [
            ("alice", f"HANDLER {table} OPEN"),
            ("alice", f"HANDLER {table} READ `PRIMARY` FIRST"),
            ("bob", f"HANDLER {table} READ `PRIMARY` NEXT"),
            ("bob", f"HANDLER {table} OPEN"),
            ("bob", f"HANDLER {table} READ `PRIMARY` LAST"),
            ("alice", f"HANDLER {table} READ `PRIMARY` NEXT"),
            ("alice", f"HANDLER {table} READ `PRIMARY` NEXT"),
            ("alice", f"HANDLER {table} CLOSE"),
            ("alice", f"HANDLER {table} READ `PRIMARY` NEXT"),
            ("bob", f"HANDLER {table} READ `PRIMARY` PREV"),
        ],
        refill(table),
    )
    assert got[2] == ("error", 1109)
    assert rows_of(got[6]) == ((3, 3),)


@pooled
def test_c50_session_status_describes_the_upstream_connection_and_pins_nothing(shared, mode):
    """A documented limit (out of scope): SHOW SESSION STATUS counts what ran on the
    upstream connection the read lands on (every session that used it since its last
    reset, and the proxy's own statements), not the client session."""
    s = shared(mode)
    a, b = s.proxied("alice"), s.proxied("bob")
    try:
        for _ in range(5):
            run(a, "SELECT 1")
        ((name, value),) = rows_of(run(b, "SHOW SESSION STATUS LIKE 'Com_select'"))
        assert name == "Com_select" and int(value) >= 5  # alice's SELECTs, on bob's read
        assert s.pin(b) is None and s.pin(a) is None
    finally:
        close(a, b)


# == state a pinned session leaves behind: reset before anyone else gets the connection =====


@dataclass(frozen=True)
class Leftover:
    """State that pins (``reason``), set by ``setup``; after its session quits, ``probe``
    run by the next session on the same upstream connection answers ``want``, and each
    ``server_probe`` run directly on the server answers its ``want``."""

    setup: tuple[str, ...]
    reason: str
    probe: str
    want: Any
    server_probe: tuple[tuple[str, Any], ...] = ()


def _leftovers(t: str, name: str) -> dict[str, Leftover]:
    lock_free = f"SELECT IS_FREE_LOCK('{name}')"
    may_write = f"SET STATEMENT lock_wait_timeout = 1 FOR INSERT INTO test.{t} (v) VALUES (0)"
    may_alter = f"SET STATEMENT lock_wait_timeout = 1 FOR ALTER TABLE test.{t} COMMENT = 'x'"
    return {
        "temporary-table": Leftover(
            (f"CREATE TEMPORARY TABLE {name} (a INT)",),
            "temporary table",
            f"SELECT * FROM {name}",
            ("error", 1146),
        ),
        "temporary-sequence": Leftover(
            (f"CREATE TEMPORARY SEQUENCE {name}",),
            "temporary table",
            f"SELECT NEXTVAL({name})",
            ("error", 4091),  # unknown sequence
        ),
        "get-lock": Leftover(
            (f"SELECT GET_LOCK('{name}', 0)", f"SELECT GET_LOCK('{name}', 0)"),
            "advisory lock (GET_LOCK)",
            lock_free,
            ("rows", ((1,),), 1),
            ((lock_free, [(1,)]),),
        ),
        "lock-tables": Leftover(
            (f"LOCK TABLES {t} WRITE",),
            "table lock (LOCK TABLES)",
            "SELECT COUNT(*) FROM seq_1_to_3",  # ERR 1100 while LOCK TABLES holds
            ("rows", ((3,),), 1),
            ((may_write, []),),
        ),
        "ftwrl": Leftover(
            ("FLUSH TABLES WITH READ LOCK",),
            "global read lock (FLUSH TABLES WITH READ LOCK)",
            f"INSERT INTO {t} (v) VALUES (0)",
            ("rows", (), 1),
            ((may_write, []),),
        ),
        "backup-stage": Leftover(
            ("BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"),
            "backup lock (BACKUP STAGE / BACKUP LOCK / LOCK INSTANCE)",
            "BACKUP STAGE START",
            ("rows", (), 0),
            ((may_write, []),),
        ),
        "backup-lock": Leftover(
            (f"BACKUP LOCK {t}",),
            "backup lock (BACKUP STAGE / BACKUP LOCK / LOCK INSTANCE)",
            "SELECT 1",
            ("rows", ((1,),), 1),
            ((may_alter, []),),
        ),
        "handler": Leftover(
            (f"HANDLER {t} OPEN",),
            "open HANDLER",
            f"HANDLER {t} READ FIRST",
            ("error", 1109),
        ),
        "insert-id": Leftover(
            ("SET insert_id = 777",),
            "session variable that cannot be re-applied (insert_id)",
            "SELECT @@insert_id",
            ("rows", ((0,),), 1),
        ),
        "timestamp": Leftover(
            ("SET timestamp = 1000000000",),
            "session variable that cannot be re-applied (timestamp)",
            "SELECT UNIX_TIMESTAMP() > 1000000000",
            ("rows", ((1,),), 1),
        ),
        "rand-seed": Leftover(
            ("SET rand_seed1 = 1, rand_seed2 = 2",),
            "session variable that cannot be re-applied (rand_seed",  # 1 or 2
            # what RAND() gives right after those seeds on a direct connection
            "SELECT RAND() <> 4.656612877414201e-09",
            ("rows", ((1,),), 1),
        ),
        "gtid-domain-id": Leftover(
            ("SET gtid_domain_id = 7",),
            "session variable that cannot be re-applied (gtid_domain_id)",
            "SELECT @@gtid_domain_id",
            ("rows", ((0,),), 1),
        ),
        "one-shot-read-only": Leftover(
            ("SET TRANSACTION READ ONLY",),
            "one-shot SET TRANSACTION (until the next transaction)",
            f"INSERT INTO {t} (v) VALUES (0)",
            ("rows", (), 1),
        ),
        "user-variable": Leftover(
            (f"SET @{name} = CONCAT('sec', 'ret')",),
            "user variable",
            f"SELECT @{name}",
            ("rows", ((None,),), 1),
        ),
        "prepare-from-variable": Leftover(
            (f"SET @{name} = 'SELECT 1'", f"PREPARE {name} FROM @{name}"),
            "prepared statement (PREPARE)",
            f"EXECUTE {name}",
            ("error", 1243),
        ),
    }


LEFTOVERS = list(_leftovers("t", "n"))


@pooled
@pytest.mark.parametrize("case", LEFTOVERS)
def test_c42_c47_state_a_pinned_session_leaves_is_gone_for_the_next_session_on_its_connection(
    shared, table, mode, case
):
    name = unique("left")
    item = _leftovers(table, name)[case]
    s = shared(mode)
    for sql in refill(table):
        s.server.execute(sql)
    a = s.proxied("alice")
    try:
        for sql in item.setup:
            assert run(a, sql)[0] == "rows", sql
        pin = s.pin(a)
        assert pin is not None and pin.startswith(item.reason), pin
        (used,) = s.upstream_ids()
    finally:
        close(a)
    b = s.proxied("bob")
    try:
        assert run(b, item.probe) == item.want
        assert s.upstream_ids() == [used]  # the same connection, reset
        for sql, want in item.server_probe:
            assert s.server.execute(sql) == want, sql
    finally:
        close(b)


def test_c18_rand_seed_probe_value_is_what_the_server_gives_after_those_seeds(app_account):
    """The constant in the rand-seed case above."""
    c = app_account.connect()
    try:
        run(c, "SET rand_seed1 = 1, rand_seed2 = 2")
        assert rows_of(run(c, "SELECT RAND()")) == ((4.656612877414201e-09,),)
    finally:
        close(c)
