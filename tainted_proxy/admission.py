"""Who may try to log in: failed logins are counted per client address, and an address
with too many in the last window is refused at once (ERR 1129, as a MySQL server blocks a
host) until the window has passed, so a password-guessing client cannot try at full speed
while everyone else logs in normally. Pure: the caller passes the clock."""

from __future__ import annotations

from collections import deque


class FailedLogins:
    def __init__(self, limit: int, window: float, max_addresses: int = 10_000) -> None:
        self.limit = limit  # 0: never refuse
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        q = self._failures.get(address)
        if q is None:
            return None
        while q and now - q[0] > self.window:
            q.popleft()
        if not q:
            del self._failures[address]
            return None
        return q

    def blocked(self, address: str, now: float) -> bool:
        if not self.limit:
            return False
        q = self._recent(address, now)
        return q is not None and len(q) >= self.limit

    def failed(self, address: str, now: float) -> None:
        if not self.limit:
            return
        q = self._recent(address, now)
        if q is None:
            if len(self._failures) >= self.max_addresses:
                # bounded memory: forget the address that failed longest ago
                oldest = min(self._failures, key=lambda a: self._failures[a][-1])
                del self._failures[oldest]
            q = self._failures[address] = deque()
        q.append(now)
        if len(q) > self.limit:
            q.popleft()
