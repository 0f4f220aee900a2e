"""The proxy process: wires the configuration, the upstream catalog and pool, the
accounting and the listener together. It decides nothing itself.

``Proxy.serve`` is the one Trio entry point: it probes the upstream once (credentials,
server version, collations, the settings baseline), then accepts clients.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping

import trio

from tainted_proxy.accounting import Accounting, ProxyStats
from tainted_proxy.backend.catalog import Catalog
from tainted_proxy.backend.server import ServerConn, UpstreamTarget, connect
from tainted_proxy.config import Config
from tainted_proxy.frontend.client import Client
from tainted_proxy.frontend.handshake import PROXY_CAPABILITIES, SEMANTIC_CAPABILITIES
from tainted_proxy.frontend.listener import Listener, bind
from tainted_proxy.pool.pool import Pool, PoolKey
from tainted_proxy.wire.constants import DEFAULT_CHARSET_ID

log = logging.getLogger("tainted_proxy")

DEFAULT_SERVER_VERSION = "5.5.5-10.11.0-MariaDB-tainted-proxy"
HISTORY_INTERVAL = 5.0  # seconds between samples of the multiplexing ratio


def _caps_by_upstream_user(config: Config) -> dict[str, int]:
    """users.NAME.max_connections caps the upstream connections of that user's upstream
    login (the pool counts per login; proxy users sharing one login share the smallest cap)."""
    caps: dict[str, int] = {}
    for u in config.users.values():
        if u.max_connections:
            login, _ = u.upstream_credentials(config)
            caps[login] = min(caps.get(login, u.max_connections), u.max_connections)
    return caps


class Proxy:
    """The process's services (frontend.client.Services) and its lifecycle."""

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
        self.catalog = Catalog(server_version=config.proxy.server_version or DEFAULT_SERVER_VERSION)
        self.accounting = Accounting()
        self.sessions: dict[int, Client] = {}
        self.ssl_context = self._client_ssl_context()
        self.thread_id_settable: dict[str, bool] = {}
        self.unpinned = trio.Event()
        self.port = 0

    # -- read by tests, the demo and the admin surface -----------------------------------
    @property
    def stats(self) -> ProxyStats:
        return self.accounting.stats

    @property
    def ledger(self) -> Mapping[tuple[str, str, str], int]:
        return self.accounting.ledger

    @property
    def server_version(self) -> str:
        return self.catalog.server_version

    # -- services ------------------------------------------------------------------------
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

    def find_session(self, ident: int) -> Client | None:
        """A session by the id the proxy gave it, or by the server thread id of the
        upstream connection it holds right now."""
        s = self.sessions.get(ident)
        if s is not None:
            return s
        for s in self.sessions.values():
            if s.up is not None and s.up.thread_id == ident:
                return s
        return None

    # -- upstream ------------------------------------------------------------------------
    async def _open_upstream(self, key: PoolKey) -> ServerConn:
        return await connect(
            self.target,
            user=key.user,
            password=self._upstream_password(key.user),
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
            await self.catalog.read(conn)
            if self.config.proxy.server_version:
                self.catalog.server_version = self.config.proxy.server_version
        finally:
            conn.close()

    async def _sample_history(self) -> None:
        """The multiplexing ratio over time (client sessions, upstream connections)."""
        while True:
            self.accounting.sample(len(self.sessions), self.pool.total)
            await trio.sleep(HISTORY_INTERVAL)

    # -- serving -------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self.probe_upstream()
        lsock = bind(self.config.proxy.listen)
        self.port = lsock.getsockname()[1]
        log.info("tainted-proxy listening on %s:%s", *lsock.getsockname()[:2])
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.pool.run)
                nursery.start_soon(self._sample_history)
                task_status.started(self.port)
                await Listener(self, lsock).accept_loop(nursery)
        finally:
            self.pool.close_all()
            lsock.close()
