"""KILL, confined to the client's own sessions, and the ids the proxy gives out.

A client sees one id per session, the proxy's (the handshake's connection id, and
CONNECTION_ID() wherever it appears), never an upstream thread id. ``KILL [QUERY] id``
and COM_PROCESS_KILL are answered here: a session of the same user is found by that id
(or by the upstream thread id it holds right now), its running query is killed upstream
on a connection of the proxy's, and KILL CONNECTION ends the session. A KILL hidden where
the proxy cannot vet it is refused (frontend.guard).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from tainted_proxy.backend.server import ServerConn, UpstreamError
from tainted_proxy.frontend import checkout
from tainted_proxy.frontend.client import FIRST_CLIENT_ID, Client, Services, SessionEnd
from tainted_proxy.frontend.guard import KILL_WORD, KillRequest, Refusal, vet_kill
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.peers import WorkerRole, socket_path
from tainted_proxy.peers.client import PeerUnavailable, ask
from tainted_proxy.peers.server import Handler
from tainted_proxy.wire.constants import (
    COM_QUERY,
    COM_STMT_PREPARE,
    ER_CONNECTION_KILLED,
    ER_NO_SUCH_THREAD,
    ER_UNKNOWN_ERROR,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import com_query, ok_response, text_resultset

log = logging.getLogger("tainted_proxy.kill")

#: the owner of a session killed for another worker: its upstream login (connect_timeout)
#: and the KILL, then this much more at most
OWNER_KILL_SLACK = 5.0
#: the worker asking waits for the owner's answer this much longer than the owner works
PEER_KILL_SLACK = OWNER_KILL_SLACK + 2.0
#: upstream logins a worker makes at once to KILL statements for other workers' clients
PEER_KILLS_AT_ONCE = 2

# SELECT CONNECTION_ID() in session pooling (pooled modes: state.answers)
_CONNECTION_ID_RE = re.compile(
    rb"^\s*SELECT\s+CONNECTION_ID\s*\(\s*\)\s*(?:AS\s+(`[^`]+`|\w+)\s*)?;?\s*$",
    re.IGNORECASE,
)

__all__ = [
    "KILL_WORD",
    "answered_here",
    "com_process_kill",
    "may_answer",
    "owner_of",
    "peer_handler",
    "stop_session",
]


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
    svc = cl.services
    target = svc.find_session(target_id)
    if target is None and svc.worker is not None:
        await _kill_on_another_worker(cl, svc.worker, target_id, query_only)
        return
    if target is None or target.user != cl.user:
        await cl.io.send_error(ER_NO_SUCH_THREAD, "HY000", f"Unknown thread id: {target_id}", 1)
        return
    assert cl.login is not None
    if target is cl:
        if query_only:
            await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))
            return
        await cl.try_error(1, ER_CONNECTION_KILLED, "70100", "Connection was killed")
        cl.killed = True
        raise SessionEnd(True)

    @asynccontextmanager
    async def my_connection() -> AsyncIterator[ServerConn | None]:
        # the killer's own upstream connection (checked out if it holds none)
        if cl.up is None and cl.state.mode is not None:
            if not await checkout.checkout(cl, None, 1):
                yield None  # the client has its error
                return
        if cl.up is None:
            raise SessionEnd(True)
        yield cl.up

    try:
        if not await stop_session(target, query_only, my_connection):
            return
    except UpstreamError as exc:
        err = exc.err
        if err is None:
            raise SessionEnd(False) from exc
        await cl.io.send_error(err.code, err.sqlstate, err.message, 1)  # e.g. privileges
        return
    await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))


async def stop_session(
    target: Client,
    query_only: bool,
    connection: Callable[[], AbstractAsyncContextManager[ServerConn | None]],
) -> bool:
    """Kill what ``target`` runs upstream (``KILL QUERY|CONNECTION <thread>`` on the
    connection ``connection`` gives) and, unless ``query_only``, end the session. False
    when ``connection`` gave none (its caller answered the client). An UpstreamError of
    the KILL propagates, except "no such thread" (the statement ended meanwhile)."""
    tup = target.up
    if tup is not None and target.busy:
        # counted before any wait: a connection with a KILL on its way is never handed to
        # another session (it is closed instead)
        tup.kills_in_flight += 1
        try:
            async with connection() as me:
                if me is None:
                    return False
                verb = "QUERY" if query_only else "CONNECTION"
                if target.up is tup and target.busy:
                    # still the target's, still running: otherwise (the wait above let it
                    # finish) the KILL would hit whatever that thread runs now
                    await me.command_ok(com_query(f"KILL {verb} {tup.thread_id}".encode()))
        except UpstreamError as exc:
            if exc.err is None or exc.err.code != ER_NO_SUCH_THREAD:
                raise
        finally:
            tup.kills_in_flight -= 1
    if not query_only:
        target.killed = True
        if target.cancel_scope is not None and not target.busy:
            target.cancel_scope.cancel()
    return True


# -- serve --workers N: a session of another worker ----------------------------------------


def owner_of(ident: int, worker: WorkerRole) -> int | None:
    """The worker that gave out the client id ``ident`` (ids are ``≡ worker index (mod
    workers)``); None for a server thread id, which any worker's session may hold."""
    if ident < FIRST_CLIENT_ID:
        return None
    return (ident - FIRST_CLIENT_ID) % worker.count


