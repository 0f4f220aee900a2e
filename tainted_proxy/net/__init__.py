"""Sockets at the edge: the only place that touches the OS network API.

``Conn`` wraps a non-blocking stdlib socket and enters Trio only on EAGAIN: reads wait in
``net.readiness`` (one persistent edge-triggered epoll, no re-arming per wait), writes
in ``trio.lowlevel.wait_writable``. Below the stream layer a round trip costs about 29 µs
of CPU against 44 µs through ``trio.SocketStream`` (../shared/reference/trio-io-costs.md);
docs/benchmarks.md has the proxy's own figures. ``TlsConn`` is the slower path through
``trio.SSLStream`` for TLS connections, with the same interface.
"""

from tainted_proxy.net.conn import Conn, ConnectionClosed, TlsConn, open_tcp, open_unix

__all__ = ["Conn", "ConnectionClosed", "TlsConn", "open_tcp", "open_unix"]
