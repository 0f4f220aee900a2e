"""Virtual prepared statements for transaction pooling, sans-IO.

In transaction mode a client session does not keep one upstream connection: each transaction
may run on another one, and a binary-protocol statement id is only valid on the connection
that prepared it. So the proxy owns the statement ids its clients see. This module owns:

- ``StatementBook``, one per client session: the proxy ids it handed out and, for each, the
  SQL text, the cache key, the metadata of the first prepare (to re-emit a prepare response)
  and the last parameter type block the client bound;
- ``UpstreamStatements``, one per upstream connection: which statements are prepared there,
  under which upstream id, and which type block the server has for each. An LRU with a
  capacity; statements are prepared lazily on the connection that executes them;
- pure functions that parse and rewrite the COM_STMT_* payloads (no packet header) and the
  ERR payloads the proxy answers itself.

It does no I/O. The session (the caller) decides when to prepare upstream, sends the
COM_STMT_CLOSE of evicted statements, and must keep a connection attached while its state
matters beyond one command: an open cursor (COM_STMT_FETCH) and long data sent with
COM_STMT_SEND_LONG_DATA live on the upstream statement until the next execute or reset.

Layouts (specs/protocol.md; verified on MariaDB 10.11 with a raw client): the proxy offers
neither CLIENT_QUERY_ATTRIBUTES nor MariaDB's bulk operations, so a COM_STMT_EXECUTE is always
``0x17 stmt_id(4) flags(1) iterations(4) [null_bitmap((n+7)//8) bound_flag(1)
[types(2n) if bound_flag] values]``, the bracketed part only when the statement has n > 0
parameters. MariaDB answers ERR 1210 "Incorrect arguments to mysqld_stmt_execute" to an
execute with bound_flag 0 on a statement that never received types: that is why a statement
freshly prepared on another connection must be sent the client's remembered types.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from tainted_proxy.state import pins as pinreasons
from tainted_proxy.state.settings import Baseline, Settings
from tainted_proxy.taint.effects import Classification
from tainted_proxy.wire.codec import Buffer
from tainted_proxy.wire.constants import (
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_RESET,
    ER_MAX_PREPARED_STMT_COUNT_REACHED,
    ER_UNKNOWN_STMT_HANDLER,
)
from tainted_proxy.wire.errors import ProtocolError
from tainted_proxy.wire.packets import EofPacket, err_payload

# MariaDB reads this id as "the statement prepared last on this connection" (used by
# libmariadb to pipeline a prepare and its execute). The proxy never hands it out.
LAST_STMT_ID = 0xFFFFFFFF
_MAX_PROXY_ID = LAST_STMT_ID - 1

DEFAULT_MAX_STATEMENTS = 16384
DEFAULT_UPSTREAM_CAPACITY = 256

# PREPARE_OK: 0x00 stmt_id(4) columns(2) params(2) filler(1) warnings(2); MySQL 8 may append
# a metadata_follows byte, kept verbatim as the "tail".
_PREPARE_OK = struct.Struct("<BIHHBH")
_U32 = struct.Struct("<I")
# 0x17 stmt_id(4) flags(1) iteration_count(4): the bitmap starts right after
_EXECUTE_HEAD = 10

# Below this size slicing is cheapest; above it joining memoryview slices copies the payload
# once instead of twice (measured: 33 us instead of 1.3 ms for 1 MiB).
_VIEW_ABOVE = 4096

_COMMAND_NAMES = {
    COM_STMT_EXECUTE: "mysqld_stmt_execute",
    COM_STMT_FETCH: "mysqld_stmt_fetch",
    COM_STMT_RESET: "mysqld_stmt_reset",
}


# ---------------------------------------------------------------------------------------------
# per client session


class TooManyStatements(Exception):
    """The session already holds its cap of prepared statements (ER 1461 on a real server)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} prepared statements in one session")
        self.limit = limit

    def err_payload(self) -> bytes:
        """The ERR payload a server sends in this case."""
        return err_payload(
            ER_MAX_PREPARED_STMT_COUNT_REACHED,
            "42000",
            "Can't create more than max_prepared_stmt_count statements "
            f"(current value: {self.limit})",
        )


