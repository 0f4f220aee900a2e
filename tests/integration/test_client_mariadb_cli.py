"""The `mariadb` command-line client (batch mode) through the proxy: output, scripts,
errors and exit codes are the same as against the server directly; TLS off by default
and on when the proxy offers it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

APP_USER, APP_PASSWORD = "app", "app-secret"  # the proxy fixture's user (conftest)
T = "client_cli"  # table/procedure prefix unique to this file
CLI = shutil.which("mariadb") or shutil.which("mysql")

pytestmark = pytest.mark.skipif(
    CLI is None, reason="the mariadb command-line client is not installed"
)


def cli(
    port: int,
    *args: str,
    sql: str | None = None,
    stdin: str | None = None,
    database: str | None = "test",
    password: str = APP_PASSWORD,
) -> subprocess.CompletedProcess[str]:
    assert CLI is not None
    cmd = [
        CLI,
        "--no-defaults",  # never read a ~/.my.cnf
        "-h127.0.0.1",
        f"-P{port}",
        f"-u{APP_USER}",
        f"-p{password}",
        "--batch",
        "--default-character-set=utf8mb4",
        "--connect-timeout=10",
    ]
    if database is not None:
        cmd += ["-D", database]
    cmd += list(args)
    if sql is not None:
        cmd += ["-e", sql]
    return subprocess.run(
        cmd, input=stdin if stdin is not None else "", capture_output=True, text=True, timeout=30
    )


def same_as_direct(proxy_port: int, server_port: int, **kw) -> subprocess.CompletedProcess[str]:
    """Run the CLI through the proxy and directly; assert identical exit code and output."""
    args = kw.pop("args", ())
    via_proxy = cli(proxy_port, *args, **kw)
    direct = cli(server_port, *args, **kw)
    assert (via_proxy.returncode, via_proxy.stdout, via_proxy.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )
    return via_proxy


@pytest.fixture(scope="module")
def tables(app_account) -> None:
    app_account.execute(f"DROP TABLE IF EXISTS test.{T}_t")
    app_account.execute(
        f"CREATE TABLE test.{T}_t (id INT PRIMARY KEY, s VARCHAR(40), n INT NULL) CHARSET utf8mb4"
    )


def test_select_output_is_tab_separated_with_header_and_null(proxy, mariadb):
    r = same_as_direct(proxy.port, mariadb.port, sql="SELECT 1 AS a, 'x y' AS b, NULL AS c")
    assert r.returncode == 0
    assert r.stdout == "a\tb\tc\n1\tx y\tNULL\n"


def test_connect_without_database_has_none_selected(proxy):
    r = cli(proxy.port, "--skip-column-names", sql="SELECT DATABASE()", database=None)
    assert (r.returncode, r.stdout) == (0, "NULL\n")


def test_connect_with_database_selects_it(proxy):
    r = cli(proxy.port, "--skip-column-names", sql="SELECT DATABASE()")
    assert (r.returncode, r.stdout) == (0, "test\n")


def test_script_from_stdin_runs_crud_procedure_and_multi_statement(proxy, tables):
    script = f"""
DELETE FROM {T}_t;
INSERT INTO {T}_t VALUES (1, 'one', 10), (2, 'two 😀', NULL), (3, 'three', 30);
UPDATE {T}_t SET n = 31 WHERE id = 3;
DELETE FROM {T}_t WHERE id = 1;
SELECT id, s, n FROM {T}_t ORDER BY id;
DROP PROCEDURE IF EXISTS {T}_proc;
DELIMITER //
CREATE PROCEDURE {T}_proc() BEGIN SELECT 'p1' AS first; SELECT 'p2' AS second; END//
SELECT 'm1' AS multi1; SELECT 'm2' AS multi2//
DELIMITER ;
CALL {T}_proc();
SELECT 'end' AS last;
"""
    r = cli(proxy.port, stdin=script)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "id\ts\tn\n2\ttwo 😀\tNULL\n3\tthree\t31\n"
        "multi1\nm1\nmulti2\nm2\n"  # one COM_QUERY, two results
        "first\np1\nsecond\np2\n"  # the procedure's two result sets
        "last\nend\n"
    )


def test_server_error_gives_exit_code_1_and_the_servers_error_line(proxy, mariadb):
    r = same_as_direct(
        proxy.port, mariadb.port, sql="SELECT 1 AS ok; SELECT * FROM no_such_table_cli; SELECT 3"
    )
    assert r.returncode == 1
    assert r.stdout == "ok\n1\n"  # stops at the first error
    assert "ERROR 1146 (42S02) at line 1: Table 'test.no_such_table_cli' doesn't exist" in r.stderr


def test_force_continues_after_an_error_in_a_script(proxy, mariadb):
    r = same_as_direct(
        proxy.port,
        mariadb.port,
        args=("--force",),
        stdin="SELECT 1 AS a;\nSELEC 2;\nSELECT 3 AS c;\n",
    )
    assert r.stdout == "a\n1\nc\n3\n"  # (exit code 0 with --force, as directly)
    assert "ERROR 1064 (42000) at line 2" in r.stderr


def test_wrong_password_is_refused_with_1045_like_the_server(proxy, mariadb):
    r = same_as_direct(proxy.port, mariadb.port, sql="SELECT 1", password="wrong")
    assert r.returncode == 1
    assert r.stderr.startswith("ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1'")


def test_unknown_database_is_refused_with_1049_like_the_server(proxy, mariadb):
    r = same_as_direct(proxy.port, mariadb.port, sql="SELECT 1", database="no_such_db_cli")
    assert r.returncode == 1
    assert r.stderr == "ERROR 1049 (42000): Unknown database 'no_such_db_cli'\n"


def test_load_data_local_infile_from_the_cli(proxy, tables, tmp_path: Path):
    data = tmp_path / "rows.tsv"
    data.write_text("".join(f"{i}\trow {i}\t\\N\n" for i in range(100, 150)), encoding="utf-8")
    r = cli(
        proxy.port,
        "--local-infile=1",
        "--skip-column-names",
        sql=f"DELETE FROM {T}_t WHERE id >= 100; "
        f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE {T}_t; "
        f"SELECT COUNT(*), SUM(n IS NULL) FROM {T}_t WHERE id >= 100",
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "50\t50\n", "")


@pytest.mark.parametrize("ssl_args", [(), ("--ssl=0",)], ids=["default", "ssl=0"])
def test_without_tls_on_the_proxy_the_cli_connects_in_plain_text(proxy, ssl_args):
    # the default proxy offers no TLS: the CLI's default (and --ssl=0) connect unencrypted
    r = cli(proxy.port, *ssl_args, sql="status")
    assert r.returncode == 0, r.stderr
    assert "SSL:\t\t\tNot in use" in r.stdout


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("cli-tls")
    cert, key = d / "proxy.crt", d / "proxy.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_cli_uses_tls_when_the_proxy_offers_it_and_asked_to(proxy_factory, cert_pair):
    cert, key = cert_pair
    p = proxy_factory(proxy={"tls_cert": str(cert), "tls_key": str(key)})
    r = cli(p.port, "--ssl", f"--ssl-ca={cert}", "--ssl-verify-server-cert", sql="status")
    assert r.returncode == 0, r.stderr
    assert "SSL:\t\t\tCipher in use is" in r.stdout
    r = cli(p.port, "--ssl=0", "--skip-column-names", sql="SELECT 'plain'")
    assert (r.returncode, r.stdout) == (0, "plain\n")
