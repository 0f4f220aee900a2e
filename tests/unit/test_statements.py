"""Virtual prepared statements: proxy ids, per-upstream caches and COM_STMT_* rewriting.

Server bytes below were captured from MariaDB 10.11.19 with a raw client (pymysql's default
autocommit=0, hence status 0 in the EOFs); every hand-built execute layout was accepted by
that server with the results expected.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tainted_proxy.state.statements import (
    LAST_STMT_ID,
    StatementBook,
    TooManyStatements,
    UpstreamStatements,
    com_stmt_close,
    com_stmt_prepare,
    encode_prepare_response,
    execute_for_upstream,
    parse_prepare_ok,
    rewrite_prepare_ok,
    rewrite_stmt_id,
    split_prepare_response,
    stmt_id_of,
    unknown_statement_error,
)
from tainted_proxy.wire.codec import frame
from tainted_proxy.wire.constants import (
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
    SERVER_STATUS_AUTOCOMMIT,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import ErrPacket
from tainted_proxy.wire.response import ResponseTracker

# COM_STMT_PREPARE "SELECT ? AS a, ? + 1 AS b, 'x' AS c": stmt 20, 3 columns, 2 params
OK = bytes.fromhex("001400000003000200000000")
PARAMS = [
    bytes.fromhex("036465660000000161000c3f0000000000068000000000"),
    bytes.fromhex("03646566000000013f000c3f0000000000068000000000"),
]
COLUMNS = [
    bytes.fromhex("036465660000000161000c3f0000000000068000000000"),
    bytes.fromhex("036465660000000162000c3f0011000000058000000000"),
    bytes.fromhex("036465660000000163000c2d0004000000fd0100270000"),
]
EOF = bytes.fromhex("fe00000000")
# COM_STMT_PREPARE "DO ?": stmt 11, no columns, 1 param
OK_NO_COLUMNS = bytes.fromhex("000b00000000000100000000")
SQL = b"SELECT ? AS a, ? + 1 AS b, 'x' AS c"
KEY = ("test", "STRICT_TRANS_TABLES", SQL)

LONGLONG = b"\x08\x00"
TINY_UNSIGNED = b"\x01\x80"


def execute(
    stmt_id: int,
    num_params: int,
    types: bytes | None = None,
    values: bytes = b"",
    bitmap: bytes | None = None,
    cursor: int = 0,
) -> bytes:
    """A COM_STMT_EXECUTE payload; ``types`` given means new_params_bound_flag = 1."""
    p = struct.pack("<BIBI", COM_STMT_EXECUTE, stmt_id, cursor, 1)
    if num_params:
        p += bitmap if bitmap is not None else bytes((num_params + 7) // 8)
        p += b"\x01" + types if types is not None else b"\x00"
    return p + values


def book_with(book: StatementBook, sql: bytes = SQL, key: object = KEY):
    return book.add(sql, key, OK, PARAMS, COLUMNS)


# ---------------------------------------------------------------------------------------------
# StatementBook: ids


def test_proxy_ids_start_at_1_and_count_up() -> None:
    book = StatementBook()
    assert [book_with(book).proxy_id for _ in range(3)] == [1, 2, 3]
    assert len(book) == 3


def test_closed_ids_are_not_handed_out_again() -> None:
    book = StatementBook()
    a = book_with(book)
    book.close(a.proxy_id)
    assert book_with(book).proxy_id == 2


def test_ids_wrap_after_0xfffffffe_to_1_never_using_0_or_last_stmt_id() -> None:
    book = StatementBook(first_id=0xFFFFFFFD)
    ids = [book_with(book).proxy_id for _ in range(3)]
    assert ids == [0xFFFFFFFD, 0xFFFFFFFE, 1]


def test_ids_after_wrap_skip_statements_still_open() -> None:
    book = StatementBook()
    one, two = book_with(book), book_with(book)
    book._next_id = 0xFFFFFFFE  # as if 2**32 - 3 statements had come and gone
    assert [book_with(book).proxy_id for _ in range(2)] == [0xFFFFFFFE, 3]
    assert book.get(1) is one and book.get(2) is two


# ---------------------------------------------------------------------------------------------
# StatementBook: lookup, close, cap


def test_get_returns_the_statement_and_none_for_unknown_ids() -> None:
    book = StatementBook()
    stmt = book_with(book)
    assert book.get(stmt.proxy_id) is stmt
    assert book.get(99) is None
    assert book.get(0) is None


def test_close_forgets_the_statement_and_ignores_unknown_ids() -> None:
    book = StatementBook()
    stmt = book_with(book)
    assert book.close(stmt.proxy_id) is stmt
    assert book.get(stmt.proxy_id) is None
    assert len(book) == 0
    assert book.close(stmt.proxy_id) is None


def test_add_over_the_cap_raises_with_the_servers_error() -> None:
    book = StatementBook(max_statements=2)
    book_with(book)
    book_with(book)
    with pytest.raises(TooManyStatements) as info:
        book_with(book)
    assert len(book) == 2
    err = ErrPacket.decode(info.value.err_payload())
    assert (err.code, err.sqlstate) == (1461, "42000")
    assert err.message == (
        "Can't create more than max_prepared_stmt_count statements (current value: 2)"
    )


def test_closing_a_statement_makes_room_under_the_cap() -> None:
    book = StatementBook(max_statements=1)
    stmt = book_with(book)
    book.close(stmt.proxy_id)
    assert book_with(book).proxy_id == 2


def test_add_keeps_what_is_needed_to_reemit_the_prepare_response() -> None:
    stmt = book_with(StatementBook())
    assert (stmt.sql, stmt.key) == (SQL, KEY)
    assert (stmt.num_params, stmt.num_columns) == (2, 3)
    assert stmt.param_defs == PARAMS and stmt.column_defs == COLUMNS
    assert stmt.ok_tail == b"" and stmt.types is None


def test_add_copies_views_of_a_receive_buffer() -> None:
    buf = bytearray(OK + PARAMS[0] + PARAMS[1])
    view = memoryview(buf)
    stmt = StatementBook().add(SQL, KEY, view[:12], [view[12:35], view[35:58]], COLUMNS)
    buf[:] = bytes(len(buf))
    assert stmt.param_defs == PARAMS


def test_add_rejects_definitions_that_disagree_with_the_prepare_ok() -> None:
    with pytest.raises(ProtocolError):
        StatementBook().add(SQL, KEY, OK, PARAMS[:1], COLUMNS)


# ---------------------------------------------------------------------------------------------
# StatementBook: MariaDB's "last statement" id 0xFFFFFFFF


def test_last_stmt_id_means_the_statement_prepared_last() -> None:
    book = StatementBook()
    book_with(book)
    second = book_with(book)
    assert book.get(LAST_STMT_ID) is second


def test_last_stmt_id_is_unknown_after_a_failed_prepare() -> None:
    book = StatementBook()
    book_with(book)
    book.note_prepare_failed()
    assert book.get(LAST_STMT_ID) is None


def test_last_stmt_id_is_unknown_once_that_statement_is_closed() -> None:
    book = StatementBook()
    first = book_with(book)
    second = book_with(book)
    book.close(first.proxy_id)
    assert book.get(LAST_STMT_ID) is second
    book.close(second.proxy_id)
    assert book.get(LAST_STMT_ID) is None


def test_close_of_last_stmt_id_closes_the_statement_prepared_last() -> None:
    book = StatementBook()
    stmt = book_with(book)
    assert book.close(LAST_STMT_ID) is stmt
    assert len(book) == 0


def test_a_prepare_refused_at_the_cap_clears_the_last_statement() -> None:
    book = StatementBook(max_statements=1)
    book_with(book)
    with pytest.raises(TooManyStatements):
        book_with(book)
    assert book.get(LAST_STMT_ID) is None


# ---------------------------------------------------------------------------------------------
# StatementBook: answering a prepare from the book


def test_find_returns_the_latest_open_statement_with_that_key() -> None:
    book = StatementBook()
    book_with(book)
    second = book_with(book)
    assert book.find(KEY) is second
    book.close(second.proxy_id)
    assert book.find(KEY) is None
    assert book.find(("other", "", SQL)) is None


def test_add_copy_gives_a_new_id_with_the_same_metadata_and_no_types() -> None:
    book = StatementBook()
    first = book_with(book)
    first.types = LONGLONG * 2
    copy = book.add_copy(first)
    assert copy.proxy_id == 2 and book.get(LAST_STMT_ID) is copy
    assert (copy.sql, copy.key, copy.param_defs, copy.column_defs) == (
        first.sql,
        first.key,
        first.param_defs,
        first.column_defs,
    )
    assert copy.types is None


# ---------------------------------------------------------------------------------------------
# StatementBook: remembering bound types


def test_note_execute_remembers_the_types_the_client_binds() -> None:
    book = StatementBook()
    stmt = book_with(book)
    book.note_execute(stmt, execute(1, 2, LONGLONG + TINY_UNSIGNED, b"\x05" * 8 + b"\x07"))
    assert stmt.types == LONGLONG + TINY_UNSIGNED


def test_note_execute_keeps_the_types_when_the_client_sends_none() -> None:
    book = StatementBook()
    stmt = book_with(book)
    stmt.types = LONGLONG * 2
    book.note_execute(stmt, execute(1, 2, None, b"\x00" * 16))
    assert stmt.types == LONGLONG * 2


def test_note_execute_of_a_statement_without_params_reads_no_flag() -> None:
    book = StatementBook()
    stmt = book.add(b"DO 1", None, bytes.fromhex("000500000000000000000000"), [], [])
    book.note_execute(stmt, execute(1, 0))
    assert stmt.types is None


def test_note_execute_rejects_types_cut_short() -> None:
    book = StatementBook()
    stmt = book_with(book)
    with pytest.raises(ProtocolError):
        book.note_execute(stmt, execute(1, 2, LONGLONG))


# ---------------------------------------------------------------------------------------------
# UpstreamStatements


def test_upstream_lookup_misses_until_the_statement_is_added() -> None:
    ups = UpstreamStatements()
    assert ups.lookup(KEY) is None
    assert ups.add(KEY, 7, 2) == []
    st = ups.lookup(KEY)
    assert st is not None and (st.upstream_id, st.num_params, st.types_bound) == (7, 2, None)


def test_upstream_cache_evicts_least_recently_used_and_returns_their_ids() -> None:
    ups = UpstreamStatements(capacity=2)
    assert ups.add("a", 1, 0) == []
    assert ups.add("b", 2, 0) == []
    assert ups.add("c", 3, 0) == [1]
    assert ups.lookup("a") is None
    assert len(ups) == 2


def test_upstream_lookup_makes_a_statement_most_recently_used() -> None:
    ups = UpstreamStatements(capacity=3)
    for i, key in enumerate("abc", start=1):
        ups.add(key, i, 0)
    ups.lookup("a")
    assert ups.add("d", 4, 0) == [2]  # b, not a
    assert ups.add("e", 5, 0) == [3]
    assert ups.add("f", 6, 0) == [1]


def test_upstream_capacity_one_evicts_the_previous_statement() -> None:
    ups = UpstreamStatements(capacity=1)
    ups.add("a", 1, 0)
    assert ups.add("b", 2, 0) == [1]


def test_re_adding_a_key_returns_the_replaced_upstream_id() -> None:
    ups = UpstreamStatements()
    ups.add(KEY, 1, 2)
    assert ups.add(KEY, 5, 2) == [1]
    assert ups.lookup(KEY).upstream_id == 5  # type: ignore[union-attr]
    assert len(ups) == 1


def test_forget_all_empties_the_cache_without_ids_to_close() -> None:
    ups = UpstreamStatements()
    ups.add("a", 1, 0)
    ups.add("b", 2, 0)
    ups.forget_all()
    assert len(ups) == 0 and ups.lookup("a") is None


def test_drop_forgets_one_statement_and_returns_it() -> None:
    ups = UpstreamStatements()
    ups.add("a", 1, 0)
    ups.add("b", 2, 0)
    dropped = ups.drop("a")
    assert dropped is not None and dropped.upstream_id == 1
    assert ups.drop("a") is None
    assert ups.lookup("b") is not None


def test_capacities_below_one_are_rejected() -> None:
    with pytest.raises(ValueError):
        UpstreamStatements(capacity=0)
    with pytest.raises(ValueError):
        StatementBook(max_statements=0)


def test_command_builders_lay_out_prepare_and_close() -> None:
    assert com_stmt_close(0x01020304) == bytes([COM_STMT_CLOSE, 4, 3, 2, 1])
    assert com_stmt_prepare(SQL) == bytes([COM_STMT_PREPARE]) + SQL


# ---------------------------------------------------------------------------------------------
# PREPARE_OK


def test_parse_prepare_ok_reads_the_servers_bytes() -> None:
    assert parse_prepare_ok(OK) == (20, 3, 2, 0)
    assert parse_prepare_ok(OK_NO_COLUMNS) == (11, 0, 1, 0)


def test_parse_prepare_ok_tolerates_mysql8_metadata_follows_byte() -> None:
    assert parse_prepare_ok(OK + b"\x01") == (20, 3, 2, 0)
    stmt = StatementBook().add(SQL, KEY, OK + b"\x01", PARAMS, COLUMNS)
    assert stmt.ok_tail == b"\x01"
    assert encode_prepare_response(stmt, True, 0)[0].endswith(b"\x01")


@pytest.mark.parametrize(
    "payload",
    [OK[:11], b"", b"\xff\x28\x04#42000You have an error in your SQL syntax"],
    ids=["truncated", "empty", "err"],
)
def test_parse_prepare_ok_rejects_anything_else(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_prepare_ok(payload)
    with pytest.raises(ProtocolError):
        rewrite_prepare_ok(payload, 1)


def test_rewrite_prepare_ok_replaces_only_the_statement_id() -> None:
    out = rewrite_prepare_ok(OK, 0x01020304)
    assert out == bytes.fromhex("000403020103000200000000")
    assert parse_prepare_ok(out) == (0x01020304, 3, 2, 0)


# ---------------------------------------------------------------------------------------------
# statement id rewriting


@pytest.mark.parametrize(
    "payload",
    [
        execute(9, 2, LONGLONG * 2, struct.pack("<qq", 5, 6)),
        bytes([COM_STMT_SEND_LONG_DATA]) + struct.pack("<IH", 9, 1) + b"long data",
        bytes([COM_STMT_CLOSE]) + struct.pack("<I", 9),
        bytes([COM_STMT_RESET]) + struct.pack("<I", 9),
        bytes([COM_STMT_FETCH]) + struct.pack("<II", 9, 100),
    ],
    ids=["execute", "send_long_data", "close", "reset", "fetch"],
)
def test_rewrite_stmt_id_changes_bytes_1_to_5_of_every_statement_command(payload: bytes) -> None:
    out = rewrite_stmt_id(payload, 0xDEADBEEF)
    assert stmt_id_of(out) == 0xDEADBEEF
    assert out[:1] + out[5:] == payload[:1] + payload[5:]


@given(
    st.sampled_from(
        [COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE, COM_STMT_RESET, COM_STMT_FETCH]
    ),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=64) | st.binary(min_size=4097, max_size=6000),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_rewriting_the_id_then_reading_it_back_keeps_the_rest_of_the_payload(
    command: int, old: int, new: int, rest: bytes, kind: type
) -> None:
    payload = bytes([command]) + struct.pack("<I", old) + rest
    out = rewrite_stmt_id(kind(payload), new)
    assert isinstance(out, bytes)
    assert stmt_id_of(out) == new
    assert out[0] == command and out[5:] == rest
    assert rewrite_stmt_id(out, old) == payload


def test_rewrite_stmt_id_rejects_a_payload_without_an_id() -> None:
    with pytest.raises(ProtocolError):
        rewrite_stmt_id(bytes([COM_STMT_CLOSE, 1, 0, 0]), 5)
    with pytest.raises(ProtocolError):
        stmt_id_of(b"\x19")


# ---------------------------------------------------------------------------------------------
# COM_STMT_EXECUTE for an upstream statement


@pytest.mark.parametrize(
    ("num_params", "bitmap", "values"),
    [
        (1, b"\x00", struct.pack("<q", 42)),
        # params 1, 3, 5, 7, 8 NULL: a 2-byte bitmap, the layout MariaDB accepted
        (9, bytes([0b10101010, 0b1]), b"".join(struct.pack("<q", i) for i in (0, 2, 4, 6))),
    ],
    ids=["1-param", "9-params"],
)
def test_execute_without_types_gets_remembered_types_on_fresh_upstream_statement(
    num_params: int, bitmap: bytes, values: bytes
) -> None:
    types = LONGLONG * num_params
    client = execute(3, num_params, None, values, bitmap)
    out, bound = execute_for_upstream(client, 77, num_params, types, None)
    # exactly what the client would have sent with types, to statement 77
    assert out == execute(77, num_params, types, values, bitmap)
    assert bound == types


def test_execute_with_zero_params_has_no_bitmap_or_flag_and_only_changes_id() -> None:
    client = execute(3, 0, cursor=1)
    assert len(client) == 10
    out, bound = execute_for_upstream(client, 77, 0, None, None)
    assert out == execute(77, 0, cursor=1)
    assert bound is None


def test_execute_with_bound_flag_keeps_the_clients_types_and_reports_them_bound() -> None:
    client = execute(3, 2, LONGLONG + TINY_UNSIGNED, struct.pack("<qB", 5, 255))
    out, bound = execute_for_upstream(client, 77, 2, LONGLONG * 2, LONGLONG * 2)
    assert out == rewrite_stmt_id(client, 77)
    assert bound == LONGLONG + TINY_UNSIGNED


def test_execute_without_types_is_left_alone_when_upstream_holds_the_same_types() -> None:
    client = execute(3, 2, None, struct.pack("<qq", 7, 8))
    out, bound = execute_for_upstream(client, 77, 2, LONGLONG * 2, LONGLONG * 2)
    assert out == rewrite_stmt_id(client, 77)
    assert bound == LONGLONG * 2


def test_execute_without_types_gets_the_clients_types_when_upstream_holds_others() -> None:
    # another client statement with the same key bound other types on this connection
    client = execute(3, 2, None, struct.pack("<qB", 7, 8))
    mine = LONGLONG + TINY_UNSIGNED
    out, bound = execute_for_upstream(client, 77, 2, mine, LONGLONG * 2)
    assert out == execute(77, 2, mine, struct.pack("<qB", 7, 8))
    assert bound == mine


def test_execute_without_types_and_none_remembered_goes_as_is() -> None:
    # the server answers ERR 1210, as it would without the proxy
    client = execute(3, 2, None, struct.pack("<qq", 7, 8))
    out, bound = execute_for_upstream(client, 77, 2, None, None)
    assert out == rewrite_stmt_id(client, 77)
    assert bound is None


def test_type_insertion_keeps_the_null_bitmap_cursor_flags_and_values() -> None:
    bitmap = bytes([0xFF, 0x00, 0x81])  # 17 params: a 3-byte bitmap
    values = bytes(range(200))
    client = execute(3, 17, None, values, bitmap, cursor=1)
    types = TINY_UNSIGNED * 17
    out, _ = execute_for_upstream(client, 77, 17, types, None)
    assert out[5] == 1  # cursor type
    assert out[10:13] == bitmap
    assert out[13] == 1
    assert out[14:48] == types
    assert out[48:] == values


def test_type_insertion_in_a_large_execute_copies_the_values_intact() -> None:
    values = bytes(range(256)) * 64  # 16 KiB: the memoryview path
    client = bytearray(execute(3, 1, None, struct.pack("<I", len(values)) + values))
    out, _ = execute_for_upstream(memoryview(client), 77, 1, b"\xfc\x00", None)
    assert isinstance(out, bytes)
    assert out == execute(77, 1, b"\xfc\x00", struct.pack("<I", len(values)) + values)


def test_a_wrong_sized_type_block_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        execute_for_upstream(execute(3, 2, None, b""), 77, 2, LONGLONG, None)


@pytest.mark.parametrize(
    ("payload", "num_params"),
    [
        (execute(3, 0)[:9], 0),  # no iteration count
        (execute(3, 1)[:10], 1),  # no bitmap
        (execute(3, 9)[:11], 9),  # half a bitmap
        (execute(3, 9)[:12], 9),  # bitmap, no flag
        (execute(3, 2, LONGLONG * 2)[:-1], 2),  # flag 1, types cut short
    ],
    ids=["head", "no-bitmap", "half-bitmap", "no-flag", "short-types"],
)
def test_truncated_execute_raises_protocol_error(payload: bytes, num_params: int) -> None:
    with pytest.raises(ProtocolError):
        execute_for_upstream(payload, 77, num_params, LONGLONG * num_params, None)


@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8),
            st.binary(min_size=2 * n, max_size=2 * n),
            st.binary(max_size=300),
        )
    ),
    st.integers(0, 0xFFFFFFFF),
)
def test_inserting_remembered_types_gives_the_packet_the_client_sends_with_types(
    case: tuple[int, bytes, bytes, bytes], upstream_id: int
) -> None:
    n, bitmap, types, values = case
    with_types = execute(1, n, types, values, bitmap)
    without = execute(1, n, None, values, bitmap)
    out, bound = execute_for_upstream(without, upstream_id, n, types, None)
    assert out == rewrite_stmt_id(with_types, upstream_id)
    assert bound == types
    # and the client's own flag-1 packet passes through with the same result
    assert execute_for_upstream(with_types, upstream_id, n, None, None) == (out, types)


# ---------------------------------------------------------------------------------------------
# prepare responses


def test_split_prepare_response_drops_the_eofs_of_a_classic_client() -> None:
    ok, params, cols = split_prepare_response([OK, *PARAMS, EOF, *COLUMNS, EOF], False)
    assert (ok, params, cols) == (OK, PARAMS, COLUMNS)


def test_split_prepare_response_with_deprecate_eof() -> None:
    view = [memoryview(p) for p in (OK, *PARAMS, *COLUMNS)]
    ok, params, cols = split_prepare_response(view, True)
    assert (ok, params, cols) == (OK, PARAMS, COLUMNS)
    assert all(type(p) is bytes for p in (ok, *params, *cols))


def test_split_prepare_response_without_columns_has_no_column_eof() -> None:
    assert split_prepare_response([OK_NO_COLUMNS, PARAMS[1], EOF], False) == (
        OK_NO_COLUMNS,
        [PARAMS[1]],
        [],
    )


@pytest.mark.parametrize(
    ("payloads", "deprecate_eof"),
    [
        ([], True),
        ([b"\xff\xdb\x04#HY000Unknown"], True),
        ([OK, *PARAMS, *COLUMNS], False),  # EOFs missing
        ([OK, *PARAMS, EOF, *COLUMNS, EOF], True),  # EOFs where none belong
        ([OK, *PARAMS, COLUMNS[0], *COLUMNS[1:], EOF, EOF], False),  # EOF in the wrong place
    ],
    ids=["empty", "err", "missing-eofs", "extra-eofs", "misplaced-eof"],
)
def test_split_prepare_response_rejects_other_shapes(
    payloads: list[bytes], deprecate_eof: bool
) -> None:
    with pytest.raises(ProtocolError):
        split_prepare_response(payloads, deprecate_eof)


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_encode_prepare_response_reemits_the_statement_under_its_proxy_id(
    deprecate_eof: bool,
) -> None:
    stmt = book_with(StatementBook())
    payloads = encode_prepare_response(stmt, deprecate_eof, 0)
    expected = [OK, *PARAMS, EOF, *COLUMNS, EOF] if not deprecate_eof else [OK, *PARAMS, *COLUMNS]
    expected[0] = rewrite_prepare_ok(OK, stmt.proxy_id)
    assert payloads == expected


def test_encode_prepare_response_puts_the_status_in_the_eofs_a_classic_client_needs() -> None:
    book = StatementBook()
    stmt = book.add(b"DO ?", None, OK_NO_COLUMNS, [PARAMS[1]], [])
    payloads = encode_prepare_response(stmt, False, SERVER_STATUS_AUTOCOMMIT)
    assert payloads == [
        bytes.fromhex("000100000000000100000000"),
        PARAMS[1],
        bytes.fromhex("fe00000200"),
    ]


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_response_tracker_finds_the_end_of_an_encoded_prepare_response(
    deprecate_eof: bool,
) -> None:
    stmt = book_with(StatementBook())
    wire = b"".join(
        frame(p, seq)[0] for seq, p in enumerate(encode_prepare_response(stmt, deprecate_eof, 0), 1)
    )
    tracker = ResponseTracker(deprecate_eof)
    tracker.start(COM_STMT_PREPARE)
    assert tracker.scan(wire, len(wire)) == len(wire)
    assert tracker.done and tracker.prepared_stmt_id == stmt.proxy_id


# ---------------------------------------------------------------------------------------------
# errors the proxy answers itself


@pytest.mark.parametrize(
    ("command", "server_says"),
    [
        (
            COM_STMT_EXECUTE,
            b"\xff\xdb\x04#HY000Unknown prepared statement handler (999) given to mysqld_stmt_execute",
        ),
        (
            COM_STMT_RESET,
            b"\xff\xdb\x04#HY000Unknown prepared statement handler (999) given to mysqld_stmt_reset",
        ),
        (
            COM_STMT_FETCH,
            b"\xff\xdb\x04#HY000Unknown prepared statement handler (999) given to mysqld_stmt_fetch",
        ),
    ],
    ids=["execute", "reset", "fetch"],
)
def test_unknown_statement_error_is_worded_as_the_server_words_it(
    command: int, server_says: bytes
) -> None:
    assert unknown_statement_error(999, command) == server_says


def test_commands_without_an_answer_have_no_unknown_statement_error() -> None:
    with pytest.raises(ValueError):
        unknown_statement_error(1, COM_STMT_CLOSE)
