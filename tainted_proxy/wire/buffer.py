"""A receive buffer for MySQL packets: bytes in from a socket, complete packets out.

Kept deliberately small and allocation-free on the hot path (the h11 ``_receivebuffer``
idea): sockets ``recv_into`` the free tail of one bytearray, the scanners read packet
headers in place, and only the unconsumed remainder is moved to the front.
"""

from __future__ import annotations

from tainted_proxy.wire.constants import HEADER_SIZE, MAX_PAYLOAD

_MIN_FREE = 16384
_BASE_CAPACITY = 65536
# A buffer grown past this for one large packet is given back once it drains,
# so a single 64 MiB query does not cost 64 MiB for the rest of the session.
_SHRINK_ABOVE = 1 << 20


class PacketBuffer:
    """Bytes received but not yet consumed: ``data[0:end]``.

    ``capacity`` is what it starts with and shrinks back to; ``min_free`` the free room a
    read gets. An upstream connection starts with 64 KiB (result sets stream through it);
    a client's buffer starts empty and is emptied again while the client is idle
    (``release``): thousands of idle clients then hold no receive memory at all.
    """

    __slots__ = ("data", "end", "capacity", "min_free")

    def __init__(self, capacity: int = _BASE_CAPACITY, min_free: int = _MIN_FREE) -> None:
        self.data = bytearray(capacity)
        self.end = 0
        self.capacity = capacity
        self.min_free = min_free

    def free_view(self, min_free: int = 0) -> memoryview:
        """The writable tail, at least ``min_free`` bytes (default: the buffer's
        ``min_free``); grows the buffer if needed."""
        need = min_free or self.min_free
        if len(self.data) - self.end < need:
            self._grow(need)
        return memoryview(self.data)[self.end :]

    def _grow(self, need: int) -> None:
        size = len(self.data) + max(need, self.min_free, len(self.data))
        if self.end:
            self.data.extend(bytes(size - len(self.data)))
        else:
            # nothing to keep: a fresh bytearray is ten times cheaper than extend()
            self.data = bytearray(size)

    def consume(self, n: int) -> None:
        """Drop the first ``n`` bytes (already handled)."""
        rest = self.end - n
        if rest:
            self.data[0:rest] = self.data[n : self.end]
        self.end = rest
        if rest == 0 and len(self.data) > _SHRINK_ABOVE:
            self.data = bytearray(self.capacity)

    def release(self) -> None:
        """Back to ``capacity`` if nothing is buffered (an idle client's buffer goes
        back to empty: the next read allocates ``min_free`` again)."""
        if not self.end and len(self.data) != self.capacity:
            self.data = bytearray(self.capacity)

    def reserve(self, total: int) -> None:
        """Make room for a packet of ``total`` bytes at the front (header included)."""
        if len(self.data) < total + self.min_free:
            self.data.extend(bytes(total + self.min_free - len(self.data)))

    def next_packet(self) -> tuple[int, int, int] | None:
        """(seq, payload_start, payload_end) of the first complete packet, or None."""
        end = self.end
        if end < HEADER_SIZE:
            return None
        d = self.data
        length = d[0] | d[1] << 8 | d[2] << 16
        if end < HEADER_SIZE + length:
            self.reserve(HEADER_SIZE + length)
            return None
        return d[3], HEADER_SIZE, HEADER_SIZE + length

    def logical_packet_size(self) -> tuple[int, bool] | None:
        """Size in bytes (headers included) of the first *logical* packet if all of it is
        buffered: a payload of 0xFFFFFF bytes continues in the next packet.
        Returns (size, complete); size so far when incomplete, or None before a header."""
        d = self.data
        end = self.end
        pos = 0
        while True:
            if end - pos < HEADER_SIZE:
                return (pos, False) if pos else None
            length = d[pos] | d[pos + 1] << 8 | d[pos + 2] << 16
            nxt = pos + HEADER_SIZE + length
            if nxt > end:
                self.reserve(nxt)
                return pos, False
            pos = nxt
            if length < MAX_PAYLOAD:
                return pos, True


def join_payload(data: bytes | bytearray | memoryview, size: int) -> bytes:
    """The payload of a logical packet occupying ``data[0:size]`` (fragments joined)."""
    if size - HEADER_SIZE < MAX_PAYLOAD:
        return bytes(data[HEADER_SIZE:size])
    parts = []
    pos = 0
    while pos < size:
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        parts.append(bytes(data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    return b"".join(parts)
