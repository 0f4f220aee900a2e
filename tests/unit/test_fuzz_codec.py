"""Fuzzing the sans-IO wire codec, the statement payload parsers and the classifier (issue 10).

Property: on any input, a decoder either returns or raises the error its module documents:
``wire.errors.ProtocolError`` for bytes that do not parse (``ValueError`` only from encoders
and from ``execute_for_upstream``'s caller-supplied type block); the classifier never raises.

Every test is bounded (``max_examples``: ``FUZZ_EXAMPLES`` in the environment, default 400)
and deterministic (``derandomize=True``), and reports how many examples it ran: printed
(``pytest -s``) and as the junit property ``fuzz_examples``; ``test_zz_fuzz_totals`` prints
the total of the module.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tainted_proxy.state import statements as stm
from tainted_proxy.taint.classifier import analyse, classify, classify_flags
from tainted_proxy.wire import packets as pk
from tainted_proxy.wire import response as rsp
from tainted_proxy.wire.buffer import PacketBuffer, join_payload
from tainted_proxy.wire.codec import (
    frame,
    read_lenenc_bytes,
    read_lenenc_int,
    read_nul_bytes,
    write_lenenc_bytes,
    write_lenenc_int,
)
from tainted_proxy.wire.constants import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_LONG_PASSWORD,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SESSION_TRACK,
    CLIENT_TRANSACTIONS,
    COM_CHANGE_USER,
    COM_FIELD_LIST,
    COM_PING,
    COM_QUERY,
    COM_STATISTICS,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_SEND_LONG_DATA,
)
from tainted_proxy.wire.errors import ProtocolError

# per property; each test states how many ran. FUZZ_EXAMPLES=20000 for a longer local hunt
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_ran: dict[str, int] = {}


class Count:
    """Counts the examples a property test ran (hypothesis calls the body once per example,
    plus replays; the count is what was executed)."""

    def __init__(self, name: str) -> None:
        self.name = name
        _ran[name] = 0

    def __call__(self) -> None:
        _ran[self.name] += 1


@pytest.fixture
def examples(request: pytest.FixtureRequest, record_property: Callable[[str, Any], None]):
    name = request.node.name
    counter = Count(name)
    yield counter
    record_property("fuzz_examples", _ran[name])
    print(f"\n{name}: {_ran[name]} fuzz examples tried")


def expect_protocol_error(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a ProtocolError is an accepted outcome, anything else propagates."""
    try:
        return fn(*args)
    except ProtocolError:
        return None


# -- strategies ------------------------------------------------------------------------------

CAPS = st.sampled_from(
    [
        0,
        CLIENT_PROTOCOL_41,
        CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION,
        CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH,
        CLIENT_PROTOCOL_41
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_PLUGIN_AUTH
        | CLIENT_CONNECT_ATTRS,
        CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK | CLIENT_TRANSACTIONS,
        CLIENT_TRANSACTIONS,
        CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK | CLIENT_DEPRECATE_EOF,
    ]
) | st.integers(0, 2**32 - 1)

