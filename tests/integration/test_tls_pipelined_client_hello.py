"""Regression: a client whose TLS ClientHello arrives in the same read as its SSLRequest
(libmariadb and pymysql send them back to back) must still get its TLS handshake. The
proxy used to leave those bytes in its plaintext packet buffer: the handshake stalled until
auth_timeout, then the client read a plaintext ERR ("TLS/SSL error: wrong version number")."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import pytest

CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_PLUGIN_AUTH = 1 << 19


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls-pipelined")
    cert, key = d / "proxy.crt", d / "proxy.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def _read_packet(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        assert chunk, "proxy closed the connection"
        head += chunk
    n = int.from_bytes(head[:3], "little")
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        assert chunk, "proxy closed the connection"
        body += chunk
    return body


def test_tls_handshake_completes_when_client_hello_is_sent_with_the_ssl_request(
    proxy_factory, cert_pair
):
    cert, key = cert_pair
    p = proxy_factory(proxy={"tls_cert": str(cert), "tls_key": str(key)})
    ctx = ssl.create_default_context(cafile=str(cert))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        greeting = _read_packet(sock)
        assert greeting[0] == 10
        caps = CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
        ssl_request = struct.pack("<IIB23x", caps, 1 << 24, 45)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        client_hello = outgoing.read()
        # one send: the proxy reads the SSLRequest and the ClientHello together
        sock.sendall(len(ssl_request).to_bytes(3, "little") + b"\x01" + ssl_request + client_hello)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                data = sock.recv(65536)  # timeout=5: the old bug stalled here
                assert data, "proxy closed the connection during the TLS handshake"
                assert data[:1] == b"\x16", f"not a TLS record: {data[:40]!r}"
                incoming.write(data)
        if outgoing.pending:
            sock.sendall(outgoing.read())
        assert tls.version() is not None
