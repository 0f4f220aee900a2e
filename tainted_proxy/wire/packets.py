"""Packet payloads of the MySQL/MariaDB protocol: decode from and encode to payload bytes.

This module owns the layout of every packet the proxy parses or builds: the connection-phase
packets (HandshakeV10, HandshakeResponse41, SslRequest, AuthSwitchRequest, AuthMoreData),
the generic responses (OK incl. session-state tracking, ERR, EOF), COM_CHANGE_USER, simple
command builders, and the framed responses the proxy answers with itself (text result sets,
OK, ERR). Payloads here never include the 4-byte packet header; ``codec.frame`` adds it.
Everything is sans-IO. Malformed input raises ``ProtocolError``.

Strings are decoded as UTF-8 with ``surrogateescape`` so arbitrary bytes survive a
decode/encode round trip unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tainted_proxy.wire.codec import (
    Buffer,
    frame,
    read_lenenc_bytes,
    read_lenenc_int,
    read_nul_bytes,
    write_lenenc_bytes,
    write_lenenc_int,
)
from tainted_proxy.wire.constants import (
    BINARY_CHARSET_ID,
    BINARY_FLAG,
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_LONG_PASSWORD,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SESSION_TRACK,
    CLIENT_SSL,
    CLIENT_TRANSACTIONS,
    COM_CHANGE_USER,
    COM_INIT_DB,
    COM_PING,
    COM_PROCESS_KILL,
    COM_QUERY,
    COM_QUIT,
    COM_RESET_CONNECTION,
    DEFAULT_CHARSET_ID,
    MYSQL_TYPE_LONGLONG,
    MYSQL_TYPE_VAR_STRING,
    NOT_NULL_FLAG,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SESSION_TRACK_SCHEMA,
    SESSION_TRACK_STATE_CHANGE,
    SESSION_TRACK_SYSTEM_VARIABLES,
    SESSION_TRACK_TRANSACTION_CHARACTERISTICS,
    SESSION_TRACK_TRANSACTION_STATE,
)
from tainted_proxy.wire.errors import ProtocolError

_HANDSHAKE_PROTOCOL_VERSION = 10
_SSL_REQUEST_SIZE = 32
_EOF_SIZE = 5
_SCRAMBLE_PART2_MIN = 12  # MySQL/MariaDB always read at least 12 bytes of scramble part 2


# ---------------------------------------------------------------------------------------------
# helpers


def _str(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _nul_field(s: str, what: str) -> bytes:
    b = _bytes(s)
    if b"\0" in b:
        # a NUL would silently truncate the field on the other side
        raise ValueError(f"{what} must not contain NUL: {s!r}")
    return b + b"\0"


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "little")


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


class _Reader:
    """Cursor over a payload; every read checks bounds and raises ProtocolError."""

    __slots__ = ("buf", "pos", "end", "what")

    def __init__(self, buf: Buffer, what: str, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.what = what

    def fail(self, msg: str) -> ProtocolError:
        return ProtocolError(f"{self.what}: {msg}")

    def remaining(self) -> int:
        return self.end - self.pos

    def peek(self) -> int:
        if self.pos >= self.end:
            raise self.fail(f"truncated at offset {self.pos}")
        return self.buf[self.pos]

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.end:
            raise self.fail(
                f"truncated: need {n} bytes at offset {self.pos}, have {self.remaining()}"
            )
        b = bytes(self.buf[self.pos : end])
        self.pos = end
        return b

    def u8(self) -> int:
        v = self.peek()
        self.pos += 1
        return v

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def lenenc_int(self) -> int:
        try:
            v, self.pos = read_lenenc_int(self.buf, self.pos)
        except ProtocolError as e:
            raise self.fail(str(e)) from None
        if v is None:
            raise self.fail(f"unexpected NULL lenenc int at offset {self.pos - 1}")
        return v

    def lenenc_bytes(self) -> bytes:
        try:
            v, self.pos = read_lenenc_bytes(self.buf, self.pos)
        except ProtocolError as e:
            raise self.fail(str(e)) from None
        if v is None:
            raise self.fail(f"unexpected NULL lenenc string at offset {self.pos - 1}")
        return v

    def nul(self) -> bytes:
        try:
            v, self.pos = read_nul_bytes(self.buf, self.pos)
        except ProtocolError as e:
            raise self.fail(str(e)) from None
        return v

    def nul_or_rest(self) -> bytes:
        # Plugin names: some servers/clients omit the final NUL at the end of the packet
        # (MySQL bug #59453); accept string<EOF> there.
        if self.pos < self.end and 0 not in self.buf[self.pos : self.end]:
            return self.rest()
        return self.nul()

    def rest(self) -> bytes:
        b = bytes(self.buf[self.pos : self.end])
        self.pos = self.end
        return b


def _encode_attrs(attrs: dict[str, str]) -> bytes:
    body = b"".join(
        write_lenenc_bytes(_bytes(k)) + write_lenenc_bytes(_bytes(v)) for k, v in attrs.items()
    )
    return write_lenenc_bytes(body)


def _decode_attrs(r: _Reader) -> dict[str, str]:
    block = _Reader(r.lenenc_bytes(), f"{r.what} attributes")
    attrs: dict[str, str] = {}
    while block.remaining():
        key = block.lenenc_bytes()
        attrs[_str(key)] = _str(block.lenenc_bytes())
    return attrs


def _mariadb_filler(capabilities: int, ext_caps: int, size: int) -> bytes:
    # MariaDB reuses the last 4 filler bytes for its extended capabilities, but only when the
    # peer is not "CLIENT_MYSQL" (bit 0 clear); otherwise the filler stays all zeros.
    if capabilities & CLIENT_LONG_PASSWORD:
        return bytes(size)
    return bytes(size - 4) + _u32(ext_caps)


def _mariadb_ext_caps(capabilities: int, filler: bytes) -> int:
    if capabilities & CLIENT_LONG_PASSWORD:
        return 0
    return int.from_bytes(filler[-4:], "little")


# ---------------------------------------------------------------------------------------------
# connection phase


@dataclass(slots=True)
class HandshakeV10:
    """The server's initial handshake (protocol version 10).

    ``auth_data`` is the whole scramble (part 1 + part 2, without part 2's NUL terminator).
    Scrambles shorter than 20 bytes come back NUL-padded to 20: the receiver always reads at
    least 12 bytes of part 2.
    """

    server_version: str
    connection_id: int
    auth_data: bytes
    capabilities: int
    charset: int
    status: int
    auth_plugin: str
    mariadb_ext_caps: int = 0

    def encode(self) -> bytes:
        caps = self.capabilities
        auth = self.auth_data
        if len(auth) > 254:
            raise ValueError("auth_data longer than 254 bytes does not fit the length byte")
        out = [
            bytes((_HANDSHAKE_PROTOCOL_VERSION,)),
            _nul_field(self.server_version, "server_version"),
            _u32(self.connection_id),
            auth[:8].ljust(8, b"\0"),
            b"\0",
            _u16(caps & 0xFFFF),
            bytes((self.charset,)),
            _u16(self.status),
            _u16((caps >> 16) & 0xFFFF),
            # the length counts part 2's NUL terminator, as MySQL and MariaDB send it (21)
            bytes((len(auth) + 1 if caps & CLIENT_PLUGIN_AUTH else 0,)),
            _mariadb_filler(caps, self.mariadb_ext_caps, 10),
        ]
        if caps & CLIENT_SECURE_CONNECTION:
            out.append(auth[8:].ljust(_SCRAMBLE_PART2_MIN, b"\0") + b"\0")
        if caps & CLIENT_PLUGIN_AUTH:
            out.append(_nul_field(self.auth_plugin, "auth_plugin"))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: Buffer) -> HandshakeV10:
        r = _Reader(payload, "HandshakeV10")
        version = r.u8()
        if version != _HANDSHAKE_PROTOCOL_VERSION:
            raise r.fail(f"protocol version {version}, expected 10")
        server_version = _str(r.nul())
        connection_id = r.u32()
        part1 = r.take(8)
        r.take(1)  # filler
        caps = r.u16()
        charset = status = ext_caps = 0
        part2 = b""
        plugin = ""
        # "if more data in the packet": pre-4.1 servers stop after the lower capability bytes
        if r.remaining():
            charset = r.u8()
            status = r.u16()
            caps |= r.u16() << 16
            auth_len = r.u8()
            ext_caps = _mariadb_ext_caps(caps, r.take(10))
            if caps & CLIENT_SECURE_CONNECTION:
                # part 2 is max(12, auth_len - 9) bytes plus a NUL; both MySQL's and MariaDB's
                # clients read it this way, which also tolerates servers that send auth_len 0.
                part2 = r.take(max(_SCRAMBLE_PART2_MIN, auth_len - 9))
                r.take(1)
            if caps & CLIENT_PLUGIN_AUTH:
                plugin = _str(r.nul_or_rest())
        return cls(
            server_version=server_version,
            connection_id=connection_id,
            auth_data=part1 + part2,
            capabilities=caps,
            charset=charset,
            status=status,
            auth_plugin=plugin,
            mariadb_ext_caps=ext_caps,
        )


@dataclass(slots=True)
class HandshakeResponse41:
    """The client's reply to HandshakeV10 (4.1 protocol).

    The layout follows the packet's own ``capabilities``: fields whose flag is clear are neither
    encoded nor decoded. An empty database or plugin name decodes as ``None`` (servers treat an
    empty one as absent).
    """

    capabilities: int
    max_packet: int
    charset: int
    username: str
    auth_response: bytes
    database: str | None = None
    auth_plugin: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    mariadb_ext_caps: int = 0

    def encode(self) -> bytes:
        caps = self.capabilities
        auth = self.auth_response
        out = [
            _u32(caps),
            _u32(self.max_packet),
            bytes((self.charset,)),
            _mariadb_filler(caps, self.mariadb_ext_caps, 23),
            _nul_field(self.username, "username"),
        ]
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            out.append(write_lenenc_bytes(auth))
        elif caps & CLIENT_SECURE_CONNECTION:
            if len(auth) > 255:
                raise ValueError("auth_response longer than 255 bytes needs LENENC_CLIENT_DATA")
            out.append(bytes((len(auth),)) + auth)
        else:
            if b"\0" in auth:
                raise ValueError("a NUL-terminated auth_response must not contain NUL")
            out.append(auth + b"\0")
        if caps & CLIENT_CONNECT_WITH_DB:
            out.append(_nul_field(self.database or "", "database"))
        if caps & CLIENT_PLUGIN_AUTH:
            out.append(_nul_field(self.auth_plugin or "", "auth_plugin"))
        if caps & CLIENT_CONNECT_ATTRS:
            out.append(_encode_attrs(self.attributes))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: Buffer) -> HandshakeResponse41:
        r = _Reader(payload, "HandshakeResponse41")
        caps = r.u32()
        if not caps & CLIENT_PROTOCOL_41:
            raise r.fail("pre-4.1 HandshakeResponse320 is not supported")
        max_packet = r.u32()
        charset = r.u8()
        ext_caps = _mariadb_ext_caps(caps, r.take(23))
        username = _str(r.nul())
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.lenenc_bytes()
        elif caps & CLIENT_SECURE_CONNECTION:
            auth = r.take(r.u8())
        else:
            auth = r.nul()
        # The trailing optional fields may be missing even when their flag is set (clients that
        # set CONNECT_WITH_DB but send no database); treat end-of-packet as "absent".
        database = None
        if caps & CLIENT_CONNECT_WITH_DB and r.remaining():
            database = _str(r.nul()) or None
        plugin = None
        if caps & CLIENT_PLUGIN_AUTH and r.remaining():
            plugin = _str(r.nul_or_rest()) or None
        attrs: dict[str, str] = {}
        if caps & CLIENT_CONNECT_ATTRS and r.remaining():
            attrs = _decode_attrs(r)
        # Anything after (MySQL 8's zstd level byte) is ignored.
        return cls(
            capabilities=caps,
            max_packet=max_packet,
            charset=charset,
            username=username,
            auth_response=auth,
            database=database,
            auth_plugin=plugin,
            attributes=attrs,
            mariadb_ext_caps=ext_caps,
        )


@dataclass(slots=True)
class SslRequest:
    """The 32-byte truncated HandshakeResponse41 a client sends before the TLS upgrade."""

    capabilities: int
    max_packet: int
    charset: int
    mariadb_ext_caps: int = 0

    def encode(self) -> bytes:
        return (
            _u32(self.capabilities)
            + _u32(self.max_packet)
            + bytes((self.charset,))
            + _mariadb_filler(self.capabilities, self.mariadb_ext_caps, 23)
        )

    @classmethod
    def decode(cls, payload: Buffer) -> SslRequest:
        if len(payload) != _SSL_REQUEST_SIZE:
            raise ProtocolError(f"SslRequest: length {len(payload)}, expected 32")
        r = _Reader(payload, "SslRequest")
        caps = r.u32()
        max_packet = r.u32()
        charset = r.u8()
        return cls(caps, max_packet, charset, _mariadb_ext_caps(caps, r.take(23)))


def is_ssl_request(payload: Buffer) -> bool:
    """True if the client's first packet asks for TLS (32 bytes long with CLIENT_SSL set)."""
    return (
        len(payload) == _SSL_REQUEST_SIZE
        and int.from_bytes(payload[:4], "little") & CLIENT_SSL != 0
    )


@dataclass(slots=True)
class AuthSwitchRequest:
    """0xFE + plugin name NUL + plugin data (the server's scramble, NUL-terminated on the wire)."""

    plugin: str
    data: bytes

    def encode(self) -> bytes:
        # servers append a NUL to the scramble; decode strips exactly one
        return b"\xfe" + _nul_field(self.plugin, "plugin") + self.data + b"\0"

    @classmethod
    def decode(cls, payload: Buffer) -> AuthSwitchRequest:
        r = _Reader(payload, "AuthSwitchRequest")
        if r.u8() != 0xFE:
            raise r.fail("header is not 0xFE")
        if not r.remaining():
            # a bare 0xFE is the pre-4.1 "use mysql_old_password" switch
            raise r.fail("old-password switch (bare 0xFE) is not supported")
        plugin = _str(r.nul())
        data = r.rest()
        if data.endswith(b"\0"):
            data = data[:-1]
        return cls(plugin, data)


@dataclass(slots=True)
class AuthMoreData:
    """0x01 + plugin-specific data (caching_sha2 fast-auth result, RSA public key, ...)."""

    data: bytes

    def encode(self) -> bytes:
        return b"\x01" + self.data

    @classmethod
    def decode(cls, payload: Buffer) -> AuthMoreData:
        r = _Reader(payload, "AuthMoreData")
        if r.u8() != 0x01:
            raise r.fail("header is not 0x01")
        return cls(r.rest())


# ---------------------------------------------------------------------------------------------
# generic responses


@dataclass(slots=True)
class OkPacket:
    """OK packet; ``header`` is 0xFE for the OK that ends a result set under DEPRECATE_EOF.

    ``session_state`` is the raw tracker block (see ``parse_session_state``). It is only
    encoded when CLIENT_SESSION_TRACK is negotiated and ``status`` has
    SERVER_SESSION_STATE_CHANGED. ``info`` is a lenenc string on the wire in both layouts,
    omitted when empty (unless the state block follows).
    """

    affected_rows: int
    last_insert_id: int
    status: int
    warnings: int
    info: bytes = b""
    session_state: bytes = b""
    header: int = 0x00

    def encode(self, capabilities: int) -> bytes:
        out = [
            bytes((self.header,)),
            write_lenenc_int(self.affected_rows),
            write_lenenc_int(self.last_insert_id),
        ]
        if capabilities & CLIENT_PROTOCOL_41:
            out.append(_u16(self.status) + _u16(self.warnings))
        elif capabilities & CLIENT_TRANSACTIONS:
            out.append(_u16(self.status))
        if capabilities & CLIENT_SESSION_TRACK and self.status & SERVER_SESSION_STATE_CHANGED:
            out.append(write_lenenc_bytes(self.info))
            out.append(write_lenenc_bytes(self.session_state))
        elif self.info:
            # lenenc in both layouts: servers' net_send_ok uses net_store_data either way
            out.append(write_lenenc_bytes(self.info))
        # else: the packet ends right after warnings, as servers send it
        return b"".join(out)

    @classmethod
    def decode(cls, payload: Buffer, capabilities: int) -> OkPacket:
        r = _Reader(payload, "OK packet")
        header = r.u8()
        if header not in (0x00, 0xFE):
            raise r.fail(f"header 0x{header:02x} is not 0x00/0xFE")
        affected = r.lenenc_int()
        insert_id = r.lenenc_int()
        status = warnings = 0
        if capabilities & CLIENT_PROTOCOL_41:
            status = r.u16()
            warnings = r.u16()
        elif capabilities & CLIENT_TRANSACTIONS:
            status = r.u16()
        info = state = b""
        # The packet may end right after warnings (no info, no state). The info is lenenc
        # with or without SESSION_TRACK (the docs' string<EOF> is wrong, see specs/protocol.md).
        if r.remaining():
            info = r.lenenc_bytes()
            if (
                capabilities & CLIENT_SESSION_TRACK
                and status & SERVER_SESSION_STATE_CHANGED
                and r.remaining()
            ):
                state = r.lenenc_bytes()
        return cls(affected, insert_id, status, warnings, info, state, header)


# lenenc size by first byte for skipping ints in OK packets; 0 marks an invalid prefix
# (0xFB NULL and 0xFF never start an affected-rows/insert-id field).
_LENENC_SIZE = bytes([1] * 0xFB + [0, 3, 4, 9, 0])


def _ok_status_offset(payload: Buffer) -> int:
    """Offset of the status flags in a 4.1 OK packet (skips header and two lenenc ints)."""
    n = len(payload)
    if n < 7:
        raise ProtocolError(f"OK packet: {n} bytes is too short")
    if payload[0] not in (0x00, 0xFE):
        raise ProtocolError(f"OK packet: header 0x{payload[0]:02x} is not 0x00/0xFE")
    p = 1
    for _ in range(2):
        if p >= n:
            raise ProtocolError("OK packet: truncated lenenc int")
        size = _LENENC_SIZE[payload[p]]
        if not size:
            raise ProtocolError(f"OK packet: invalid lenenc prefix 0x{payload[p]:02x}")
        p += size
    if p + 4 > n:
        raise ProtocolError("OK packet: truncated before status/warnings")
    return p


def ok_status(payload: Buffer) -> tuple[int, int]:
    """(status_flags, warnings) of a 4.1 OK packet, without building an OkPacket."""
    p = _ok_status_offset(payload)
    return payload[p] | payload[p + 1] << 8, payload[p + 2] | payload[p + 3] << 8


def eof_status(payload: Buffer) -> tuple[int, int]:
    """(status_flags, warnings) of a 5-byte EOF packet: same order as ``ok_status``."""
    if len(payload) != _EOF_SIZE or payload[0] != 0xFE:
        raise ProtocolError(f"EOF packet: expected 0xFE + 4 bytes, got {len(payload)} bytes")
    return payload[3] | payload[4] << 8, payload[1] | payload[2] << 8


def strip_session_tracking(payload: Buffer, capabilities_of_upstream: int) -> bytes:
    """Rewrite a 4.1 OK payload decoded under ``capabilities_of_upstream`` for a client
    without CLIENT_SESSION_TRACK: clear SERVER_SESSION_STATE_CHANGED and drop the state block.
    The header byte (0x00 or 0xFE) is kept.

    The info stays a lenenc string: servers send it lenenc in both layouts and libmysql,
    libmariadb and Connector/Python parse it so (see specs/protocol.md). An OK without SSC is
    already valid for an untracked client and comes back unchanged.
    """
    if not capabilities_of_upstream & CLIENT_SESSION_TRACK:
        return bytes(payload)
    p = _ok_status_offset(payload)
    end = p + 4
    status = payload[p] | payload[p + 1] << 8
    if not status & SERVER_SESSION_STATE_CHANGED:
        return bytes(payload)  # the common case: identical in both layouts
    info = b""
    if end < len(payload):
        info, _ = read_lenenc_bytes(payload, end)
        if info is None:
            raise ProtocolError("OK packet: NULL info")
    return (
        bytes(payload[:p])
        + _u16(status & ~SERVER_SESSION_STATE_CHANGED)
        + bytes(payload[p + 2 : end])
        + (write_lenenc_bytes(info) if info else b"")
    )


@dataclass(slots=True)
class ErrPacket:
    """0xFF + code(2) + '#' + sqlstate(5) + message.

    ``sqlstate == ""`` means the packet has no '#'+sqlstate marker: servers send such ERRs
    before the handshake completes (e.g. "Host ... is blocked").
    """

    code: int
    sqlstate: str
    message: str

    def encode(self) -> bytes:
        if self.sqlstate and len(self.sqlstate) != 5:
            raise ValueError(f"sqlstate must be 5 characters or empty: {self.sqlstate!r}")
        marker = b"#" + self.sqlstate.encode("ascii") if self.sqlstate else b""
        return b"\xff" + _u16(self.code) + marker + _bytes(self.message)

    @classmethod
    def decode(cls, payload: Buffer) -> ErrPacket:
        r = _Reader(payload, "ERR packet")
        if r.u8() != 0xFF:
            raise r.fail("header is not 0xFF")
        code = r.u16()
        sqlstate = ""
        if r.remaining() and r.peek() == 0x23:  # '#'
            r.take(1)
            sqlstate = _str(r.take(5))
        return cls(code, sqlstate, _str(r.rest()))


def err_payload(code: int, sqlstate: str, message: str) -> bytes:
    """ERR payload (no header) with a '#'+sqlstate marker."""
    return ErrPacket(code, sqlstate, message).encode()


@dataclass(slots=True)
class EofPacket:
    """0xFE + warnings(2) + status(2): ends column definitions / rows without DEPRECATE_EOF."""

    warnings: int
    status: int

    def encode(self) -> bytes:
        return b"\xfe" + _u16(self.warnings) + _u16(self.status)

    @classmethod
    def decode(cls, payload: Buffer) -> EofPacket:
        status, warnings = eof_status(payload)
        return cls(warnings, status)


# ---------------------------------------------------------------------------------------------
# session-state tracking (CLIENT_SESSION_TRACK OK packets)


@dataclass(frozen=True, slots=True)
class SysVarChange:
    """Type 0: a system variable's new (canonical) value."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """Type 1: the current schema ('' after DROP DATABASE of the current one)."""

    schema: str


@dataclass(frozen=True, slots=True)
class StateChange:
    """Type 2: "some session state changed" without detail."""


@dataclass(frozen=True, slots=True)
class TrxCharacteristics:
    """Type 4: SQL that would recreate the transaction's characteristics ('' when none)."""

    text: str


@dataclass(frozen=True, slots=True)
class TrxState:
    """Type 5: the 8-character transaction state, e.g. 'T_R__sS_'."""

    state: str


@dataclass(frozen=True, slots=True)
class UnknownEntry:
    """Any other type (e.g. 3, GTIDs, which MariaDB never sends); data kept raw."""

    type: int
    data: bytes


SessionStateEntry = (
    SysVarChange | SchemaChange | StateChange | TrxCharacteristics | TrxState | UnknownEntry
)


def _lenenc_field(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    v, pos = read_lenenc_bytes(data, pos)
    if v is None:
        raise ProtocolError(f"session state: NULL {what}")
    return v, pos


def parse_session_state(block: Buffer) -> list[SessionStateEntry]:
    """Parse the state block of an OK packet: repeated ``type(1) lenenc-length data``."""
    entries: list[SessionStateEntry] = []
    pos = 0
    n = len(block)
    while pos < n:
        kind = block[pos]
        data, pos = _lenenc_field(block, pos + 1, "entry")
        if kind == SESSION_TRACK_SYSTEM_VARIABLES:
            name, p = _lenenc_field(data, 0, "variable name")
            value, _ = _lenenc_field(data, p, "variable value")
            entries.append(SysVarChange(_str(name), _str(value)))
        elif kind == SESSION_TRACK_SCHEMA:
            entries.append(SchemaChange(_str(_lenenc_field(data, 0, "schema")[0])))
        elif kind == SESSION_TRACK_STATE_CHANGE:
            # the data is the raw byte '1', not a lenenc string; nothing to read
            entries.append(StateChange())
        elif kind == SESSION_TRACK_TRANSACTION_CHARACTERISTICS:
            entries.append(TrxCharacteristics(_str(_lenenc_field(data, 0, "trx text")[0])))
        elif kind == SESSION_TRACK_TRANSACTION_STATE:
            entries.append(TrxState(_str(_lenenc_field(data, 0, "trx state")[0])))
        else:
            entries.append(UnknownEntry(kind, data))
    return entries


def encode_session_state(entries: Iterable[SessionStateEntry]) -> bytes:
    """Inverse of ``parse_session_state``: the state block (without its outer lenenc length)."""
    out: list[bytes] = []
    for e in entries:
        if isinstance(e, SysVarChange):
            kind = SESSION_TRACK_SYSTEM_VARIABLES
            data = write_lenenc_bytes(_bytes(e.name)) + write_lenenc_bytes(_bytes(e.value))
        elif isinstance(e, SchemaChange):
            kind, data = SESSION_TRACK_SCHEMA, write_lenenc_bytes(_bytes(e.schema))
        elif isinstance(e, StateChange):
            kind, data = SESSION_TRACK_STATE_CHANGE, b"1"
        elif isinstance(e, TrxCharacteristics):
            kind = SESSION_TRACK_TRANSACTION_CHARACTERISTICS
            data = write_lenenc_bytes(_bytes(e.text))
        elif isinstance(e, TrxState):
            kind, data = SESSION_TRACK_TRANSACTION_STATE, write_lenenc_bytes(_bytes(e.state))
        else:
            kind, data = e.type, e.data
        out.append(bytes((kind,)) + write_lenenc_bytes(data))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# commands


@dataclass(slots=True)
class ChangeUser:
    """COM_CHANGE_USER payload. An empty database decodes as ``None``, as does an empty plugin."""

    username: str
    auth_response: bytes
    database: str | None
    charset: int
    auth_plugin: str | None
    attributes: dict[str, str] = field(default_factory=dict)

    def encode(self, capabilities: int) -> bytes:
        auth = self.auth_response
        out = [bytes((COM_CHANGE_USER,)), _nul_field(self.username, "username")]
        if capabilities & CLIENT_SECURE_CONNECTION:
            # COM_CHANGE_USER never uses lenenc here, even with PLUGIN_AUTH_LENENC_CLIENT_DATA
            if len(auth) > 255:
                raise ValueError("auth_response longer than 255 bytes")
            out.append(bytes((len(auth),)) + auth)
        else:
            if b"\0" in auth:
                raise ValueError("a NUL-terminated auth_response must not contain NUL")
            out.append(auth + b"\0")
        out.append(_nul_field(self.database or "", "database"))
        out.append(_u16(self.charset))
        if capabilities & CLIENT_PLUGIN_AUTH:
            out.append(_nul_field(self.auth_plugin or "", "auth_plugin"))
        if capabilities & CLIENT_CONNECT_ATTRS:
            out.append(_encode_attrs(self.attributes))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: Buffer, capabilities: int) -> ChangeUser:
        r = _Reader(payload, "COM_CHANGE_USER")
        if r.u8() != COM_CHANGE_USER:
            raise r.fail("command byte is not 0x11")
        username = _str(r.nul())
        if capabilities & CLIENT_SECURE_CONNECTION:
            auth = r.take(r.u8())
        else:
            auth = r.nul()
        database = _str(r.nul()) or None
        charset = 0
        plugin = None
        attrs: dict[str, str] = {}
        # "if more data": old clients end after the database
        if r.remaining():
            charset = r.u16()
            if capabilities & CLIENT_PLUGIN_AUTH and r.remaining():
                plugin = _str(r.nul_or_rest()) or None
            if capabilities & CLIENT_CONNECT_ATTRS and r.remaining():
                attrs = _decode_attrs(r)
        return cls(username, auth, database, charset, plugin, attrs)


def com_query(sql: bytes) -> bytes:
    """COM_QUERY payload."""
    return bytes((COM_QUERY,)) + sql


def com_init_db(db: str) -> bytes:
    """COM_INIT_DB payload."""
    return bytes((COM_INIT_DB,)) + _bytes(db)


def com_ping() -> bytes:
    """COM_PING payload."""
    return bytes((COM_PING,))


def com_quit() -> bytes:
    """COM_QUIT payload."""
    return bytes((COM_QUIT,))


def com_reset_connection() -> bytes:
    """COM_RESET_CONNECTION payload."""
    return bytes((COM_RESET_CONNECTION,))


def com_process_kill(thread_id: int) -> bytes:
    """COM_PROCESS_KILL payload (deprecated by servers in favour of KILL, still honoured)."""
    return bytes((COM_PROCESS_KILL,)) + _u32(thread_id)


# ---------------------------------------------------------------------------------------------
# responses the proxy builds itself (framed)

_INT_COLUMN_LENGTH = 20  # digits of a signed 64-bit integer incl. sign


def _column_definition(name: str, is_int: bool, length: int, nullable: bool) -> bytes:
    nb = write_lenenc_bytes(_bytes(name))
    flags = (BINARY_FLAG if is_int else 0) | (0 if nullable else NOT_NULL_FLAG)
    return b"".join(
        (
            b"\x03def",  # catalog
            b"\x00\x00\x00",  # schema, table, org_table: empty
            nb,  # name
            nb,  # org_name
            b"\x0c",  # length of the fixed-length fields below
            _u16(BINARY_CHARSET_ID if is_int else DEFAULT_CHARSET_ID),
            _u32(length),
            bytes((MYSQL_TYPE_LONGLONG if is_int else MYSQL_TYPE_VAR_STRING,)),
            _u16(flags),
            b"\x00",  # decimals
            b"\x00\x00",  # filler
        )
    )


def _text_value(v: str | bytes | int | None) -> bytes:
    if v is None:
        return b"\xfb"
    if isinstance(v, bytes):
        return write_lenenc_bytes(v)
    if isinstance(v, str):
        return write_lenenc_bytes(_bytes(v))
    if isinstance(v, int):
        return write_lenenc_bytes(str(int(v)).encode("ascii"))  # int() turns True into 1
    return write_lenenc_bytes(str(v).encode("utf-8"))


def _lenenc_payload_len(encoded: bytes) -> int:
    n, _ = read_lenenc_int(encoded, 0)
    return n or 0  # None for the NULL marker


def text_resultset(
    columns: Sequence[str],
    rows: Sequence[Sequence[str | bytes | int | None]],
    capabilities: int,
    seq: int = 1,
    status: int = SERVER_STATUS_AUTOCOMMIT,
) -> bytes:
    """A whole framed text result set: column count, definitions, [EOF], rows, EOF or OK(0xFE).

    A column is LONGLONG (binary charset) if its first non-None value is an int, else
    VAR_STRING (utf8mb4). The layout follows the client's CLIENT_DEPRECATE_EOF.
    """
    if not columns:
        raise ValueError("a result set needs at least one column")
    ncols = len(columns)
    encoded_rows: list[list[bytes]] = []
    for row in rows:
        if len(row) != ncols:
            raise ValueError(f"row has {len(row)} values, expected {ncols}")
        encoded_rows.append([_text_value(v) for v in row])
    payloads = [write_lenenc_int(ncols)]
    for i, name in enumerate(columns):
        first = next((row[i] for row in rows if row[i] is not None), None)
        is_int = isinstance(first, int)
        nullable = any(row[i] is None for row in rows)
        if is_int:
            length = _INT_COLUMN_LENGTH
        else:
            # byte length of the longest value (the encoded value minus its lenenc prefix)
            length = max((_lenenc_payload_len(r[i]) for r in encoded_rows), default=0)
        payloads.append(_column_definition(name, is_int, length, nullable))
    deprecate_eof = capabilities & CLIENT_DEPRECATE_EOF
    if not deprecate_eof:
        payloads.append(EofPacket(0, status).encode())
    payloads.extend(b"".join(r) for r in encoded_rows)
    if deprecate_eof:
        payloads.append(OkPacket(0, 0, status, 0, header=0xFE).encode(capabilities))
    else:
        payloads.append(EofPacket(0, status).encode())
    out: list[bytes] = []
    for p in payloads:
        framed, seq = frame(p, seq)
        out.append(framed)
    return b"".join(out)


def ok_response(
    capabilities: int,
    status: int = SERVER_STATUS_AUTOCOMMIT,
    seq: int = 1,
    affected_rows: int = 0,
    info: bytes = b"",
) -> bytes:
    """A framed OK packet the proxy answers with itself."""
    return frame(OkPacket(affected_rows, 0, status, 0, info).encode(capabilities), seq)[0]


def err_response(code: int, sqlstate: str, message: str, seq: int = 1) -> bytes:
    """A framed ERR packet the proxy answers with itself."""
    return frame(err_payload(code, sqlstate, message), seq)[0]
