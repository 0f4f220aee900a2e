"""The proxy process: listener, client registry, the upstream pool, and start-up checks.

``Proxy.serve`` is the one Trio entry point: it probes the upstream once (credentials,
server version, collation ids), then accepts clients and runs one task per client.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
import ssl
from collections import Counter
from dataclasses import dataclass, field

import trio
from trio.lowlevel import wait_readable

from tainted_proxy.backend.server import ServerConn, UpstreamTarget, connect
from tainted_proxy.config import Config
from tainted_proxy.frontend.handshake import PROXY_CAPABILITIES, SEMANTIC_CAPABILITIES
from tainted_proxy.frontend.io import ClientIO
from tainted_proxy.frontend.session import ClientSession
from tainted_proxy.net import Conn, ConnectionClosed
from tainted_proxy.pool.pool import Pool, PoolKey
from tainted_proxy.state.settings import Baseline
from tainted_proxy.wire.constants import DEFAULT_CHARSET_ID, ER_CON_COUNT_ERROR
from tainted_proxy.wire.packets import err_response

log = logging.getLogger("tainted_proxy")

# proxy-assigned client ids start high so they are easy to tell from server thread ids
# (below 2**31: some clients read the id as a signed 32-bit int)
_FIRST_CLIENT_ID = 2_000_000_000


@dataclass(slots=True)
class ProxyStats:
    accepted: int = 0
    rejected: int = 0
    auth_failures: int = 0
    checkout_timeouts: int = 0
    upstream_lost: int = 0
    # transaction/statement pooling: pin reason -> times a session got pinned for it
    pins: Counter[str] = field(default_factory=Counter)
    pinned_now: int = 0
    emulated: int = 0  # LAST_INSERT_ID() / ROW_COUNT() answered by the proxy
    refused_in_statement_mode: int = 0


def _caps_by_upstream_user(config: Config) -> dict[str, int]:
    """users.NAME.max_connections caps the upstream connections of that user's upstream
    login (the pool counts per login; proxy users sharing one login share the smallest cap)."""
    caps: dict[str, int] = {}
    for u in config.users.values():
        if u.max_connections:
            login, _ = u.upstream_credentials(config)
            caps[login] = min(caps.get(login, u.max_connections), u.max_connections)
    return caps


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Proxy:
    def __init__(self, config: Config) -> None:
        self.config = config
        up = config.upstream
        self.target = UpstreamTarget(
            host=up.host,
            port=up.port,
            unix_socket=up.unix_socket,
            connect_timeout=up.connect_timeout,
            tls=up.tls,
            tls_ca=up.tls_ca,
        )
        self.pool = Pool(
            self._open_upstream,
            max_connections=up.max_connections,
            per_user_max=_caps_by_upstream_user(config),
            idle_timeout=config.pool.idle_timeout,
            max_lifetime=config.pool.max_lifetime,
        )
        self.server_version = config.proxy.server_version or "5.5.5-10.11.0-MariaDB-tainted-proxy"
        self.collations: dict[int, tuple[str, str]] = {}
        self.sessions: dict[int, ClientSession] = {}
        self.stats = ProxyStats()
        self._ids = itertools.count(_FIRST_CLIENT_ID)
        self.ssl_context = self._client_ssl_context()
        self.port = 0
        self._listener: socket.socket | None = None
        # transaction pooling: what a fresh upstream connection's session looks like,
        # and each character set's default collation (SET NAMES cs implies it)
        self.baseline = Baseline()
        self.default_collation: dict[str, str] = {}
        self.charset_of_collation: dict[str, str] = {}
        # the taint ledger: (user, pin reason, statement fingerprint) -> pins started
        self.ledger: Counter[tuple[str, str, str]] = Counter()
        self.pinned_by_user: Counter[str] = Counter()
        # upstream login -> may it SET pseudo_thread_id (CONNECTION_ID() inside larger
        # statements); learned on first refusal
        self.thread_id_settable: dict[str, bool] = {}
        self.unpinned = trio.Event()  # replaced after each unpin (users.NAME.max_pinned)

    # -- configuration lookups ---------------------------------------------------
    def _client_ssl_context(self) -> ssl.SSLContext | None:
        p = self.config.proxy
        if not (p.tls_cert and p.tls_key):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(p.tls_cert, p.tls_key)
        return ctx

    def password_stage2(self, user: str) -> bytes | None:
        u = self.config.user(user)
        return None if u is None else u.password_stage2

    def upstream_credentials(self, user: str) -> tuple[str, str]:
        u = self.config.user(user)
        assert u is not None
        return u.upstream_credentials(self.config)

    def default_schema_for(self, up: ServerConn) -> str | None:
        """The schema a released connection is reset to (its last login's database)."""
        return up.home_schema

    def find_session(self, ident: int) -> ClientSession | None:
        """A session by the id the proxy gave it, or by the server thread id of the
        upstream connection it holds right now (what CONNECTION_ID() returns inside
        complex statements)."""
        s = self.sessions.get(ident)
        if s is not None:
            return s
        for s in self.sessions.values():
            if s.up is not None and s.up.thread_id == ident:
                return s
        return None

    # -- upstream ----------------------------------------------------------------
    async def _open_upstream(self, key: PoolKey) -> ServerConn:
        password = self._upstream_password(key.user)
        return await connect(
            self.target,
            user=key.user,
            password=password,
            capabilities=key.capabilities | (PROXY_CAPABILITIES & ~SEMANTIC_CAPABILITIES),
            charset=DEFAULT_CHARSET_ID,
            attributes={"program_name": "tainted-proxy"},
        )

    def _upstream_password(self, up_user: str) -> str:
        for name in self.config.users:
            u, p = self.upstream_credentials(name)
            if u == up_user:
                return p
        raise KeyError(up_user)

    async def probe_upstream(self) -> None:
        """Log in once: fail fast on bad credentials, learn version and collations."""
        first = next(iter(self.config.users))
        user, password = self.upstream_credentials(first)
        conn = await connect(
            self.target,
            user=user,
            password=password,
            capabilities=PROXY_CAPABILITIES & ~SEMANTIC_CAPABILITIES,
            charset=DEFAULT_CHARSET_ID,
        )
        try:
            if not self.config.proxy.server_version:
                self.server_version = conn.server_version
            rows = await conn.query_rows(
                "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME, IS_DEFAULT "
                "FROM information_schema.COLLATIONS"
            )
            for cid, cs, coll, default in rows:
                if cid is not None and cs is not None and coll is not None:
                    self.collations[int(cid)] = (cs.decode(), coll.decode())
                    self.charset_of_collation[coll.decode()] = cs.decode()
                    if default == b"Yes":
                        self.default_collation[cs.decode()] = coll.decode()
            # the baseline of the settings vectors (state/settings.py): read on a
            # connection opened like the pool's (same login, same handshake charset)
            rows = await conn.query_rows(
                "SELECT LOWER(VARIABLE_NAME), SESSION_VALUE, VARIABLE_TYPE "
                "FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_SCOPE <> 'GLOBAL'"
            )
            self.baseline = Baseline.from_rows(
                (
                    n.decode(),
                    None if v is None else v.decode("utf-8", "surrogateescape"),
                    (t or b"").decode(),
                )
                for n, v, t in rows
                if n is not None
            )
        finally:
            conn.close()

    # -- serving -----------------------------------------------------------------
    def _bind(self) -> socket.socket:
        host, port = parse_listen(self.config.proxy.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self.probe_upstream()
        lsock = self._bind()
        self._listener = lsock
        log.info("tainted-proxy listening on %s:%s", *lsock.getsockname()[:2])
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.pool.run)
                task_status.started(self.port)
                await self._accept_loop(lsock, nursery)
        finally:
            self.pool.close_all()
            lsock.close()

    async def _accept_loop(self, lsock: socket.socket, nursery: trio.Nursery) -> None:
        limit = self.config.proxy.max_client_connections
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
            self.stats.accepted += 1
            conn = Conn(sock)
            if len(self.sessions) >= limit:
                self.stats.rejected += 1
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
                        "Too many connections (tainted-proxy: proxy.max_client_connections reached)",
                        0,
                    )
                )
        except ConnectionClosed:
            pass
        finally:
            conn.close()

    async def _client_task(self, conn: Conn) -> None:
        cid = next(self._ids)
        session = ClientSession(self, ClientIO(conn, self.config.proxy.max_packet_size), cid)
        self.sessions[cid] = session
        try:
            await session.run()
        except Exception:
            log.exception("client %s: unexpected error", cid)
        finally:
            self.sessions.pop(cid, None)