@dataclass(slots=True)
class ClientStatement:
    """A statement as the client sees it, independent of any upstream connection."""

    proxy_id: int
    sql: bytes
    # (schema, sql_mode, sql), built by the caller: the same text prepared under another
    # schema or sql_mode is another statement
    key: Hashable
    num_params: int
    num_columns: int
    # PREPARE_OK bytes after the 12 fixed ones (MySQL 8's metadata_follows), re-emitted as is
    ok_tail: bytes
    # definitions as received at the first prepare, to answer a prepare without the server
    param_defs: list[bytes]
    column_defs: list[bytes]
    # the last type block (2 * num_params bytes) the client sent with bound_flag 1
    types: bytes | None = None
    # what the text does, classified at the first execute: the text and the sql_mode it
    # is parsed under (in ``key``) never change (a 1-tuple: a clean text is (None,))
    classified: tuple[Classification | None] | None = None


class StatementBook:
    """The prepared statements of one client session, by proxy id.

    Proxy ids run 1, 2, 3...; a closed id is not handed out again until the counter wraps
    after 0xFFFFFFFE (0 and 0xFFFFFFFF are never used; ids still open are skipped).
    ``get``/``close`` resolve 0xFFFFFFFF as MariaDB does: the last statement prepared, until
    it is closed or a later prepare fails.
    """

    __slots__ = ("_stmts", "_next_id", "_last", "_by_key", "max_statements")

    def __init__(self, max_statements: int = DEFAULT_MAX_STATEMENTS, *, first_id: int = 1) -> None:
        if max_statements < 1:
            raise ValueError(f"max_statements must be >= 1, got {max_statements}")
        if not 1 <= first_id <= _MAX_PROXY_ID:
            raise ValueError(f"first_id must be in 1..{_MAX_PROXY_ID}, got {first_id}")
        self.max_statements = max_statements
        self._stmts: dict[int, ClientStatement] = {}
        self._next_id = first_id
        self._last: ClientStatement | None = None
        # key -> the most recent open statement with that key (see ``find``)
        self._by_key: dict[Hashable, ClientStatement] = {}

    def __len__(self) -> int:
        return len(self._stmts)

    def _allocate(self) -> int:
        # terminates: at most max_statements ids are open, far fewer than 2**32 - 2
        while True:
            sid = self._next_id
            self._next_id = sid + 1 if sid < _MAX_PROXY_ID else 1
            if sid not in self._stmts:
                return sid

    def _check_cap(self) -> None:
        if len(self._stmts) >= self.max_statements:
            self._last = None  # a refused prepare is a failed one
            raise TooManyStatements(self.max_statements)

    def _insert(self, stmt: ClientStatement) -> ClientStatement:
        self._stmts[stmt.proxy_id] = stmt
        self._by_key[stmt.key] = stmt
        self._last = stmt
        return stmt

    def add(
        self,
        sql: bytes,
        key: Hashable,
        prepare_ok_payload: Buffer,
        param_defs: Sequence[Buffer],
        column_defs: Sequence[Buffer],
    ) -> ClientStatement:
        """Record a statement the server prepared; the OK's stmt id is ignored (it is the
        upstream's). Raises TooManyStatements at the cap (the upstream statement may stay
        cached: it is keyed by text), ProtocolError if the OK or the definition counts do not
        parse."""
        _, num_columns, num_params, _ = parse_prepare_ok(prepare_ok_payload)
        if len(param_defs) != num_params or len(column_defs) != num_columns:
            raise ProtocolError(
                f"PREPARE_OK announces {num_params} params and {num_columns} columns, "
                f"got {len(param_defs)} and {len(column_defs)} definitions"
            )
        self._check_cap()
        return self._insert(
            ClientStatement(
                self._allocate(),
                bytes(sql),
                key,
                num_params,
                num_columns,
                bytes(prepare_ok_payload[_PREPARE_OK.size :]),
                [bytes(d) for d in param_defs],
                [bytes(d) for d in column_defs],
            )
        )

    def add_copy(self, template: ClientStatement) -> ClientStatement:
        """A new statement with ``template``'s text and metadata and no bound types: answers a
        client's COM_STMT_PREPARE without asking a server. Raises TooManyStatements."""
        self._check_cap()
        t = template
        # the definition lists are shared, never mutated
        return self._insert(
            ClientStatement(
                self._allocate(),
                t.sql,
                t.key,
                t.num_params,
                t.num_columns,
                t.ok_tail,
                t.param_defs,
                t.column_defs,
            )
        )

    def find(self, key: Hashable) -> ClientStatement | None:
        """The most recently prepared open statement with ``key``, if any (best effort: after
        it is closed, older ones with the same key are not found)."""
        return self._by_key.get(key)

    def get(self, stmt_id: int) -> ClientStatement | None:
        """The statement the client means by ``stmt_id``, or None (answer ER 1243)."""
        if stmt_id == LAST_STMT_ID:
            return self._last
        return self._stmts.get(stmt_id)

    def close(self, stmt_id: int) -> ClientStatement | None:
        """Forget a statement (COM_STMT_CLOSE: no answer, unknown ids are ignored). The
        upstream copies stay cached: other statements with the same key may use them."""
        stmt = self.get(stmt_id)
        if stmt is None:
            return None
        del self._stmts[stmt.proxy_id]
        if self._by_key.get(stmt.key) is stmt:
            del self._by_key[stmt.key]
        if self._last is stmt:
            self._last = None
        return stmt

    def note_prepare_failed(self) -> None:
        """A COM_STMT_PREPARE got an ERR: MariaDB then has no "last statement" any more."""
        self._last = None

    def note_execute(self, stmt: ClientStatement, payload: Buffer) -> None:
        """Remember the type block of a client COM_STMT_EXECUTE that binds types, for
        executes on connections where the statement has none. Raises ProtocolError."""
        n = stmt.num_params
        if n == 0:
            return
        at = _bound_flag_offset(payload, n)
        if payload[at]:
            stmt.types = bytes(payload[at + 1 : at + 1 + 2 * n])


