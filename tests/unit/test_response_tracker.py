"""The response tracker finds the end of every response shape, however the bytes arrive."""

from __future__ import annotations

import pytest

from tainted_proxy.wire.codec import frame, write_lenenc_bytes, write_lenenc_int
from tainted_proxy.wire.constants import (
    COM_FIELD_LIST,
    COM_PING,
    COM_QUERY,
    COM_STATISTICS,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_CURSOR_EXISTS,
    SERVER_STATUS_IN_TRANS,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.response import ResponseTracker


def packets(*payloads: bytes, seq: int = 1) -> bytes:
    out = []
    for p in payloads:
        data, seq = frame(p, seq)
        out.append(data)
    return b"".join(out)


def ok(
    status: int = SERVER_STATUS_AUTOCOMMIT,
    header: int = 0x00,
    affected: int = 0,
    insert_id: int = 0,
) -> bytes:
    return (
        bytes([header])
        + write_lenenc_int(affected)
        + write_lenenc_int(insert_id)
        + status.to_bytes(2, "little")
        + b"\x00\x00"
    )


def eof(status: int = SERVER_STATUS_AUTOCOMMIT) -> bytes:
    return b"\xfe\x00\x00" + status.to_bytes(2, "little")


def err() -> bytes:
    return b"\xff" + (1146).to_bytes(2, "little") + b"#42S02no such table"


def coldef(name: str = "c") -> bytes:
    return (
        b"".join(
            write_lenenc_bytes(x) for x in (b"def", b"", b"", b"", name.encode(), name.encode())
        )
        + b"\x0c"
        + bytes(13)
    )


def text_row(*vals: bytes) -> bytes:
    return b"".join(write_lenenc_bytes(v) for v in vals)


def resultset(
    ncols: int, rows: list[bytes], deprecate_eof: bool, status: int = SERVER_STATUS_AUTOCOMMIT
) -> list[bytes]:
    out = [write_lenenc_int(ncols)] + [coldef(f"c{i}") for i in range(ncols)]
    if not deprecate_eof:
        out.append(eof())
    out += rows
    out.append(ok(status, header=0xFE) if deprecate_eof else eof(status))
    return out


def feed(tracker: ResponseTracker, data: bytes, chunk: int) -> int:
    """Feed ``data`` in chunks the way the relay does; return bytes consumed."""
    buf = bytearray()
    consumed = 0
    for i in range(0, len(data), chunk):
        buf += data[i : i + chunk]
        pos = tracker.scan(buf, len(buf))
        consumed += pos
        del buf[:pos]
        if tracker.done:
            break
    return consumed


CHUNKS = [1, 3, 7, 64, 1 << 20]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_text_result_set_ends_at_its_terminator_for_any_chunking(chunk, deprecate_eof):
    data = packets(*resultset(2, [text_row(b"1", b"a"), text_row(b"2", b"b")], deprecate_eof))
    trailing = packets(ok(), seq=0)  # a pipelined next response must not be consumed
    t = ResponseTracker(deprecate_eof)
    t.start(COM_QUERY)
    assert feed(t, data + trailing, chunk) == len(data)
    assert t.done and not t.error and t.status == SERVER_STATUS_AUTOCOMMIT


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_more_results_flag_keeps_the_response_open_until_the_last_result(deprecate_eof):
    first = resultset(
        1,
        [text_row(b"1")],
        deprecate_eof,
        status=SERVER_STATUS_AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS,
    )
    middle = [ok(SERVER_STATUS_AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS)]
    last = resultset(1, [text_row(b"2")], deprecate_eof)
    t = ResponseTracker(deprecate_eof)
    t.start(COM_QUERY)
    data = packets(*first, *middle, *last)
    assert feed(t, data, 5) == len(data)
    assert t.done and t.results == 3


def test_error_ends_the_response_and_is_flagged():
    t = ResponseTracker(False)
    t.start(COM_QUERY)
    data = packets(err())
    assert feed(t, data, 2) == len(data)
    assert t.done and t.error


def test_error_in_the_middle_of_rows_ends_the_response():
    t = ResponseTracker(False)
    t.start(COM_QUERY)
    data = packets(write_lenenc_int(1), coldef(), eof(), text_row(b"1"), err())
    assert feed(t, data, 4) == len(data)
    assert t.done and t.error


def test_ok_status_flags_are_recorded():
    t = ResponseTracker(True)
    t.start(COM_QUERY)
    feed(t, packets(ok(SERVER_STATUS_IN_TRANS)), 64)
    assert t.status == SERVER_STATUS_IN_TRANS


@pytest.mark.parametrize("chunk", [1000, 1 << 16, 1 << 25])
def test_row_larger_than_16MiB_is_passed_through_as_continuation_packets(chunk):
    big = b"x" * (0xFFFFFF + 100)
    row = write_lenenc_bytes(big)
    data = packets(write_lenenc_int(1), coldef(), eof(), row, eof())
    t = ResponseTracker(False)
    t.start(COM_QUERY)
    assert feed(t, data, chunk) == len(data)
    assert t.done and not t.error


def test_row_starting_with_0xfe_that_is_long_is_a_row_not_a_terminator():
    # a lenenc string >= 2^24 bytes starts with 0xFE; its packet is >= 16 MiB
    big = b"y" * (1 << 24)
    row = write_lenenc_bytes(big)
    assert row[0] == 0xFE
    data = packets(write_lenenc_int(1), coldef(), eof(), row, eof())
    t = ResponseTracker(False)
    t.start(COM_QUERY)
    assert feed(t, data, 1 << 20) == len(data)
    assert t.done


def test_local_infile_request_asks_for_client_data_then_waits_for_ok():
    t = ResponseTracker(False)
    t.start(COM_QUERY)
    data = packets(b"\xfb/tmp/file.txt")
    assert feed(t, data, 3) == len(data)
    assert t.needs_client_data and not t.done
    t.infile_sent()
    assert feed(t, packets(ok(), seq=3), 2) > 0
    assert t.done


@pytest.mark.parametrize("deprecate_eof", [False, True])
@pytest.mark.parametrize("params,columns", [(0, 0), (2, 0), (0, 3), (2, 3)])
def test_prepare_response_ends_after_param_and_column_definitions(deprecate_eof, params, columns):
    head = (
        b"\x00"
        + (7).to_bytes(4, "little")
        + columns.to_bytes(2, "little")
        + params.to_bytes(2, "little")
        + b"\x00\x00\x00"
    )
    parts = [head]
    if params:
        parts += [coldef("?")] * params + ([] if deprecate_eof else [eof()])
    if columns:
        parts += [coldef()] * columns + ([] if deprecate_eof else [eof()])
    data = packets(*parts)
    t = ResponseTracker(deprecate_eof)
    t.start(COM_STMT_PREPARE)
    assert feed(t, data + packets(ok(), seq=0), 3) == len(data)
    assert t.done and t.prepared_stmt_id == 7


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_binary_result_set_rows_start_with_zero_byte_and_end_at_terminator(deprecate_eof):
    rows = [b"\x00\x00" + (5).to_bytes(4, "little"), b"\x00\x00" + (6).to_bytes(4, "little")]
    data = packets(*resultset(1, rows, deprecate_eof))
    t = ResponseTracker(deprecate_eof)
    t.start(COM_STMT_EXECUTE)
    assert feed(t, data, 3) == len(data)
    assert t.done and not t.cursor_opened


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_execute_that_opens_a_cursor_ends_after_metadata(deprecate_eof):
    status = SERVER_STATUS_AUTOCOMMIT | SERVER_STATUS_CURSOR_EXISTS
    term = ok(status, header=0xFE) if deprecate_eof else eof(status)
    data = packets(write_lenenc_int(1), coldef(), term)
    t = ResponseTracker(deprecate_eof)
    t.start(COM_STMT_EXECUTE)
    assert feed(t, data, 2) == len(data)
    assert t.done and t.cursor_opened


def test_fetch_response_is_rows_then_terminator():
    data = packets(b"\x00\x00\x01\x00\x00\x00", eof(SERVER_STATUS_AUTOCOMMIT | 0x80))
    t = ResponseTracker(False)
    t.start(COM_STMT_FETCH)
    assert feed(t, data, 1) == len(data)
    assert t.done


def test_field_list_ends_at_eof():
    data = packets(coldef("a"), coldef("b"), eof())
    t = ResponseTracker(False)
    t.start(COM_FIELD_LIST)
    assert feed(t, data, 4) == len(data)
    assert t.done


@pytest.mark.parametrize("cmd", [COM_PING, COM_STATISTICS])
def test_single_packet_commands_end_after_one_packet(cmd):
    data = packets(ok() if cmd == COM_PING else b"Uptime: 5  Threads: 1")
    t = ResponseTracker(False)
    t.start(cmd)
    assert feed(t, data + packets(ok(), seq=0), 1) == len(data)
    assert t.done


def test_commands_without_response_are_done_at_once():
    t = ResponseTracker(False)
    t.start(COM_STMT_CLOSE)
    assert t.done


def test_garbage_column_count_is_a_protocol_error():
    t = ResponseTracker(False)
    t.start(COM_QUERY)
    with pytest.raises(ProtocolError):
        feed(t, packets(b"\xfe\x00"), 64)
