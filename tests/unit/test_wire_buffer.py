"""wire.buffer.PacketBuffer sizing: an upstream buffer starts at 64 KiB; a client's starts
empty, gets its read room only when a read happens, and goes back to empty when released
with nothing buffered (issue 11: idle clients hold no receive memory)."""

from __future__ import annotations

from tainted_proxy.frontend.client_io import _CLIENT_READ_ROOM
from tainted_proxy.wire.buffer import PacketBuffer
from tainted_proxy.wire.codec import frame


def _fill(buf: PacketBuffer, data: bytes) -> None:
    """What Conn.recv_into does: copy into free_view(), advance end."""
    pos = 0
    while pos < len(data):
        view = buf.free_view()
        n = min(len(view), len(data) - pos)
        view[:n] = data[pos : pos + n]
        view.release()
        buf.end += n
        pos += n


def test_an_upstream_buffer_keeps_its_64_kib() -> None:
    buf = PacketBuffer()
    assert len(buf.data) == 65536
    assert len(buf.free_view()) >= 16384
    buf.release()
    assert len(buf.data) == 65536


def test_a_client_buffer_is_empty_until_a_read_and_after_release() -> None:
    buf = PacketBuffer(0, _CLIENT_READ_ROOM)
    assert len(buf.data) == 0
    view = buf.free_view()
    assert len(view) == _CLIENT_READ_ROOM == len(buf.data)
    view.release()
    packet, _ = frame(b"\x03SELECT 1", 0)
    _fill(buf, packet)
    assert buf.next_packet() == (0, 4, len(packet))
    buf.release()  # a packet is buffered: kept
    assert bytes(buf.data[: buf.end]) == packet
    buf.consume(len(packet))
    buf.release()
    assert len(buf.data) == 0 and buf.end == 0


def test_a_client_buffer_grows_for_a_big_packet_and_is_emptied_after() -> None:
    buf = PacketBuffer(0, _CLIENT_READ_ROOM)
    payload = b"\x03" + b"x" * 100_000
    packet, _ = frame(payload, 0)
    _fill(buf, packet[:10])
    assert buf.logical_packet_size() == (0, False)  # reserves room for the whole packet
    assert len(buf.data) >= len(packet)
    _fill(buf, packet[10:])
    assert buf.logical_packet_size() == (len(packet), True)
    assert bytes(buf.data[4 : len(packet)]) == payload
    buf.consume(len(packet))
    buf.release()
    assert len(buf.data) == 0


def test_an_explicit_min_free_is_honoured() -> None:
    # TlsConn.recv_into asks for exactly the bytes it has decrypted
    buf = PacketBuffer(0, _CLIENT_READ_ROOM)
    assert len(buf.free_view(10_000)) >= 10_000
    buf.end = 5
    assert len(buf.free_view(20_000)) >= 20_000
