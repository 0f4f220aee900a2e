"""Non-blocking socket connections for the hot path, and their TLS twin."""

from __future__ import annotations

import errno
import os
import socket
import ssl

import trio
import trio.lowlevel
from trio.lowlevel import checkpoint, wait_writable

from tainted_proxy.net.readiness import Readiness
from tainted_proxy.net.readiness import current as readiness_of_run
from tainted_proxy.wire.buffer import PacketBuffer

# After this many reads in a row that did not have to wait, yield to other tasks, so a
# streaming result set cannot starve everyone else (request/response traffic waits anyway).
_FAIR_EVERY = 32


class ConnectionClosed(Exception):
    """The peer closed the connection or it broke (reset, timeout, TLS failure)."""


def _tune(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


class Conn:
    """A stdlib socket in non-blocking mode; Trio is entered only to wait (reads through
    net.readiness, writes that would block through Trio's own wait_writable)."""

    __slots__ = ("sock", "_streak", "closed", "peer", "_fd", "_readiness", "_drained")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = _tune(sock)
        self._streak = 0
        self.closed = False
        self._fd = -1  # registered with net.readiness on the first wait
        self._readiness: Readiness | None = None
        # the last read found the socket empty: waiting for the next edge is safe
        self._drained = False
        try:
            peer = sock.getpeername()
            self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        except OSError:
            self.peer = "?"

    @property
    def is_tls(self) -> bool:
        return False

    async def _wait_readable(self) -> None:
        readiness = self._readiness
        if readiness is None:
            if self.closed:
                raise trio.ClosedResourceError("socket closed")
            readiness = self._readiness = readiness_of_run()
            self._fd = readiness.register(self.sock)
        await readiness.wait(self._fd)

    async def recv_into(self, buf: PacketBuffer, wait_first: bool = False) -> None:
        """Read at least one byte into ``buf``; raise ConnectionClosed at EOF.
        ``wait_first``: the caller expects nothing buffered yet (a request was just sent,
        or a command is awaited): skip the read that would meet EAGAIN."""
        sock = self.sock
        if wait_first and self._drained:
            await self._wait_readable()
            self._streak = 0
        while True:
            view = buf.free_view()
            try:
                n = sock.recv_into(view)
            except BlockingIOError:
                self._drained = True
                await self._wait_readable()
                self._streak = 0
                continue
            except OSError as exc:
                raise ConnectionClosed(str(exc)) from exc
            if n == 0:
                raise ConnectionClosed("peer closed the connection")
            buf.end += n
            self._drained = n < len(view)
            self._streak += 1
            if self._streak >= _FAIR_EVERY:
                self._streak = 0
                await checkpoint()
            return

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self.sock
        view = memoryview(data)
        while view:
            try:
                k = sock.send(view)
            except BlockingIOError:
                await wait_writable(sock)
                continue
            except OSError as exc:
                raise ConnectionClosed(str(exc)) from exc
            view = view[k:]

    def _forget(self) -> None:
        """Leave net.readiness (before the socket closes or another layer reads it)."""
        readiness, self._readiness = self._readiness, None
        if readiness is not None:
            readiness.unregister(self._fd)
            self._fd = -1

    async def start_tls_server(self, ctx: ssl.SSLContext, initial: bytes = b"") -> TlsConn:
        """``initial``: bytes of the client's TLS handshake already read from the socket."""
        self._forget()  # from now on trio.SSLStream reads this socket
        tls = TlsConn(self.sock, ctx, server_side=True, server_hostname=None, initial=initial)
        await tls.handshake()
        return tls

    async def start_tls_client(self, ctx: ssl.SSLContext, server_hostname: str | None) -> TlsConn:
        self._forget()
        tls = TlsConn(self.sock, ctx, server_side=False, server_hostname=server_hostname)
        await tls.handshake()
        return tls

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                # wake any task waiting to read (net.readiness) or write (Trio) here
                self._forget()
                trio.lowlevel.notify_closing(self.sock)
            except RuntimeError:  # outside Trio (shutdown paths)
                pass
            try:
                self.sock.close()
            except OSError:
                pass

    async def aclose(self) -> None:
        self.close()


class _Prefixed(trio.abc.Stream):
    """A transport that first returns ``prefix``: bytes already read off the socket that
    belong to the TLS layer (a client's ClientHello that arrived in the same read as its
    SSLRequest)."""

    def __init__(self, inner: trio.SocketStream, prefix: bytes) -> None:
        self.inner = inner
        self.socket = inner.socket  # TlsConn.close() reaches the socket through this
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


class TlsConn:
    """Same interface as Conn, through trio.SSLStream (TLS costs more CPU anyway)."""

    __slots__ = ("_stream", "closed", "peer", "sock")

    def __init__(
        self,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None,
        initial: bytes = b"",
    ) -> None:
        self.sock = sock
        self.closed = False
        try:
            peer = sock.getpeername()
            self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        except OSError:
            self.peer = "?"
        tsock = trio.socket.from_stdlib_socket(sock)
        transport: trio.abc.Stream = trio.SocketStream(tsock)
        if initial:
            transport = _Prefixed(trio.SocketStream(tsock), initial)
        self._stream = trio.SSLStream(
            transport,
            ctx,
            server_side=server_side,
            server_hostname=server_hostname,
            https_compatible=False,
        )

    @property
    def is_tls(self) -> bool:
        return True

    async def handshake(self) -> None:
        try:
            await self._stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"TLS handshake failed: {exc}") from exc

    async def recv_into(self, buf: PacketBuffer, wait_first: bool = False) -> None:
        try:
            data = await self._stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(str(exc)) from exc
        if not data:
            raise ConnectionClosed("peer closed the connection")
        n = len(data)
        view = buf.free_view(n)
        view[:n] = data
        buf.end += n

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(bytes(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(str(exc)) from exc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._stream.transport_stream.socket.close()
            except OSError:
                pass

    async def aclose(self) -> None:
        self.close()


async def open_tcp(host: str, port: int) -> Conn:
    """Connect without blocking the event loop (name resolution via Trio's thread pool)."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _canon, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            try:
                sock.connect(addr)
            except BlockingIOError:
                await wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err)) from None
            return Conn(sock)
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    raise last or OSError(errno.EHOSTUNREACH, f"cannot resolve {host}")


async def open_unix(path: str) -> Conn:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            sock.connect(path)
        except BlockingIOError:
            await wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err)) from None
    except BaseException:
        sock.close()
        raise
    return Conn(sock)
