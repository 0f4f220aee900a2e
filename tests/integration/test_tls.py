"""TLS: client-side termination by the proxy (proxy.tls_cert / tls_key / tls_required) and
TLS from the proxy to the upstream server (upstream.tls)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from pathlib import Path

import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def make_self_signed(directory: Path, name: str = "tainted-proxy-test") -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key (PEM files), usable
    both as a server certificate and as the CA that verifies it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


def _tls_proxy(proxy_factory, cert_pair, **proxy_kw):
    cert, key = cert_pair
    return proxy_factory(proxy={"tls_cert": str(cert), "tls_key": str(key), **proxy_kw})


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaf_errors(e)]
    return [exc]


# -- client side ---------------------------------------------------------------------------


def test_client_connects_over_tls_verifying_the_proxy_certificate(
    proxy_factory, cert_pair, connect
):
    p = _tls_proxy(proxy_factory, cert_pair)
    with connect(p, ssl={"ca": str(cert_pair[0])}) as c:
        assert isinstance(c._sock, ssl.SSLSocket)
        assert c._sock.version() in ("TLSv1.2", "TLSv1.3")
        with c.cursor() as cur:
            cur.execute("SELECT 1, 'tls', NULL")
            assert cur.fetchall() == ((1, "tls", None),)


def test_queries_and_server_errors_work_over_tls_without_verification(
    proxy_factory, cert_pair, connect
):
    p = _tls_proxy(proxy_factory, cert_pair)
    with connect(p, ssl_verify_cert=False) as c:
        assert isinstance(c._sock, ssl.SSLSocket)
        with c.cursor() as cur:
            with pytest.raises(pymysql.err.ProgrammingError) as e:
                cur.execute("SELECT * FROM no_such_table_tls")
            assert e.value.args[0] == 1146
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)


def test_plain_client_still_accepted_when_tls_is_optional(proxy_factory, cert_pair, connect):
    p = _tls_proxy(proxy_factory, cert_pair)
    # (pymysql >= 1.2 prefers TLS whenever the server offers it: opt out explicitly)
    with connect(p, ssl_disabled=True) as c, c.cursor() as cur:
        assert not isinstance(c._sock, ssl.SSLSocket)
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)


def test_plain_client_is_refused_with_a_clear_error_when_tls_is_required(
    proxy_factory, cert_pair, connect
):
    p = _tls_proxy(proxy_factory, cert_pair, tls_required=True)
    with pytest.raises(pymysql.err.OperationalError) as e:
        connect(p, ssl_disabled=True)
    assert e.value.args[0] == 1045
    assert "requires TLS" in e.value.args[1]
    # a TLS client is still welcome
    with connect(p, ssl={"ca": str(cert_pair[0])}) as c, c.cursor() as cur:
        assert isinstance(c._sock, ssl.SSLSocket)
        cur.execute("SELECT 4")
        assert cur.fetchone() == (4,)


def test_five_mib_row_round_trips_over_tls_in_both_directions(proxy_factory, cert_pair, connect):
    p = _tls_proxy(proxy_factory, cert_pair)
    blob = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    with connect(p, ssl={"ca": str(cert_pair[0])}, autocommit=True) as c, c.cursor() as cur:
        assert isinstance(c._sock, ssl.SSLSocket)
        cur.execute("CREATE TEMPORARY TABLE tls_big (id INT PRIMARY KEY, b LONGBLOB)")
        cur.execute("INSERT INTO tls_big VALUES (1, %s)", (blob,))
        cur.execute("SELECT b, LENGTH(b), MD5(b) FROM tls_big WHERE id = 1")
        got, length, _md5 = cur.fetchone()
        assert length == len(blob)
        assert got == blob
        cur.execute("SELECT REPEAT('z', 5 * 1024 * 1024)")
        assert cur.fetchone()[0] == "z" * (5 * 1024 * 1024)


# -- upstream side -------------------------------------------------------------------------


def test_proxy_talks_to_the_upstream_over_tls_when_required(
    mariadb_factory, proxy_factory, cert_pair, connect
):
    cert, key = cert_pair
    srv = mariadb_factory(extra_args=[f"--ssl-cert={cert}", f"--ssl-key={key}"])
    p = proxy_factory(server=srv, upstream={"tls": "required"})
    with connect(p, ssl_disabled=True) as c, c.cursor() as cur:
        # plain client <-> proxy, TLS proxy <-> server
        assert not isinstance(c._sock, ssl.SSLSocket)
        cur.execute("SELECT 5")
        assert cur.fetchone() == (5,)
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        name, version = cur.fetchone()
        assert name == "Ssl_version"
        assert version.startswith("TLS")
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1] != ""


def test_upstream_tls_connection_is_reset_and_reused_by_the_next_client(
    mariadb_factory, proxy_factory, cert_pair, connect
):
    cert, key = cert_pair
    srv = mariadb_factory(extra_args=[f"--ssl-cert={cert}", f"--ssl-key={key}"])
    p = proxy_factory(server=srv, upstream={"tls": "required"})
    pool = p.proxy.pool
    thread_ids = []
    for _ in range(3):
        with connect(p) as c, c.cursor() as cur:
            # the processlist row of this very query: the upstream connection's thread id
            cur.execute(
                "SELECT ID, @leftover FROM information_schema.PROCESSLIST "
                "WHERE INFO LIKE '%tp-self-id-marker%'"
            )
            tid, leftover = cur.fetchone()
            assert leftover is None
            thread_ids.append(tid)
            cur.execute("SET @leftover = 1")
        deadline = time.monotonic() + 5
        while p.call(lambda: pool.idle_count) < 1:
            assert time.monotonic() < deadline, "the TLS connection never came back"
            time.sleep(0.01)
    assert len(set(thread_ids)) == 1, thread_ids
    assert p.call(lambda: pool.stats.opened) == 1


def test_upstream_tls_verify_ca_accepts_the_servers_certificate(
    mariadb_factory, proxy_factory, cert_pair, connect
):
    cert, key = cert_pair
    srv = mariadb_factory(extra_args=[f"--ssl-cert={cert}", f"--ssl-key={key}"])
    p = proxy_factory(server=srv, upstream={"tls": "verify_ca", "tls_ca": str(cert)})
    with connect(p) as c, c.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        assert cur.fetchone()[1].startswith("TLS")


def test_upstream_tls_required_against_a_server_without_tls_fails_at_start(
    mariadb_factory, proxy_factory
):
    srv = mariadb_factory(extra_args=["--skip-ssl"])
    assert srv.execute("SELECT @@have_ssl")[0][0] != "YES"
    with pytest.raises(BaseException) as e:  # noqa: B017 (the error may come grouped)
        proxy_factory(server=srv, upstream={"tls": "required"})
    messages = " | ".join(str(x) for x in _leaf_errors(e.value))
    assert "does not support TLS" in messages, messages