async def _kill_on_another_worker(
    cl: Client, me: WorkerRole, target_id: int, query_only: bool
) -> None:
    """Ask the worker that owns ``target_id`` (every other worker at once, for a thread
    id) to kill it for this client's user; answer the client as if it were a session
    here."""
    owner = owner_of(target_id, me)
    if owner is None:
        asked = [i for i in range(me.count) if i != me.index]
    else:
        asked = [] if owner == me.index else [owner]
    request = {"op": "kill", "target": target_id, "user": cl.user, "query_only": query_only}
    timeout = cl.services.config.upstream.connect_timeout + PEER_KILL_SLACK
    replies: dict[int, dict[str, Any] | None] = {}

    async def one(i: int) -> None:
        try:
            reply: dict[str, Any] | None = await ask(
                socket_path(me.shared_path, i), request, timeout
            )
        except PeerUnavailable as exc:
            reply, error = None, str(exc)
        else:
            error = str(reply.get("error", ""))
            if reply.get("outcome") not in ("killed", "failed", "unknown"):
                reply = None  # the worker failed to answer this request
        if reply is None:
            log.warning(
                "event=kill_worker_unavailable client=%s target=%s worker=%d error=%r",
                cl.id,
                target_id,
                i,
                error,
            )
        replies[i] = reply

    async with trio.open_nursery() as nursery:
        for i in asked:
            nursery.start_soon(one, i)
    answered = [r for r in replies.values() if r is not None]
    for reply in answered:
        if reply["outcome"] == "killed":
            assert cl.login is not None
            await cl.io.conn.send_all(ok_response(cl.login.capabilities, status=cl.status()))
            return
    for reply in answered:
        if reply["outcome"] == "failed":
            await cl.io.send_error(
                int(reply["code"]), str(reply["sqlstate"]), str(reply["message"]), 1
            )
            return
    message = f"Unknown thread id: {target_id}"
    silent = sorted(i for i, r in replies.items() if r is None)
    if silent:
        workers = ", ".join(map(str, silent))
        message += f" (tainted-proxy worker {workers} of {me.count} did not answer)"
    await cl.io.send_error(ER_NO_SUCH_THREAD, "HY000", message, 1)


def peer_handler(services: Services) -> Handler:
    """What a worker answers another's ``kill`` request: the session is found here and
    belongs to the asking client's user, or the answer is ``unknown``; its statement is
    killed on a connection of the proxy's own (the same upstream login)."""

    # each KILL that must stop a running statement logs in upstream, outside the pool:
    # only so many at once, whatever the clients of other workers send
    limiter = trio.CapacityLimiter(PEER_KILLS_AT_ONCE)

    async def kill(request: dict[str, Any]) -> dict[str, Any]:
        target = services.find_session(int(request["target"]))
        if target is None or target.user != request["user"]:
            return {"outcome": "unknown"}

        @asynccontextmanager
        async def own_connection() -> AsyncIterator[ServerConn | None]:
            async with limiter:
                conn = await services.own_connection(target.user)
                try:
                    yield conn
                finally:
                    conn.close()

        try:
            with trio.fail_after(services.config.upstream.connect_timeout + OWNER_KILL_SLACK):
                await stop_session(target, bool(request["query_only"]), own_connection)
        except UpstreamError as exc:
            if exc.err is not None:
                return {
                    "outcome": "failed",
                    "code": exc.err.code,
                    "sqlstate": exc.err.sqlstate,
                    "message": exc.err.message,
                }
            return _lost(exc)
        except (OSError, ConnectionClosed, ProtocolError, trio.TooSlowError) as exc:
            return _lost(exc)
        log.info(
            "event=killed_for_worker target=%s user=%s query_only=%s",
            target.id,
            target.user,
            bool(request["query_only"]),
        )
        return {"outcome": "killed"}

    return kill


def _lost(exc: BaseException) -> dict[str, Any]:
    return {
        "outcome": "failed",
        "code": ER_UNKNOWN_ERROR,
        "sqlstate": "HY000",
        "message": f"tainted-proxy: KILL could not reach the server: {exc or type(exc).__name__}",
    }
