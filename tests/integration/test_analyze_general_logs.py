"""tainted-proxy analyze on general logs captured from real clients.

A private MariaDB logs everything to its general log, as a file and as the
``mysql.general_log`` table at once; pymysql, mysqlclient, SQLAlchemy, Django and the
``mariadb`` command-line client run against it directly (no proxy), each as a database
user of its own; then the log is analyzed in every layout (the file, the CSV engine's
table file, ``SELECT ... INTO OUTFILE`` as CSV, ``mariadb -B`` as TSV) and the report
must say what the proxy would do with those clients. Last, a synthetic 100 MB log is
analyzed in a child process whose memory must not grow with the log.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tainted_proxy.analyze import analyze_lines
from tainted_proxy.taint.effects import PIN_REASONS, Effect
from tainted_proxy.testing.mariadb import MariaDBNotFound, MariaDBServer

CLI = shutil.which("mariadb") or shutil.which("mysql")
LOCK = PIN_REASONS[Effect.ADVISORY_LOCK]
TEMP = PIN_REASONS[Effect.TEMP_TABLE]
PASSWORD = "pw-analyze"
USERS = ("a_pymysql", "a_mysqlclient", "a_sqla", "a_django", "a_cli")


def _start(srv: MariaDBServer) -> MariaDBServer:
    try:
        return srv.start()
    except MariaDBNotFound as e:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is required in CI: {e}", pytrace=False)
        pytest.skip(f"MariaDB not available: {e}")


# -- the clients --------------------------------------------------------------------------


def _kw(srv: MariaDBServer, user: str) -> dict[str, Any]:
    return {"host": srv.host, "port": srv.port, "user": user, "password": PASSWORD}


def run_pymysql(srv: MariaDBServer) -> None:
    """PyMySQL's default autocommit=False; a job that takes an advisory lock."""
    for _ in range(2):
        c = pymysql.connect(**_kw(srv, "a_pymysql"), database="test")
        with c.cursor() as cur:
            cur.execute("SELECT GET_LOCK('nightly-job', 5)")
            cur.execute("INSERT INTO items (name) VALUES (%s)", ("job",))
            cur.execute("SELECT COUNT(*) FROM items")
            cur.execute("SELECT RELEASE_LOCK('nightly-job')")
        c.commit()
        c.close()
    c = pymysql.connect(**_kw(srv, "a_pymysql"), database="test")
    with c.cursor() as cur:
        cur.execute("SELECT name FROM items WHERE id = %s", (1,))
    c.commit()
    c.close()


def run_mysqlclient(srv: MariaDBServer) -> None:
    """mysqlclient with autocommit on, each connection in its own time zone."""
    import MySQLdb

    kw = _kw(srv, "a_mysqlclient")
    for tz in ("+01:00", "+02:00", "+03:00"):
        c = MySQLdb.connect(
            host=kw["host"],
            port=kw["port"],
            user=kw["user"],
            password=PASSWORD,
            database="test",
            autocommit=True,
        )
        cur = c.cursor()
        cur.execute("SET time_zone = %s", (tz,))
        cur.execute("SET @request_id = 42")  # a literal: carried, no pin
        cur.execute("SELECT NOW(), @request_id")
        cur.execute("SELECT * FROM items WHERE name = %s", ("job",))
        cur.close()
        c.close()


def run_sqlalchemy(srv: MariaDBServer) -> None:
    """SQLAlchemy over PyMySQL: its connect sequence, a few transactions, pooled."""
    import sqlalchemy as sa

    engine = sa.create_engine(
        f"mysql+pymysql://a_sqla:{PASSWORD}@{srv.host}:{srv.port}/test", pool_size=2
    )
    try:
        for i in range(4):
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO items (name) VALUES (:n)"), {"n": f"sqla{i}"})
                conn.execute(sa.text("SELECT * FROM items WHERE name = :n"), {"n": f"sqla{i}"})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def run_django(srv: MariaDBServer) -> None:
    """Django's MySQL backend (over mysqlclient): cursor queries and atomic blocks."""
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.mysql",
                    "NAME": "test",
                    "USER": "a_django",
                    "PASSWORD": PASSWORD,
                    "HOST": srv.host,
                    "PORT": str(srv.port),
                }
            },
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    from django.db import connection, transaction

    for i in range(2):
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("INSERT INTO items (name) VALUES (%s)", [f"django{i}"])
                cur.execute("SELECT id FROM items WHERE name = %s", [f"django{i}"])
        with connection.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM items")
        connection.close()


