"""One connected client, as the I/O side sees it: its socket, its login, the model of its
session (state.session.SessionState), the upstream connection it holds, and the process
services it may use (``Services``: the pool, the accounting, the catalog...).

The frontend modules are functions over a ``Client``: session (the command loop),
relay, checkout, local, learn, pooled, prepared, sql_prepared, kill, commands. This module
imports none of them.
"""

from __future__ import annotations

import ssl
import time
from typing import TYPE_CHECKING, Protocol

import trio

from tainted_proxy.frontend.client_io import ClientIO
from tainted_proxy.frontend.handshake import ClientLogin
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.state.learn import Reports
from tainted_proxy.state.session import SessionState
from tainted_proxy.taint.effects import Classification
from tainted_proxy.wire.constants import SERVER_STATUS_IN_TRANS

if TYPE_CHECKING:
    from tainted_proxy.accounting import Accounting, PinTicket
    from tainted_proxy.admission import FailedLogins
    from tainted_proxy.backend.catalog import Catalog
    from tainted_proxy.backend.server import ServerConn, UpstreamTarget
    from tainted_proxy.config import Config
    from tainted_proxy.peers import WorkerRole
    from tainted_proxy.pool.pool import Pool, PoolKey


# proxy-assigned client ids start high so they are easy to tell from server thread ids
# (below 2**31: some clients read the id as a signed 32-bit int)
FIRST_CLIENT_ID = 2_000_000_000


class SessionEnd(Exception):
    """Stop the session; ``reusable`` says whether the upstream state is known."""

    def __init__(self, reusable: bool) -> None:
        super().__init__()
        self.reusable = reusable


class StatementLost(Exception):
    """A pooled session's statement lost its upstream connection before any of its answer
    reached the client, and nothing of the session lived only there: the client got an
    error for that statement and the session goes on (frontend.relay.upstream_lost)."""


class Services(Protocol):
    """What a client uses of the process (app.Proxy provides it)."""

    config: Config
    target: UpstreamTarget
    pool: Pool
    accounting: Accounting
    catalog: Catalog
    sessions: dict[int, Client]
    ssl_context: ssl.SSLContext | None
    #: upstream login -> may it SET pseudo_thread_id (learned on first refusal)
    thread_id_settable: dict[str, bool]
    #: replaced after each unpin: what users.NAME.max_pinned waiters wait on
    unpinned: trio.Event
    #: set once the upstream answered (the catalog is read): logins wait for it
    upstream_ready: trio.Event
    #: shutting down: idle sessions are told at their next statement
    draining: bool
    failed_logins: FailedLogins
    #: with serve --workers N: which worker this process is (the others are asked for
    #: their admin views and for KILL of their sessions: tainted_proxy.peers)
    worker: WorkerRole | None

    def password_stage2(self, user: str) -> bytes | None: ...
    def caching_sha2_stage2(self, user: str) -> bytes | None: ...
    async def own_connection(self, user: str) -> ServerConn: ...
    def upstream_credentials(self, user: str) -> tuple[str, str]: ...
    def default_schema_for(self, up: ServerConn) -> str | None: ...
    def find_session(self, ident: int) -> Client | None: ...


class Client:
    """One client connection from accept to close."""

    def __init__(self, services: Services, io: ClientIO, client_id: int) -> None:
        self.services = services
        self.io = io
        self.id = client_id
        self.login: ClientLogin | None = None
        self.user = ""
        self.key: PoolKey | None = None
        self.state = SessionState(client_id)
        #: the upstream connection held now, and the one held last (it may still have
        #: this session's values: state.values)
        self.up: ServerConn | None = None
        self.last_up: ServerConn | None = None
        self.busy = False  # a command is being relayed upstream
        self.killed = False
        #: an admin console session (frontend.admin_session): no upstream side at all
        self.admin = False
        self.connected_at = time.monotonic()
        self.cancel_scope: trio.CancelScope | None = None
        self.queries = 0
        #: set when another session has read this one's pending values (state.values)
        self.values_ready: trio.Event | None = None
        #: the accounting's record of the pin held now (frontend.checkout.publish_pin)
        self.pin_ticket: PinTicket | None = None
        #: when the command being handled arrived (0: none), for the admin surface
        self.command_started = 0.0
        # the response being relayed: what its session-state blocks said, and the
        # statement it answers (the taint ledger fingerprints it)
        self.reports = Reports()
        self.statement: Classification | None = None
        self.sql = b""

    # -- what tests and the admin surface read ---------------------------------------
    @property
    def mode(self) -> str | None:
        return self.state.mode

    @property
    def pin_reason(self) -> str | None:
        return self.state.pin_reason

    @property
    def program(self) -> str:
        """The client program, from the connect attributes."""
        if self.login is None:
            return ""
        attrs = self.login.attributes
        return attrs.get("program_name") or attrs.get("_client_name", "")

    def status(self) -> int:
        """The status flags the client's next OK carries."""
        return self.up.status if self.up is not None else self.state.status

    def begin_response(self, c: Classification | None, sql: bytes) -> None:
        """What learning reads from the next relayed response starts empty."""
        self.reports.clear()
        self.statement = c
        self.sql = sql

    # -- state.values hooks (ServerConn.pending_for) ---------------------------------
    def values_lost(self) -> None:
        """The connection holding this session's pending values closed unread."""
        self.state.values.lose_pending()
        self.values_collected()

    def values_collected(self) -> None:
        ready, self.values_ready = self.values_ready, None
        if ready is not None:
            ready.set()

    # -- answering -------------------------------------------------------------------
    async def try_error(self, seq: int, code: int, sqlstate: str, message: str) -> None:
        """An ERR the client may no longer be there to read."""
        try:
            with trio.move_on_after(1):
                await self.io.send_error(code, sqlstate, message, seq)
        except ConnectionClosed:
            pass

    def __repr__(self) -> str:
        return f"<Client {self.id} user={self.user!r} mode={self.mode}>"


def holds_work(cl: Client) -> bool:
    """Would a graceful shutdown wait for this session? It is running a statement, or
    holds a transaction or a pin it must be able to finish."""
    up = cl.up
    if cl.busy:
        return True
    if up is None:
        return False
    if up.status & SERVER_STATUS_IN_TRANS:
        return True
    return cl.state.mode is not None and cl.state.pins.reason() is not None
