"""Hostile or broken clients: garbage, silence, oversized packets, vanishing mid-result or
mid-transaction. The proxy drops or answers them, never reuses an upstream connection in an
unknown state, and keeps serving everybody else."""

from __future__ import annotations

import logging
import socket
import struct
import time
import uuid

import pymysql
import pytest

from .conftest import packet, read_packet

# every raw socket read in this file gives up after this long
SOCK_TIMEOUT = 5.0


# -- raw wire helpers ---------------------------------------------------------------------


def raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=SOCK_TIMEOUT)
    s.settimeout(SOCK_TIMEOUT)
    return s


def parse_err(payload: bytes) -> tuple[int, str, str]:
    assert payload[:1] == b"\xff", payload[:40]
    code = struct.unpack("<H", payload[1:3])[0]
    if payload[3:4] == b"#":
        return code, payload[4:9].decode(), payload[9:].decode("utf-8", "replace")
    return code, "", payload[3:].decode("utf-8", "replace")


def read_until_closed(s: socket.socket) -> list[bytes]:
    """Packets the proxy sends before it closes the connection (fails on a timeout)."""
    packets = []
    while True:
        try:
            _seq, payload = read_packet(s)
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise AssertionError("the proxy neither answered nor closed") from exc
            return packets
        packets.append(payload)


def still_serves(p, connect) -> None:
    with connect(p) as c, c.cursor() as cur:
        cur.execute("SELECT 'still serving'")
        assert cur.fetchone() == ("still serving",)


def upstream_thread_id(cur) -> int:
    # CONNECTION_ID() is the proxy's client id wherever it appears; the processlist row
    # of this very query gives the upstream connection's thread id
    cur.execute(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%tp-self-id-marker%'"
    )
    return int(cur.fetchone()[0])


def server_threads(srv, user: str = "app") -> set[int]:
    rows = srv.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
    return {int(r[0]) for r in rows}


def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def abort(conn: pymysql.connections.Connection) -> None:
    """Vanish: close the client's socket at once (RST), without COM_QUIT."""
    sock = conn._sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn._force_close()


@pytest.fixture
def fast_auth_proxy(proxy_factory):
    return proxy_factory(proxy={"auth_timeout": 1})


# -- before login ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(packet(b"\x00garbage", 1), id="short-framed-response"),
        pytest.param(packet(b"\xff" * 64, 1), id="framed-0xff"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n", id="http-request"),
        pytest.param(bytes(range(256)) * 4, id="binary-noise"),
        pytest.param(b"\x00\x00\x00\x01", id="empty-packet"),
    ],
)
def test_garbage_instead_of_handshake_response_is_dropped_and_others_still_work(
    fast_auth_proxy, connect, garbage
):
    s = raw_connect(fast_auth_proxy.port)
    try:
        _seq, greeting = read_packet(s)
        assert greeting[0] == 10  # HandshakeV10
        t0 = time.monotonic()
        s.sendall(garbage)
        packets = read_until_closed(s)
        assert time.monotonic() - t0 < 4
        for p in packets:
            code, _state, _msg = parse_err(p)  # nothing but an ERR, never an OK
            assert code in (1043, 1045, 1158, 1153)
    finally:
        s.close()
    still_serves(fast_auth_proxy, connect)


def test_silent_client_is_dropped_after_auth_timeout(fast_auth_proxy, connect, caplog):
    caplog.set_level(logging.INFO, logger="tainted_proxy")
    s = raw_connect(fast_auth_proxy.port)
    try:
        read_packet(s)
        t0 = time.monotonic()
        packets = read_until_closed(s)
        waited = time.monotonic() - t0
        assert 0.8 <= waited < 3, waited
        assert [parse_err(p)[0] for p in packets] in ([], [1043])
    finally:
        s.close()
    # one line an operator can act on (the fuzzer saw such refusals and no line said why)
    lines = [r.getMessage() for r in caplog.records if "code=1043" in r.getMessage()]
    assert len(lines) == 1 and "event=login_failed" in lines[0] and "auth_timeout" in lines[0]
    still_serves(fast_auth_proxy, connect)


def test_client_that_never_reads_the_greeting_is_dropped_after_auth_timeout(fast_auth_proxy):
    s = raw_connect(fast_auth_proxy.port)
    try:
        time.sleep(1.5)
        # the proxy gave up on us: whatever it sent ends in EOF, not a live session
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data[4] == 10  # the greeting it sent, maybe followed by an ERR
    finally:
        s.close()


def test_ssl_request_when_tls_is_not_offered_is_refused(proxy, connect):
    s = raw_connect(proxy.port)
    try:
        read_packet(s)
        # a 32-byte SSLRequest: CLIENT_SSL | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION
        caps = 0x800 | 0x200 | 0x8000
        s.sendall(packet(struct.pack("<IIB23x", caps, 1 << 24, 45), 1))
        packets = read_until_closed(s)
        assert all(p[:1] == b"\xff" for p in packets)
    finally:
        s.close()
    still_serves(proxy, connect)


