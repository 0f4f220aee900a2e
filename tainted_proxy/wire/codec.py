"""Wire primitives: length-encoded integers/strings, NUL-terminated strings, packet framing.

This module owns the byte-level encodings every packet is built from. It is sans-IO: pure
functions over bytes-like objects. Readers take ``(buf, pos)`` and return ``(value, new_pos)`` so
callers can walk a payload without slicing copies; they raise ProtocolError (never IndexError)
when the buffer is too short.
"""

from __future__ import annotations

from tainted_proxy.wire.constants import MAX_PAYLOAD
from tainted_proxy.wire.errors import ProtocolError

Buffer = bytes | bytearray | memoryview

# lenenc prefixes: 0xFB is the NULL marker in text rows; 0xFF is never a valid lenenc
# prefix (it would be an ERR header), so it is reported as malformed.
_LENENC_NULL = 0xFB
_LENENC_2 = 0xFC
_LENENC_3 = 0xFD
_LENENC_8 = 0xFE


def read_lenenc_int(buf: Buffer, pos: int) -> tuple[int | None, int]:
    """Read a length-encoded integer at ``pos``; ``None`` for the 0xFB NULL marker."""
    if pos < 0 or pos >= len(buf):
        raise ProtocolError(f"lenenc int: no byte at offset {pos} (length {len(buf)})")
    first = buf[pos]
    if first < _LENENC_NULL:
        return first, pos + 1
    if first == _LENENC_NULL:
        return None, pos + 1
    if first == _LENENC_2:
        width = 2
    elif first == _LENENC_3:
        width = 3
    elif first == _LENENC_8:
        width = 8
    else:
        raise ProtocolError(f"lenenc int: invalid prefix 0x{first:02x} at offset {pos}")
    end = pos + 1 + width
    if end > len(buf):
        raise ProtocolError(f"lenenc int: truncated {width}-byte value at offset {pos}")
    return int.from_bytes(buf[pos + 1 : end], "little"), end


def write_lenenc_int(n: int) -> bytes:
    """Encode ``n`` (0 <= n < 2**64) as a length-encoded integer."""
    if n < 0:
        raise ValueError(f"lenenc int must be non-negative, got {n}")
    if n < _LENENC_NULL:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    if n < 1 << 64:
        return b"\xfe" + n.to_bytes(8, "little")
    raise ValueError(f"lenenc int must be < 2**64, got {n}")


def read_lenenc_bytes(buf: Buffer, pos: int) -> tuple[bytes | None, int]:
    """Read a length-encoded string at ``pos``; ``None`` for the 0xFB NULL marker."""
    n, pos = read_lenenc_int(buf, pos)
    if n is None:
        return None, pos
    end = pos + n
    if end > len(buf):
        raise ProtocolError(
            f"lenenc string: needs {n} bytes at offset {pos}, have {len(buf) - pos}"
        )
    return bytes(buf[pos:end]), end


def write_lenenc_bytes(b: bytes) -> bytes:
    """Encode ``b`` as a length-encoded string."""
    return write_lenenc_int(len(b)) + b


def read_nul_bytes(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """Read a NUL-terminated string at ``pos``; new_pos is just past the NUL."""
    if pos < 0 or pos > len(buf):
        raise ProtocolError(f"NUL string: offset {pos} outside buffer (length {len(buf)})")
    if isinstance(buf, memoryview):
        # memoryview has no find(); copy only the tail we search.
        tail = buf[pos:].tobytes()
        i = tail.find(0)
        if i < 0:
            raise ProtocolError(f"NUL string: no terminator after offset {pos}")
        return tail[:i], pos + i + 1
    i = buf.find(0, pos)
    if i < 0:
        raise ProtocolError(f"NUL string: no terminator after offset {pos}")
    return bytes(buf[pos:i]), i + 1


def frame(payload: Buffer, seq: int) -> tuple[bytes, int]:
    """Wrap ``payload`` into wire packets starting at sequence id ``seq``.

    Payloads of MAX_PAYLOAD (0xFFFFFF) bytes or more are split into MAX_PAYLOAD chunks; the
    receiver keeps reading while a chunk is exactly MAX_PAYLOAD long, so a payload whose length is
    a multiple of MAX_PAYLOAD must end with an empty packet. Returns (bytes, next sequence id).
    """
    n = len(payload)
    seq &= 0xFF
    if n < MAX_PAYLOAD:
        # the common case: one packet, no chunk bookkeeping
        return n.to_bytes(3, "little") + bytes((seq,)) + bytes(payload), (seq + 1) & 0xFF
    parts: list[bytes] = []
    off = 0
    while True:
        chunk = payload[off : off + MAX_PAYLOAD]
        size = len(chunk)
        parts.append(size.to_bytes(3, "little") + bytes((seq,)))
        parts.append(bytes(chunk))
        seq = (seq + 1) & 0xFF
        off += size
        if size < MAX_PAYLOAD:
            return b"".join(parts), seq


__all__ = [
    "Buffer",
    "frame",
    "read_lenenc_bytes",
    "read_lenenc_int",
    "read_nul_bytes",
    "write_lenenc_bytes",
    "write_lenenc_int",
]
