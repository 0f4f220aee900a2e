"""Messages between workers: a 4-byte big-endian length, then a JSON object (UTF-8).

Sans-IO: ``encode`` makes a frame, ``Reader`` takes bytes as they come and gives the
message once whole. A frame over ``MAX_FRAME`` or a payload that is not a JSON object is
a ``PeerProtocolError`` (the connection is dropped, the worker goes on).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_FRAME", "PeerProtocolError", "Reader", "encode"]

#: an admin view of every session of a busy worker fits in this many times over
MAX_FRAME = 64 * 1024 * 1024
_HEADER = 4


class PeerProtocolError(Exception):
    """The peer sent something that is not a message of this channel."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), default=_jsonable).encode()
    if len(body) > MAX_FRAME:
        raise PeerProtocolError(f"message of {len(body)} bytes over {MAX_FRAME}")
    return len(body).to_bytes(_HEADER, "big") + body


def _jsonable(v: object) -> object:
    # the admin views hold sets (users, modes of a pool) besides JSON types
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


class Reader:
    """Bytes in (``feed``), one message out (``message``) once it is whole."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= _HEADER:
            size = int.from_bytes(self._buf[:_HEADER], "big")
            if size > MAX_FRAME:
                raise PeerProtocolError(f"frame of {size} bytes over {MAX_FRAME}")

    def message(self) -> dict[str, Any] | None:
        """The message, once all of it arrived; None until then."""
        if len(self._buf) < _HEADER:
            return None
        size = int.from_bytes(self._buf[:_HEADER], "big")
        if len(self._buf) < _HEADER + size:
            return None
        try:
            out = json.loads(bytes(self._buf[_HEADER : _HEADER + size]))
        except ValueError as exc:
            raise PeerProtocolError(f"not JSON: {exc}") from None
        if not isinstance(out, dict):
            raise PeerProtocolError("not a JSON object")
        del self._buf[: _HEADER + size]
        return out
