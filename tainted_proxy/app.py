"""The proxy process: wires the configuration, the upstream catalog and pool, the
accounting and the listener together. It decides nothing itself.

``Proxy.serve`` is the one Trio entry point: it probes the upstream once (credentials,
server version, collations, the settings baseline), then accepts clients.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Mapping
from functools import partial

import trio

from tainted_proxy.accounting import HISTORY_INTERVAL, Accounting, ProxyStats
from tainted_proxy.admission import FailedLogins
from tainted_proxy.backend.catalog import Catalog
from tainted_proxy.backend.server import (
    ServerConn,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamTarget,
    connect,
)
from tainted_proxy.config import Config, ConfigError, load_config
from tainted_proxy.frontend import watchdog
from tainted_proxy.frontend.client import FIRST_CLIENT_ID, Client, holds_work
from tainted_proxy.frontend.handshake import PROXY_CAPABILITIES, SEMANTIC_CAPABILITIES
from tainted_proxy.frontend.listener import Listener, bind
from tainted_proxy.net import ConnectionClosed
from tainted_proxy.peers import WorkerRole, socket_path
from tainted_proxy.pool.pool import Pool, PoolKey
from tainted_proxy.pool.shared import SharedBudget
from tainted_proxy.wire.constants import DEFAULT_CHARSET_ID
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import com_query

log = logging.getLogger("tainted_proxy")

DEFAULT_SERVER_VERSION = "5.5.5-10.11.0-MariaDB-tainted-proxy"
_LOGIN_REFUSED = frozenset((1044, 1045, 1698, 1251, 1275))
_START_ERRORS = (UpstreamError, OSError, ConnectionClosed, ProtocolError, trio.TooSlowError)
#: a worker whose parent is gone (killed with SIGKILL) shuts down within this
PARENT_WATCH = 0.5


def _caps_by_upstream_user(config: Config) -> dict[str, int]:
    """users.NAME.max_connections caps the upstream connections of that user's upstream
    login (the pool counts per login; proxy users sharing one login share the smallest cap)."""
    caps: dict[str, int] = {}
    for u in config.users.values():
        if u.max_connections:
            login, _ = u.upstream_credentials(config)
            caps[login] = min(caps.get(login, u.max_connections), u.max_connections)
    return caps


async def check_upstream_login(proxy: Proxy, user: str) -> str | None:
    """Try ``user``'s upstream login once: None when it works, else what went wrong."""
    try:
        with trio.fail_after(proxy.config.upstream.connect_timeout + 5):
            conn = await proxy.own_connection(user)
    except _START_ERRORS as exc:
        return str(exc) or type(exc).__name__
    conn.close()
    return None