def test_header_announcing_a_huge_handshake_response_is_refused_at_once(proxy, connect):
    # (the proxy's auth_timeout is 10 s here: the answer must not come from the timeout)
    s = raw_connect(proxy.port)
    try:
        read_packet(s)
        t0 = time.monotonic()
        s.sendall(b"\xff\xff\xff\x01")  # "16 MiB follow", and nothing follows
        packets = read_until_closed(s)
        assert time.monotonic() - t0 < 3
        assert [parse_err(p)[0] for p in packets] == [1153]
    finally:
        s.close()
    still_serves(proxy, connect)


def test_unknown_user_is_refused_with_1045(proxy, connect):
    with pytest.raises(pymysql.err.OperationalError) as e:
        connect(proxy, user="nobody_here", password="x")
    assert e.value.args[0] == 1045
    assert e.value.sqlstate == "28000"
    assert "nobody_here" in e.value.args[1]


# -- after login ------------------------------------------------------------------------------


@pytest.mark.parametrize("mib", [2, 8])
def test_packet_larger_than_max_packet_size_gets_1153_and_the_proxy_keeps_serving(
    proxy_factory, connect, mib
):
    p = proxy_factory(proxy={"max_packet_size": 1024 * 1024})
    with connect(p) as c, c.cursor() as cur:
        cur.execute("SELECT %s", ("a" * (512 * 1024),))  # under the limit: fine
        assert len(cur.fetchone()[0]) == 512 * 1024
    c = connect(p, read_timeout=10, write_timeout=10)
    try:
        with pytest.raises(pymysql.err.OperationalError) as e:
            with c.cursor() as cur:
                cur.execute("SELECT %s", ("x" * (mib * 1024 * 1024),))
        assert e.value.args[0] == 1153, e.value.args
    finally:
        c.close()
    still_serves(p, connect)


def test_header_announcing_a_huge_packet_is_refused_without_waiting_for_it(proxy_factory, connect):
    p = proxy_factory(proxy={"max_packet_size": 1024 * 1024})
    c = connect(p, read_timeout=10)
    try:
        sock = c._sock
        # announce a 16 MiB - 1 COM_QUERY but send only its first byte
        sock.sendall(b"\xff\xff\xff\x00\x03")
        sock.settimeout(SOCK_TIMEOUT)
        _seq, payload = read_packet(sock)
        assert parse_err(payload)[0] == 1153
    finally:
        c._force_close()
    still_serves(p, connect)


def test_empty_command_packet_ends_the_session_and_others_keep_working(proxy, connect):
    c = connect(proxy)
    try:
        sock = c._sock
        sock.sendall(b"\x00\x00\x00\x00")
        packets = read_until_closed(sock)
        assert all(p[:1] == b"\xff" for p in packets)
    finally:
        c._force_close()
    still_serves(proxy, connect)


def test_unknown_command_byte_gets_an_error_and_the_session_continues(proxy, connect):
    with connect(proxy) as c:
        sock = c._sock
        sock.settimeout(SOCK_TIMEOUT)
        sock.sendall(packet(b"\x99junk", 0))
        _seq, payload = read_packet(sock)
        assert parse_err(payload)[0] == 1047  # ER_UNKNOWN_COM_ERROR, as the server says
        with c.cursor() as cur:
            cur.execute("SELECT 5")
            assert cur.fetchone() == (5,)


def test_client_vanishing_mid_result_gets_its_upstream_connection_closed_not_reused(
    proxy_factory, connect, mariadb
):
    p = proxy_factory()
    pool = p.proxy.pool
    c = connect(p)
    with c.cursor() as cur:
        tid = upstream_thread_id(cur)
    assert tid in server_threads(mariadb)
    closed_before = p.call(lambda: pool.stats.closed)
    # ~50 MB of result, far more than the socket buffers hold
    c._sock.sendall(packet(b"\x03SELECT REPEAT('x', 10000) AS big FROM seq_1_to_5000", 0))
    time.sleep(0.2)  # let the result start flowing
    abort(c)
    wait_for(lambda: tid not in server_threads(mariadb), what="the upstream thread to go away")
    assert p.call(lambda: pool.stats.closed) > closed_before
    assert p.call(lambda: pool.idle_count) == 0
    # nobody gets that connection again, and the proxy keeps serving
    with connect(p) as c2, c2.cursor() as cur:
        assert upstream_thread_id(cur) != tid
        cur.execute("SELECT COUNT(*) FROM seq_1_to_1000")
        assert cur.fetchone() == (1000,)


def test_client_vanishing_mid_transaction_leaves_no_rows_and_no_locks(proxy, connect, mariadb):
    table = f"hostile_tx_{uuid.uuid4().hex[:8]}"
    mariadb.execute(f"CREATE TABLE test.{table} (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    try:
        mariadb.execute(f"INSERT INTO test.{table} VALUES (1, 10)")
        c = connect(proxy)
        with c.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"UPDATE {table} SET v = 11 WHERE id = 1")  # row lock on id 1
            cur.execute(f"INSERT INTO {table} VALUES (2, 20)")
        abort(c)
        with connect(proxy) as c2, c2.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 2")
            t0 = time.monotonic()
            cur.execute(f"UPDATE {table} SET v = v + 100 WHERE id = 1")
            assert time.monotonic() - t0 < 2.5
            c2.commit()
            cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
            assert cur.fetchall() == ((1, 110),)
        assert mariadb.execute(f"SELECT id, v FROM test.{table} ORDER BY id") == [(1, 110)]
    finally:
        mariadb.execute(f"DROP TABLE IF EXISTS test.{table}")
