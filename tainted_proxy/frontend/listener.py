"""The listening socket: accept clients, refuse those past ``proxy.max_client_connections``
with ERR 1040, and run one task per client (frontend.session)."""

from __future__ import annotations

import errno
import itertools
import logging
import socket

import trio
from trio.lowlevel import wait_readable

from tainted_proxy.config import parse_listen
from tainted_proxy.frontend import session
from tainted_proxy.frontend.client import FIRST_CLIENT_ID, Client, Services
from tainted_proxy.frontend.client_io import ClientIO
from tainted_proxy.net import Conn, ConnectionClosed
from tainted_proxy.wire.constants import ER_CON_COUNT_ERROR
from tainted_proxy.wire.packets import err_response

log = logging.getLogger("tainted_proxy")


def bind(listen: str, reuse_port: bool = False) -> socket.socket:
    """The listening socket. ``reuse_port``: several worker processes bind the same
    address and the kernel spreads new connections over them (SO_REUSEPORT)."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Listener:
    def __init__(
        self,
        services: Services,
        sock: socket.socket,
        first_id: int = FIRST_CLIENT_ID,
        step: int = 1,
    ) -> None:
        self.services = services
        self.sock = sock
        # with several workers, worker i gives out first + i, + N, ...: ids stay unique
        # across the workers without asking each other
        self._ids = itertools.count(first_id, step)

    async def accept_loop(self, nursery: trio.Nursery) -> None:
        svc = self.services
        limit = svc.config.proxy.max_client_connections
        stats = svc.accounting.stats
        lsock = self.sock
        while True:
            try:
                sock, _addr = lsock.accept()
            except BlockingIOError:
                await wait_readable(lsock)
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed (%s); backing off", exc)
                    await trio.sleep(0.05)
                    continue
                raise
            stats.accepted += 1
            conn = Conn(sock)
            if len(svc.sessions) >= limit:
                stats.rejected += 1
                nursery.start_soon(self._reject, conn)
                continue
            nursery.start_soon(self._client_task, conn)

    async def _reject(self, conn: Conn) -> None:
        try:
            with trio.move_on_after(1):
                await conn.send_all(
                    err_response(
                        ER_CON_COUNT_ERROR,
                        "08004",
                        "Too many connections (tainted-proxy: proxy.max_client_connections "
                        "reached)",
                        0,
                    )
                )
        except ConnectionClosed:
            pass
        finally:
            conn.close()

    async def _client_task(self, conn: Conn) -> None:
        svc = self.services
        cid = next(self._ids)
        cl = Client(svc, ClientIO(conn, svc.config.proxy.max_packet_size), cid)
        svc.sessions[cid] = cl
        try:
            await session.run(cl)
        except Exception:
            log.exception("client %s: unexpected error", cid)
        finally:
            svc.sessions.pop(cid, None)
