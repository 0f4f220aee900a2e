"""One upstream budget shared by the worker processes of ``serve --workers N``.

The parent creates a small file (in /dev/shm when there is one) and every worker maps
it. Each worker owns one row: its slots (upstream connections open, being opened, or
closing with the slot held), the same per upstream login, and what it publishes for the
others: clients short of a slot, idle connections held, closes under way for the others.
A worker only ever writes its own row; a reservation (check the sums over all rows, then
count) runs under an exclusive ``flock`` on the file, so two workers never both take the
last slot. Giving a slot back is one store to the worker's own row and needs no lock (a
reader that misses it sees one slot too many: the safe side). The critical sections are
a few reads and never span an await.

The decisions are pool.budget's (``may_reserve``, ``fair_share``...); this module only
reads and writes the counts. With one worker (the default) none of this exists: the pool
keeps the in-process ``budget.Budget``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tainted_proxy.pool import budget as decide

if TYPE_CHECKING:
    from tainted_proxy.pool.budget import PoolKey

__all__ = ["SharedBudget", "SharedView", "create_file", "MAX_WORKERS"]

log = logging.getLogger("tainted_proxy.pool")

MAX_WORKERS = 64
MAGIC = 0x54505743  # "TPWC"
#: upstream logins the file can tell apart (a login past them has its per-login cap
#: counted in its worker only; logged once)
LOGINS = 512
_HEADER = 8  # words: magic, workers, reserved
_TABLE = 2 * LOGINS  # words: a 16-byte digest per login slot
# fields of a worker's row (words), then one count per login slot
PID, TOTAL, SHORT, IDLE, YIELDING, WAITING = range(6)
_FIELDS = 8
_ROW = _FIELDS + LOGINS
_WORD = 8


def _size(workers: int) -> int:
    return (_HEADER + _TABLE + workers * _ROW) * _WORD


def create_file(workers: int) -> str:
    """The parent: a zeroed file for ``workers`` workers; returns its path (the caller
    removes it at exit)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be 1..{MAX_WORKERS}")
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="tainted-proxy-workers-", dir=where)
    try:
        os.ftruncate(fd, _size(workers))
        with mmap.mmap(fd, _size(workers)) as mm:
            words = memoryview(mm).cast("q")
            words[0] = MAGIC
            words[1] = workers
            del words
    finally:
        os.close(fd)
    return path


def _digest(login: str) -> tuple[int, int]:
    d = hashlib.blake2b(login.encode(), digest_size=16).digest()
    return int.from_bytes(d[:8], "little", signed=True), int.from_bytes(
        d[8:], "little", signed=True
    )


@dataclass(slots=True)
class SharedView:
    """What one worker reads of the others (unlocked: a snapshot a few µs old)."""

    total: int = 0
    others_short: int = 0
    yielding: int = 0
    demanding: int = 0
    mine: int = 0


