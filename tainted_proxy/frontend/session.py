"""One client session from login to logout: the command loop and what each command goes to.

``run(client)`` logs the client in (frontend.login); an admin console session's commands
go to frontend.admin_session; otherwise it reads commands and dispatches them: KILL and
session-mode CONNECTION_ID() to frontend.kill, COM_CHANGE_USER / COM_RESET_CONNECTION /
COM_INIT_DB to frontend.commands, COM_STMT_* of a pooled session to frontend.prepared,
anything else of a pooled session to frontend.pooled, and in session pooling straight to
frontend.relay. When the session ends its connection goes back
through frontend.checkout: pooled if its state is known, closed otherwise (client gone
mid-result, protocol error, upstream failure).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from tainted_proxy.frontend import (
    admin_session,
    checkout,
    commands,
    kill,
    login,
    pooled,
    prepared,
    relay,
)
from tainted_proxy.frontend.checkout import OWN_EXCHANGE_TIMEOUT
from tainted_proxy.frontend.client import Client, SessionEnd, StatementLost, holds_work
from tainted_proxy.frontend.client_io import PacketTooLarge
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.wire.constants import (
    COM_BINLOG_DUMP,
    COM_BINLOG_DUMP_GTID,
    COM_CHANGE_USER,
    COM_CONNECT,
    COM_CONNECT_OUT,
    COM_DAEMON,
    COM_DEBUG,
    COM_DELAYED_INSERT,
    COM_INIT_DB,
    COM_PROCESS_INFO,
    COM_PROCESS_KILL,
    COM_QUERY,
    COM_QUIT,
    COM_REGISTER_SLAVE,
    COM_RESET_CONNECTION,
    COM_SET_OPTION,
    COM_SHUTDOWN,
    COM_SLEEP,
    COM_STMT_BULK_EXECUTE,
    COM_STMT_PREPARE,
    COM_TABLE_DUMP,
    COM_TIME,
    COMMAND_NAMES,
    ER_CONNECTION_KILLED,
    ER_PROXY_UPSTREAM,
    ER_SERVER_SHUTDOWN,
    ER_UNKNOWN_COM_ERROR,
)
from tainted_proxy.wire.errors import ProtocolError

log = logging.getLogger("tainted_proxy.session")

_UNSUPPORTED = frozenset(
    (
        COM_SLEEP,
        COM_SHUTDOWN,
        COM_PROCESS_INFO,
        COM_CONNECT,
        COM_DEBUG,
        COM_TIME,
        COM_DELAYED_INSERT,
        COM_BINLOG_DUMP,
        COM_TABLE_DUMP,
        COM_CONNECT_OUT,
        COM_REGISTER_SLAVE,
        COM_DAEMON,
        COM_BINLOG_DUMP_GTID,
        COM_STMT_BULK_EXECUTE,
    )
)

_SPECIAL: dict[int, Callable[[Client, bytes, int], Awaitable[None]]] = {
    COM_CHANGE_USER: commands.com_change_user,
    COM_RESET_CONNECTION: commands.com_reset_connection,
    COM_PROCESS_KILL: kill.com_process_kill,
    COM_INIT_DB: commands.com_init_db,
}


async def run(cl: Client) -> None:
    io = cl.io
    reusable = True
    try:
        with trio.CancelScope() as scope:
            cl.cancel_scope = scope
            try:
                if not await login.login(cl):
                    return
                if cl.admin:
                    await admin_session.command_loop(cl)
                else:
                    await _command_loop(cl)
            except SessionEnd as end:
                reusable = end.reusable
            except PacketTooLarge:
                reusable = not cl.busy
                try:
                    await io.send_too_large()
                    await _drain_client(cl)
                except ConnectionClosed:
                    pass
            except ConnectionClosed:
                reusable = not cl.busy
            except ProtocolError as exc:
                log.info("client %s: protocol error: %s", cl.id, exc)
                reusable = False
                await cl.try_error(1, 1158, "08S01", f"tainted-proxy: protocol error: {exc}")
            except trio.TooSlowError:
                reusable = False
                await cl.try_error(
                    1,
                    ER_PROXY_UPSTREAM,
                    "HY000",
                    "tainted-proxy: the upstream server did not answer in time",
                )
            except BaseException:
                reusable = False
                raise
        if scope.cancelled_caught:
            reusable = reusable and not cl.busy
    finally:
        checkout.drop_upstream(cl, reusable and not cl.killed)
        io.conn.close()


async def _drain_client(cl: Client) -> None:
    """After refusing an oversized packet: read and drop what the client is still sending
    (at most 1 s / 64 MiB) before the socket is closed. Closing with unread input sends a
    RST, and a client still busy writing its packet would then see "connection reset"
    instead of the 1153 ERR just sent."""
    buf = cl.io.buf
    buf.end = 0
    drained = 0
    with trio.move_on_after(1):
        while drained < 64 << 20:
            await cl.io.conn.recv_into(buf)
            drained += buf.end
            buf.end = 0


async def _command_loop(cl: Client) -> None:
    io = cl.io
    cbuf = io.buf
    idle = cl.services.config.proxy.client_idle_timeout or None
    while True:
        if idle is None:
            size = await io.wait_packet()
        else:
            with trio.move_on_after(idle) as timer:
                size = await io.wait_packet()
            if timer.cancelled_caught:
                await cl.try_error(
                    0,
                    4031,
                    "HY000",
                    "The client was disconnected by tainted-proxy because of inactivity "
                    "(proxy.client_idle_timeout)",
                )
                raise SessionEnd(True)
        data = cbuf.data
        if size < 5:
            raise ProtocolError("empty command packet")
        cmd = data[4]
        if data[3] != 0:
            # every command starts a new exchange at sequence id 0: MariaDB answers
            # "Got packets out of order" and drops the connection; so does the proxy,
            # before anything reaches the server
            raise ProtocolError(
                f"command packet out of sequence (id {data[3]}, expected 0): "
                "Got packets out of order"
            )
        cl.queries += 1
        cl.command_started = time.monotonic()
        if cl.services.draining and not holds_work(cl):
            await cl.try_error(
                data[3] + 1 & 0xFF,
                ER_SERVER_SHUTDOWN,
                "08S01",
                "Server shutdown in progress (tainted-proxy is stopping)",
            )
            raise SessionEnd(True)
        if cmd == COM_QUERY or cmd == COM_STMT_PREPARE:
            # C-speed pre-checks; only suspicious commands are copied and examined
            if kill.may_answer(cl, cmd, data, size):
                payload = bytes(data[4:size])
                if await kill.answered_here(cl, cmd, payload):
                    cbuf.consume(size)
                    await checkout.maybe_release(cl)
                    continue
        elif cmd == COM_QUIT:
            raise SessionEnd(True)
        elif cmd in _SPECIAL:
            payload = bytes(data[4:size])
            seq = data[3]
            cbuf.consume(size)
            # the proxy's own upstream exchanges: never reuse a connection left
            # mid-exchange, and never wait forever on a stalled server
            cl.busy = True
            with trio.fail_after(OWN_EXCHANGE_TIMEOUT):
                await _SPECIAL[cmd](cl, payload, seq)
            cl.busy = False
            await checkout.maybe_release(cl)
            continue
        elif cmd in _UNSUPPORTED:
            cbuf.consume(size)
            name = COMMAND_NAMES.get(cmd, hex(cmd))
            await io.send_error(
                ER_UNKNOWN_COM_ERROR,
                "08S01",
                f"Unknown command: tainted-proxy does not relay {name}",
                1,
            )
            continue
        if cl.state.mode is not None:
            try:
                if cmd in prepared.STMT_COMMANDS:
                    await prepared.command(cl, cmd, size)  # virtualized: never pins itself
                else:
                    await pooled.command(cl, cmd, size)
            except StatementLost:
                # (the command's bytes were consumed by the relay before it was lost)
                pass
            continue
        if cmd == COM_SET_OPTION and cl.up is not None:
            # multi-statements on/off outlives a reset: such a connection is never reused
            cl.up.options_changed = True
        await relay.relay(cl, cmd, size)
        if cl.killed:
            # KILL CONNECTION arrived while this session was busy
            await cl.try_error(1, ER_CONNECTION_KILLED, "70100", "Connection was killed")
            raise SessionEnd(False)
