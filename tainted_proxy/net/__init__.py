"""Sockets at the edge: the only place that touches the OS network API.

``Conn`` wraps a non-blocking stdlib socket and enters Trio only on EAGAIN
(``trio.lowlevel.wait_readable`` / ``wait_writable``): measured on this machine that
costs about 29 µs of CPU per round trip against 44 µs for ``trio.SocketStream``
(../shared/reference/trio-io-costs.md). ``TlsConn`` is the slower path through
``trio.SSLStream`` for TLS connections, with the same interface.
"""

from tainted_proxy.net.conn import Conn, ConnectionClosed, TlsConn, open_tcp, open_unix

__all__ = ["Conn", "ConnectionClosed", "TlsConn", "open_tcp", "open_unix"]
