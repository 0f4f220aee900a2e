"""The admin HTTP application without a database: routes, the bearer token and the login
cookie, the loopback Host check, ?minutes validation (httpx over ASGI, in the test's Trio
loop); and the real Hypercorn server on a socket, stopped by its shutdown trigger."""

from __future__ import annotations

import json
import urllib.request

import httpx
import pytest
import trio

from tainted_proxy.admin import http as admin_http
from tainted_proxy.app import Proxy
from tainted_proxy.config import parse_config

TOKEN = "s3cret-admin-token"
BASE = '[users.app]\npassword = "x"\npool_mode = "transaction"\n'
JSON_ROUTES = ["/report", "/pools", "/sessions", "/servers", "/stats", "/config"]
ALL_ROUTES = [*JSON_ROUTES, "/metrics", "/", "/static/app.js", "/static/app.css"]


def client(token: str = "", open_loopback: bool = True, host: str = "127.0.0.1:6034"):
    text = BASE + (f'[admin]\ntoken = "{token}"\n' if token else "")
    proxy = Proxy(parse_config(text))
    app = admin_http.create_app(proxy, token=token, open_loopback=open_loopback)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", ALL_ROUTES)
async def test_every_route_needs_the_token(path):
    async with client(TOKEN) as c:
        r = await c.get(path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await c.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await c.get(path, headers={"Authorization": f"Basic {TOKEN}"})).status_code == 401
        ok = await c.get(path, headers=BEARER)
        assert ok.status_code == 200, ok.text


async def test_json_routes_and_shapes():
    async with client(TOKEN) as c:
        data = {p[1:]: (await c.get(p, headers=BEARER)).json() for p in JSON_ROUTES}
    assert set(data["report"]) >= {"ledger", "recent", "series", "pins_by_reason", "window_minutes"}
    assert len(data["report"]["series"]) == data["report"]["window_minutes"] == 5
    assert set(data["pools"]) == {"totals", "pools"}
    assert data["sessions"] == [] and data["servers"] == []
    assert "pool" in data["stats"] and "errors" in data["stats"]
    # passwords and the token are never shown
    assert data["config"]["users"]["app"]["password"] == "(set)"
    assert data["config"]["admin"]["token"] == "(set)"
    assert TOKEN not in json.dumps(data)


async def test_report_minutes():
    async with client() as c:
        r = await c.get("/report?minutes=15")
        assert r.json()["window_minutes"] == 15 and len(r.json()["series"]) == 15
        for bad in ("0", "61", "x", "-1"):
            r = await c.get(f"/report?minutes={bad}")
            assert r.status_code == 400
            assert "minutes must be an integer from 1 to 60" in r.json()["error"]


async def test_browser_gets_a_login_page_then_a_cookie():
    async with client(TOKEN) as c:
        r = await c.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert r.status_code == 401
        assert "text/html" in r.headers["content-type"]
        assert "[admin] token" in r.text
        assert "script-src 'sha256-" in r.headers["content-security-policy"]
        # /login needs the bearer header like everything else
        assert (await c.post("/login")).status_code == 401
        r = await c.post("/login", headers=BEARER)
        assert r.status_code == 204
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert TOKEN not in cookie  # a value derived from the token, not the token
        # the client keeps the cookie: the page and the views open without the header
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/sessions")).status_code == 200
        c.cookies.clear()
        c.cookies.set(admin_http.COOKIE, "forged")
        assert (await c.get("/sessions")).status_code == 401


async def test_open_endpoint_refuses_non_loopback_host_names():
    for host in ("127.0.0.1:6034", "localhost:6034", "[::1]:6034", "127.0.0.1"):
        async with client(host=host) as c:
            assert (await c.get("/stats")).status_code == 200, host
    async with client(host="evil.example:6034") as c:
        r = await c.get("/stats")
        assert r.status_code == 403
        assert "loopback" in r.json()["error"]
    # with a token the Host is not checked (the endpoint may be behind any name)
    async with client(TOKEN, open_loopback=False, host="admin.example:443") as c:
        assert (await c.get("/stats", headers=BEARER)).status_code == 200


async def test_page_and_assets():
    async with client() as c:
        r = await c.get("/")
        assert r.status_code == 200
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert '<script src="/static/app.js"' in r.text
        js = await c.get("/static/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert "innerHTML" not in js.text  # values from clients are written as text only
        assert (await c.get("/static/nope.js")).status_code == 404
        assert (await c.get("/nope")).status_code == 404
        assert (await c.post("/stats")).status_code == 405


def test_bind_errors_name_the_key():
    sock = admin_http.bind("127.0.0.1:0")
    try:
        port = sock.getsockname()[1]
        sock.listen(1)
        with pytest.raises(OSError, match=r"\[admin\] listen = '127.0.0.1:\d+': "):
            admin_http.bind(f"127.0.0.1:{port}")
    finally:
        sock.close()


async def test_hypercorn_serves_on_trio_and_stops_on_its_trigger():
    proxy = Proxy(parse_config(BASE + '[admin]\nlisten = "127.0.0.1:0"\n'))
    stop = trio.Event()
    sock = admin_http.bind(proxy.config.admin.listen)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: admin_http.serve_admin(
                proxy, sock, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        assert url.startswith("http://127.0.0.1:")

        def get(path: str) -> tuple[int, str, bytes]:
            with urllib.request.urlopen(url + path, timeout=5) as r:
                return r.status, r.headers["Content-Type"], r.read()

        status, ctype, body = await trio.to_thread.run_sync(get, "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert b"tainted_proxy_sessions" in body
        status, _, body = await trio.to_thread.run_sync(get, "/pools")
        assert json.loads(body)["totals"]["client_sessions"] == 0
        with trio.fail_after(5):
            stop.set()  # serve_admin returns: the nursery can close
