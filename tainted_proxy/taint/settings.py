"""System-variable names and literal values, as the classifier reports them.

* Names are canonical: lower case, without ``@@`` and without the
  ``SESSION.``/``LOCAL.`` scope; ``transaction_isolation`` and
  ``transaction_read_only`` become ``tx_isolation`` / ``tx_read_only``
  (MariaDB 10.11 only knows the ``tx_`` names and reports them).
* Values are the client's literal: strings unquoted (escapes decoded,
  adjacent strings concatenated, a ``_charset`` or ``N`` introducer dropped),
  numbers as written (with their sign), hex/bit literals as written,
  ``ON``/``OFF``/``DEFAULT``/``NULL``/``TRUE``/``FALSE`` upper-cased, other
  bare words as written (``SET time_zone = SYSTEM``).  Anything else is an
  expression and is reported as ``None``: the pool learns the real value
  from the session tracker.  Canonical *server* forms (``utf8`` ->
  ``utf8mb3``, ``1`` -> ``ON``, sql_mode expansion) are deliberately not
  computed here.
* ``SET NAMES`` and ``SET CHARACTER SET`` expand to the variables they set.
"""

from __future__ import annotations

from tainted_proxy.taint.lexer import (
    ANSI_QUOTES,
    HEXLIT,
    NO_BACKSLASH_ESCAPES,
    NUMBER,
    OP,
    STRING,
    WORD,
    Token,
)

#: Scope words (``SET GLOBAL x``, ``@@global.x``) -> "global" or "session".
SCOPES: dict[str, str] = {
    "global": "global",
    "persist": "global",
    "persist_only": "global",
    "session": "session",
    "local": "session",
}

#: Alternative spellings of one variable.
ALIASES: dict[str, str] = {
    "transaction_isolation": "tx_isolation",
    "transaction_read_only": "tx_read_only",
}

#: Variables whose value is consumed by the next statement that uses it: a
#: pool cannot re-apply them as part of a settings key.
ONE_SHOT_VARIABLES = frozenset({"insert_id", "last_insert_id", "identity"})

#: Keyword values reported upper-cased.
KEYWORD_VALUES = frozenset({"ON", "OFF", "DEFAULT", "NULL", "TRUE", "FALSE"})

#: Words that are really functions (valid without parentheses): expressions.
_NILADIC = frozenset(
    {
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "CURRENT_USER",
        "CURRENT_ROLE",
        "LOCALTIME",
        "LOCALTIMESTAMP",
        "UTC_DATE",
        "UTC_TIME",
        "UTC_TIMESTAMP",
        "SYSDATE",
        "USER",
    }
)

#: ISOLATION LEVEL words -> the server's value.
ISOLATION_LEVELS: dict[tuple[str, ...], str] = {
    ("READ", "UNCOMMITTED"): "READ-UNCOMMITTED",
    ("READ", "COMMITTED"): "READ-COMMITTED",
    ("REPEATABLE", "READ"): "REPEATABLE-READ",
    ("SERIALIZABLE",): "SERIALIZABLE",
}

#: sql_mode values that include ANSI_QUOTES.
_ANSI_QUOTES_MODES = frozenset(
    {"ANSI_QUOTES", "ANSI", "DB2", "MAXDB", "MSSQL", "ORACLE", "POSTGRESQL"}
)

CHARSET_VARIABLES = ("character_set_client", "character_set_connection", "character_set_results")


def canonical_name(name: str) -> str:
    """Canonical name of a system variable written without scope."""
    name = name.lower()
    return ALIASES.get(name, name)


def split_sysvar(text: str) -> tuple[str | None, str]:
    """``session.sql_mode`` -> ("session", "sql_mode"); scope None when absent.

    `text` is what follows ``@@`` (already lower-cased by the lexer).
    """
    head, dot, rest = text.partition(".")
    if dot and head in SCOPES:
        return SCOPES[head], canonical_name(rest)
    return None, canonical_name(text)


def _strip_introducer(toks: list[Token]) -> list[Token]:
    if len(toks) >= 2 and toks[0].kind == WORD and toks[1].kind in (STRING, HEXLIT):
        v = toks[0].value
        if v.startswith("_") or v == "N":
            return toks[1:]
    return toks


def literal_value(toks: list[Token], text: str) -> str | None:
    """The literal value of an assignment's right-hand side, or None."""
    toks = _strip_introducer(toks)
    if not toks:
        return None
    if all(t.kind == STRING for t in toks):
        return "".join(t.value for t in toks)
    if len(toks) == 2 and toks[0].kind == OP and toks[0].value in "-+" and toks[1].kind == NUMBER:
        return toks[1].value if toks[0].value == "+" else "-" + toks[1].value
    if len(toks) != 1:
        return None
    t = toks[0]
    if t.kind == NUMBER or t.kind == HEXLIT:
        return t.value
    if t.kind == WORD:
        if t.value in KEYWORD_VALUES:
            return t.value
        if t.value in _NILADIC:
            return None
        return text[t.start : t.end]
    return None


def sql_literal(toks: list[Token], text: str) -> str | None:
    """The right-hand side as re-sendable SQL literal text, or None.

    Only plain literals qualify: strings (with an optional introducer),
    signed numbers, hex/bit literals, NULL, TRUE, FALSE.
    """
    if not toks:
        return None
    body = _strip_introducer(toks)
    raw = text[toks[0].start : toks[-1].end]
    if all(t.kind == STRING for t in body):
        return raw
    if len(body) == 2 and body[0].kind == OP and body[0].value in "-+" and body[1].kind == NUMBER:
        return raw
    if len(body) == 1:
        t = body[0]
        if t.kind in (NUMBER, HEXLIT):
            return raw
        if t.kind == WORD and t.value in ("NULL", "TRUE", "FALSE"):
            return t.value
    return None


def names_settings(charset: str | None, collation: str | None) -> dict[str, str | None]:
    """Variables set by ``SET NAMES charset [COLLATE collation]``.

    Without COLLATE the server uses the character set's default collation,
    which the parser does not know (None); the session tracker never
    reports collation_connection, so the pool must look it up.
    """
    out: dict[str, str | None] = dict.fromkeys(CHARSET_VARIABLES, charset)
    out["collation_connection"] = collation
    return out


def charset_settings(charset: str | None) -> dict[str, str | None]:
    """Variables set by ``SET CHARACTER SET charset``.

    character_set_connection and collation_connection become those of the
    current database, which the parser does not know (None).
    """
    return {
        "character_set_client": charset,
        "character_set_results": charset,
        "character_set_connection": None,
        "collation_connection": None,
    }


def flags_for_sql_mode(value: str | None) -> int | None:
    """Lexer flags implied by a literal sql_mode value; None when unknown."""
    if value is None or value.upper() == "DEFAULT" or value.strip().isdigit():
        return None
    modes = {m.strip().upper() for m in value.split(",")}
    flags = 0
    if modes & _ANSI_QUOTES_MODES:
        flags |= ANSI_QUOTES
    if "NO_BACKSLASH_ESCAPES" in modes:
        flags |= NO_BACKSLASH_ESCAPES
    return flags
