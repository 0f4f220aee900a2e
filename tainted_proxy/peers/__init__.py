"""The channel between the worker processes of ``serve --workers N``.

Each worker answers the others on a Unix socket beside the shared budget file
(pool.shared): one request, one reply, one connection. What a worker is asked: a part of
the admin views (admin.fleet gathers and merges them, so any worker's admin surface shows
every worker), its ``/metrics`` text, and ``KILL`` of a session it owns
(frontend.kill). The socket is created mode 0600 and a connecting process must run as
the same user (SO_PEERCRED), as the shared file is.

``codec`` frames the messages (sans-IO), ``server`` answers, ``client`` asks.
"""

from __future__ import annotations

__all__ = ["socket_path"]


def socket_path(shared_path: str, index: int) -> str:
    """Where worker ``index`` of the set whose budget file is ``shared_path`` listens."""
    return f"{shared_path}.{index}.sock"
