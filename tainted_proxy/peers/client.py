"""Asking another worker (peers.server answers): one connection per request."""

from __future__ import annotations

import socket
from typing import Any

import trio

from tainted_proxy.peers.codec import PeerProtocolError, Reader, encode
from tainted_proxy.peers.server import same_user

__all__ = ["PeerUnavailable", "ask"]


class PeerUnavailable(Exception):
    """The worker did not answer: gone, stopping, too slow, or it answered garbage."""


async def ask(path: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send ``request`` to the worker listening on ``path``; its reply."""
    try:
        with trio.fail_after(timeout):
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                await sock.connect(path)
            except BaseException:
                sock.close()
                raise
            async with trio.SocketStream(sock) as stream:
                if not same_user(sock):  # not a worker of this set: tell it nothing
                    raise PeerUnavailable(f"{path} is served by another user")
                await stream.send_all(encode(request))
                reader = Reader()
                while True:
                    data = await stream.receive_some(1 << 20)
                    if not data:
                        raise PeerUnavailable("closed before a reply")
                    reader.feed(data)
                    reply = reader.message()
                    if reply is not None:
                        return reply
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, PeerProtocolError) as exc:
        raise PeerUnavailable(str(exc) or type(exc).__name__) from exc
