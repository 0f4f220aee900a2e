"""The admin HTTP endpoint: JSON views, ``/metrics`` and the page, on the proxy's event loop.

A Starlette application served by Hypercorn's Trio worker (``hypercorn.trio.serve``) in
the proxy's own nursery (app.Proxy.serve). Every handler is ``async``, so it runs on the
Trio thread and reads the proxy's state directly through admin.views (with ``serve
--workers N``, admin.fleet first gathers every worker's part); nothing here runs in a
worker thread except StaticFiles reading the page's files from disk.

Routes (docs/admin.md): ``/report`` (``?minutes=N``), ``/pools``, ``/sessions``,
``/servers``, ``/stats``, ``/config`` (JSON), ``/metrics`` (Prometheus text), ``/`` (the
page) and ``/static/*`` (its files, shipped in the package).

Access: with ``[admin] token`` every request needs ``Authorization: Bearer <token>`` or
the cookie ``POST /login`` sets after checking that header (so a browser can use the page:
the 401 page for a browser asks for the token). Without a token (allowed on loopback
addresses only, config.AdminConfig), the endpoint is open to local clients, and requests
whose ``Host`` is not a loopback name are refused (a web page's DNS rebinding cannot read
it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from tainted_proxy.accounting import WINDOW_MINUTES
from tainted_proxy.admin import fleet, metrics, views
from tainted_proxy.config import is_loopback_host, parse_listen

if TYPE_CHECKING:
    from tainted_proxy.frontend.client import Services as Proxy

STATIC = Path(__file__).parent / "static"
COOKIE = "tainted_proxy_admin"
DEFAULT_MINUTES = 5
#: the classic text format every Prometheus version scrapes (generate_latest writes it)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MISSING_HEADER = "X-Tainted-Proxy-Workers-Missing"

log = logging.getLogger("tainted_proxy.admin.http")

# -- Hypercorn's own log lines go through a logger of ours (its "Running on" line is
# replaced by the proxy's one line with the address) -------------------------------------
_server_log = logging.getLogger("tainted_proxy.admin.hypercorn")
_server_log.addFilter(lambda record: not str(record.msg).startswith("Running on"))

_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

# The 401 page a browser gets: a token field; the script sends it as a bearer header to
# POST /login, which sets the cookie, then reloads.
_LOGIN_SCRIPT = """
document.getElementById('f').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const t = document.getElementById('t').value.trim();
  const r = await fetch('/login', {method: 'POST', headers: {'Authorization': 'Bearer ' + t}});
  if (r.ok) { location.reload(); } else { document.getElementById('m').textContent = 'wrong token'; }
});
"""
_LOGIN_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tainted-proxy admin: token</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font: 15px system-ui, sans-serif; margin: 3em">
<h1 style="font-size: 1.3em">tainted-proxy admin</h1>
<p>This endpoint needs the token of <code>[admin] token</code>.</p>
<form id="f"><input id="t" type="password" autocomplete="current-password" size="40"
 aria-label="token" autofocus> <button>Open</button> <span id="m"></span></form>
<script>{_LOGIN_SCRIPT}</script>
</body></html>
"""
_LOGIN_CSP = (
    "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; "
    "script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_LOGIN_SCRIPT.encode()).digest()).decode()
    + "'"
)


def cookie_value(token: str) -> str:
    """What the login cookie holds: derived from the token, not the token itself."""
    return hmac.new(token.encode(), b"tainted-proxy admin cookie", hashlib.sha256).hexdigest()


def _host_is_loopback(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback_host(host)


class Guard:
    """ASGI middleware: the bearer token (or the login cookie) on every HTTP request; on an
    open endpoint, a loopback ``Host`` header."""

    def __init__(self, app: ASGIApp, token: str, open_loopback: bool) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie_value(token) if token else ""
        self.open_loopback = open_loopback

    def authorized(self, headers: Headers) -> bool:
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        ):
            return True
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.cookie.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        response: Response | None = None
        if self.token:
            if not self.authorized(headers):
                response = _unauthorized(headers)
        elif self.open_loopback and not _host_is_loopback(headers.get("host", "")):
            response = JSONResponse(
                {"error": "this admin endpoint has no token: use a loopback host name"},
                status_code=403,
            )
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return ""


