"""Statements the proxy must vet before relaying: KILL.

Clients of different proxy users may share one upstream login, so a KILL relayed as-is
could reach another application's connection. Every command whose text contains the word
KILL is tokenized (comments, strings and executable comments handled by the classifier's
lexer): a lone ``KILL [HARD|SOFT] [QUERY|CONNECTION] n`` is translated by the proxy
(specs/session-pooling.md S5); KILL anywhere else (in a multi-statement, behind a comment,
inside PREPARE / EXECUTE IMMEDIATE text) is refused. Dynamic SQL inside stored routines
cannot be seen from the wire: real isolation needs one upstream login per application.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tainted_proxy.taint.lexer import NUMBER, STRING, WORD, decode, split_statements, tokenize

# cheap pre-check on raw bytes: only commands containing the word are tokenized
KILL_WORD = re.compile(rb"(?<![A-Za-z0-9_$])kill(?![A-Za-z0-9_$])", re.IGNORECASE)
_KILL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_$])kill(?![A-Za-z0-9_$])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class KillRequest:
    target: int
    query_only: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    sqlstate: str
    message: str


_ONLY_OWN = Refusal(
    1095,
    "HY000",
    "tainted-proxy: only a lone KILL [QUERY|CONNECTION] <id> of your own connections is allowed",
)
_NO_QUERY_ID = Refusal(
    1235, "42000", "tainted-proxy does not support KILL QUERY ID; use KILL QUERY <connection id>"
)


def vet_kill(sql: bytes, flags: int = 0, *, prepare: bool = False) -> KillRequest | Refusal | None:
    """None: nothing to do with KILL, relay it. KillRequest: the proxy runs it.
    Refusal: answer with this error. ``prepare``: the text of a COM_STMT_PREPARE."""
    if KILL_WORD.search(sql) is None:
        return None
    text = decode(sql)
    lexed = tokenize(text, flags)
    stmts = [s for s in split_statements(lexed.tokens, len(text)) if s.tokens]
    has_kill_word = any(t.kind == WORD and t.value == "KILL" for t in lexed.tokens)
    if has_kill_word:
        if prepare or len(stmts) != 1 or lexed.problems or stmts[0].tokens[0].value != "KILL":
            return _ONLY_OWN
        return _parse_kill([t for t in stmts[0].tokens[1:]])
    # the word only inside strings: harmless, unless the string is SQL to be executed
    for s in stmts:
        first = s.tokens[0]
        if first.kind == WORD and first.value in ("PREPARE", "EXECUTE"):
            if any(t.kind == STRING and _KILL_IN_TEXT.search(t.value) for t in s.tokens):
                return _ONLY_OWN
    if lexed.problems:
        return _ONLY_OWN
    return None


def _parse_kill(tokens: list) -> KillRequest | Refusal:
    words = [t for t in tokens if not (t.kind == "op" and t.value == ";")]
    i = 0
    if i < len(words) and words[i].kind == WORD and words[i].value in ("HARD", "SOFT"):
        i += 1
    query_only = False
    if i < len(words) and words[i].kind == WORD and words[i].value in ("QUERY", "CONNECTION"):
        query_only = words[i].value == "QUERY"
        i += 1
    if i < len(words) and words[i].kind == WORD and words[i].value == "ID":
        return _NO_QUERY_ID
    if i == len(words) - 1 and words[i].kind == NUMBER and words[i].value.isdigit():
        return KillRequest(int(words[i].value), query_only)
    return _ONLY_OWN
