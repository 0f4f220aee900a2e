"""Run a proxy in a background thread (its own Trio loop), for tests and the demo, so
blocking client libraries can talk to it from the main thread."""

from __future__ import annotations

import json
import threading
from typing import Any

import trio

from tainted_proxy.app import Proxy
from tainted_proxy.config import Config, parse_config


def config_for(
    host: str,
    port: int,
    *,
    users: dict[str, dict[str, Any]] | None = None,
    upstream: dict[str, Any] | None = None,
    proxy: dict[str, Any] | None = None,
    pool: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
) -> Config:
    """A Config for a proxy on a free port in front of ``host:port`` (TOML built from
    dicts, so it goes through the same validation as a file). The admin HTTP endpoint is
    off unless ``admin`` says otherwise (e.g. ``{"listen": "127.0.0.1:0"}``)."""
    users = users or {"root": {"password": ""}}

    def table(name: str, values: dict[str, Any]) -> str:
        lines = [f"[{name}]"]
        for k, v in values.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, list):
                lines.append(f"{k} = {json.dumps(v)}")
            elif isinstance(v, int | float):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {str(v)!r}".replace("'", '"'))
        return "\n".join(lines)

    parts = [
        table("proxy", {"listen": "127.0.0.1:0", **(proxy or {})}),
        table("upstream", {"host": host, "port": port, **(upstream or {})}),
    ]
    if pool:
        parts.append(table("pool", pool))
    parts.append(table("admin", {"listen": "", **(admin or {})}))
    for name, u in users.items():
        parts.append(table(f"users.{name}", u))
    return parse_config("\n\n".join(parts) + "\n", source="<test>")


class ProxyThread:
    """``with ProxyThread(config) as p: pymysql.connect(port=p.port, ...)``"""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.proxy = Proxy(config)
        self.port = 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None

    def start(self) -> ProxyThread:
        self._thread = threading.Thread(target=self._main, name="tainted-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self.port:
            raise RuntimeError("proxy did not start within 30 s")
        return self

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    self.port = await nursery.start(self.proxy.serve)
                    self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            try:
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            self._thread.join(10)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` inside the proxy's Trio thread (to read its state safely)."""
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
