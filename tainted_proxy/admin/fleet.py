"""The admin views of every worker of ``serve --workers N``, on any worker.

``views(proxy, names)`` asks every other worker for its parts (peers.client, all at
once, ``PEER_TIMEOUT`` each) and builds them here, then admin.views merges them; a worker
that does not answer is left out, logged, and named in ``Views.missing`` (the HTTP views
say so in the ``X-Tainted-Proxy-Workers-Missing`` header). ``metrics`` does the same
for the ``/metrics`` text. ``handlers`` are what this worker answers the others
(peers.server). With one process none of this runs: ``views.local``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from tainted_proxy.admin import merge, metrics
from tainted_proxy.admin.views import PARTS, Views, local
from tainted_proxy.peers import socket_path
from tainted_proxy.peers.client import PeerUnavailable, ask
from tainted_proxy.peers.server import Handler

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from tainted_proxy.frontend.client import Services as Proxy

__all__ = ["PEER_TIMEOUT", "handlers", "metrics_text", "views"]

log = logging.getLogger("tainted_proxy.admin")

#: a worker answers a view from memory: more than this means it is stuck or gone
PEER_TIMEOUT = 2.0


async def _ask_all(proxy: Proxy, request: dict[str, Any]) -> dict[int, dict[str, Any] | None]:
    """Every other worker's reply (None: it did not answer)."""
    w = proxy.worker
    assert w is not None
    replies: dict[int, dict[str, Any] | None] = {}

    async def one(i: int) -> None:
        try:
            reply = await ask(socket_path(w.shared_path, i), request, PEER_TIMEOUT)
        except PeerUnavailable as exc:
            log.warning("event=admin_worker_unavailable worker=%d error=%r", i, str(exc))
            replies[i] = None
            return
        if "error" in reply:
            log.warning("event=admin_worker_failed worker=%d error=%r", i, reply["error"])
            replies[i] = None
            return
        replies[i] = reply

    async with trio.open_nursery() as nursery:
        for i in range(w.count):
            if i != w.index:
                nursery.start_soon(one, i)
    return replies


async def views(proxy: Proxy, names: Iterable[str] = PARTS) -> Views:
    """The views of every worker (``names``: the parts they need), or of this process."""
    w = proxy.worker
    if w is None:
        return local(proxy)
    names = list(names)
    replies = await _ask_all(proxy, {"op": "parts", "names": names})
    parts: dict[str, list[merge.Part]] = {n: [(w.index, PARTS[n](proxy))] for n in names}
    for i, reply in sorted(replies.items()):
        got = reply.get("parts") if reply is not None else None
        if not isinstance(got, dict) or not all(n in got for n in names):
            replies[i] = None  # (a worker of another version, say): left out, named
            continue
        for n in names:
            parts[n].append((i, got[n]))
    for n in names:
        parts[n].sort(key=lambda p: p[0])
    missing = tuple(i for i, r in sorted(replies.items()) if r is None)
    return Views(proxy, lambda name: parts[name], missing)


async def metrics_text(proxy: Proxy, registry: CollectorRegistry) -> bytes:
    """``/metrics``: this process's, or every worker's with a ``worker`` label."""
    own = metrics.render(registry)
    w = proxy.worker
    if w is None:
        return own
    replies = await _ask_all(proxy, {"op": "metrics"})
    texts = [(w.index, own.decode())]
    texts += [(i, r["text"]) for i, r in replies.items() if r and isinstance(r.get("text"), str)]
    answered = {i for i, _ in texts}
    missing = [i for i in replies if i not in answered]
    return merge.metrics(sorted(texts), missing)


def handlers(proxy: Proxy) -> dict[str, Handler]:
    """What this worker answers the others about its admin views."""
    registry = metrics.registry_for(proxy)

    async def parts(request: dict[str, Any]) -> dict[str, Any]:
        names = [n for n in request.get("names", ()) if n in PARTS]
        return {"parts": {n: PARTS[n](proxy) for n in names}}

    async def metrics_op(request: dict[str, Any]) -> dict[str, Any]:
        return {"text": metrics.render(registry).decode()}

    return {"parts": parts, "metrics": metrics_op}
