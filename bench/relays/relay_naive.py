#!/usr/bin/env python3
"""Minimal byte-level TCP relay in Trio (no protocol parsing).

One task per direction per connection; each client connection gets its own
upstream connection.  --accept-only: accept connections and just hold them
(one task per connection, no upstream) - used as a sink and to measure the
per-client cost of the client-facing half of a pooling proxy.
"""

import argparse

import trio

BUF = 65536


async def pump(src, dst, cancel_scope):
    try:
        while True:
            data = await src.receive_some(BUF)
            if not data:
                break
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        cancel_scope.cancel()


def make_handler(up_host, up_port):
    async def handle(client):
        try:
            upstream = await trio.open_tcp_stream(up_host, up_port)
        except OSError:
            await client.aclose()
            return
        async with client, upstream:
            async with trio.open_nursery() as n:
                n.start_soon(pump, client, upstream, n.cancel_scope)
                n.start_soon(pump, upstream, client, n.cancel_scope)

    return handle


async def hold(client):
    async with client:
        try:
            while await client.receive_some(BUF):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=13306)
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--upstream-port", type=int, default=3306)
    ap.add_argument("--accept-only", action="store_true")
    a = ap.parse_args()
    handler = hold if a.accept_only else make_handler(a.upstream_host, a.upstream_port)
    await trio.serve_tcp(handler, a.port, host=a.listen_host, backlog=4096)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
