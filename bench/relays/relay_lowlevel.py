#!/usr/bin/env python3
"""Trio byte relay without the stream layer (variant a, two tasks per pair).

Same shape as relay_naive.py (one task per direction), but the sockets are plain
stdlib sockets in non-blocking mode:
  * recv_into() a preallocated bytearray and send() a memoryview slice are
    called directly; there is no Trio checkpoint around them;
  * Trio is entered only when the kernel says EAGAIN, via
    trio.lowlevel.wait_readable / wait_writable (public API);
  * fairness: after FAIR_EVERY forwards in a row without blocking, the pump
    calls trio.lowlevel.checkpoint() so one busy connection cannot starve the
    others (request/response traffic never reaches it);
  * TCP_NODELAY is set explicitly on both sockets.

--wait-first: after a short read (n < BUF) go straight to wait_readable on the
  next iteration instead of trying recv first.  For request/response traffic the
  speculative recv right after forwarding almost always fails with EAGAIN.
--gc: gc.freeze() after start-up and raise the generation-0 threshold.
"""

import argparse
import errno
import gc
import os
import socket

import trio
from trio.lowlevel import checkpoint, wait_readable, wait_writable

BUF = 65536
FAIR_EVERY = 32


def tune(sock):
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def connect(addr):
    s = tune(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        s.connect(addr)
    except BlockingIOError:
        await wait_writable(s)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            s.close()
            raise OSError(err, os.strerror(err)) from None
    except OSError:
        s.close()
        raise
    return s


async def send_rest(sock, view):
    while view:
        try:
            k = sock.send(view)
        except BlockingIOError:
            await wait_writable(sock)
            continue
        view = view[k:]


async def pump(src, dst, cancel_scope, wait_first):
    buf = bytearray(BUF)
    mv = memoryview(buf)
    recv_into = src.recv_into
    send = dst.send
    need_wait = wait_first
    streak = 0
    try:
        while True:
            if need_wait:
                await wait_readable(src)
                streak = 0
            try:
                n = recv_into(buf)
            except BlockingIOError:
                need_wait = True
                continue
            if not n:
                break
            try:
                k = send(mv[:n])
            except BlockingIOError:
                k = 0
            if k < n:
                await send_rest(dst, mv[k:n])
                streak = 0
            need_wait = wait_first and n < BUF
            streak += 1
            if streak >= FAIR_EVERY:
                streak = 0
                await checkpoint()
    except OSError:
        pass
    finally:
        cancel_scope.cancel()


async def handle(client, up_addr, wait_first):
    try:
        try:
            upstream = await connect(up_addr)
        except OSError:
            return
        try:
            async with trio.open_nursery() as n:
                n.start_soon(pump, client, upstream, n.cancel_scope, wait_first)
                n.start_soon(pump, upstream, client, n.cancel_scope, wait_first)
        finally:
            upstream.close()
    finally:
        client.close()


async def serve(a):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((a.listen_host, a.port))
    lsock.listen(4096)
    lsock.setblocking(False)
    up_addr = (a.upstream_host, a.upstream_port)
    if a.gc:
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                c, _ = lsock.accept()
            except BlockingIOError:
                await wait_readable(lsock)
                continue
            except OSError as e:  # EMFILE etc.: back off briefly
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    await trio.sleep(0.01)
                    continue
                raise
            nursery.start_soon(handle, tune(c), up_addr, a.wait_first)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=13320)
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--upstream-port", type=int, default=3306)
    ap.add_argument("--wait-first", action="store_true")
    ap.add_argument("--gc", action="store_true")
    a = ap.parse_args()
    try:
        trio.run(serve, a)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