# ---------------------------------------------------------------------------------------------
# per upstream connection


@dataclass(slots=True)
class UpstreamStatement:
    """A statement prepared on one upstream connection."""

    upstream_id: int
    num_params: int
    # the type block the server holds for it (None: never executed with types). The caller
    # sets it from ``execute_for_upstream``'s result once the execute did not end in ERR, and
    # clears it after an ERR: sending types again is always accepted, wrong ones are not.
    types_bound: bytes | None = None


class UpstreamStatements:
    """Statements prepared on one upstream connection, least recently used first.

    Keys are the client statements' cache keys; client statements with equal keys (from one
    or several sessions) share one upstream statement, and thus its cursor and long data.
    """

    __slots__ = ("_cache", "capacity")

    def __init__(self, capacity: int = DEFAULT_UPSTREAM_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._cache: OrderedDict[Hashable, UpstreamStatement] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def lookup(self, key: Hashable) -> UpstreamStatement | None:
        """The statement prepared here for ``key`` (now the most recently used), or None."""
        st = self._cache.get(key)
        if st is not None:
            self._cache.move_to_end(key)
        return st

    def add(self, key: Hashable, upstream_id: int, num_params: int) -> list[int]:
        """Record a statement just prepared here. Returns the upstream ids that no longer
        have an entry, oldest first: the caller sends ``com_stmt_close`` for each (no answer
        comes, so they can precede the next command)."""
        evicted: list[int] = []
        old = self._cache.pop(key, None)
        if old is not None and old.upstream_id != upstream_id:
            evicted.append(old.upstream_id)
        self._cache[key] = UpstreamStatement(upstream_id, num_params)
        while len(self._cache) > self.capacity:
            evicted.append(self._cache.popitem(last=False)[1].upstream_id)
        return evicted

    def drop(self, key: Hashable) -> UpstreamStatement | None:
        """Forget one entry without closing it (e.g. the server no longer knows the id)."""
        return self._cache.pop(key, None)

    def forget_all(self) -> None:
        """The connection was reset (COM_RESET_CONNECTION, COM_CHANGE_USER): the server has
        closed every statement."""
        self._cache.clear()


# ---------------------------------------------------------------------------------------------
# payloads


def _tail(payload: Buffer, start: int) -> Buffer:
    return memoryview(payload)[start:] if len(payload) > _VIEW_ABOVE else payload[start:]


def _bound_flag_offset(payload: Buffer, num_params: int) -> int:
    """Offset of new_params_bound_flag in an execute of a statement with num_params > 0;
    checks that the bitmap, the flag and (when the flag is set) the types are present."""
    at = _EXECUTE_HEAD + (num_params + 7) // 8
    if len(payload) <= at:
        raise ProtocolError(
            f"COM_STMT_EXECUTE of {len(payload)} bytes: too short for the NULL bitmap and "
            f"bound flag of {num_params} parameters"
        )
    if payload[at] and len(payload) < at + 1 + 2 * num_params:
        raise ProtocolError(
            f"COM_STMT_EXECUTE of {len(payload)} bytes: too short for {num_params} parameter types"
        )
    return at


def parse_prepare_ok(payload: Buffer) -> tuple[int, int, int, int]:
    """(stmt_id, num_columns, num_params, warnings) of a PREPARE_OK payload."""
    if len(payload) < _PREPARE_OK.size or payload[0] != 0x00:
        raise ProtocolError(f"not a PREPARE_OK: {bytes(payload[:16]).hex()}")
    _, stmt_id, columns, params, _, warnings = _PREPARE_OK.unpack_from(payload)
    return stmt_id, columns, params, warnings


def rewrite_prepare_ok(payload: Buffer, proxy_id: int) -> bytes:
    """The PREPARE_OK with ``proxy_id`` as its statement id."""
    if len(payload) < _PREPARE_OK.size or payload[0] != 0x00:
        raise ProtocolError(f"not a PREPARE_OK: {bytes(payload[:16]).hex()}")
    return b"".join((payload[:1], _U32.pack(proxy_id), payload[5:]))


def rewrite_stmt_id(payload: Buffer, new_id: int) -> bytes:
    """A COM_STMT_EXECUTE / SEND_LONG_DATA / CLOSE / RESET / FETCH with ``new_id`` as its
    statement id (bytes 1..5); everything else is kept."""
    if len(payload) < 5:
        raise ProtocolError(f"statement command of {len(payload)} bytes has no statement id")
    return b"".join((payload[:1], _U32.pack(new_id), _tail(payload, 5)))


def stmt_id_of(payload: Buffer) -> int:
    """The statement id of a COM_STMT_* payload."""
    if len(payload) < 5:
        raise ProtocolError(f"statement command of {len(payload)} bytes has no statement id")
    return _U32.unpack_from(payload, 1)[0]


def execute_for_upstream(
    payload: Buffer,
    upstream_id: int,
    num_params: int,
    stored_types: bytes | None,
    upstream_types_bound: bytes | None,
) -> tuple[bytes, bytes | None]:
    """Rewrite a client COM_STMT_EXECUTE for an upstream statement.

    Returns (payload to send, the type block the upstream statement holds once the server
    has processed it). The id becomes ``upstream_id``. When the client bound types, they are
    kept. When it did not, and the upstream statement lacks the types the client last bound
    (``stored_types``; freshly prepared, or bound by another client statement with the same
    key), those are inserted and the flag set. With nothing stored the packet goes as is: the
    server answers the ERR a client that never bound types deserves. Raises ProtocolError on
    a truncated packet.
    """
    if len(payload) < _EXECUTE_HEAD:
        raise ProtocolError(f"COM_STMT_EXECUTE of {len(payload)} bytes (at least 10 expected)")
    if num_params == 0:
        return rewrite_stmt_id(payload, upstream_id), upstream_types_bound
    at = _bound_flag_offset(payload, num_params)
    if payload[at]:
        types = bytes(payload[at + 1 : at + 1 + 2 * num_params])
        return rewrite_stmt_id(payload, upstream_id), types
    if stored_types is None or stored_types == upstream_types_bound:
        return rewrite_stmt_id(payload, upstream_id), upstream_types_bound
    if len(stored_types) != 2 * num_params:
        raise ValueError(f"{len(stored_types)} bytes of types for {num_params} parameters")
    out = b"".join(
        (
            payload[:1],
            _U32.pack(upstream_id),
            payload[5:at],  # cursor flags, iteration count, NULL bitmap: unchanged
            b"\x01",
            stored_types,
            _tail(payload, at + 1),  # the values
        )
    )
    return out, stored_types


def com_stmt_prepare(sql: bytes) -> bytes:
    """COM_STMT_PREPARE payload (the lazy prepare on an upstream connection)."""
    return bytes((COM_STMT_PREPARE,)) + sql


def com_stmt_close(stmt_id: int) -> bytes:
    """COM_STMT_CLOSE payload; the server sends no answer."""
    return bytes((COM_STMT_CLOSE,)) + _U32.pack(stmt_id)


def _is_eof(p: Buffer) -> bool:
    return 0 < len(p) < 9 and p[0] == 0xFE


def split_prepare_response(
    payloads: Sequence[Buffer], deprecate_eof: bool
) -> tuple[bytes, list[bytes], list[bytes]]:
    """(PREPARE_OK, param definitions, column definitions) of a complete COM_STMT_PREPARE
    response, EOF packets dropped. The caller handles an ERR response before calling; an
    ERR (or any other shape) here raises ProtocolError. Returns copies: the inputs may be
    views of a receive buffer."""
    if not payloads:
        raise ProtocolError("empty COM_STMT_PREPARE response")
    ok = payloads[0]
    _, num_columns, num_params, _ = parse_prepare_ok(ok)
    expected = 1 + num_params + num_columns
    if not deprecate_eof:
        expected += (num_params > 0) + (num_columns > 0)
    if len(payloads) != expected:
        raise ProtocolError(
            f"COM_STMT_PREPARE response of {len(payloads)} packets, {expected} expected "
            f"({num_params} params, {num_columns} columns, deprecate_eof={deprecate_eof})"
        )
    pos = 1
    groups: list[list[bytes]] = []
    for count in (num_params, num_columns):
        group = [bytes(p) for p in payloads[pos : pos + count]]
        pos += count
        if count and not deprecate_eof:
            if not _is_eof(payloads[pos]):
                raise ProtocolError("COM_STMT_PREPARE response: EOF expected after definitions")
            pos += 1
        groups.append(group)
    return bytes(ok), groups[0], groups[1]


def encode_prepare_response(
    stmt: ClientStatement, deprecate_eof: bool, status: int, warnings: int = 0
) -> list[bytes]:
    """The COM_STMT_PREPARE response for ``stmt`` as a client expects it: PREPARE_OK with the
    proxy id, definitions, and EOFs carrying ``status`` unless the client has
    CLIENT_DEPRECATE_EOF."""
    ok = (
        _PREPARE_OK.pack(0, stmt.proxy_id, stmt.num_columns, stmt.num_params, 0, warnings)
        + stmt.ok_tail
    )
    out = [ok]
    eof = None if deprecate_eof else EofPacket(warnings, status).encode()
    for defs in (stmt.param_defs, stmt.column_defs):
        out.extend(defs)
        if defs and eof is not None:
            out.append(eof)
    return out


def unknown_statement_error(stmt_id: int, command: int) -> bytes:
    """ERR 1243 payload, worded as the server words it, for an id the client never got
    (or closed) in a COM_STMT_EXECUTE, COM_STMT_FETCH or COM_STMT_RESET."""
    name = _COMMAND_NAMES.get(command)
    if name is None:
        raise ValueError(f"command 0x{command:02x} has no answer for an unknown statement")
    return err_payload(
        ER_UNKNOWN_STMT_HANDLER,
        "HY000",
        f"Unknown prepared statement handler ({stmt_id}) given to {name}",
    )


__all__ = [
    "PARSE_VARS",
    "Env",
    "SessionStatements",
    "env_sql",
    "parse_env",
    "DEFAULT_MAX_STATEMENTS",
    "DEFAULT_UPSTREAM_CAPACITY",
    "LAST_STMT_ID",
    "ClientStatement",
    "StatementBook",
    "TooManyStatements",
    "UpstreamStatement",
    "UpstreamStatements",
    "com_stmt_close",
    "com_stmt_prepare",
    "encode_prepare_response",
    "execute_for_upstream",
    "parse_prepare_ok",
    "rewrite_prepare_ok",
    "rewrite_stmt_id",
    "split_prepare_response",
    "stmt_id_of",
    "unknown_statement_error",
]


# What a statement's meaning depends on at prepare time, besides its schema: sql_mode (how
# it parses) and the connection charset and collation (its string literals take them).
PARSE_VARS = (
    "sql_mode",
    "character_set_client",
    "character_set_connection",
    "collation_connection",
)
Env = tuple[str, ...]  # the values of PARSE_VARS


def parse_env(settings: Settings, baseline: Baseline) -> Env:
    """A connection's PARSE_VARS: from its settings vector, else the upstream baseline."""
    have = dict(settings)
    base = baseline.values
    return tuple(have.get(n, base.get(n, "")) for n in PARSE_VARS)


def env_sql(env: Env, baseline: Baseline, no_backslash_escapes: bool) -> bytes:
    """``SET SESSION`` of the PARSE_VARS to ``env``."""
    literal = baseline.literal
    parts = [
        f"{n}={literal(n, v, no_backslash_escapes)}" for n, v in zip(PARSE_VARS, env, strict=True)
    ]
    return ("SET SESSION " + ", ".join(parts)).encode("utf-8", "surrogateescape")


class SessionStatements:
    """The binary prepared statements of one client session (a fresh one after
    COM_RESET_CONNECTION / COM_CHANGE_USER: old ids are then unknown)."""

    __slots__ = ("book", "cursors", "long_data", "deferred")

    def __init__(self, max_statements: int = DEFAULT_MAX_STATEMENTS) -> None:
        self.book = StatementBook(max_statements)
        # proxy ids whose upstream statement has an open cursor / pending long data: both
        # live on the connection the session holds (pinned)
        self.cursors: set[int] = set()
        self.long_data: set[int] = set()
        # proxy id -> ERR payload for its next COM_STMT_EXECUTE: COM_STMT_SEND_LONG_DATA has
        # no answer, so a failure to get a connection for it is reported there, as a server
        # reports long-data errors
        self.deferred: dict[int, bytes] = {}

    def protocol_pin(self) -> str | None:
        if self.cursors:
            return pinreasons.BINARY_CURSOR
        if self.long_data:
            return pinreasons.LONG_DATA
        return None

    def forget(self, pid: int) -> bool:
        """COM_STMT_RESET / CLOSE of ``pid``: its cursor, long data and deferred error go.
        True if a cursor or long data lived on the upstream statement."""
        held = pid in self.cursors or pid in self.long_data
        self.cursors.discard(pid)
        self.long_data.discard(pid)
        self.deferred.pop(pid, None)
        return held

    def kept_keys(self) -> set[Hashable]:
        """Keys whose upstream statement must not be evicted (their cursor or long data
        would go with it)."""
        keys: set[Hashable] = set()
        for pid in self.cursors | self.long_data:
            stmt = self.book.get(pid)
            if stmt is not None:
                keys.add(stmt.key)
        return keys
