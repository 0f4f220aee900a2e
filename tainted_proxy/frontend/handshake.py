"""The client-facing handshake: greeting, optional TLS upgrade, authentication of the
client against the proxy's own user list (mysql_native_password).

The proxy never relays a client's credentials to the server: it verifies them itself and
logs in upstream with the configured upstream credentials (PgBouncer's model), which is
what lets one upstream connection serve many clients.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from tainted_proxy.frontend.client_io import ClientIO
from tainted_proxy.net import Conn
from tainted_proxy.wire import auth as wauth
from tainted_proxy.wire.constants import (
    CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS,
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_FOUND_ROWS,
    CLIENT_IGNORE_SIGPIPE,
    CLIENT_IGNORE_SPACE,
    CLIENT_INTERACTIVE,
    CLIENT_LOCAL_FILES,
    CLIENT_LONG_FLAG,
    CLIENT_LONG_PASSWORD,
    CLIENT_MULTI_RESULTS,
    CLIENT_MULTI_STATEMENTS,
    CLIENT_NO_SCHEMA,
    CLIENT_ODBC,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_PS_MULTI_RESULTS,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SESSION_TRACK,
    CLIENT_SSL,
    CLIENT_TRANSACTIONS,
    DEFAULT_CHARSET_ID,
    ER_ACCESS_DENIED_ERROR,
    ER_HANDSHAKE_ERROR,
    SERVER_STATUS_AUTOCOMMIT,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import (
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    SslRequest,
    is_ssl_request,
)

# What the proxy offers clients. No COMPRESS (not implemented), and no MariaDB extended
# capabilities (bulk execute, progress reports): bit 0 is set, so clients read no
# extended capability bytes.
PROXY_CAPABILITIES = (
    CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF
)

# Capabilities that change what the server sends or accepts on a connection: an upstream
# connection negotiated with one set cannot serve a client that negotiated another.
SEMANTIC_CAPABILITIES = (
    CLIENT_FOUND_ROWS
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_INTERACTIVE
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_DEPRECATE_EOF
    | CLIENT_SESSION_TRACK
    | CLIENT_ODBC
    | CLIENT_NO_SCHEMA
)

NATIVE = "mysql_native_password"


class AuthFailed(Exception):
    """The client could not be admitted; ``code``/``sqlstate``/``message`` go in the ERR."""

    def __init__(self, code: int, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate
        self.message = message


@dataclass(slots=True)
class ClientLogin:
    """Who logged in, and how (the result of a successful handshake)."""

    user: str
    database: str | None
    charset: int
    capabilities: int
    attributes: dict[str, str]
    scramble: bytes
    tls: bool
    next_seq: int  # sequence id for the final OK / ERR of the handshake


def access_denied(user: str, host: str, with_password: bool) -> AuthFailed:
    return AuthFailed(
        ER_ACCESS_DENIED_ERROR,
        "28000",
        f"Access denied for user '{user}'@'{host}' (using password: {'YES' if with_password else 'NO'})",
    )


def _expect_seq(got: int, want: int, what: str) -> None:
    """A packet out of sequence is refused as the server refuses it ("Got packets out of
    order"): the client gets ERR 1043 and is disconnected."""
    if got != want:
        raise AuthFailed(
            ER_HANDSHAKE_ERROR,
            "08S01",
            f"Bad handshake: {what} out of sequence (id {got}, expected {want}): "
            "Got packets out of order",
        )


async def client_handshake(
    io: ClientIO,
    *,
    connection_id: int,
    server_version: str,
    ssl_context: ssl.SSLContext | None,
    tls_required: bool,
    lookup_stage2: object,
) -> ClientLogin:
    """Greet the client and authenticate it.

    ``lookup_stage2(user) -> bytes | None`` returns the native-password verifier
    (SHA1(SHA1(password)), or b"" for an empty password) of a configured user.
    Raises AuthFailed (to be answered with an ERR) or ProtocolError/ConnectionClosed.
    """
    scramble = wauth.make_scramble()
    caps = PROXY_CAPABILITIES | (CLIENT_SSL if ssl_context is not None else 0)
    greeting = HandshakeV10(
        server_version=server_version,
        connection_id=connection_id,
        auth_data=scramble,
        capabilities=caps,
        charset=DEFAULT_CHARSET_ID,
        status=SERVER_STATUS_AUTOCOMMIT,
        auth_plugin=NATIVE,
    )
    await io.send_payload(greeting.encode(), 0)
    seq, payload = await io.read_payload()
    _expect_seq(seq, 1, "handshake response")
    tls = False
    if is_ssl_request(payload):
        if ssl_context is None:
            raise ProtocolError("client asked for TLS, which was not offered")
        SslRequest.decode(payload)
        assert isinstance(io.conn, Conn)
        # Clients send their TLS ClientHello right behind the SSLRequest: whatever was
        # read past the SSLRequest belongs to the TLS layer. Left in the packet buffer it
        # was lost, and the handshake stalled until auth_timeout (then a plaintext ERR:
        # "TLS/SSL error: wrong version number" in the mariadb CLI), intermittently.
        early = bytes(io.buf.data[: io.buf.end])
        io.buf.consume(io.buf.end)
        io.conn = await io.conn.start_tls_server(ssl_context, early)
        tls = True
        seq, payload = await io.read_payload()
        _expect_seq(seq, 2, "handshake response after the TLS request")
    try:
        resp = HandshakeResponse41.decode(payload)
    except ProtocolError as exc:
        raise AuthFailed(ER_HANDSHAKE_ERROR, "08S01", f"Bad handshake: {exc}") from exc
    if not resp.capabilities & CLIENT_PROTOCOL_41:
        raise AuthFailed(ER_HANDSHAKE_ERROR, "08S01", "Bad handshake: protocol 4.1 required")
    if tls_required and not tls:
        raise AuthFailed(
            ER_ACCESS_DENIED_ERROR,
            "28000",
            f"Access denied for user '{resp.username}': this proxy requires TLS "
            "(connect with --ssl / ssl_mode=REQUIRED)",
        )
    seq = (seq + 1) & 0xFF
    auth_response = resp.auth_response
    plugin = resp.auth_plugin if resp.capabilities & CLIENT_PLUGIN_AUTH else NATIVE
    if plugin and plugin != NATIVE:
        # e.g. caching_sha2_password (MySQL 8 clients' default): ask for native instead
        await io.send_payload(AuthSwitchRequest(NATIVE, scramble + b"\x00").encode(), seq)
        sent = seq
        seq, auth_response = await io.read_payload()
        _expect_seq(seq, (sent + 1) & 0xFF, "auth switch response")
        seq = (seq + 1) & 0xFF
    stage2 = lookup_stage2(resp.username)  # type: ignore[operator]
    host = io.peer_host
    if stage2 is None or not wauth.verify_native_password(stage2, scramble, auth_response):
        raise access_denied(resp.username, host, bool(auth_response))
    return ClientLogin(
        user=resp.username,
        database=resp.database
        if resp.capabilities & CLIENT_CONNECT_WITH_DB and resp.database
        else None,
        charset=resp.charset,
        capabilities=resp.capabilities & caps,
        attributes=dict(resp.attributes),
        scramble=scramble,
        tls=tls,
        next_seq=seq,
    )
