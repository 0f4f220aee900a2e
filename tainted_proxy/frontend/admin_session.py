"""An admin console session: a user named in ``[admin] users`` logged in with the database
``tainted_proxy``. It never touches the upstream side: its COM_QUERY statements are
answered by admin.console (SHOW POOLS, SHOW SESSIONS, ...), COM_PING, COM_INIT_DB
'tainted_proxy', COM_RESET_CONNECTION and COM_SET_OPTION get an OK, COM_QUIT ends it, and
anything else gets ERR 1047 naming what the console answers.

Anyone else asking for the database ``tainted_proxy`` is refused at login (ERR 1044).
"""

from __future__ import annotations

import logging
import time

import trio

from tainted_proxy.admin import console, fleet
from tainted_proxy.frontend.client import Client, SessionEnd
from tainted_proxy.frontend.handshake import ClientLogin
from tainted_proxy.wire.codec import frame
from tainted_proxy.wire.constants import (
    COM_INIT_DB,
    COM_PING,
    COM_QUERY,
    COM_QUIT,
    COM_RESET_CONNECTION,
    COM_SET_OPTION,
    COM_STATISTICS,
    COM_STMT_CLOSE,
    COM_STMT_SEND_LONG_DATA,
    COMMAND_NAMES,
    ER_DBACCESS_DENIED_ERROR,
    ER_UNKNOWN_COM_ERROR,
    SERVER_STATUS_AUTOCOMMIT,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import ok_response, text_resultset

log = logging.getLogger("tainted_proxy.admin")

_OK_COMMANDS = frozenset((COM_PING, COM_RESET_CONNECTION, COM_SET_OPTION))
# commands a server never answers
_SILENT_COMMANDS = frozenset((COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA))


def wants_console(got: ClientLogin) -> bool:
    """The login asks for the console's database."""
    return got.database == console.CONSOLE_DATABASE


async def login(cl: Client, got: ClientLogin) -> bool:
    """Finish a login that asked for ``tainted_proxy``: an admin gets its OK (and no
    upstream connection), anyone else ERR 1044."""
    svc = cl.services
    if not console.is_console_login(svc.config.admin.users, got.user, got.database):
        svc.accounting.stats.auth_failures += 1
        log.info(
            "event=login_failed client=%s address=%s code=%s reason=%r",
            cl.id,
            cl.io.peer_host,
            ER_DBACCESS_DENIED_ERROR,
            "not an [admin] user",
        )
        await cl.try_error(
            got.next_seq,
            ER_DBACCESS_DENIED_ERROR,
            "42000",
            f"Access denied for user '{got.user}'@'{cl.io.peer_host}' to database "
            f"'{console.CONSOLE_DATABASE}'",
        )
        return False
    cl.admin = True
    log.info("event=admin_login client=%s user=%s address=%s", cl.id, got.user, cl.io.peer_host)
    await cl.io.conn.send_all(
        ok_response(got.capabilities, status=SERVER_STATUS_AUTOCOMMIT, seq=got.next_seq)
    )
    return True


_ANSWERED = (
    f"the tainted-proxy admin console answers COM_QUERY ({console.SUPPORTED}), COM_PING, "
    f"COM_INIT_DB '{console.CONSOLE_DATABASE}', COM_RESET_CONNECTION and COM_QUIT"
)


async def command_loop(cl: Client) -> None:
    """Answer the admin session's commands until it quits."""
    assert cl.login is not None
    io = cl.io
    caps = cl.login.capabilities
    svc = cl.services
    session = console.ConsoleSession(cl.user, cl.id, host=io.peer_host)
    idle = svc.config.proxy.client_idle_timeout or None
    while True:
        with trio.move_on_after(idle if idle is not None else float("inf")) as timer:
            _seq, payload = await io.read_payload()
        if timer.cancelled_caught:
            await cl.try_error(
                0,
                4031,
                "HY000",
                "The client was disconnected by tainted-proxy because of inactivity "
                "(proxy.client_idle_timeout)",
            )
            raise SessionEnd(True)
        if not payload:
            raise ProtocolError("empty command packet")
        cmd = payload[0]
        cl.queries += 1
        cl.command_started = time.monotonic()
        status = SERVER_STATUS_AUTOCOMMIT if session.autocommit else 0
        if cmd == COM_QUIT:
            raise SessionEnd(True)
        if cmd in _SILENT_COMMANDS:
            continue
        if cmd == COM_QUERY:
            await _query(cl, session, payload[1:], caps)
        elif cmd in _OK_COMMANDS:
            await io.conn.send_all(ok_response(caps, status=status))
        elif cmd == COM_INIT_DB:
            db = payload[1:].decode("utf-8", "replace")
            if db == console.CONSOLE_DATABASE:
                await io.conn.send_all(ok_response(caps, status=status))
            else:
                err = console.bad_database(db)
                await io.send_error(err.code, err.sqlstate, err.message, 1)
        elif cmd == COM_STATISTICS:
            await io.conn.send_all(frame(_statistics(cl).encode(), 1)[0])
        else:
            name = COMMAND_NAMES.get(cmd, hex(cmd))
            await io.send_error(
                ER_UNKNOWN_COM_ERROR, "08S01", f"Unknown command {name}: {_ANSWERED}", 1
            )


async def _query(cl: Client, session: console.ConsoleSession, sql: bytes, caps: int) -> None:
    cl.begin_response(None, sql)
    cl.busy = True  # SHOW SESSIONS shows the statement being answered
    text = sql.decode("utf-8", "replace")
    try:
        # with serve --workers N the views are every worker's, asked for beforehand
        parts = console.parts_needed(text)
        views = await fleet.views(cl.services, parts) if parts else None
        result = console.execute(cl.services, session, text, views)
    except console.ConsoleError as err:
        cl.busy = False
        await cl.io.send_error(err.code, err.sqlstate, err.message, 1)
        return
    cl.busy = False
    status = SERVER_STATUS_AUTOCOMMIT if session.autocommit else 0
    if isinstance(result, console.Ok):
        await cl.io.conn.send_all(ok_response(caps, status=status))
    else:
        await cl.io.conn.send_all(text_resultset(result.columns, result.rows, caps, status=status))


_LOADED = time.monotonic()  # with the proxy: "Uptime" below


def _statistics(cl: Client) -> str:
    """COM_STATISTICS (``mariadb-admin status``, the CLI's ``status``), worded as a server
    does (clients read "Uptime: N" first)."""
    svc = cl.services
    stats = svc.accounting.stats
    return (
        f"Uptime: {int(time.monotonic() - _LOADED)}  Threads: {len(svc.sessions)}  "
        f"Upstream connections: {svc.pool.total}  Pinned: {stats.pinned_now}  "
        f"Waiting: {len(svc.pool.waiters)}  Accepted: {stats.accepted}"
    )
