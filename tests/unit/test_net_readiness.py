"""net.readiness: one edge-triggered epoll for the hot path's reads (Conn waits there)."""

from __future__ import annotations

import socket

import pytest
import trio

from tainted_proxy.net import Conn, ConnectionClosed
from tainted_proxy.wire.buffer import PacketBuffer


def _pair() -> tuple[Conn, socket.socket]:
    a, b = socket.socketpair()
    return Conn(a), b


async def test_a_waiting_reader_wakes_when_bytes_arrive() -> None:
    conn, peer = _pair()
    buf = PacketBuffer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.recv_into, buf, True)
        await trio.sleep(0.01)
        peer.send(b"hello")
    assert bytes(buf.data[: buf.end]) == b"hello"


async def test_bytes_that_arrived_before_the_first_wait_are_not_missed() -> None:
    conn, peer = _pair()
    peer.send(b"early")
    buf = PacketBuffer()
    with trio.fail_after(1):
        await conn.recv_into(buf, wait_first=True)
    assert bytes(buf.data[: buf.end]) == b"early"


async def test_an_edge_while_nobody_waits_is_kept_for_the_next_wait() -> None:
    conn, peer = _pair()
    buf = PacketBuffer()
    for word in (b"one", b"two", b"three"):
        with trio.fail_after(1):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.recv_into, buf, True)
                await trio.sleep(0.005)
                peer.send(word)
        # the next word arrives while nobody waits: the demux keeps the edge
        await trio.sleep(0.005)
    assert bytes(buf.data[: buf.end]) == b"onetwothree"


async def test_a_read_larger_than_the_buffer_room_is_finished_without_a_new_edge() -> None:
    conn, peer = _pair()
    payload = b"x" * 300_000
    peer.sendall(payload[:100_000])
    buf = PacketBuffer()
    got = 0
    with trio.fail_after(2):
        while got < 100_000:
            await conn.recv_into(buf, wait_first=True)
            got = buf.end
    assert got == 100_000


async def test_a_waiting_reader_can_be_cancelled_and_waits_again() -> None:
    conn, peer = _pair()
    buf = PacketBuffer()
    with trio.move_on_after(0.02) as scope:
        await conn.recv_into(buf, wait_first=True)
    assert scope.cancelled_caught
    peer.send(b"after")
    with trio.fail_after(1):
        await conn.recv_into(buf, wait_first=True)
    assert bytes(buf.data[: buf.end]) == b"after"


async def test_closing_a_socket_wakes_its_reader_with_an_error() -> None:
    conn, _peer = _pair()
    buf = PacketBuffer()
    errors: list[BaseException] = []

    async def reader() -> None:
        try:
            await conn.recv_into(buf, wait_first=True)
        except (trio.ClosedResourceError, ConnectionClosed) as exc:
            errors.append(exc)

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(0.01)
            conn.close()
    assert len(errors) == 1


async def test_the_peer_closing_is_seen_as_connection_closed() -> None:
    conn, peer = _pair()
    buf = PacketBuffer()
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            with pytest.raises(ConnectionClosed):
                await conn.recv_into(buf, wait_first=True)

        nursery.start_soon(reader)
        await trio.sleep(0.01)
        peer.close()
