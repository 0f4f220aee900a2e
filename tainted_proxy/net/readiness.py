"""Read readiness of the hot path's sockets: one persistent edge-triggered epoll.

``trio.lowlevel.wait_readable`` re-arms the socket in Trio's epoll on every wait
(EPOLLONESHOT: an ``epoll_ctl`` syscall plus registration bookkeeping), twice per
statement. Here every ``Conn`` socket is registered once, edge-triggered, in one epoll
per Trio run; one system task waits on that epoll's own fd and wakes the task parked on
each ready socket (``wait_task_rescheduled`` / ``reschedule``). An edge that arrives
while nobody waits sets a ready flag, so the next wait returns at once. Measured:
../shared/reference/trio-io-costs.md ("park"), and docs/benchmarks.md.

Edge-triggered rules the caller keeps (net.conn): wait only after a read found the socket
empty (EAGAIN, or a read shorter than the room it was given); a spurious wake-up is
harmless (the read after it meets EAGAIN and waits again). Writes that would block wait
through Trio itself (rare, and EPOLLOUT edges would fire on every ACK).
"""

from __future__ import annotations

import select
import socket

import outcome
import trio
from trio.lowlevel import (
    Abort,
    RunVar,
    Task,
    current_task,
    reschedule,
    spawn_system_task,
    wait_readable,
    wait_task_rescheduled,
)

_EVENTS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
_BATCH = 1024


class Readiness:
    """The epoll, the tasks parked on its sockets, and the edges nobody waited for."""

    __slots__ = ("_ep", "_waiters", "_ready")

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._waiters: dict[int, Task] = {}
        self._ready: set[int] = set()

    def register(self, sock: socket.socket) -> int:
        fd = sock.fileno()
        try:
            self._ep.register(fd, _EVENTS)
        except FileExistsError:  # a closed socket's number, reused before its unregister
            self._ep.modify(fd, _EVENTS)
        self._ready.add(fd)  # bytes may have arrived before the registration
        return fd

    def unregister(self, fd: int) -> None:
        """Forget ``fd`` (before its socket is closed: its number will be reused); a task
        parked on it gets ClosedResourceError, as Trio's ``notify_closing`` gives."""
        self._ready.discard(fd)
        task = self._waiters.pop(fd, None)
        if task is not None:
            reschedule(task, outcome.Error(trio.ClosedResourceError("socket closed")))
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass

    async def wait(self, fd: int) -> None:
        """Until ``fd`` is readable (or closed, or hung up). Not a checkpoint when an edge
        is already waiting, like Trio's I/O fast paths."""
        ready = self._ready
        if fd in ready:
            ready.discard(fd)
            return
        waiters = self._waiters
        if fd in waiters:
            raise trio.BusyResourceError("another task is already reading this socket")
        waiters[fd] = current_task()

        def abort(_: object) -> Abort:
            waiters.pop(fd, None)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    async def run(self) -> None:
        ep = self._ep
        poll = ep.poll
        waiters = self._waiters
        ready = self._ready
        try:
            while True:
                await wait_readable(ep)
                for fd, _events in poll(0, _BATCH):
                    task = waiters.pop(fd, None)
                    if task is None:
                        ready.add(fd)
                    else:
                        reschedule(task)
        finally:
            for task in waiters.values():
                reschedule(task, outcome.Error(trio.ClosedResourceError("shutting down")))
            waiters.clear()
            ep.close()


_CURRENT: RunVar[Readiness] = RunVar("tainted_proxy.readiness")


def current() -> Readiness:
    """This Trio run's Readiness, started on first use."""
    try:
        return _CURRENT.get()
    except LookupError:
        r = Readiness()
        _CURRENT.set(r)
        spawn_system_task(r.run, name="tainted_proxy.readiness")
        return r
