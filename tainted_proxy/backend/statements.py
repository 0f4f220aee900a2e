"""The binary prepared statements cached on one upstream connection: which statements
are prepared there under which upstream id (``state.statements.UpstreamStatements``, an
LRU), plus the COM_STMT_CLOSEs of evicted ones still to send (in the same write as the
next command, so the server never holds more than ``pool.prepared_statement_cache``).
"""

from __future__ import annotations

from collections.abc import Hashable

from tainted_proxy.state.statements import UpstreamStatements, com_stmt_close
from tainted_proxy.wire.codec import frame


class ConnStatements(UpstreamStatements):
    """``UpstreamStatements`` of one connection, plus the COM_STMT_CLOSEs still to send."""

    __slots__ = ("pending_close",)

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.pending_close: list[int] = []

    def forget_all(self) -> None:
        super().forget_all()
        self.pending_close.clear()

    def make_room(self, key: Hashable, keep: set[Hashable]) -> None:
        """Before preparing ``key`` here: evict least recently used entries (not in
        ``keep``) so that adding it stays within capacity; their ids go to
        ``pending_close``, sent in the same write as the prepare."""
        cache = self._cache
        if key in cache or len(cache) < self.capacity:
            return
        if not keep:
            while len(cache) >= self.capacity:
                self.pending_close.append(cache.popitem(last=False)[1].upstream_id)
            return
        for k in list(cache):
            if len(cache) < self.capacity:
                break
            if k not in keep:
                self.pending_close.append(cache.pop(k).upstream_id)

    def take_closes(self) -> bytes:
        """The framed COM_STMT_CLOSEs to send before the next command (then forgotten)."""
        if not self.pending_close:
            return b""
        out = b"".join(frame(com_stmt_close(i), 0)[0] for i in self.pending_close)
        self.pending_close.clear()
        return out