CLI_SCRIPT = """\
SET time_zone = '+00:00';
CREATE TEMPORARY TABLE staging (
  id INT,
  name VARCHAR(20)
);
INSERT INTO staging
  SELECT id, name
  FROM items;
SELECT COUNT(*)
  FROM staging;
DROP TEMPORARY TABLE staging;
SELECT 1;
"""


def run_cli(srv: MariaDBServer) -> None:
    """The mariadb command-line client on a script with multi-line statements."""
    if CLI is None:
        pytest.skip("the mariadb command-line client is not installed")
    subprocess.run(
        [
            CLI,
            "--no-defaults",
            "-h",
            srv.host,
            "-P",
            str(srv.port),
            "-ua_cli",
            f"-p{PASSWORD}",
            "test",
        ],
        input=CLI_SCRIPT,
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


# -- the log, in every layout ---------------------------------------------------------------


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """{layout: path} of one general log, after every client ran."""
    d = tmp_path_factory.mktemp("analyze")
    d.chmod(0o777)  # the server writes the OUTFILE export here
    srv = MariaDBServer(
        extra_args=["--general-log=1", f"--general-log-file={d}/g.log", "--log-output=FILE,TABLE"]
    )
    try:
        _start(srv)
        srv.execute("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))")
        for u in USERS:
            srv.create_user(u, PASSWORD)
        for run in (run_pymysql, run_mysqlclient, run_sqlalchemy, run_django, run_cli):
            run(srv)
        # the table, exported two ways (root's own statements are left out of the checks)
        srv.execute(
            f"SELECT * INTO OUTFILE '{d}/outfile.csv' FIELDS TERMINATED BY ',' "
            "OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' FROM mysql.general_log"
        )
        if CLI is not None:
            with open(d / "batch.tsv", "wb") as out:
                subprocess.run(
                    [
                        CLI,
                        "--no-defaults",
                        "-h",
                        srv.host,
                        "-P",
                        str(srv.port),
                        "-uroot",
                        "-B",
                        "-e",
                        "SELECT * FROM mysql.general_log",
                    ],
                    stdout=out,
                    check=True,
                    timeout=30,
                )
        srv.stop()  # everything written and closed
        shutil.copy(srv.datadir / "mysql" / "general_log.CSV", d / "general_log.CSV")
        paths = {"file": d / "g.log", "csv": d / "general_log.CSV", "outfile": d / "outfile.csv"}
        if CLI is not None:
            paths["tsv"] = d / "batch.tsv"
        yield paths
    finally:
        srv.close()


def analyze(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return analyze_lines(f)


@pytest.fixture(scope="module")
def report(logs: dict[str, Path]) -> dict[str, Any]:
    return analyze(logs["file"])


def user(r: dict[str, Any], name: str) -> dict[str, Any]:
    for u in r["users"]:
        if u["user"] == name:
            return u
    raise AssertionError(f"no user {name}: {[u['user'] for u in r['users']]}")


def offenders(r: dict[str, Any], name: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in r["top_offenders"] if o["user"] == name and o["kind"] == kind]


# -- what the report says about each client -----------------------------------------------


def test_every_client_is_a_user_with_its_sessions(report):
    sessions = {u["user"]: u["sessions"] for u in report["users"]}
    assert sessions["a_pymysql"] == 3
    assert sessions["a_mysqlclient"] == 3
    assert sessions["a_sqla"] >= 1
    assert sessions["a_django"] == 2
    assert sessions["a_cli"] == 1


def test_pymysql_advisory_lock_pins_with_that_reason_and_autocommit_off_is_refused(report):
    u = user(report, "a_pymysql")
    tx, st = u["modes"]["transaction"], u["modes"]["statement"]
    assert tx["pin_reasons"] == {LOCK: 2}
    assert tx["pinned_sessions"] == 2 and tx["pinned_until_session_end"] == 0
    # GET_LOCK, INSERT, SELECT COUNT(*), RELEASE_LOCK
    assert tx["pinned_statements"]["max"] == 4
    (o,) = offenders(report, "a_pymysql", "pin")
    assert o["fingerprint"] == "SELECT GET_LOCK(?, ?)" and o["sessions"] == 2
    assert o["hint"].startswith("2 sessions of user a_pymysql pinned by `SELECT GET_LOCK(?, ?)`")
    # PyMySQL switches autocommit off at connect: refused in statement mode
    assert st["refused"] == {"autocommit": 3} and st["refused_sessions"] == 3
    assert tx["autocommit_off_sessions"] == 3 and tx["transaction_sessions"] == 3
    assert u["recommended"]["mode"] == "session"  # 2 of 3 sessions pin


def test_mysqlclient_time_zones_are_settings_keys_literal_user_variables_are_carried(report):
    u = user(report, "a_mysqlclient")
    tx = u["modes"]["transaction"]
    assert tx["pinned_sessions"] == 0  # SET @request_id = 42 is carried
    assert u["settings_keys"] == 3
    tz = {s["name"]: s for s in u["settings"]}["time_zone"]
    assert tz["values"] == 3 and tz["sessions"] == 3
    (o,) = offenders(report, "a_mysqlclient", "settings")
    assert o["hint"].startswith(
        "every session of user a_mysqlclient runs `SET time_zone = ?` with 3 distinct values"
    )
    assert u["modes"]["statement"]["refused_statements"] == 0
    assert u["recommended"]["mode"] == "statement"


def test_sqlalchemy_connect_sequence_carries_and_does_not_pin(report):
    u = user(report, "a_sqla")
    tx, st = u["modes"]["transaction"], u["modes"]["statement"]
    assert tx["pinned_sessions"] == 0 and st["pinned_sessions"] == 0
    names = {s["name"] for s in u["settings"]}
    assert {"autocommit", "character set (SET NAMES)"} <= names
    assert tx["transactions"]["count"] >= 4
    assert st["refused"].get("autocommit", 0) >= 1  # SET AUTOCOMMIT = 0 at connect
    assert u["recommended"]["mode"] == "transaction"


def test_django_atomic_blocks_hold_transactions_and_are_refused_in_statement_mode(report):
    u = user(report, "a_django")
    tx, st = u["modes"]["transaction"], u["modes"]["statement"]
    assert tx["pinned_sessions"] == 0
    assert tx["transactions"]["count"] >= 2
    assert st["refused"].get("autocommit", 0) >= 2  # transaction.atomic(): SET autocommit=0
    assert u["recommended"]["mode"] == "transaction"


def test_mariadb_cli_temporary_table_pins_until_dropped(report):
    u = user(report, "a_cli")
    tx = u["modes"]["transaction"]
    assert tx["pin_reasons"] == {TEMP: 1}
    assert tx["pinned_until_session_end"] == 0
    # CREATE, INSERT ... SELECT, SELECT COUNT(*), DROP: the multi-line statements are whole
    assert tx["pinned_statements"]["max"] == 4
    (o,) = offenders(report, "a_cli", "pin")
    assert o["fingerprint"].startswith("CREATE TEMPORARY TABLE staging(")
    assert "\n" in o["example"]
    assert u["recommended"]["mode"] == "session"


def _core(r: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for u in r["users"]:
        if u["user"] not in USERS:
            continue
        m = u["modes"]
        out[u["user"]] = (
            u["sessions"],
            u["statements"],
            u["settings_keys"],
            m["transaction"]["pin_reasons"],
            m["transaction"]["pinned_statements"],
            m["transaction"]["transactions"],
            m["statement"]["refused"],
            u["recommended"]["mode"],
        )
    return out


def test_the_table_exports_say_the_same_as_the_file(logs, report):
    expected = _core(report)
    assert set(expected) == set(USERS)
    for layout in ("csv", "outfile", "tsv"):
        if layout in logs:
            assert _core(analyze(logs[layout])) == expected, layout


def test_command_line_on_the_log(logs):
    r = subprocess.run(
        [sys.executable, "-m", "tainted_proxy", "analyze", str(logs["file"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Recommended pool mode" in r.stdout and "a_pymysql" in r.stdout
    assert r.stderr == ""  # no progress bar without a terminal
    r = subprocess.run(
        [sys.executable, "-m", "tainted_proxy", "analyze", "--json", str(logs["csv"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert user(json.loads(r.stdout), "a_cli")["modes"]["transaction"]["pin_reasons"] == {TEMP: 1}


# -- memory ---------------------------------------------------------------------------------

#: Size of the synthetic log (MB); TAINTED_PROXY_ANALYZE_MB overrides.
SYNTHETIC_MB = float(os.environ.get("TAINTED_PROXY_ANALYZE_MB", "100"))


def write_synthetic_log(path: Path, size: int, seed: int = 7) -> None:
    """A MariaDB general log of about ``size`` bytes: many connections at once, opening
    and closing, with settings, locks, transactions and long multi-line statements."""
    rnd = random.Random(seed)
    filler = "".join(rnd.choice("abcdefghij") for _ in range(900))
    rows = "\n".join(f"  ({i}, '{filler}')," for i in range(8)) + "\n  (8, 'end')"
    out: list[str] = [
        "/usr/sbin/mariadbd, Version: 10.11.19-MariaDB-log (Debian 12). started with:\n"
        "Tcp port: 3306  Unix socket: /run/mysqld/mysqld.sock\n"
        "Time\t\t    Id Command\tArgument\n"
    ]
    written = 0
    conn = 100
    live: list[int] = []
    n = 0
    while written < size:
        chunk: list[str] = []
        for _ in range(500):
            n += 1
            if n % 20:
                chunk.append("\t\t")
            else:  # a new second every 20 entries
                second = n // 20
                chunk.append(f"2612{second // 86400 % 28 + 1:02d} {second // 3600 % 24:2d}:")
                chunk.append(f"{second // 60 % 60:02d}:{second % 60:02d}\t")
            r = rnd.random()
            if len(live) < 40 or (r < 0.1 and len(live) < 60):  # 40 to 60 open at once
                conn += 1
                live.append(conn)
                chunk.append(f"{conn:6d} Connect\tapp{conn % 3}@10.0.0.1 on shop using TCP/IP\n")
                chunk.append(f"\t\t{conn:6d} Query\tSET time_zone = '+0{conn % 5}:00'\n")
                continue
            c = live[rnd.randrange(len(live))]
            if r < 0.2:
                live.remove(c)
                chunk.append(f"{c:6d} Quit\t\n")
            elif r < 0.3:
                chunk.append(f"{c:6d} Query\tSELECT GET_LOCK('job{c}', 1)\n")
                chunk.append(f"\t\t{c:6d} Query\tSELECT RELEASE_LOCK('job{c}')\n")
            elif r < 0.5:
                chunk.append(f"{c:6d} Query\tBEGIN\n")
                chunk.append(f"\t\t{c:6d} Query\tINSERT INTO t (id, note) VALUES\n{rows}\n")
                chunk.append(f"\t\t{c:6d} Query\tCOMMIT\n")
            else:
                chunk.append(f"{c:6d} Query\tSELECT * FROM t WHERE id = {rnd.randrange(10**6)}\n")
        text = "".join(chunk)
        out.append(text)
        written += len(text)
        if len(out) > 64:
            with open(path, "a") as f:
                f.write("".join(out))
            out = []
    with open(path, "a") as f:
        f.write("".join(out))


MEASURE = textwrap.dedent(
    """
    import json, sys
    from tainted_proxy.analyze import Analyzer, analyze_lines
    from tainted_proxy.taint.classifier import classify_flags

    def status_kb(field):
        # VmHWM, not ru_maxrss: Linux keeps the parent's high-water mark across exec
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])

    # warm up: every module the analysis imports (sqlglot for the cross-check)
    analyze_lines([b"\\t\\t     1 Query\\tSELECT a FROM t WHERE b IN (SELECT 1)\\n"])
    classify_flags("UPDATE t SET a = 1 WHERE b = (SELECT MAX(c) FROM u)")
    base = status_kb("VmRSS")
    with open(sys.argv[1], "rb") as f:
        r = analyze_lines(f)
    peak = status_kb("VmHWM")
    print(json.dumps({"growth_kb": peak - base, "base_kb": base, "statements": r["statements"],
                      "sessions": r["sessions"], "users": len(r["users"])}))
    """
)


@pytest.mark.slow
def test_memory_does_not_grow_with_the_log(tmp_path):
    path = tmp_path / "big.log"
    size = int(SYNTHETIC_MB * 1_000_000)
    write_synthetic_log(path, size)
    assert path.stat().st_size >= size
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got = json.loads(r.stdout)
    assert got["users"] == 3 and got["sessions"] > 1000 and got["statements"] > 10_000
    # the log is 100 MB; what the analyzer keeps is per open connection (40 to 60 here),
    # bounded tables, and the classifier's LRU of texts with effects (10,000 per mode)
    assert got["growth_kb"] < 50_000, got