def _unauthorized(headers: Headers) -> Response:
    auth = {"WWW-Authenticate": 'Bearer realm="tainted-proxy admin"', "Cache-Control": "no-store"}
    if "text/html" in headers.get("accept", ""):
        return HTMLResponse(
            _LOGIN_PAGE,
            status_code=401,
            headers={**auth, "Content-Security-Policy": _LOGIN_CSP},
        )
    return JSONResponse(
        {"error": "unauthorized: send Authorization: Bearer <[admin] token>"},
        status_code=401,
        headers=auth,
    )


def _json(data: Any, v: views.Views | None = None) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if v is not None and v.missing:
        # with serve --workers N: these workers did not answer, their part is not here
        headers[MISSING_HEADER] = ",".join(map(str, v.missing))
    return JSONResponse(data, headers=headers)


def create_app(proxy: Proxy, *, token: str = "", open_loopback: bool = True) -> ASGIApp:
    """The admin application for ``proxy`` (``token`` "" = no token)."""
    registry = metrics.registry_for(proxy)
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    async def report(request: Request) -> Response:
        raw = request.query_params.get("minutes", str(DEFAULT_MINUTES))
        try:
            minutes = int(raw)
        except ValueError:
            minutes = 0
        if not 1 <= minutes <= WINDOW_MINUTES:
            return JSONResponse(
                {"error": f"minutes must be an integer from 1 to {WINDOW_MINUTES}, got {raw!r}"},
                status_code=400,
            )
        v = await fleet.views(proxy, ["ledger"])
        return _json(v.report(minutes), v)

    async def pools(request: Request) -> Response:
        v = await fleet.views(proxy, ["totals", "pools"])
        return _json({"totals": v.totals(), "pools": v.pools()}, v)

    async def sessions(request: Request) -> Response:
        v = await fleet.views(proxy, ["sessions"])
        return _json(v.sessions(), v)

    async def servers(request: Request) -> Response:
        v = await fleet.views(proxy, ["servers"])
        return _json(v.servers(), v)

    async def stats(request: Request) -> Response:
        v = await fleet.views(proxy, ["stats"])
        return _json(v.stats(), v)

    async def config(request: Request) -> Response:
        return _json(views.local(proxy).config())

    async def prometheus(request: Request) -> Response:
        text = await fleet.metrics_text(proxy, registry)
        return Response(text, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def index(request: Request) -> Response:
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": _PAGE_CSP,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def login(request: Request) -> Response:
        # reached only with a valid bearer header (Guard): remember it in a cookie
        response = Response(status_code=204)
        if token:
            response.set_cookie(
                COOKIE, cookie_value(token), httponly=True, samesite="strict", path="/"
            )
        return response

    routes = [
        Route("/", index),
        Route("/report", report),
        Route("/pools", pools),
        Route("/sessions", sessions),
        Route("/servers", servers),
        Route("/stats", stats),
        Route("/config", config),
        Route("/metrics", prometheus),
        Route("/login", login, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Guard(Starlette(routes=routes), token, open_loopback)


def bind(listen: str) -> socket.socket:
    """The admin listening socket (bound, not yet listening); OSError says which key."""
    host, port = parse_listen(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise OSError(exc.errno, f"[admin] listen = {listen!r}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_admin(
    proxy: Proxy,
    sock: socket.socket,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin application on ``sock`` (from :func:`bind`) until cancelled or
    ``shutdown_trigger`` returns; ``task_status.started(url)``."""
    cfg = proxy.config.admin
    app = create_app(
        proxy, token=cfg.token, open_loopback=is_loopback_host(parse_listen(cfg.listen)[0])
    )
    url = url_of(sock)
    hc = HypercornConfig()
    hc.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket from here on
    hc.accesslog = None
    hc.errorlog = _server_log
    hc.graceful_timeout = 1.0
    hc.include_server_header = False

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, hc, shutdown_trigger=shutdown_trigger, mode="asgi"))
        task_status.started(url)
