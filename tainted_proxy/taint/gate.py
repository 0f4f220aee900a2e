"""The lexical gate: decide in about a microsecond that a statement is clean.

Most statements a proxy sees are plain SELECT/INSERT/UPDATE/DELETE with
literal values.  The gate proves them clean without tokenizing:

1. the statement starts (after whitespace, ``(`` and ordinary comments) with
   SELECT, INSERT, UPDATE, DELETE, REPLACE or WITH, whose only possible
   session effects hide in expressions;
2. none of the trigger strings below occurs anywhere in the upper-cased text,
   not even inside strings or comments;
3. no ``;`` occurs except at the very end (a trailing ``;`` ends nothing).

Every effect the classifier can find inside such a statement needs one of
the triggers to be written: ``@`` (user variables, ``INTO @x``, ``@@identity``,
``@@warning_count``), ``/*!`` and ``/*M!`` (executable comments), ``_LOCK`` and
``UNLOCK`` (all lock functions), ``FOUND_ROWS`` (also SQL_CALC_FOUND_ROWS),
``LAST_INSERT_ID``, ``ROW_COUNT``, ``LASTVAL``, ``PREVIOUS`` (PREVIOUS VALUE
FOR), ``NEXT`` (NEXTVAL, NEXT VALUE FOR), ``CONNECTION_ID``.  So "no trigger in the raw text" implies "no trigger in the code".

When a trigger does occur and the text contains something that could hide it
(a quote, ``#``, ``--`` or ``/*``), the gate strips string literals, quoted
identifiers and ordinary comments with one regular expression that follows
the server's lexer (per quoting mode; executable comments are kept) and
checks again; after stripping, any ``;`` sends the text to the classifier
(``SELECT 1; ''`` has a statement after its ``;``).  That keeps ``INSERT … VALUES ('bob@example.com')`` on the fast
path.  The stripping errs on the side of code: a quote it cannot close, or a
``--`` not followed by whitespace, stays in as code.

Anything else falls through to the full classifier: the gate never says
"effect", only "clean" or "don't know".
"""

from __future__ import annotations

import re

from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES, quoted_pattern

#: Upper-case substrings whose presence sends a DML statement to the classifier.
TRIGGERS = (
    "@",
    "/*!",
    "/*M!",
    "_LOCK",
    "UNLOCK",
    "FOUND_ROWS",
    "LAST_INSERT_ID",
    "ROW_COUNT",
    "LASTVAL",
    "PREVIOUS",
    "NEXT",
    "CONNECTION_ID",
)

#: Statements whose effects can only come from their expressions.
HEADS = ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH")

_BLOCK_COMMENT = r"/\*(?!!|[Mm]!)[^*]*\*+(?:[^/*][^*]*\*+)*/"
_LINE_COMMENT = r"(?:--(?=[ \t\r\n\f\v])|\#)[^\n\x00]*+"
#: The head keyword, after whitespace, "(" and ordinary comments (not after
#: a literal or an executable comment: then the statement is not plain DML).
_HEAD = (
    rf"(?:[ \t\r\n\f\v(]|{_BLOCK_COMMENT}|{_LINE_COMMENT})*"
    rf"(?:{'|'.join(HEADS)})(?![A-Z0-9_$\x80-\xff])"
)
_END = " \t\r\n\f\v;"


def _strip_pattern(flags: int) -> str:
    bs = not (flags & NO_BACKSLASH_ESCAPES)
    parts = [
        quoted_pattern("'", bs),
        quoted_pattern('"', bs and not (flags & ANSI_QUOTES)),
        quoted_pattern("`", False),
        _BLOCK_COMMENT,
        _LINE_COMMENT,
    ]
    return "|".join(parts)


_head = re.compile(_HEAD).match
_strips = [re.compile(_strip_pattern(f), re.DOTALL).sub for f in range(4)]
_T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7, _T8, _T9, _T10, _T11 = TRIGGERS
_HIDERS = ("'", '"', "`", "#", "--", "/*")


def _no_trigger(u: str) -> bool:
    return not (
        _T0 in u
        or _T1 in u
        or _T2 in u
        or _T3 in u
        or _T4 in u
        or _T5 in u
        or _T6 in u
        or _T7 in u
        or _T8 in u
        or _T9 in u
        or _T10 in u
        or _T11 in u
    )


def is_clean(sql: str | bytes, flags: int = 0) -> bool:
    """True when `sql` is provably clean; False means "ask the classifier".

    `flags`: bit 0 ANSI_QUOTES, bit 1 NO_BACKSLASH_ESCAPES (the connection's
    sql_mode), which decide what the stripping step treats as a string.
    Bytes are looked at as Latin-1, which keeps every ASCII byte as itself
    (and is faster than searching bytes).
    """
    if type(sql) is bytes:
        sql = sql.decode("latin-1")
    u = sql.upper()
    if _head(u) is None:
        return False
    if ";" in u and ";" in u.rstrip(_END):
        pass  # a ";" before the end: maybe several statements
    elif _no_trigger(u):
        return True
    for h in _HIDERS:
        if h in sql:
            break
    else:
        return False
    s = _strips[flags & 3](" ", sql).upper()
    # After stripping, any ";" left is code (even a trailing one: what
    # followed it may have been a literal, i.e. another statement).
    return ";" not in s and _no_trigger(s)
