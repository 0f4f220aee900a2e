"""A worker answering the other workers: one request per connection on its Unix socket.

``serve`` binds the socket (mode 0600: created under a umask that leaves the group and
others nothing), checks that each connecting process runs as this process's user
(SO_PEERCRED), reads one message, runs the handler its ``op`` names and writes the
reply. A handler's failure (or a reply that cannot be encoded) is logged and answered
``{"error": ...}``; a malformed message, a peer of another user or a slow one
(``REQUEST_TIMEOUT`` to read the request, and again to write the reply) only ends its
own connection; running out of descriptors pauses accepting, never the worker.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from tainted_proxy.peers.codec import PeerProtocolError, Reader, encode

__all__ = ["Handler", "REQUEST_TIMEOUT", "same_user", "serve"]

log = logging.getLogger("tainted_proxy.peers")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
#: reading a request, and writing its reply (an asking worker that stopped reading does
#: not keep the connection); a handler's own wait (a KILL upstream) is bounded by it
REQUEST_TIMEOUT = 5.0
#: accept() failed for want of file descriptors: try again after this
_ACCEPT_BACKOFF = 0.05
_ACCEPT_RETRY = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_CRED = struct.Struct("iII")  # pid, uid, gid


def _bind(path: str) -> trio.socket.SocketType:
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


def same_user(sock: trio.socket.SocketType) -> bool:
    """Does the process at the other end of the Unix socket ``sock`` run as this one's
    user?"""
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
                try:
                    conn, _ = await sock.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_RETRY:
                        raise
                    # out of descriptors: this worker's clients come first, the peer retries
                    log.warning("event=peer_accept_failed error=%r", exc.strerror)
                    await trio.sleep(_ACCEPT_BACKOFF)
                    continue
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
        if not same_user(conn):
            log.warning("event=peer_refused reason='another user'")
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
            frame = encode({"error": f"unknown op {op!r}"})
        else:
            try:
                frame = encode(await handler(request))
            except Exception as exc:  # one request's failure (or its reply's), not the worker's
                log.exception("event=peer_handler_failed op=%s", op)
                frame = encode({"error": f"{type(exc).__name__}: {exc}"})
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                await stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
