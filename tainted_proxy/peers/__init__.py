"""The channel between the worker processes of ``serve --workers N``.

Each worker answers the others on a Unix socket beside the shared budget file, in the
set's private directory (mode 0700, pool.shared): one request, one reply, one connection. What a worker is asked: a part of
the admin views (admin.fleet gathers and merges them, so any worker's admin surface shows
every worker), its ``/metrics`` text, and ``KILL`` of a session it owns
(frontend.kill). Besides the directory, each side checks that the other runs as the same
user (SO_PEERCRED), and the socket itself is mode 0600.

``codec`` frames the messages (sans-IO), ``server`` answers, ``client`` asks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["WorkerRole", "socket_path"]


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process is worker ``index`` of ``count`` (``serve --workers``, tainted_proxy.
    workers): it shares the upstream budget in ``shared_path`` with the others, gives
    out the client ids ``≡ index (mod count)``, serves the admin endpoint on its port +
    ``index``, answers the other workers on ``socket_path(shared_path, index)`` (admin
    views, KILL), and stops when the parent ``parent_pid`` is gone."""

    index: int
    count: int
    shared_path: str
    parent_pid: int


def socket_path(shared_path: str, index: int) -> str:
    """Where worker ``index`` listens: beside the budget file ``shared_path``, in the set's
    private directory (pool.shared.create_file)."""
    return os.path.join(os.path.dirname(shared_path), f"worker-{index}.sock")
