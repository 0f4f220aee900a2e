"""Reads the proxy answers itself, from a session's own copy of the per-statement values.

In a pooled mode the connection that ran a session's previous statement may be serving
someone else, and the one the session gets next holds another statement's values. So the
plain reads of those values are answered from ``state.values.Values``, exactly as the
server words them (column names and types as MariaDB sends them):

    SELECT LAST_INSERT_ID() | ROW_COUNT() | FOUND_ROWS() | CONNECTION_ID()
           | @@identity | @@last_insert_id | @@warning_count | @@error_count
           | LASTVAL(s) | PREVIOUS VALUE FOR s   [[AS] alias] [;]
    SHOW WARNINGS | SHOW ERRORS  [LIMIT [offset,] n]
    SHOW COUNT(*) WARNINGS | SHOW COUNT(*) ERRORS

``match`` recognises one (bytes in, a ``LocalRead`` or None out); ``answer`` gives the
columns and rows. Anything larger runs on a connection (``Values.restore_plan``). Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tainted_proxy.state.values import Values

_NAME = rb"(?:`[^`]+`|\w+)(?:\s*\.\s*(?:`[^`]+`|\w+))?"
_SHOW = re.compile(
    rb"\A\s*(?:"
    rb"SHOW\s+(?P<show>WARNINGS|ERRORS)(?:\s+LIMIT\s+(?P<a>\d+)(?:\s*,\s*(?P<b>\d+))?)?"
    rb"|SHOW\s+COUNT\s*\(\s*\*\s*\)\s+(?P<count>WARNINGS|ERRORS)"
    rb")\s*;?\s*\Z",
    re.IGNORECASE,
)
_SELECT = re.compile(rb"\A\s*SELECT\s+", re.IGNORECASE)
_ITEM = re.compile(
    rb"(?P<expr>"
    rb"(?P<fn>LAST_INSERT_ID|ROW_COUNT|FOUND_ROWS|CONNECTION_ID)\s*\(\s*\)"
    rb"|@@(?:SESSION\s*\.\s*|LOCAL\s*\.\s*)?(?P<var>warning_count|error_count|identity|last_insert_id)\b"
    rb"|LASTVAL\s*\(\s*(?P<seq1>" + _NAME + rb")\s*\)"
    rb"|PREVIOUS\s+VALUE\s+FOR\s+(?P<seq2>" + _NAME + rb"))"
    rb"(?:(?:\s+AS\s+|\s+)(?P<alias>`[^`]+`|'[^']*'|\"[^\"]*\"|\w+))?"
    rb"\s*(?P<sep>,\s*|;?\s*\Z)",
    re.IGNORECASE,
)
_NOT_ALIAS = frozenset((b"FROM", b"WHERE", b"LIMIT", b"INTO", b"FOR", b"UNION", b"AS"))


@dataclass(frozen=True, slots=True)
class Item:
    """One value of a SELECT the proxy answers."""

    kind: str  # insert_id, row_count, found_rows, connection_id, warning_count,
    #            error_count, lastval
    column: str
    arg: bytes = b""  # the sequence of a LASTVAL read


@dataclass(frozen=True, slots=True)
class LocalRead:
    """``SELECT item, ...`` (``items``) or a SHOW WARNINGS / SHOW ERRORS (``show``)."""

    items: tuple[Item, ...] = ()
    show: str = ""  # "", "warnings", "errors"
    offset: int = 0
    limit: int | None = None
    select: bool = True  # a SELECT (FOUND_ROWS() becomes 1), not a SHOW


_FN_KIND = {
    b"LAST_INSERT_ID": "insert_id",
    b"ROW_COUNT": "row_count",
    b"FOUND_ROWS": "found_rows",
    b"CONNECTION_ID": "connection_id",
}
_VAR_KIND = {
    b"warning_count": "warning_count",
    b"error_count": "error_count",
    b"identity": "insert_id",
    b"last_insert_id": "insert_id",
}


def match(sql: bytes) -> LocalRead | None:
    """The read ``sql`` is, if the proxy can answer it."""
    m = _SELECT.match(sql)
    if m is None:
        return _match_show(sql)
    pos = m.end()
    items: list[Item] = []
    while True:
        m = _ITEM.match(sql, pos)
        if m is None:
            return None
        alias = m.group("alias")
        if alias is not None and alias.upper() in _NOT_ALIAS:
            return None
        column = m.group("expr").decode("utf-8", "replace")
        if alias is not None:
            column = alias[1:-1].decode() if alias[:1] in b"`'\"" else alias.decode()
        fn, var = m.group("fn"), m.group("var")
        if fn is not None:
            items.append(Item(_FN_KIND[fn.upper()], column))
        elif var is not None:
            items.append(Item(_VAR_KIND[var.lower()], column))
        else:
            items.append(Item("lastval", column, m.group("seq1") or m.group("seq2")))
        pos = m.end()
        if not m.group("sep").startswith(b","):
            return LocalRead(tuple(items))


def _match_show(sql: bytes) -> LocalRead | None:
    m = _SHOW.match(sql)
    if m is None:
        return None
    show = m.group("show")
    if show is not None:
        a, b = m.group("a"), m.group("b")
        offset, limit = (int(a), int(b)) if b is not None else (0, None if a is None else int(a))
        return LocalRead(show=show.lower().decode(), offset=offset, limit=limit, select=False)
    kind = "warning_count" if m.group("count").upper() == b"WARNINGS" else "error_count"
    return LocalRead((Item(kind, "@@session." + kind),), select=False)


def answer(
    read: LocalRead, values: Values, client_id: int
) -> tuple[list[str], list[list[str | int | None]]]:
    """(columns, rows) of the answer to ``read`` for a session with ``values``."""
    if read.show:
        conds = values.conditions
        if read.show == "errors":
            conds = tuple(c for c in conds if c.level == "Error")
        end = None if read.limit is None else read.offset + read.limit
        rows: list[list[str | int | None]] = [
            [c.level, c.code, c.message] for c in conds[read.offset : end]
        ]
        return ["Level", "Code", "Message"], rows
    return [i.column for i in read.items], [[_value(i, values, client_id) for i in read.items]]


def _value(item: Item, values: Values, client_id: int) -> int | None:
    kind = item.kind
    if kind == "insert_id":
        return values.insert_id
    if kind == "row_count":
        return values.row_count
    if kind == "found_rows":
        return values.found_rows
    if kind == "connection_id":
        return client_id
    if kind == "warning_count":
        return values.warning_count
    if kind == "error_count":
        return values.error_count
    return _lastval(values, item.arg)


_SPACES = re.compile(rb"\s+")


def _canonical(name: bytes) -> bytes:
    return _SPACES.sub(b"", name).replace(b"`", b"").lower()


def _lastval(values: Values, name: bytes) -> int | None:
    want = _canonical(name)
    for k, v in values.lastvals.items():
        if _canonical(k) == want:
            return v
    return None
