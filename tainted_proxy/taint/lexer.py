"""A MySQL/MariaDB tokenizer for statement classification.

It knows exactly what the server's lexer needs to know to tell code from
non-code, and nothing more:

* string literals ``'…'`` and ``"…"`` with doubled quotes and (unless
  NO_BACKSLASH_ESCAPES) backslash escapes; with ANSI_QUOTES, ``"…"`` is a
  quoted identifier instead (doubled ``""``, no backslash escapes);
* quoted identifiers `` `…` `` (doubled backticks, no backslash escapes);
* comments ``-- `` (the second dash followed by whitespace), ``#`` to the end
  of the line (or to a NUL byte, as in MariaDB's lexer), and ``/* … */``;
* executable comments ``/*!NNNNN … */`` and MariaDB's ``/*M!NNNNN … */``:
  the server executes their contents, so they are lexed as code (whatever the
  version number: assuming "executed" is the safe side);
* user variables ``@x``, ``@'x'``, ``@"x"``, `` @`x` ``; system variables
  ``@@x``, ``@@session.x`` …; numbers, hex/bit literals, words and operators.

Whitespace and comments are dropped.  Statements are split on ``;`` outside
quotes and comments.  Anything the lexer cannot close (an unterminated string,
quoted identifier or comment) is reported in `Lexed.problems`; the classifier
turns that into the ``unknown`` effect.

The quoting mode of the connection matters (``"a\\" ; SET @x=1; -- "`` is a
string in the default mode and code under ANSI_QUOTES), so `tokenize` takes
both flags; the proxy knows them from the status flags of every OK packet
(0x8000 ANSI_QUOTES on MariaDB, 0x0200 NO_BACKSLASH_ESCAPES).

Limitation: the text is processed as Unicode.  Multi-byte character sets
whose trailing bytes can be 0x5C (``\\``) or 0x27 (``'``) - big5, cp932, gbk,
sjis - are not supported: decode such bytes to str before classifying.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

# Token kinds.
WORD = "word"  # unquoted identifier or keyword; value upper-cased
QIDENT = "qident"  # quoted identifier; value is the name
STRING = "string"  # string literal; value is the decoded content
NUMBER = "number"  # numeric literal; value as written
HEXLIT = "hex"  # 0x…, x'…', 0b…, b'…'; value as written
USERVAR = "uservar"  # @name; value is the lower-cased, unquoted name
SYSVAR = "sysvar"  # @@[scope.]name; value is the lower-cased text after @@
OP = "op"  # operator or punctuation; value as written

#: Flag bits, as used by the classifier cache and `flags_from_status`.
ANSI_QUOTES = 1
NO_BACKSLASH_ESCAPES = 2

SERVER_STATUS_NO_BACKSLASH_ESCAPES = 0x0200
SERVER_STATUS_ANSI_QUOTES = 0x8000  # MariaDB only


def flags_from_status(status: int) -> int:
    """Lexer flags from the status flags of an OK/EOF packet."""
    flags = 0
    if status & SERVER_STATUS_ANSI_QUOTES:
        flags |= ANSI_QUOTES
    if status & SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        flags |= NO_BACKSLASH_ESCAPES
    return flags


class Token(NamedTuple):
    """One token: its kind, normalised value and [start, end) offsets."""

    kind: str
    value: str
    start: int
    end: int


@dataclass(slots=True)
class Statement:
    """The tokens of one statement and where it lies in the text."""

    tokens: list[Token]
    #: Offset of the first token and the end of the last one.
    start: int
    end: int
    #: Offset just after the ``;`` that ends it (len(text) for the last one).
    next_start: int


@dataclass(slots=True)
class Lexed:
    """The result of `tokenize`."""

    tokens: list[Token]
    #: (offset, message) for every construct the lexer could not close.
    problems: list[tuple[int, str]]


_IDENT_CHARS = "A-Za-z0-9_$\u0080-\U0010ffff"
_NOT_IDENT = f"(?![{_IDENT_CHARS}])"


def quoted_pattern(q: str, backslash: bool) -> str:
    """Regex for a complete q-quoted token, unrolled for speed."""
    e = re.escape(q)
    if backslash:
        return f"{e}[^{e}\\\\]*(?:(?:\\\\.|{e}{e})[^{e}\\\\]*)*{e}"
    return f"{e}[^{e}]*(?:{e}{e}[^{e}]*)*{e}"


def _build(ansi_quotes: bool, no_backslash: bool) -> re.Pattern[str]:
    bs = not no_backslash
    sq = quoted_pattern("'", bs)
    dq = quoted_pattern('"', bs and not ansi_quotes)
    bq = quoted_pattern("`", False)
    parts = [
        r"(?P<ws>[ \t\r\n\f\v]+)",
        r"(?P<exec>/\*(?:!|[Mm]!)[0-9]*)",
        r"(?P<cmt>/\*.*?\*/)",
        r"(?P<ucmt>/\*)",
        r"(?P<lcmt>(?:--(?=[ \t\r\n\f\v])|\#)[^\n\x00]*)",
        f"(?P<sq>{sq})",
        f"(?P<dq>{dq})",
        f"(?P<bq>{bq})",
        r"(?P<uq>['\"`])",
        f"(?P<hexq>[xX]'[0-9A-Fa-f]*'|[bB]'[01]*'|0x[0-9A-Fa-f]+{_NOT_IDENT}|0b[01]+{_NOT_IDENT})",
        f"(?P<num>(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][-+]?[0-9]+)?{_NOT_IDENT})",
        f"(?P<sysv>@@(?:{bq}|[{_IDENT_CHARS}.])*)",
        f"(?P<uvar>@(?:{sq}|{dq}|{bq}|[{_IDENT_CHARS}.]+))",
        f"(?P<word>[{_IDENT_CHARS}]+)",
        r"(?P<op>:=|<=>|<<|>>|<=|>=|<>|!=|->>|->|\|\||&&|.)",
    ]
    return re.compile("|".join(parts), re.DOTALL)


_PATTERNS = [_build(bool(f & ANSI_QUOTES), bool(f & NO_BACKSLASH_ESCAPES)) for f in range(4)]

_ESCAPES = {
    "0": "\0",
    "b": "\b",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "Z": "\x1a",
    "%": "\\%",
    "_": "\\_",
}
_BACKSLASH_RE = re.compile(r"\\(.)", re.DOTALL)


def unescape(body: str, quote: str, backslash: bool) -> str:
    """Decode the inside of a quoted token (without its quotes)."""
    if backslash and "\\" in body:
        # Backslash escapes and doubled quotes must be decoded in one pass.
        out = []
        i = 0
        n = len(body)
        while i < n:
            c = body[i]
            if c == "\\" and i + 1 < n:
                nxt = body[i + 1]
                out.append(_ESCAPES.get(nxt, nxt))
                i += 2
            elif c == quote and i + 1 < n and body[i + 1] == quote:
                out.append(quote)
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)
    return body.replace(quote + quote, quote)


def _uservar_name(raw: str, flags: int) -> str:
    """Name of a user variable token (after '@'), unquoted and lower-cased."""
    body = raw[1:]
    if body and body[0] in "'\"`":
        q = body[0]
        backslash = q != "`" and not (flags & NO_BACKSLASH_ESCAPES)
        if q == '"' and flags & ANSI_QUOTES:
            backslash = False
        body = unescape(body[1:-1], q, backslash)
    return body.lower()


def tokenize(text: str, flags: int = 0) -> Lexed:
    """Tokenize `text` (flags: `ANSI_QUOTES` | `NO_BACKSLASH_ESCAPES`)."""
    match = _PATTERNS[flags & 3].match
    backslash = not (flags & NO_BACKSLASH_ESCAPES)
    ansi = bool(flags & ANSI_QUOTES)
    toks: list[Token] = []
    add = toks.append
    problems: list[tuple[int, str]] = []
    pos = 0
    exec_start = 0
    n = len(text)
    in_exec = False
    while pos < n:
        if in_exec and text.startswith("*/", pos):
            in_exec = False
            pos += 2
            continue
        m = match(text, pos)
        assert m is not None  # the op group matches any character
        g = m.lastgroup
        end = m.end()
        if g == "ws" or g == "cmt" or g == "lcmt":
            pass
        elif g == "word":
            add(Token(WORD, m.group().upper(), pos, end))
        elif g == "op":
            add(Token(OP, m.group(), pos, end))
        elif g == "sq":
            add(Token(STRING, unescape(text[pos + 1 : end - 1], "'", backslash), pos, end))
        elif g == "dq":
            if ansi:
                add(Token(QIDENT, text[pos + 1 : end - 1].replace('""', '"'), pos, end))
            else:
                add(Token(STRING, unescape(text[pos + 1 : end - 1], '"', backslash), pos, end))
        elif g == "bq":
            add(Token(QIDENT, text[pos + 1 : end - 1].replace("``", "`"), pos, end))
        elif g == "num":
            add(Token(NUMBER, m.group(), pos, end))
        elif g == "hexq":
            add(Token(HEXLIT, m.group(), pos, end))
        elif g == "uvar":
            add(Token(USERVAR, _uservar_name(m.group(), flags), pos, end))
        elif g == "sysv":
            add(Token(SYSVAR, m.group()[2:].replace("`", "").lower(), pos, end))
        elif g == "exec":
            in_exec = True
            exec_start = pos
        elif g == "ucmt":
            problems.append((pos, "unterminated comment"))
            end = n
        elif g == "uq":
            problems.append((pos, "unterminated quoted string or identifier"))
            end = n
        pos = end
    if in_exec:
        problems.append((exec_start, "unterminated executable comment"))
    return Lexed(toks, problems)


def split_statements(tokens: list[Token], text_len: int) -> list[Statement]:
    """Split tokens into statements on ``;`` (empty statements dropped)."""
    out: list[Statement] = []
    cur: list[Token] = []
    for t in tokens:
        if t.kind == OP and t.value == ";":
            if cur:
                out.append(Statement(cur, cur[0].start, cur[-1].end, t.end))
                cur = []
            elif out:
                out[-1].next_start = t.end
        else:
            cur.append(t)
    if cur:
        out.append(Statement(cur, cur[0].start, cur[-1].end, text_len))
    elif out:
        out[-1].next_start = text_len
    return out


def decode(sql: str | bytes) -> str:
    """Text of a COM_QUERY payload: UTF-8, or Latin-1 when it is not UTF-8.

    Both keep every ASCII byte as itself, which is all the lexer relies on.
    """
    if isinstance(sql, str):
        return sql
    try:
        return sql.decode("utf-8")
    except UnicodeDecodeError:
        return sql.decode("latin-1")
