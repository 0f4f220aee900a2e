"""One upstream budget shared by the worker processes of ``serve --workers N``.

The parent creates a small file (in a private directory in /dev/shm when there is one)
and every worker maps it. Each worker owns one row: its slots (upstream connections open, being opened, or
closing with the slot held), the same per upstream login, what it publishes for the
others (clients short of a slot, idle connections held, closes under way for the
others), and its sessions pinned now per proxy user (so that ``users.NAME.max_pinned``
counts them over all workers: frontend.checkout). A worker only ever writes its own row;
a reservation (check the sums over all rows, then count) runs under an exclusive
``flock`` on the file, so two workers never both take the last slot. Giving a slot back
is one store to the worker's own row and needs no lock (a reader that misses it sees one
slot too many: the safe side); so is publishing a pinned count (max_pinned is checked
before a pinning statement runs: two pins starting at once may pass it, in one process
too). The critical sections are a few reads and never span an await. Once a worker has exited, the parent
zeroes its pinned counts (``clear_pinned``): a worker that died holding pins could not
count them down.

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
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tainted_proxy.pool import budget as decide

if TYPE_CHECKING:
    from tainted_proxy.pool.budget import PoolKey

__all__ = [
    "MAX_WORKERS",
    "SharedBudget",
    "SharedView",
    "clear_pinned",
    "create_file",
    "remove_file",
]

log = logging.getLogger("tainted_proxy.pool")

MAX_WORKERS = 64
MAGIC = 0x54505743  # "TPWC"
#: upstream logins the file can tell apart (a login past them has its per-login cap
#: counted in its worker only; logged once)
LOGINS = 512
#: proxy users the file tells apart (a user past them has users.NAME.max_pinned counted
#: in its worker only; logged once)
USERS = 512
_HEADER = 8  # words: magic, workers, reserved
# two digest tables (16 bytes per slot): upstream logins, then proxy users
_LOGIN_TABLE = _HEADER
_USER_TABLE = _LOGIN_TABLE + 2 * LOGINS
_ROWS = _USER_TABLE + 2 * USERS
# fields of a worker's row (words), then one count per login slot, then one pinned count
# per user slot
PID, TOTAL, SHORT, IDLE, YIELDING, WAITING = range(6)
_FIELDS = 8
_PINNED = _FIELDS + LOGINS
_ROW = _PINNED + USERS
_WORD = 8


def _size(workers: int) -> int:
    return (_ROWS + workers * _ROW) * _WORD


#: the file's name inside the set's private directory (the workers' sockets sit beside it)
FILE_NAME = "budget"
_DIR_PREFIX = "tainted-proxy-workers-"


def create_file(workers: int) -> str:
    """The parent: a zeroed file for ``workers`` workers, in a directory of its own (mode
    0700: no other user can read the counts, or put a socket where a worker will listen);
    returns the file's path (``remove_file`` removes it and the directory)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be 1..{MAX_WORKERS}")
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    directory = tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=where)
    path = os.path.join(directory, FILE_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
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


def remove_file(path: str) -> None:
    """The parent, at exit: the file and its directory with whatever is left in it (the
    sockets of workers that could not remove theirs)."""
    directory = os.path.dirname(path)
    if os.path.basename(directory).startswith(_DIR_PREFIX):  # never anything else
        shutil.rmtree(directory, ignore_errors=True)


def clear_pinned(path: str, index: int) -> None:
    """The parent, once worker ``index`` has exited: its sessions are gone, and so are
    their pins (a worker that crashed or was killed could not count them down)."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        words = memoryview(mm).cast("q")
        row = _ROWS + index * _ROW
        words[row + _PINNED : row + _ROW] = memoryview(bytes(USERS * _WORD)).cast("q")
        del words


def _digest(key: str) -> tuple[int, int]:
    d = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return int.from_bytes(d[:8], "little", signed=True), int.from_bytes(
        d[8:], "little", signed=True
    )


@dataclass(eq=False)
class _Table:
    """One digest table of the file: the column each key (a login, a user) counts in."""

    at: int
    capacity: int
    #: what a key past the table loses, for the warning logged once
    overflow: str
    columns: dict[str, int] = field(default_factory=dict)
    overflow_logged: bool = False


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
    _logins: _Table = field(
        default_factory=lambda: _Table(
            _LOGIN_TABLE, LOGINS, "per-login caps of further logins are counted per worker"
        )
    )
    _users: _Table = field(
        default_factory=lambda: _Table(
            _USER_TABLE, USERS, "max_pinned of further users is counted per worker"
        )
    )
    #: this worker's own pinned count per user (read back for a user past the table)
    _pinned: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR)
        self._mm = mmap.mmap(self._fd, 0)
        self._w = memoryview(self._mm).cast("q")
        if self._w[0] != MAGIC:
            raise ValueError(f"{self.path}: not a tainted-proxy workers file")
        self.workers = int(self._w[1])
        if not 0 <= self.index < self.workers:
            raise ValueError(f"worker index {self.index} not in 0..{self.workers - 1}")
        self._row = _ROWS + self.index * _ROW
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

    # -- logins and users -------------------------------------------------------------
    def _slot(self, login: str) -> int:
        return self._column(self._logins, login)

    def _column(self, table: _Table, key: str) -> int:
        """``key``'s column in ``table`` (-1: the table is full). Found or claimed under
        the lock the first time, then cached: a key's column never changes."""
        s = table.columns.get(key)
        if s is not None:
            return s
        hi, lo = _digest(key)
        w = self._w
        found = -1
        with self._locked():
            for i in range(table.capacity):
                at = table.at + 2 * i
                a, b = w[at], w[at + 1]
                if a == hi and b == lo:
                    found = i
                    break
                if a == 0 and b == 0:
                    w[at], w[at + 1] = hi, lo
                    found = i
                    break
        if found < 0 and not table.overflow_logged:
            table.overflow_logged = True
            log.warning("event=workers_table_full entries=%d: %s", table.capacity, table.overflow)
        table.columns[key] = found
        return found

    def _sum(self, offset: int) -> int:
        w = self._w
        base = _ROWS + offset
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
            row = _ROWS + i * _ROW
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

    # -- pinned sessions (users.NAME.max_pinned over all workers) ------------------------
    def publish_pinned(self, user: str, pinned: int) -> None:
        """This worker's sessions of ``user`` hold ``pinned`` pins now. One store to its
        own row, no lock: a reader that misses it is a few µs behind, as max_pinned's
        check before a statement is anyway (two pins starting at once may pass it)."""
        self._pinned[user] = pinned
        s = self._column(self._users, user)
        if s >= 0:
            self._w[self._row + _PINNED + s] = pinned

    def pinned(self, user: str) -> int:
        """``user``'s pinned sessions over all workers (this worker's own when the user
        is past the table)."""
        s = self._column(self._users, user)
        if s < 0:
            return self._pinned.get(user, 0)
        return self._sum(_PINNED + s)


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
        row = _ROWS + i * _ROW
        out.append({n: int(words[row + j]) for j, n in enumerate(names)})
    return out