INTERESTING = st.sampled_from(
    [b"\x00", b"\xfb", b"\xfc", b"\xfd", b"\xfe", b"\xff", b"\xfc\xff\xff", b"\xfe" + b"\xff" * 8]
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid payload with bit flips, truncation, insertions of interesting bytes."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 3))
        if op == 0 and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:
            del data[draw(st.integers(0, len(data))) :]
        elif op == 2:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(INTERESTING | st.binary(max_size=8))
        elif data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


def payloads(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=300) | mutated(seeds)


def buffers(seeds: list[bytes]) -> st.SearchStrategy[Any]:
    """The same payloads as bytes, bytearray or memoryview (the codec takes all three)."""
    return st.tuples(payloads(seeds), st.sampled_from([bytes, bytearray, memoryview])).map(
        lambda t: t[1](t[0])
    )


# valid seeds to mutate
HS_RESPONSE = pk.HandshakeResponse41(
    capabilities=CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_CONNECT_ATTRS
    | CLIENT_LONG_PASSWORD,
    max_packet=1 << 24,
    charset=45,
    username="app",
    auth_response=bytes(range(20)),
    database="test",
    auth_plugin="mysql_native_password",
    attributes={"_client_name": "pymysql", "_pid": "1"},
).encode()
HS_RESPONSE_LENENC = pk.HandshakeResponse41(
    capabilities=CLIENT_PROTOCOL_41
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS,
    max_packet=0,
    charset=8,
    username="u",
    auth_response=b"x" * 300,
    auth_plugin="caching_sha2_password",
    attributes={"k": "v"},
).encode()
HANDSHAKE = pk.HandshakeV10(
    server_version="10.11.6-MariaDB",
    connection_id=7,
    auth_data=bytes(range(1, 21)),
    capabilities=0xFFFFF7FE,
    charset=45,
    status=2,
    auth_plugin="mysql_native_password",
    mariadb_ext_caps=0x1D,
).encode()
SESSION_BLOCK = (
    b"\x00\x0f\x0aautocommit\x03OFF"  # system variable
    + b"\x01\x05\x04test"  # schema
    + b"\x02\x01\x31"  # state change
    + b"\x05\x09\x08________"  # transaction state
    + b"\x04\x06\x05BEGIN"  # transaction characteristics
    + b"\x09\x02zz"  # unknown
)
OK_PLAIN = b"\x00\x01\x02\x02\x00\x00\x00"
OK_TRACKED = b"\x00\x00\x00\x02\x40\x00\x00\x04info" + bytes([len(SESSION_BLOCK)]) + SESSION_BLOCK
OK_FE = b"\xfe\x00\x00\x22\x00\x01\x00"
ERR = pk.err_payload(1064, "42000", "You have an error in your SQL syntax")
ERR_NO_STATE = b"\xff\x15\x04Access denied"
EOF = b"\xfe\x00\x00\x02\x00"
CHANGE_USER = pk.ChangeUser(
    "app", bytes(20), "test", 45, "mysql_native_password", {"a": "b"}
).encode(CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS)
AUTH_SWITCH = b"\xfemysql_native_password\x00" + bytes(range(20)) + b"\x00"
AUTH_MORE = b"\x01\x03"
SSL_REQUEST = HS_RESPONSE[:32]
PREPARE_OK = struct.pack("<BIHHBH", 0, 5, 2, 1, 0, 0)
EXECUTE_1 = (
    b"\x17\x05\x00\x00\x00\x00\x01\x00\x00\x00" + b"\x00" + b"\x01" + b"\x08\x00" + b"\x07" * 8
)
EXECUTE_2_UNBOUND = b"\x17\x05\x00\x00\x00\x00\x01\x00\x00\x00" + b"\x00" + b"\x00" + b"ab"

ALL_SEEDS = [
    HS_RESPONSE,
    HS_RESPONSE_LENENC,
    HANDSHAKE,
    OK_PLAIN,
    OK_TRACKED,
    OK_FE,
    ERR,
    ERR_NO_STATE,
    EOF,
    CHANGE_USER,
    AUTH_SWITCH,
    AUTH_MORE,
    SSL_REQUEST,
    PREPARE_OK,
    EXECUTE_1,
    SESSION_BLOCK,
]


# -- the seeds are valid (otherwise the mutations prove little) ------------------------------


def test_seeds_decode() -> None:
    assert pk.HandshakeResponse41.decode(HS_RESPONSE).username == "app"
    assert len(pk.HandshakeResponse41.decode(HS_RESPONSE_LENENC).auth_response) == 300
    assert pk.HandshakeV10.decode(HANDSHAKE).connection_id == 7
    assert len(pk.parse_session_state(SESSION_BLOCK)) == 6
    caps = CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK
    assert pk.OkPacket.decode(OK_TRACKED, caps).session_state
    assert pk.ErrPacket.decode(ERR).code == 1064
    assert pk.ChangeUser.decode(
        CHANGE_USER,
        CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS,
    ).attributes == {"a": "b"}
    assert stm.parse_prepare_ok(PREPARE_OK) == (5, 2, 1, 0)


# -- packet decoders -------------------------------------------------------------------------

SEEDED = buffers(ALL_SEEDS)


@pytest.mark.parametrize(
    "decode",
    [
        pk.HandshakeResponse41.decode,
        pk.HandshakeV10.decode,
        pk.SslRequest.decode,
        pk.AuthSwitchRequest.decode,
        pk.AuthMoreData.decode,
        pk.ErrPacket.decode,
        pk.EofPacket.decode,
        pk.ok_status,
        pk.eof_status,
        pk.parse_session_state,
        pk.is_ssl_request,
        stm.parse_prepare_ok,
        stm.stmt_id_of,
    ],
    ids=lambda f: getattr(f, "__qualname__", repr(f)),
)
def test_decoder_raises_only_protocol_error(decode: Callable[[Any], Any], examples: Count) -> None:
    @FUZZ
    @given(data=SEEDED)
    def prop(data: Any) -> None:
        examples()
        expect_protocol_error(decode, data)

    prop()


@pytest.mark.parametrize(
    "decode",
    [pk.OkPacket.decode, pk.ChangeUser.decode, pk.strip_session_tracking],
    ids=lambda f: f.__qualname__,
)
def test_decoder_with_caps_raises_only_protocol_error(
    decode: Callable[[Any, int], Any], examples: Count
) -> None:
    @FUZZ
    @given(data=SEEDED, caps=CAPS)
    def prop(data: Any, caps: int) -> None:
        examples()
        expect_protocol_error(decode, data, caps)

    prop()


def test_ok_packet_decoders_agree(examples: Count) -> None:
    """OkPacket.decode and the fast ok_status read the same status and warnings."""

    @FUZZ
    @given(data=buffers([OK_PLAIN, OK_TRACKED, OK_FE]))
    def prop(data: Any) -> None:
        examples()
        caps = CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK
        full = expect_protocol_error(pk.OkPacket.decode, data, caps)
        fast = expect_protocol_error(pk.ok_status, data)
        if full is not None and fast is not None:
            assert fast == (full.status, full.warnings)

    prop()


def test_strip_session_tracking_output_decodes(examples: Count) -> None:
    """What strip_session_tracking returns is an OK an untracked client can decode."""

    @FUZZ
    @given(data=buffers([OK_PLAIN, OK_TRACKED, OK_FE]))
    def prop(data: Any) -> None:
        examples()
        caps = CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK
        out = expect_protocol_error(pk.strip_session_tracking, data, caps)
        if out is not None and expect_protocol_error(pk.OkPacket.decode, data, caps):
            ok = pk.OkPacket.decode(out, CLIENT_PROTOCOL_41)
            assert not ok.session_state

    prop()


# -- codec primitives and the receive buffer --------------------------------------------------


def test_lenenc_readers(examples: Count) -> None:
    @FUZZ
    @given(data=buffers(ALL_SEEDS), pos=st.integers(-3, 320))
    def prop(data: Any, pos: int) -> None:
        examples()
        for read in (read_lenenc_int, read_lenenc_bytes, read_nul_bytes):
            r = expect_protocol_error(read, data, pos)
            if r is not None:
                assert pos < r[1] <= len(data) or (read is read_nul_bytes and r[1] > pos)

    prop()


def test_lenenc_roundtrip(examples: Count) -> None:
    @FUZZ
    @given(n=st.integers(0, 2**64 - 1), b=st.binary(max_size=300))
    def prop(n: int, b: bytes) -> None:
        examples()
        assert read_lenenc_int(write_lenenc_int(n), 0) == (n, len(write_lenenc_int(n)))
        enc = write_lenenc_bytes(b)
        assert read_lenenc_bytes(enc, 0) == (b, len(enc))

    prop()


def test_write_lenenc_int_out_of_range_is_value_error() -> None:
    for n in (-1, 2**64):
        with pytest.raises(ValueError):
            write_lenenc_int(n)


def _feed(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    """Feed ``chunks`` into a PacketBuffer the way the relay does; the logical packets out."""
    pb = PacketBuffer(capacity=64)
    out: list[tuple[int, bytes]] = []
    for chunk in chunks:
        view = pb.free_view(len(chunk))
        view[: len(chunk)] = chunk
        view.release()
        pb.end += len(chunk)
        while True:
            got = pb.logical_packet_size()
            nxt = pb.next_packet()
            if got is None or not got[1]:
                assert nxt is None or got is not None
                break
            size, _ = got
            assert nxt is not None
            out.append((nxt[0], join_payload(pb.data, size)))
            pb.consume(size)
    return out


def test_packet_buffer_random_streams(examples: Count) -> None:
    """Random bytes in random chunks: no exception, and a frame()d stream comes back whole."""

    @FUZZ
    @given(
        payloads=st.lists(st.binary(max_size=200), max_size=8),
        garbage=st.binary(max_size=64),
        cuts=st.lists(st.integers(1, 97), max_size=20),
        seq=st.integers(0, 255),
    )
    def prop(payloads: list[bytes], garbage: bytes, cuts: list[int], seq: int) -> None:
        examples()
        stream = b""
        s = seq
        for p in payloads:
            w, s = frame(p, s)
            stream += w
        chunks = []
        pos = 0
        for c in cuts:
            chunks.append(stream[pos : pos + c])
            pos += c
        chunks.append(stream[pos:])
        got = _feed(chunks)
        assert [p for _, p in got] == payloads
        assert [q for q, _ in got] == [(seq + i) & 0xFF for i in range(len(payloads))]
        _feed([garbage, garbage[::-1]])  # garbage: any packets, never an exception

    prop()


# -- ResponseTracker ---------------------------------------------------------------------------

COMMANDS = [
    COM_QUERY,
    COM_STMT_EXECUTE,
    COM_STMT_PREPARE,
    COM_STMT_FETCH,
    COM_FIELD_LIST,
    COM_STMT_CLOSE,
    COM_STMT_SEND_LONG_DATA,
    COM_STATISTICS,
    COM_PING,
    COM_CHANGE_USER,
]


def _pkt(payload: bytes, seq: int = 1) -> bytes:
    return frame(payload, seq)[0]


COLDEF = (
    b"\x03def\x04test\x02t1\x02t1\x01a\x01a\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00"
)
RESPONSE_SEEDS = [
    _pkt(OK_PLAIN),
    _pkt(ERR),
    _pkt(b"\x01") + _pkt(COLDEF) + _pkt(EOF) + _pkt(b"\x011") + _pkt(EOF),
    _pkt(b"\x01") + _pkt(COLDEF) + _pkt(b"\x011") + _pkt(OK_FE),
    _pkt(PREPARE_OK) + _pkt(COLDEF) + _pkt(EOF) + _pkt(COLDEF) + _pkt(COLDEF) + _pkt(EOF),
    _pkt(b"\x01") + _pkt(COLDEF) + _pkt(EOF) + _pkt(b"\x00\x00\x07") + _pkt(EOF),
    _pkt(b"\xfb/etc/passwd"),
]


def _scan_chunked(
    tracker: rsp.ResponseTracker, stream: bytes, cuts: list[int]
) -> tuple[int, bool, bool]:
    """Scan ``stream`` arriving in pieces, forwarding what scan() releases, as the relay
    does; (bytes forwarded, done, error)."""
    buf = bytearray()
    forwarded = 0
    pos = 0
    pieces = []
    for c in cuts:
        pieces.append(stream[pos : pos + c])
        pos += c
    pieces.append(stream[pos:])
    for piece in pieces:
        buf += piece
        n = tracker.scan(buf, len(buf))
        assert 0 <= n <= len(buf)
        forwarded += n
        del buf[:n]
        if tracker.done:
            break
    return forwarded, tracker.done, tracker.error


def test_response_tracker_random_streams(examples: Count) -> None:
    """Any byte stream, any chunking, any command: scan() returns an offset inside the
    buffer or raises ProtocolError."""

    @FUZZ
    @given(
        command=st.sampled_from(COMMANDS),
        deprecate_eof=st.booleans(),
        stream=st.binary(max_size=400)
        | mutated(RESPONSE_SEEDS)
        | st.lists(mutated(RESPONSE_SEEDS), max_size=3).map(b"".join),
        cuts=st.lists(st.integers(1, 50), max_size=12),
    )
    def prop(command: int, deprecate_eof: bool, stream: bytes, cuts: list[int]) -> None:
        examples()
        t = rsp.ResponseTracker(deprecate_eof)
        t.start(command)
        expect_protocol_error(_scan_chunked, t, stream, cuts)

    prop()


def test_response_tracker_chunking_does_not_matter(examples: Count) -> None:
    """A response scanned in one piece or in many ends at the same byte, with the same
    error flag (valid and mutated responses)."""

    @FUZZ
    @given(
        command=st.sampled_from([COM_QUERY, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_PING]),
        deprecate_eof=st.booleans(),
        stream=mutated(RESPONSE_SEEDS),
        cuts=st.lists(st.integers(1, 50), min_size=1, max_size=12),
    )
    def prop(command: int, deprecate_eof: bool, stream: bytes, cuts: list[int]) -> None:
        examples()
        whole = rsp.ResponseTracker(deprecate_eof)
        whole.start(command)
        parts = rsp.ResponseTracker(deprecate_eof)
        parts.start(command)
        a = expect_protocol_error(_scan_chunked, whole, stream, [])
        b = expect_protocol_error(_scan_chunked, parts, stream, cuts)
        if a is not None and b is not None and a[1] and b[1]:
            assert a == b

    prop()


# -- state.statements payload parsers ---------------------------------------------------------


def test_statement_payload_parsers(examples: Count) -> None:
    @FUZZ
    @given(
        payload=buffers([EXECUTE_1, EXECUTE_2_UNBOUND, b"\x19\x05\x00\x00\x00"]),
        upstream_id=st.integers(0, 2**32 - 1),
        num_params=st.integers(0, 20),
        stored=st.none() | st.binary(max_size=10),
        bound=st.none() | st.binary(max_size=10),
    )
    def prop(
        payload: Any, upstream_id: int, num_params: int, stored: bytes | None, bound: bytes | None
    ) -> None:
        examples()
        expect_protocol_error(stm.stmt_id_of, payload)
        expect_protocol_error(stm.rewrite_stmt_id, payload, upstream_id)
        expect_protocol_error(stm.rewrite_prepare_ok, payload, upstream_id)
        if stored is not None and len(stored) != 2 * num_params:
            # documented: a stored type block of the wrong size is the caller's ValueError
            try:
                stm.execute_for_upstream(payload, upstream_id, num_params, stored, bound)
            except (ProtocolError, ValueError):
                pass
        else:
            r = expect_protocol_error(
                stm.execute_for_upstream, payload, upstream_id, num_params, stored, bound
            )
            if r is not None:
                assert stm.stmt_id_of(r[0]) == upstream_id
        book = stm.StatementBook()
        ok = struct.pack("<BIHHBH", 0, 1, 0, num_params, 0, 0)
        s = book.add(b"SELECT ?", ("k", num_params), ok, [COLDEF] * num_params, [])
        expect_protocol_error(book.note_execute, s, payload)

    prop()


def test_split_prepare_response(examples: Count) -> None:
    @FUZZ
    @given(
        packets=st.lists(
            st.sampled_from([PREPARE_OK, COLDEF, EOF, ERR, OK_PLAIN]) | payloads([PREPARE_OK]),
            max_size=8,
        ),
        deprecate_eof=st.booleans(),
    )
    def prop(packets: list[bytes], deprecate_eof: bool) -> None:
        examples()
        r = expect_protocol_error(stm.split_prepare_response, packets, deprecate_eof)
        if r is not None:
            ok, params, cols = r
            assert len(params) + len(cols) + 1 <= len(packets)

    prop()


# -- the classifier ----------------------------------------------------------------------------

SQL_WORDS = (
    "SELECT SET SESSION GLOBAL @a @@sql_mode = := ( ) , ; ' \" ` \\ /* */ /*! -- # "
    "BEGIN COMMIT ROLLBACK PREPARE EXECUTE IMMEDIATE USING LOCK TABLES GET_LOCK "
    "CREATE TEMPORARY TABLE t NAMES utf8mb4 autocommit ANSI_QUOTES NO_BACKSLASH_ESCAPES "
    "LAST_INSERT_ID FOUND_ROWS SQL_CALC_FOUND_ROWS INTO USE XA START HANDLER OPEN CALL "
    "NEXTVAL CONNECTION_ID 1 0x41 x'41' _utf8mb4 N'x' \n \t"
).split(" ")

SQL_TEXT = (
    st.text(max_size=200)
    | st.lists(st.sampled_from(SQL_WORDS), max_size=40).map(" ".join)
    | st.lists(st.sampled_from(SQL_WORDS), max_size=40).map("".join)
)
SQL_BYTES = (
    st.binary(max_size=200)
    | SQL_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass"))
    | st.tuples(SQL_TEXT, st.binary(min_size=1, max_size=6)).map(
        lambda t: t[0].encode("utf-8", "surrogatepass") + b"\xff" + t[1]
    )
)


@pytest.mark.parametrize("ansi_quotes", [False, True])
@pytest.mark.parametrize("no_backslash_escapes", [False, True])
def test_classifier_never_raises(
    ansi_quotes: bool, no_backslash_escapes: bool, examples: Count
) -> None:
    flags = (1 if ansi_quotes else 0) | (2 if no_backslash_escapes else 0)

    @FUZZ
    @given(sql=SQL_TEXT | SQL_BYTES)
    def prop(sql: str | bytes) -> None:
        examples()
        classify(sql, ansi_quotes=ansi_quotes, no_backslash_escapes=no_backslash_escapes)
        analyse(sql, flags)
        if isinstance(sql, bytes):
            # the proxy's hot path gets views of its receive buffer
            classify_flags(bytearray(sql), flags)
            classify_flags(memoryview(sql), flags)

    prop()


# -- totals -----------------------------------------------------------------------------------


def test_zz_fuzz_totals(record_property: Callable[[str, Any], None]) -> None:
    """Runs last in this module (name order is not guaranteed by pytest, but file order is):
    the number of inputs every property above tried."""
    total = sum(_ran.values())
    record_property("fuzz_examples_total", total)
    print(f"\nfuzz_codec: {total} inputs tried over {len(_ran)} properties")
    if _ran:
        assert total > 0
