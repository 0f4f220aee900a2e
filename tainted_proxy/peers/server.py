"""A worker answering the other workers: one request per connection on its Unix socket.

``serve`` binds the socket (mode 0600: created under a umask that leaves the group and
others nothing), checks that each connecting process runs as this process's user
(SO_PEERCRED), reads one message, runs the handler its ``op`` names and writes the
reply. A handler's failure is logged and answered ``{"error": ...}``; a malformed
message, a peer of another user or a slow one (``REQUEST_TIMEOUT``) only ends its own
connection.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from tainted_proxy.peers.codec import PeerProtocolError, Reader, encode

__all__ = ["Handler", "serve", "REQUEST_TIMEOUT"]

log = logging.getLogger("tainted_proxy.peers")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
#: reading a request; a handler's own wait (a KILL upstream) is bounded by the handler
REQUEST_TIMEOUT = 5.0
_CRED = struct.Struct("3i")  # pid, uid, gid


def _bind(path: str) -> trio.socket.SocketType:
    try:
        os.unlink(path)  # left by a worker of an earlier run that was killed
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no await in between: no other task creates a file meanwhile
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.listen(64)
    return trio.socket.from_stdlib_socket(sock)


def _same_user(sock: trio.socket.SocketType) -> bool:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    _pid, uid, _gid = _CRED.unpack(raw)
    return bool(uid == os.getuid())


async def serve(
    path: str,
    handlers: Mapping[str, Handler],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer on ``path`` until cancelled; the socket file is removed at the end."""
    sock = _bind(path)
    try:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(_answer, conn, handlers)
    finally:
        sock.close()
        try:
            os.unlink(path)
        except OSError:
            pass


async def _answer(conn: trio.socket.SocketType, handlers: Mapping[str, Handler]) -> None:
    stream = trio.SocketStream(conn)
    async with stream:
        if not _same_user(conn):
            log.warning("event=peer_refused reason='another user' path=%s", conn.getsockname())
            return
        reader = Reader()
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                request = None
                while request is None:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    reader.feed(data)
                    request = reader.message()
        except (PeerProtocolError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            log.warning("event=peer_bad_request error=%r", str(exc) or type(exc).__name__)
            return
        op = request.get("op")
        handler = handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            reply: dict[str, Any] = {"error": f"unknown op {op!r}"}
        else:
            try:
                reply = await handler(request)
            except Exception as exc:  # one request's failure, not the worker's
                log.exception("event=peer_handler_failed op=%s", op)
                reply = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            await stream.send_all(encode(reply))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
