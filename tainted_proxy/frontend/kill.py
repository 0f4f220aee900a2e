"""KILL, confined to the client's own sessions, and the ids the proxy gives out.

A client sees one id per session, the proxy's (the handshake's connection id, and
CONNECTION_ID() wherever it appears), never an upstream thread id. ``KILL [QUERY] id``
and COM_PROCESS_KILL are answered here: a session of the same user is found by that id
(or by the upstream thread id it holds right now), its running query is killed upstream
on a connection of the proxy's, and KILL CONNECTION ends the session. A KILL hidden where
the proxy cannot vet it is refused (frontend.guard).
"""

from __future__ import annotations

import re

from tainted_proxy.backend.server import UpstreamError
from tainted_proxy.frontend import checkout
from tainted_proxy.frontend.client import Client, SessionEnd
from tainted_proxy.frontend.guard import KILL_WORD, KillRequest, Refusal, vet_kill
from tainted_proxy.wire.constants import (
    COM_QUERY,
    COM_STMT_PREPARE,
    ER_CONNECTION_KILLED,
    ER_NO_SUCH_THREAD,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import com_query, ok_response, text_resultset

# SELECT CONNECTION_ID() in session pooling (pooled modes: state.answers)
_CONNECTION_ID_RE = re.compile(
    rb"^\s*SELECT\s+CONNECTION_ID\s*\(\s*\)\s*(?:AS\s+(`[^`]+`|\w+)\s*)?;?\s*$",
    re.IGNORECASE,
)

__all__ = ["KILL_WORD", "may_answer", "answered_here", "com_process_kill"]


def may_answer(cl: Client, cmd: int, data: bytearray, size: int) -> bool:
    """C-speed pre-check of a COM_QUERY / COM_STMT_PREPARE in the client buffer: might
    ``answered_here`` take it? Only such commands are copied and examined."""
    if KILL_WORD.search(data, 5, size) is not None:
        return True
    return (
        cmd == COM_QUERY
        and cl.state.mode is None
        and bytes(data[5 : min(size, 64)]).lstrip()[:4].upper() == b"SELE"
        and _CONNECTION_ID_RE.match(bytes(data[5:size])) is not None
    )


async def answered_here(cl: Client, cmd: int, payload: bytes) -> bool:
    """KILL and (session pooling) CONNECTION_ID() are the proxy's business. True if
    answered here (the caller drops the command), False to relay it."""
    sql = payload[1:]
    verdict = vet_kill(sql, prepare=cmd == COM_STMT_PREPARE)
    if isinstance(verdict, Refusal):
        await cl.io.send_error(verdict.code, verdict.sqlstate, verdict.message, 1)
        return True
    if isinstance(verdict, KillRequest):
        await kill_id(cl, verdict.target, verdict.query_only)
        return True
    m = _CONNECTION_ID_RE.match(sql) if cmd == COM_QUERY else None
    if m is None:
        return False
    name = (m.group(1) or b"CONNECTION_ID()").decode("utf-8", "replace").strip("`")
    assert cl.login is not None
    await cl.io.conn.send_all(
        text_resultset([name], [[cl.id]], cl.login.capabilities, status=cl.status())
    )
    return True


async def com_process_kill(cl: Client, payload: bytes, seq: int) -> None:
    if len(payload) < 5:
        raise ProtocolError("short COM_PROCESS_KILL")
    await kill_id(cl, int.from_bytes(payload[1:5], "little"), query_only=False)


async def kill_id(cl: Client, target_id: int, query_only: bool) -> None:
    target = cl.services.find_session(target_id)
    if target is None or target.user != cl.user:
        message = f"Unknown thread id: {target_id}"
        note = cl.services.elsewhere(target_id) if target is None else None
        if note is not None:
            message += f" ({note})"
        await cl.io.send_error(ER_NO_SUCH_THREAD, "HY000", message, 1)
        return
    assert cl.login is not None
    if target is cl:
        if query_only:
            await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))
            return
        await cl.try_error(1, ER_CONNECTION_KILLED, "70100", "Connection was killed")
        cl.killed = True
        raise SessionEnd(True)
    tup = target.up
    if tup is not None and target.busy:
        # counted before any wait: a connection with a KILL on its way is never handed to
        # another session (it is closed instead)
        tup.kills_in_flight += 1
        try:
            if cl.up is None and cl.state.mode is not None:
                if not await checkout.checkout(cl, None, 1):
                    return
            me = cl.up
            if me is None:
                raise SessionEnd(True)
            verb = "QUERY" if query_only else "CONNECTION"
            if target.up is tup and target.busy:
                # still the target's, still running: otherwise (the wait above let it
                # finish) the KILL would hit whatever that thread runs now
                await me.command_ok(com_query(f"KILL {verb} {tup.thread_id}".encode()))
        except UpstreamError as exc:
            err = exc.err
            if err is None:
                raise SessionEnd(False) from exc
            if err.code != ER_NO_SUCH_THREAD:  # e.g. privileges: say so, keep going
                await cl.io.send_error(err.code, err.sqlstate, err.message, 1)
                return
        finally:
            tup.kills_in_flight -= 1
    if not query_only:
        target.killed = True
        if target.cancel_scope is not None and not target.busy:
            target.cancel_scope.cancel()
    await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))
