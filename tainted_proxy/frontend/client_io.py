"""Reading and writing whole packets on the client side of the proxy."""

from __future__ import annotations

from tainted_proxy.net import Conn, TlsConn
from tainted_proxy.wire.buffer import PacketBuffer, join_payload
from tainted_proxy.wire.codec import frame
from tainted_proxy.wire.constants import ER_NET_PACKET_TOO_LARGE
from tainted_proxy.wire.packets import err_response

# A client's receive buffer starts empty and a read gets 4 KiB of room: one recv for the
# usual command, and nothing held by a client that sends nothing (issue 11: 10,000 idle
# clients in little memory). Larger packets grow it (PacketBuffer.reserve).
_CLIENT_READ_ROOM = 4096


class PacketTooLarge(Exception):
    """A client packet exceeded proxy.max_packet_size."""


class ClientIO:
    __slots__ = ("conn", "buf", "max_packet", "peer_host")

    def __init__(self, conn: Conn | TlsConn, max_packet: int) -> None:
        self.conn = conn
        self.buf = PacketBuffer(0, _CLIENT_READ_ROOM)
        self.max_packet = max_packet
        self.peer_host = conn.peer.rsplit(":", 1)[0] if ":" in conn.peer else conn.peer

    async def wait_packet(self) -> int:
        """Wait until one whole logical packet is buffered; return its size in bytes
        (headers included). Raises PacketTooLarge past max_packet."""
        buf = self.buf
        self._refuse_huge_header()
        got = buf.logical_packet_size()
        while got is None or not got[1]:
            if buf.end > self.max_packet + 4 * (buf.end // 0xFFFFFF + 1):
                raise PacketTooLarge()
            await self.conn.recv_into(buf, wait_first=buf.end == 0)
            self._refuse_huge_header()
            got = buf.logical_packet_size()
        if got[0] > self.max_packet + 4 * (got[0] // 0xFFFFFF + 1):
            raise PacketTooLarge()
        return got[0]

    def _refuse_huge_header(self) -> None:
        """Refuse a header announcing more than max_packet as soon as it arrives, before
        logical_packet_size() reserves room for the announced payload: otherwise 4 bytes
        from a client pin up to 16 MiB of memory until it sends (or never sends) the rest."""
        d = self.buf.data
        if self.buf.end >= 4 and (d[0] | d[1] << 8 | d[2] << 16) > self.max_packet:
            raise PacketTooLarge()

    async def read_payload(self) -> tuple[int, bytes]:
        size = await self.wait_packet()
        seq = self.buf.data[3]
        payload = join_payload(self.buf.data, size)
        self.buf.consume(size)
        return seq, payload

    async def send_payload(self, payload: bytes, seq: int) -> int:
        data, nxt = frame(payload, seq)
        await self.conn.send_all(data)
        return nxt

    async def send_error(self, code: int, sqlstate: str, message: str, seq: int) -> None:
        await self.conn.send_all(err_response(code, sqlstate, message, seq))

    async def send_too_large(self, seq: int = 1) -> None:
        await self.send_error(
            ER_NET_PACKET_TOO_LARGE,
            "08S01",
            f"Got a packet bigger than 'max_allowed_packet' bytes (proxy.max_packet_size = {self.max_packet})",
            seq,
        )
