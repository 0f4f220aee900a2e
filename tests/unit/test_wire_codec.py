"""Wire primitives: lenenc ints/strings, NUL strings, packet framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tainted_proxy.wire.codec import (
    frame,
    read_lenenc_bytes,
    read_lenenc_int,
    read_nul_bytes,
    write_lenenc_bytes,
    write_lenenc_int,
)
from tainted_proxy.wire.constants import MAX_PAYLOAD
from tainted_proxy.wire.errors import ProtocolError


def unframe(data: bytes) -> list[tuple[int, bytes]]:
    """Split framed bytes into (sequence id, payload) packets."""
    out = []
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 3], "little")
        out.append((data[pos + 3], data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    assert pos == len(data)
    return out


# ---- lenenc int ----


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfc\xfb\x00"),
        (0xFFFF, b"\xfc\xff\xff"),
        (0x10000, b"\xfd\x00\x00\x01"),
        (0xFFFFFF, b"\xfd\xff\xff\xff"),
        (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**64 - 1, b"\xfe" + b"\xff" * 8),
    ],
)
def test_lenenc_int_uses_the_smallest_width_at_each_boundary(n: int, encoded: bytes) -> None:
    assert write_lenenc_int(n) == encoded
    assert read_lenenc_int(encoded, 0) == (n, len(encoded))


def test_lenenc_int_0xfb_reads_as_null() -> None:
    assert read_lenenc_int(b"\x01\xfb", 1) == (None, 2)


def test_lenenc_int_reads_from_a_memoryview_at_an_offset() -> None:
    buf = memoryview(b"xx\xfc\x2c\x01yy")
    assert read_lenenc_int(buf, 2) == (300, 5)


@pytest.mark.parametrize("n", [-1, 2**64])
def test_write_lenenc_int_rejects_out_of_range(n: int) -> None:
    with pytest.raises(ValueError):
        write_lenenc_int(n)


@pytest.mark.parametrize(
    ("buf", "pos"),
    [
        (b"", 0),  # nothing at all
        (b"\x05", 1),  # offset past the end
        (b"\xfc\x01", 0),  # 2-byte value cut short
        (b"\xfd\x01\x02", 0),  # 3-byte value cut short
        (b"\xfe\x01\x02\x03\x04\x05\x06\x07", 0),  # 8-byte value cut short
        (b"\xff", 0),  # 0xFF is never a lenenc prefix
        (b"\x05", -1),  # negative offset
    ],
)
def test_read_lenenc_int_raises_protocol_error_on_malformed_input(buf: bytes, pos: int) -> None:
    with pytest.raises(ProtocolError):
        read_lenenc_int(buf, pos)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lenenc_int_round_trips(n: int) -> None:
    encoded = write_lenenc_int(n)
    assert read_lenenc_int(encoded + b"tail", 0) == (n, len(encoded))


# ---- lenenc bytes ----


def test_lenenc_bytes_round_trips_a_300_byte_string() -> None:
    s = bytes(range(256)) + b"x" * 44
    encoded = write_lenenc_bytes(s)
    assert encoded[:3] == b"\xfc\x2c\x01"
    assert read_lenenc_bytes(encoded, 0) == (s, len(encoded))


def test_lenenc_bytes_null_marker_reads_as_none() -> None:
    assert read_lenenc_bytes(b"\xfb", 0) == (None, 1)


def test_lenenc_bytes_shorter_than_its_length_raises() -> None:
    with pytest.raises(ProtocolError):
        read_lenenc_bytes(b"\x05abc", 0)


@given(st.binary(max_size=70000), st.binary(max_size=8))
def test_lenenc_bytes_round_trip(s: bytes, prefix: bytes) -> None:
    encoded = prefix + write_lenenc_bytes(s)
    assert read_lenenc_bytes(encoded, len(prefix)) == (s, len(encoded))
    assert read_lenenc_bytes(memoryview(encoded), len(prefix)) == (s, len(encoded))


@given(st.binary(max_size=32), st.integers(min_value=0, max_value=40))
def test_lenenc_readers_raise_only_protocol_error_on_random_bytes(buf: bytes, pos: int) -> None:
    for reader in (read_lenenc_int, read_lenenc_bytes, read_nul_bytes):
        try:
            reader(buf, pos)
        except ProtocolError:
            pass


# ---- NUL-terminated ----


def test_read_nul_bytes_returns_the_string_and_the_offset_after_the_nul() -> None:
    assert read_nul_bytes(b"ab\x00cd\x00", 0) == (b"ab", 3)
    assert read_nul_bytes(b"ab\x00cd\x00", 3) == (b"cd", 6)
    assert read_nul_bytes(bytearray(b"\x00"), 0) == (b"", 1)


def test_read_nul_bytes_works_on_a_sliced_memoryview() -> None:
    view = memoryview(b"zzab\x00cd")[2:]
    assert read_nul_bytes(view, 0) == (b"ab", 3)


@pytest.mark.parametrize("buf", [b"abc", memoryview(b"abc"), b""])
def test_read_nul_bytes_without_terminator_raises(buf: bytes) -> None:
    with pytest.raises(ProtocolError):
        read_nul_bytes(buf, 0)


# ---- framing ----


def test_small_payload_becomes_one_packet_and_advances_seq() -> None:
    data, seq = frame(b"\x03SELECT 1", 0)
    assert data == b"\x09\x00\x00\x00\x03SELECT 1"
    assert seq == 1


def test_empty_payload_is_a_bare_header() -> None:
    assert frame(b"", 7) == (b"\x00\x00\x00\x07", 8)


def test_sequence_id_wraps_at_256() -> None:
    data, seq = frame(b"x", 255)
    assert data[3] == 255
    assert seq == 0


def test_payload_of_16MiB_minus_one_is_a_single_packet() -> None:
    payload = b"a" * (MAX_PAYLOAD - 1)
    data, seq = frame(payload, 3)
    assert unframe(data) == [(3, payload)]
    assert seq == 4


def test_payload_of_exactly_16MiB_ends_with_empty_packet() -> None:
    payload = b"b" * MAX_PAYLOAD
    data, seq = frame(payload, 0)
    packets = unframe(data)
    assert [(s, len(p)) for s, p in packets] == [(0, MAX_PAYLOAD), (1, 0)]
    assert seq == 2


def test_payload_over_16MiB_is_split_into_full_chunks_then_the_rest() -> None:
    payload = bytes(range(256)) * ((2 * MAX_PAYLOAD + 10) // 256 + 1)
    payload = payload[: 2 * MAX_PAYLOAD + 10]
    data, seq = frame(payload, 254)
    packets = unframe(data)
    assert [(s, len(p)) for s, p in packets] == [(254, MAX_PAYLOAD), (255, MAX_PAYLOAD), (0, 10)]
    assert b"".join(p for _, p in packets) == payload
    assert seq == 1


def test_payload_of_two_exact_chunks_ends_with_empty_packet() -> None:
    data, seq = frame(memoryview(b"c" * (2 * MAX_PAYLOAD)), 0)
    assert [(s, len(p)) for s, p in unframe(data)] == [(0, MAX_PAYLOAD), (1, MAX_PAYLOAD), (2, 0)]
    assert seq == 3
