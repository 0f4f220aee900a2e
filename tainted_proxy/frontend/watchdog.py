"""The once-a-second sweep over sessions: clients that vanish while their statement runs
upstream, and idle clients' receive buffers.

A session idle for a second or more gives back its receive buffer
(``PacketBuffer.release``: 10,000 idle clients then hold no receive memory; the next
read allocates it again).

The relay reads a session's client socket only between commands, so a client that
disconnects during a long query would be noticed only when the query ends, and the
query would run on. Once a second, ``watch`` looks at sessions whose statement has run for
longer than that (a non-blocking peek at their socket, never on the hot path): a client
gone (EOF or an error) gets its statement killed upstream (``KILL QUERY``, on a
connection of the same upstream login), so nothing it started keeps running; the session
then ends as it would have, its connection discarded.
"""

from __future__ import annotations

import logging
import socket
import time

import trio

from tainted_proxy.backend.server import UpstreamError
from tainted_proxy.frontend.client import Client, Services
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import com_query

log = logging.getLogger("tainted_proxy.watchdog")

INTERVAL = 1.0  # seconds between looks, and how long a statement runs before one


def client_gone(cl: Client) -> bool:
    """Has the client closed its socket (or has it failed)? One non-blocking peek."""
    sock = getattr(cl.io.conn, "sock", None)
    if sock is None:
        return False
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: still there
    except OSError:
        return True
    return data == b""


async def kill_query(services: Services, cl: Client, thread_id: int) -> bool:
    """KILL QUERY ``thread_id`` on a fresh connection of ``cl``'s upstream login."""
    try:
        with trio.fail_after(services.config.upstream.connect_timeout + 5):
            conn = await services.own_connection(cl.user)
            try:
                await conn.command_ok(com_query(b"KILL QUERY %d" % thread_id))
            finally:
                conn.close()
    except (UpstreamError, OSError, ConnectionClosed, ProtocolError, trio.TooSlowError) as exc:
        log.warning("event=kill_failed client=%s thread=%s error=%r", cl.id, thread_id, str(exc))
        return False
    return True


async def watch(services: Services) -> None:
    killed: set[int] = set()
    while True:
        await trio.sleep(INTERVAL)
        now = time.monotonic()
        for cl in list(services.sessions.values()):
            if not cl.busy and now - cl.command_started >= INTERVAL:
                # idle a second or more: hold no receive memory (the next read allocates
                # it again); never per command, which would allocate twice a statement
                cl.io.buf.release()
                continue
            up = cl.up
            if (
                not cl.busy
                or up is None
                or now - cl.command_started < INTERVAL
                or id(cl) in killed
                or not client_gone(cl)
            ):
                continue
            killed.add(id(cl))
            log.info(
                "event=client_gone_mid_statement client=%s user=%s upstream_thread=%s "
                "running_seconds=%.1f",
                cl.id,
                cl.user,
                up.thread_id,
                now - cl.command_started,
            )
            up.kills_in_flight += 1  # never reused: closed when the session ends
            await kill_query(services, cl, up.thread_id)
        killed &= {id(cl) for cl in services.sessions.values()}
