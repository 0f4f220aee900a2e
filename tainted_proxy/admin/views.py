"""What every admin interface reads: the views of this process, or of every worker.

A ``Views`` answers ``sessions()``, ``pools()``, ``report(minutes)``... from parts, one
per process (admin.snapshot builds a part, admin.merge makes the parts one view). With
one process (``local``) each part is built when asked; with ``serve --workers N``,
admin.fleet gathers the parts from every worker first, so the HTTP endpoint and the SQL
console of any worker show all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tainted_proxy.admin import merge, snapshot

if TYPE_CHECKING:
    from tainted_proxy.frontend.client import Services as Proxy

__all__ = ["PARTS", "Views", "local"]

#: part name -> how one process builds it
PARTS: dict[str, Callable[[Proxy], Any]] = {
    "sessions": snapshot.sessions,
    "servers": snapshot.servers,
    "pools": snapshot.pools,
    "totals": snapshot.totals_part,
    "stats": snapshot.stats,
    "ledger": snapshot.ledger_part,
}


class Views:
    """The admin views over ``parts(name)``: one ``(worker, part)`` per process."""

    def __init__(
        self,
        proxy: Proxy,
        parts: Callable[[str], list[merge.Part]],
        missing: tuple[int, ...] = (),
    ) -> None:
        self.proxy = proxy
        self._parts = parts
        #: workers that did not answer (their sessions and counts are not in the views)
        self.missing = missing

    def sessions(self) -> list[dict[str, Any]]:
        return merge.rows(self._parts("sessions"), "id")

    def servers(self) -> list[dict[str, Any]]:
        return merge.rows(self._parts("servers"), "thread_id")

    def pools(self) -> list[dict[str, Any]]:
        return merge.pools(self._parts("pools"))

    def totals(self) -> dict[str, Any]:
        return merge.totals(self._parts("totals"))

    def stats(self) -> dict[str, Any]:
        return merge.stats(self._parts("stats"))

    def report(self, minutes: int = 5) -> dict[str, Any]:
        return merge.report(
            self._parts("ledger"), minutes, self.proxy.accounting.now(), time.time()
        )

    def config(self) -> dict[str, Any]:
        return snapshot.config(self.proxy)  # the same file in every worker


def local(proxy: Proxy) -> Views:
    """This process's views, each part built when read."""
    return Views(proxy, lambda name: [(None, PARTS[name](proxy))])
