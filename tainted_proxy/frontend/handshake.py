"""The client-facing handshake: greeting, optional TLS upgrade, authentication of the
client against the proxy's own user list (mysql_native_password, and the fast path of
caching_sha2_password for users whose password is configured in plain text).

The proxy never relays a client's credentials to the server: it verifies them itself and
logs in upstream with the configured upstream credentials (PgBouncer's model), which is
what lets one upstream connection serve many clients.
"""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass
from typing import Protocol

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
    AuthMoreData,
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
CACHING_SHA2 = "caching_sha2_password"

# AuthMoreData 0x03: caching_sha2_password's "fast auth success"; the OK follows it
FAST_AUTH_SUCCESS = AuthMoreData(b"\x03").encode()

# An unknown user is checked against a verifier nobody knows (not refused at once), so a
# caching_sha2 login of a user that does not exist takes the same steps as a wrong password.
_UNKNOWN_USER_SHA2 = secrets.token_bytes(32)


class Credentials(Protocol):
    """The verifiers of the proxy's users (app.Proxy provides them, cached per user)."""

    def password_stage2(self, user: str) -> bytes | None:
        """SHA1(SHA1(password)) (``b""``: empty password); None for an unknown user."""
        ...

    def caching_sha2_stage2(self, user: str) -> bytes | None:
        """SHA256(SHA256(password)) (``b""``: empty password); None for an unknown user
        or one whose password is configured only as a native ``*HEX`` hash."""
        ...


class AuthFailed(Exception):
    """The client could not be admitted; ``code``/``sqlstate``/``message`` go in the ERR,
    sent with sequence id ``seq`` (the one the client expects next)."""

    def __init__(self, code: int, sqlstate: str, message: str, seq: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate
        self.message = message
        self.seq = seq


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


def access_denied(user: str, host: str, with_password: bool, seq: int = 2) -> AuthFailed:
    return AuthFailed(
        ER_ACCESS_DENIED_ERROR,
        "28000",
        f"Access denied for user '{user}'@'{host}' (using password: {'YES' if with_password else 'NO'})",
        seq,
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
            (got + 1) & 0xFF,
        )


async def _switch(io: ClientIO, plugin: str, scramble: bytes, seq: int) -> tuple[int, bytes]:
    """Send an AuthSwitchRequest with ``seq``; the client's answer and the next id."""
    # (encode adds the scramble's NUL: a second one made the data 22 bytes, which
    # libmysqlclient's caching_sha2 plugin refuses; it wants exactly 20 + NUL)
    await io.send_payload(AuthSwitchRequest(plugin, scramble).encode(), seq)
    got, response = await io.read_payload()
    _expect_seq(got, (seq + 1) & 0xFF, "auth switch response")
    return (got + 1) & 0xFF, response


async def authenticate(
    io: ClientIO,
    credentials: Credentials,
    *,
    user: str,
    plugin: str,
    response: bytes,
    scramble: bytes,
    switch_scramble: bytes,
    seq: int,
) -> tuple[int, bytes]:
    """Check ``user``'s first auth ``response`` (for ``plugin``, against ``scramble``),
    switching plugin when needed; ``seq`` is the id of the proxy's next packet.

    Returns the id for the final OK and the scramble the accepted response answered
    (``switch_scramble`` when there was a switch). Raises AuthFailed (ERR 1045 at the id
    the client expects) or ProtocolError/ConnectionClosed. The rules (specs/protocol.md):

    * caching_sha2_password, a user with a plain-text password (or an unknown user):
      the fast path only, verified with SHA256(SHA256(pw)); success is AuthMoreData 0x03,
      then the OK (an empty password: the OK alone). An empty first response gets a
      switch to caching_sha2_password first. The proxy knows every verifier, so it never
      asks for full authentication (0x04): a wrong response is refused at once.
    * caching_sha2_password, a user with only a ``*HEX`` hash: switch to native (a SHA1
      hash cannot check a SHA-256 scramble).
    * mysql_native_password: checked against SHA1(SHA1(pw)); any other plugin is switched
      to native.
    """
    host = io.peer_host
    native = credentials.password_stage2(user)
    sha2 = credentials.caching_sha2_stage2(user)
    if plugin == CACHING_SHA2 and (sha2 is not None or native is None):
        if sha2 is None:
            sha2 = _UNKNOWN_USER_SHA2
        if wauth.is_empty_caching_sha2_response(response):
            # libmysqlclient sends an empty first response when the greeting named another
            # plugin, and on COM_CHANGE_USER, whatever its password: it waits for a switch
            # carrying a scramble, as MySQL's server sends. So an empty first response proves
            # nothing, even for a user whose password is empty: only the answer to the
            # switch is checked (an empty password answers it empty again).
            seq, response = await _switch(io, CACHING_SHA2, switch_scramble, seq)
            scramble = switch_scramble
        if not wauth.verify_caching_sha2(sha2, scramble, response):
            empty = wauth.is_empty_caching_sha2_response(response)
            raise access_denied(user, host, not empty, seq)
        # No 0x03 for an empty password: libmysqlclient's plugin returns right after
        # sending its empty answer and reads the OK next (as MySQL's server sends it).
        if sha2:
            await io.send_payload(FAST_AUTH_SUCCESS, seq)
            seq = (seq + 1) & 0xFF
        return seq, scramble
    if plugin != NATIVE:
        # e.g. caching_sha2_password for a user configured with a native hash only
        seq, response = await _switch(io, NATIVE, switch_scramble, seq)
        scramble = switch_scramble
    if native is None or not wauth.verify_native_password(native, scramble, response):
        raise access_denied(user, host, bool(response), seq)
    return seq, scramble


async def client_handshake(
    io: ClientIO,
    *,
    connection_id: int,
    server_version: str,
    ssl_context: ssl.SSLContext | None,
    tls_required: bool,
    credentials: Credentials,
    greeting_plugin: str = NATIVE,
) -> ClientLogin:
    """Greet the client (naming ``greeting_plugin``) and authenticate it against
    ``credentials`` (see ``authenticate``).

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
        auth_plugin=greeting_plugin,
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
    seq = (seq + 1) & 0xFF
    try:
        resp = HandshakeResponse41.decode(payload)
    except ProtocolError as exc:
        raise AuthFailed(ER_HANDSHAKE_ERROR, "08S01", f"Bad handshake: {exc}", seq) from exc
    if not resp.capabilities & CLIENT_PROTOCOL_41:
        raise AuthFailed(ER_HANDSHAKE_ERROR, "08S01", "Bad handshake: protocol 4.1 required", seq)
    if tls_required and not tls:
        raise AuthFailed(
            ER_ACCESS_DENIED_ERROR,
            "28000",
            f"Access denied for user '{resp.username}': this proxy requires TLS "
            "(connect with --ssl / ssl_mode=REQUIRED)",
            seq,
        )
    # without PLUGIN_AUTH (or with no name) a client answers in mysql_native_password
    plugin = (resp.auth_plugin if resp.capabilities & CLIENT_PLUGIN_AUTH else None) or NATIVE
    seq, _ = await authenticate(
        io,
        credentials,
        user=resp.username,
        plugin=plugin,
        response=resp.auth_response,
        scramble=scramble,
        switch_scramble=scramble,
        seq=seq,
    )
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