class Proxy:
    """The process's services (frontend.client.Services) and its lifecycle."""

    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        reconfigure: Callable[[Config], Config] = lambda c: c,
        worker: WorkerRole | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        #: SIGHUP reads this file again; ``reconfigure`` re-applies command-line overrides
        self.config_path = config_path
        self.reconfigure = reconfigure
        up = config.upstream
        self.target = UpstreamTarget(
            host=up.host,
            port=up.port,
            unix_socket=up.unix_socket,
            connect_timeout=up.connect_timeout,
            tls=up.tls,
            tls_ca=up.tls_ca,
        )
        shared = None
        if worker is not None:
            shared = SharedBudget(
                worker.shared_path,
                worker.index,
                up.max_connections,
                _caps_by_upstream_user(config),
            )
        self.pool = Pool(
            self._open_upstream,
            max_connections=up.max_connections,
            per_user_max=_caps_by_upstream_user(config),
            idle_timeout=config.pool.idle_timeout,
            max_lifetime=config.pool.max_lifetime,
            health_check_idle=config.pool.health_check_idle,
            budget=shared,
        )
        self.catalog = Catalog(server_version=config.proxy.server_version or DEFAULT_SERVER_VERSION)
        self.accounting = Accounting(config.admin.ledger_entries_per_user)
        self.sessions: dict[int, Client] = {}
        self.ssl_context = self._client_ssl_context()
        self.thread_id_settable: dict[str, bool] = {}
        self.unpinned = trio.Event()
        self.upstream_ready = trio.Event()
        self.failed_logins = FailedLogins(
            config.proxy.max_login_failures, config.proxy.login_failure_window
        )
        self.draining = False
        self._immediate = False
        self._shutdown_started = 0.0
        self._accepting = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self.port = 0
        #: the admin HTTP endpoint's address once it serves ([admin] listen; None: off)
        self.admin_url: str | None = None
        self._admin_stop = trio.Event()

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

    def caching_sha2_stage2(self, user: str) -> bytes | None:
        u = self.config.user(user)
        return None if u is None else u.caching_sha2_stage2

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
    async def own_connection(self, user: str) -> ServerConn:
        """A connection of the proxy's own (outside the pool) with ``user``'s upstream
        login: the start-up probe, ``check --upstream``, KILL QUERY at shutdown and for
        vanished clients. The caller closes it."""
        login, password = self.upstream_credentials(user)
        return await connect(
            self.target,
            user=login,
            password=password,
            capabilities=PROXY_CAPABILITIES & ~SEMANTIC_CAPABILITIES,
            charset=DEFAULT_CHARSET_ID,
        )

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
        """Log in once: check the credentials, learn version, collations and the settings
        baseline (backend.catalog)."""
        conn = await self.own_connection(next(iter(self.config.users)))
        try:
            await self.catalog.read(conn)
            if self.config.proxy.server_version:
                self.catalog.server_version = self.config.proxy.server_version
        finally:
            conn.close()
        self.upstream_ready.set()

    async def _probe_until_up(self) -> None:
        """The upstream was down at start: retry with backoff until it answers."""
        delay = 0.5
        while not self.upstream_ready.is_set():
            await trio.sleep(delay)
            try:
                with trio.fail_after(self.config.upstream.connect_timeout + 5):
                    await self.probe_upstream()
            except _START_ERRORS as exc:
                log.info(
                    "event=upstream_still_unavailable retry_in=%.1fs error=%r", delay, str(exc)
                )
                delay = min(delay * 2, 30.0)
                continue
            log.warning("event=upstream_available upstream=%s", self._upstream_text())

    def _upstream_text(self) -> str:
        up = self.config.upstream
        return up.unix_socket or f"{up.host}:{up.port}"

    async def _sample_history(self) -> None:
        """The multiplexing ratio over time (client sessions, upstream connections)."""
        while True:
            self.accounting.sample(len(self.sessions), self.pool.total)
            await trio.sleep(HISTORY_INTERVAL)

    # -- the admin HTTP endpoint (tainted_proxy.admin.http) ------------------------------
    def _bind_admin(self) -> socket.socket | None:
        if not self.config.admin.listen:
            return None
        from tainted_proxy.admin import http as admin_http

        listen = self.config.admin.listen
        if self.worker is not None and self.config.admin.listen_port:
            # one admin endpoint per worker (each shows every worker: admin.fleet)
            host = self.config.admin.listen_host
            host = f"[{host}]" if ":" in host else host
            listen = f"{host}:{self.config.admin.listen_port + self.worker.index}"
        return admin_http.bind(listen)

    async def _start_admin(self, nursery: trio.Nursery, sock: socket.socket) -> None:
        from tainted_proxy.admin import http as admin_http

        self.admin_url = await nursery.start(
            partial(admin_http.serve_admin, self, sock, shutdown_trigger=self._admin_stop.wait)
        )
        log.info(
            "tainted-proxy admin HTTP listening on %s (token %s)",
            self.admin_url,
            "required" if self.config.admin.token else "not set: loopback only",
        )

    def stop_admin(self) -> None:
        """Close the admin HTTP endpoint (requests in flight finish); the proxy goes on."""
        self._admin_stop.set()

    # -- serving -------------------------------------------------------------------------
    async def serve(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until shut down (``request_shutdown``, or SIGTERM / SIGINT with
        ``handle_signals``; SIGHUP then reloads the configuration)."""
        try:
            await self.probe_upstream()
        except _START_ERRORS as exc:
            err = exc.err if isinstance(exc, UpstreamError) else None
            refused = err is not None and err.code in _LOGIN_REFUSED
            if self.config.upstream.fail_fast or refused or isinstance(exc, UpstreamMisconfigured):
                # the upstream answered and said no (TLS, the proxy's login): a retry
                # cannot help, the configuration must change
                raise
            log.warning(
                "event=upstream_unavailable_at_start upstream=%s error=%r; serving anyway, "
                "clients get ERR 1105 until it answers",
                self._upstream_text(),
                str(exc),
            )
        lsock = bind(self.config.proxy.listen, reuse_port=self.worker is not None)
        self.port = lsock.getsockname()[1]
        if self.worker is None:
            log.info("tainted-proxy listening on %s:%s", *lsock.getsockname()[:2])
        else:
            log.info(
                "tainted-proxy worker %d of %d (pid %d) listening on %s:%s",
                self.worker.index,
                self.worker.count,
                os.getpid(),
                *lsock.getsockname()[:2],
            )
        try:
            admin_sock = self._bind_admin()
        except OSError:
            lsock.close()
            raise
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.pool.run)
                nursery.start_soon(self._sample_history)
                if admin_sock is not None:
                    await self._start_admin(nursery, admin_sock)
                nursery.start_soon(watchdog.watch, self)
                if not self.upstream_ready.is_set():
                    nursery.start_soon(self._probe_until_up)
                if handle_signals:
                    nursery.start_soon(self._signals)
                if self.worker is not None:
                    nursery.start_soon(self._watch_parent, self.worker.parent_pid)
                    await nursery.start(self._answer_peers, self.worker)
                task_status.started(self.port)
                first, step = FIRST_CLIENT_ID, 1
                if self.worker is not None:
                    first, step = FIRST_CLIENT_ID + self.worker.index, self.worker.count
                with self._accepting:
                    await Listener(self, lsock, first, step).accept_loop(nursery)
                lsock.close()
                await self._drain()
                nursery.cancel_scope.cancel()
        finally:
            self.pool.close_all()
            lsock.close()

    # -- shutdown and reload -------------------------------------------------------------
    def request_shutdown(self, immediate: bool = False) -> None:
        """Stop accepting; let open transactions and pins finish (up to
        ``proxy.shutdown_timeout``), answer idle sessions' next statement with ERR 1053;
        ``immediate``: close everything now."""
        self.draining = True
        self._shutdown_started = self._shutdown_started or trio.current_time()
        self._accepting.cancel()
        if immediate:
            self._immediate = True
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()

    async def _drain(self) -> None:
        deadline = self._shutdown_started + self.config.proxy.shutdown_timeout
        while not self._immediate and trio.current_time() < deadline:
            if not any(holds_work(cl) for cl in self.sessions.values()):
                break
            await trio.sleep(0.05)
        busy = [cl.up.thread_id for cl in self.sessions.values() if cl.busy and cl.up]
        killed = await self._kill_queries(busy) if busy and not self._immediate else 0
        log.warning(
            "event=shutdown sessions=%d drained_seconds=%.1f killed_queries=%d",
            len(self.sessions),
            trio.current_time() - self._shutdown_started,
            killed,
        )

    async def _kill_queries(self, thread_ids: list[int]) -> int:
        """Statements still running at the deadline are killed upstream, not left there."""
        killed = 0
        try:
            with trio.move_on_after(self.config.upstream.connect_timeout + 2):
                conn = await self.own_connection(next(iter(self.config.users)))
                try:
                    for tid in thread_ids:
                        try:
                            await conn.command_ok(com_query(b"KILL QUERY %d" % tid))
                            killed += 1
                        except UpstreamError:
                            pass
                finally:
                    conn.close()
        except _START_ERRORS as exc:
            log.warning("event=shutdown_kill_failed error=%r", str(exc))
        return killed

    async def _answer_peers(
        self, worker: WorkerRole, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The other workers ask this one for its admin views and to KILL its sessions."""
        from tainted_proxy.admin import fleet
        from tainted_proxy.frontend import kill
        from tainted_proxy.peers import server  # (only workers answer peers)

        handlers = {**fleet.handlers(self), "kill": kill.peer_handler(self)}
        path = socket_path(worker.shared_path, worker.index)
        await server.serve(path, handlers, task_status=task_status)

    async def _watch_parent(self, parent_pid: int) -> None:
        """A worker outliving its parent (killed without forwarding a signal) would
        serve on with nobody to stop it: shut down gracefully instead."""
        while os.getppid() == parent_pid:
            await trio.sleep(PARENT_WATCH)
        log.warning("event=shutdown_started signal=parent_gone sessions=%d", len(self.sessions))
        self.request_shutdown()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                name = signal.Signals(sig).name
                if sig == signal.SIGHUP:
                    self.reload()
                elif self.draining:
                    log.warning("event=shutdown_now signal=%s", name)
                    self.request_shutdown(immediate=True)
                else:
                    log.warning(
                        "event=shutdown_started signal=%s sessions=%d timeout=%ss",
                        name,
                        len(self.sessions),
                        self.config.proxy.shutdown_timeout,
                    )
                    self.request_shutdown()

    def reload(self) -> bool:
        """Read the configuration file again (SIGHUP) and apply what can change while
        clients stay connected: users, passwords, modes, limits, pool timeouts, log
        level. A new config that does not validate is rejected (the old one stays)."""
        if self.config_path is None:
            log.warning("event=reload_refused reason='no configuration file'")
            return False
        try:
            new = self.reconfigure(load_config(self.config_path))
        except ConfigError as exc:
            log.error("event=reload_failed file=%s error=%r", self.config_path, str(exc))
            return False
        kept = [
            name
            for name, old, now in (
                ("proxy.listen", self.config.proxy.listen, new.proxy.listen),
                ("proxy.workers", self.config.proxy.workers, new.proxy.workers),
                ("upstream", self.config.upstream.model_dump(), new.upstream.model_dump()),
            )
            if old != now
        ]
        if kept:
            log.warning("event=reload_needs_restart changed=%s (kept as they were)", kept)
            data = new.model_dump()
            data["proxy"]["listen"] = self.config.proxy.listen
            data["proxy"]["workers"] = self.config.proxy.workers
            data["upstream"] = self.config.upstream.model_dump()
            new = type(new).model_validate(data)
        self.config = new
        self.pool.budget.per_user_max = _caps_by_upstream_user(new)
        self.pool.idle_timeout = new.pool.idle_timeout
        self.pool.max_lifetime = new.pool.max_lifetime
        logging.getLogger().setLevel(getattr(logging, new.log.level.upper()))
        log.warning("event=reloaded file=%s users=%d", self.config_path, len(new.users))
        return True
