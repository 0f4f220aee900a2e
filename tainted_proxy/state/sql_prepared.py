"""SQL-level prepared statements (PREPARE / EXECUTE / DEALLOCATE PREPARE), virtualized.

A statement prepared with ``PREPARE name FROM '<literal>'`` lives on one upstream
connection under a name every session may also use. In a pooled mode the proxy keeps, per
session, what each name was prepared from (``SessionSqlStatements``) and, per connection,
which names it holds with which text (``ConnSqlStatements``): an EXECUTE on a connection
that does not hold the session's statement re-prepares it there first, so PREPARE never
pins. A name the session never prepared is unknown to it (ERR 1243, as from the server),
even if another session left a statement of that name on the connection.

``PREPARE name FROM @var`` (a text the proxy does not see) still pins (state.pins).
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES

_NAME = rb"(`(?:[^`]|``)+`|\w+)"
_END = rb"\s*;?\s*\Z"
_PREPARE = [
    re.compile(rb"\A\s*PREPARE\s+" + _NAME + rb"\s+FROM\s+(" + lit + rb")" + _END, re.I | re.S)
    for lit in (
        rb"'(?:[^'\\]|''|\\.)*'|\"(?:[^\"\\]|\"\"|\\.)*\"",  # default
        rb"'(?:[^'\\]|''|\\.)*'",  # ANSI_QUOTES: "..." is an identifier
        rb"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"",  # NO_BACKSLASH_ESCAPES
        rb"'(?:[^']|'')*'",  # both
    )
]
_EXECUTE = re.compile(
    rb"\A\s*EXECUTE\s+(?!IMMEDIATE\b)" + _NAME + rb"(?:\s+USING\b.*)?" + _END, re.I | re.S
)
_DEALLOCATE = re.compile(rb"\A\s*(?:DEALLOCATE|DROP)\s+PREPARE\s+" + _NAME + _END, re.I | re.S)

#: statements a connection keeps for all sessions before the oldest is deallocated
DEFAULT_CONN_CAPACITY = 128

ER_UNKNOWN_STMT_HANDLER = 1243  # HY000


def _name(raw: bytes) -> str:
    """Statement names are case-insensitive identifiers."""
    if raw[:1] == b"`":
        raw = raw[1:-1].replace(b"``", b"`")
    return raw.decode("utf-8", "surrogateescape").lower()


@dataclass(frozen=True, slots=True)
class SqlStatement:
    """What a session prepared under a name: the literal as the client wrote it, and
    the schema and parse variables in force (the server parses at PREPARE time)."""

    literal: bytes
    schema: str | None
    env: tuple[str, ...]
    flags: int  # lexer flags of the sql_mode it was written under
    #: what an EXECUTE of it reads of the previous statement (state.values)
    needs: frozenset[str] = frozenset()


def literal_text(literal: bytes) -> bytes | None:
    """The text a quoted literal stands for, when that is certain (no backslash)."""
    if b"\\" in literal:
        return None
    q = literal[:1]
    return literal[1:-1].replace(q + q, q)


def parse_prepare(sql: bytes, flags: int) -> tuple[str, bytes] | None:
    """(name, literal) of ``PREPARE name FROM '<literal>'``, else None."""
    m = _PREPARE[flags & (ANSI_QUOTES | NO_BACKSLASH_ESCAPES)].match(sql)
    if m is None:
        return None
    return _name(m.group(1)), m.group(2)


def parse_execute(sql: bytes) -> str | None:
    m = _EXECUTE.match(sql)
    return None if m is None else _name(m.group(1))


def parse_deallocate(sql: bytes) -> str | None:
    m = _DEALLOCATE.match(sql)
    return None if m is None else _name(m.group(1))


def prepare_sql(name: str, stmt: SqlStatement) -> bytes:
    return (
        b"PREPARE `"
        + name.encode("utf-8", "surrogateescape").replace(b"`", b"``")
        + (b"` FROM " + stmt.literal)
    )


def deallocate_sql(name: str) -> bytes:
    return (
        b"DEALLOCATE PREPARE `"
        + name.encode("utf-8", "surrogateescape").replace(b"`", b"``")
        + b"`"
    )


def unknown_error(name: str, verb: str) -> tuple[int, str, str]:
    return (
        ER_UNKNOWN_STMT_HANDLER,
        "HY000",
        f"Unknown prepared statement handler ({name}) given to {verb}",
    )


class SessionSqlStatements(dict[str, SqlStatement]):
    """The virtualized SQL prepared statements of one session, by name."""


class ConnSqlStatements:
    """The SQL prepared statements one upstream connection holds: name -> the statement
    it was prepared from (least recently used first)."""

    __slots__ = ("held", "capacity")

    def __init__(self, capacity: int = DEFAULT_CONN_CAPACITY) -> None:
        self.held: OrderedDict[str, SqlStatement] = OrderedDict()
        self.capacity = capacity

    def has(self, name: str, stmt: SqlStatement) -> bool:
        got = self.held.get(name)
        if got != stmt:
            return False
        self.held.move_to_end(name)
        return True

    def prepared(self, name: str, stmt: SqlStatement) -> None:
        """``name`` now holds ``stmt`` here."""
        self.held[name] = stmt
        self.held.move_to_end(name)

    def evictions(self) -> list[str]:
        """Names to deallocate (least recently used) so that one more fits."""
        out: list[str] = []
        while len(self.held) >= self.capacity:
            old, _ = self.held.popitem(last=False)
            out.append(old)
        return out

    def forget(self, name: str) -> None:
        self.held.pop(name, None)

    def clear(self) -> None:
        self.held.clear()