@dataclass(eq=False)
class SharedBudget:
    """The pool's budget (the interface of ``budget.Budget``) over the shared file.
    ``total`` and ``by_user`` are this worker's own slots (the pool's own bookkeeping:
    in use + idle + leaving + opening); ``global_total()`` counts all workers'."""

    path: str
    index: int
    max_connections: int
    per_user_max: dict[str, int] = field(default_factory=dict)
    total: int = 0
    by_user: dict[str, int] = field(default_factory=dict)
    peak: int = 0
    #: workers of the file, read from its header
    workers: int = 0
    _slots: dict[str, int] = field(default_factory=dict)
    _overflow_logged: bool = False

    def __post_init__(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR)
        self._mm = mmap.mmap(self._fd, 0)
        self._w = memoryview(self._mm).cast("q")
        if self._w[0] != MAGIC:
            raise ValueError(f"{self.path}: not a tainted-proxy workers file")
        self.workers = int(self._w[1])
        if not 0 <= self.index < self.workers:
            raise ValueError(f"worker index {self.index} not in 0..{self.workers - 1}")
        self._row = _HEADER + _TABLE + self.index * _ROW
        self._w[self._row + PID] = os.getpid()

    def close(self) -> None:
        """Drop the mapping (at exit; the parent removes the file)."""
        self._w.release()
        self._mm.close()
        os.close(self._fd)

    # -- the lock ----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- logins ------------------------------------------------------------------------
    def _slot(self, login: str) -> int:
        """The login's column (-1: the table is full). Found or claimed under the lock
        the first time, then cached: a login's column never changes."""
        s = self._slots.get(login)
        if s is not None:
            return s
        hi, lo = _digest(login)
        w = self._w
        found = -1
        with self._locked():
            for i in range(LOGINS):
                at = _HEADER + 2 * i
                a, b = w[at], w[at + 1]
                if a == hi and b == lo:
                    found = i
                    break
                if a == 0 and b == 0:
                    w[at], w[at + 1] = hi, lo
                    found = i
                    break
        if found < 0 and not self._overflow_logged:
            self._overflow_logged = True
            log.warning(
                "event=workers_login_table_full logins=%d: per-login caps of further "
                "logins are counted per worker",
                LOGINS,
            )
        self._slots[login] = found
        return found

    def _sum(self, offset: int) -> int:
        w = self._w
        base = _HEADER + _TABLE + offset
        return sum(w[base + i * _ROW] for i in range(self.workers))

    def _user_count(self, login: str) -> int:
        s = self._slot(login)
        if s < 0:
            return self.by_user.get(login, 0)
        return self._sum(_FIELDS + s)

    # -- the Budget interface ----------------------------------------------------------
    def user_cap(self, user: str) -> int:
        return self.per_user_max.get(user, 0) or self.max_connections

    def global_total(self) -> int:
        return self._sum(TOTAL)

    def view(self) -> SharedView:
        """The other workers' published counts, and the global total."""
        w = self._w
        v = SharedView(mine=self.total)
        for i in range(self.workers):
            row = _HEADER + _TABLE + i * _ROW
            v.total += w[row + TOTAL]
            v.yielding += w[row + YIELDING]
            short = w[row + SHORT]
            if short > 0:
                v.demanding += 1
                if i != self.index:
                    v.others_short += short
        return v

    def can_open(self, key: PoolKey) -> bool:
        v = self.view()
        return decide.may_reserve(
            v.total,
            self.max_connections,
            self._user_count(key.user),
            self.user_cap(key.user),
            self.total,
            v.others_short,
            v.demanding + (0 if self._w[self._row + SHORT] > 0 else 1),
        )

    def try_reserve(self, key: PoolKey) -> bool:
        slot = self._slot(key.user)
        with self._locked():
            if not self.can_open(key):
                return False
            self._count(key.user, slot, 1)
        self.peak = max(self.peak, self.total)
        return True

    def unreserve(self, key: PoolKey) -> None:
        # a store to this worker's own row: no lock (see the module's docstring)
        self._count(key.user, self._slot(key.user), -1)

    def _count(self, login: str, slot: int, delta: int) -> None:
        self.total += delta
        self.by_user[login] = self.by_user.get(login, 0) + delta
        w, row = self._w, self._row
        w[row + TOTAL] = self.total
        if slot >= 0:
            w[row + _FIELDS + slot] = self.by_user[login]

    def user_full(self, user: str) -> bool:
        return self._user_count(user) >= self.user_cap(user)

    def cap_text(self) -> str:
        return (
            f"{self.global_total()}/{self.max_connections} open across {self.workers} "
            f"workers, {self.total} by this one"
        )

    # -- what this worker publishes ----------------------------------------------------
    def publish(self, *, short: int, idle: int, waiting: int, yielding: int) -> None:
        w, row = self._w, self._row
        w[row + SHORT] = short
        w[row + IDLE] = idle
        w[row + WAITING] = waiting
        w[row + YIELDING] = yielding


def read_rows(path: str) -> list[dict[str, int]]:
    """Every worker's row (tests, diagnosis): pid, total, short, idle, yielding,
    waiting."""
    with open(path, "rb") as f:
        data = f.read()
    words = memoryview(data).cast("q")
    workers = int(words[1])
    names = ("pid", "total", "short", "idle", "yielding", "waiting")
    out = []
    for i in range(workers):
        row = _HEADER + _TABLE + i * _ROW
        out.append({n: int(words[row + j]) for j, n in enumerate(names)})
    return out
