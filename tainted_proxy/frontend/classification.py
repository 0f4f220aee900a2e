"""Classifying a client's statement text without stalling the other sessions.

The classifier (``taint.classifier``) is plain synchronous code, and it is fast for what
applications send over and over: a cache hit or the gate's verdict costs a few
microseconds. A long text the gate cannot clear is different: a batch of 20,000
``INSERT``s in one text takes about 0.45 s to analyse, a megabyte-long expression
0.5 s or more, and on the event loop that time is taken from every session. Texts of
``OFFLOAD_MIN`` bytes or more that the cache and the gate cannot answer are analysed in
a worker thread (at most ``THREADS`` at once), while the loop goes on serving the others.
"""

from __future__ import annotations

import sys

import trio
from trio.lowlevel import RunVar

from tainted_proxy.taint.classifier import MISS, analyse, lookup, remember
from tainted_proxy.taint.effects import Classification

__all__ = ["OFFLOAD_MIN", "classify_long"]

#: Shorter texts are analysed on the event loop (at most a few milliseconds).
OFFLOAD_MIN = 64 * 1024
#: Long analyses at once; more would only share the same CPU (and the GIL).
THREADS = 2
#: How long a thread may hold the GIL while another waits for it (CPython's default is
#: 5 ms). While an analysis runs, the event loop waits that long for the GIL again and
#: again: measured with bench/long_texts.py, a light client's p99 was 21 ms at 5 ms and
#: 5 ms at 1 ms. Set once, at the first long analysis (it changes nothing while the loop
#: is the only thread that runs).
SWITCH_INTERVAL = 0.001

_LIMITER: RunVar[trio.CapacityLimiter] = RunVar("tainted_proxy.classification")


def _limiter() -> trio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(THREADS)
        _LIMITER.set(limiter)
        return limiter


async def classify_long(sql: bytes, flags: int) -> Classification | None:
    """``classify_flags(sql, flags)`` for a text of ``OFFLOAD_MIN`` or more (callers test
    the length: a shorter one is ``classify_flags`` on the loop, with no coroutine to
    run on the hot path), its analysis in a worker thread."""
    r = lookup(sql, flags)
    if r is not MISS:
        return r  # type: ignore[return-value]
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    c = await trio.to_thread.run_sync(analyse, sql, flags & 3, limiter=_limiter())
    remember(sql, flags, c)
    return c
