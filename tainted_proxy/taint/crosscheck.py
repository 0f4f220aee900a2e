"""A second opinion from sqlglot before a DML candidate is declared clean.

The token rules decide; sqlglot is only asked about statements that
(1) start like DML (SELECT/INSERT/UPDATE/DELETE/REPLACE/WITH/DO/VALUES/TABLE),
(2) failed the lexical gate, and (3) the rules found clean.  If sqlglot's
own tokenizer and parser see a user-variable assignment (``@x := …``,
``INTO @x``), a lock function, SQL_CALC_FOUND_ROWS or a session-value read,
those effects are *added* (defence in depth: two independent lexers must
both miss an effect for it to go unseen).  sqlglot can never remove an
effect, a parse error means "no second opinion", and its regenerated SQL is
never used for anything.

The check runs only on cache misses of such candidates, costs a few hundred
microseconds, and can be switched off with `tainted_proxy.taint.classifier.
SQLGLOT_CROSSCHECK` (the proxy may do that on very write-heavy workloads).
"""

from __future__ import annotations

import logging
from typing import Any

from tainted_proxy.taint.effects import Effect

#: Statements longer than this are not sent to sqlglot (parsing cost).
MAX_LENGTH = 20_000

# (effect, how): how is "pin" (the statement creates pinned state), "needs"
# (it reads the previous statement's value) or "clear".
_FUNCTIONS: dict[str, tuple[str, str]] = {
    "GET_LOCK": (Effect.ADVISORY_LOCK, "pin"),
    "SERVICE_GET_WRITE_LOCKS": (Effect.ADVISORY_LOCK, "pin"),
    "SERVICE_GET_READ_LOCKS": (Effect.ADVISORY_LOCK, "pin"),
    "VERSION_TOKENS_LOCK_SHARED": (Effect.ADVISORY_LOCK, "pin"),
    "VERSION_TOKENS_LOCK_EXCLUSIVE": (Effect.ADVISORY_LOCK, "pin"),
    "RELEASE_LOCK": (Effect.ADVISORY_UNLOCK, "clear"),
    "RELEASE_ALL_LOCKS": (Effect.ADVISORY_UNLOCK, "clear"),
    "SERVICE_RELEASE_LOCKS": (Effect.ADVISORY_UNLOCK, "clear"),
    "VERSION_TOKENS_UNLOCK": (Effect.ADVISORY_UNLOCK, "clear"),
    "FOUND_ROWS": (Effect.FOUND_ROWS, "needs"),
    "LAST_INSERT_ID": (Effect.LAST_INSERT_ID, "needs"),
    "ROW_COUNT": (Effect.ROW_COUNT, "needs"),
    "LASTVAL": (Effect.LASTVAL, "needs"),
}

_sqlglot: Any = None
_exp: Any = None


def _load() -> bool:
    global _sqlglot, _exp
    if _sqlglot is None:
        try:
            import sqlglot
            from sqlglot import exp
        except ImportError:  # pragma: no cover - sqlglot is a dependency
            _sqlglot = False
            return False
        # sqlglot logs a warning for every statement it falls back on; the
        # proxy's logs should not carry them.
        log = logging.getLogger("sqlglot")
        if log.level == logging.NOTSET:
            log.setLevel(logging.ERROR)
        _sqlglot, _exp = sqlglot, exp
    return bool(_sqlglot)


def findings(sql: str) -> list[tuple[str, str]]:
    """(effect, how) pairs sqlglot finds in `sql`; [] when it cannot parse."""
    if len(sql) > MAX_LENGTH or not _load():
        return []
    exp = _exp
    try:
        trees = _sqlglot.parse(sql, read="mysql")
    except Exception:  # sqlglot rejects much valid MySQL: no opinion then
        return []
    out: list[tuple[str, str]] = []
    for tree in trees:
        if tree is None:
            continue
        for node in tree.walk():
            if isinstance(node, exp.PropertyEQ) and isinstance(node.this, exp.Parameter):
                out.append((Effect.USER_VAR, "pin"))
            elif isinstance(node, exp.Into) and node.find(exp.Parameter) is not None:
                out.append((Effect.USER_VAR, "pin"))
            elif isinstance(node, exp.Func):
                name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
                hit = _FUNCTIONS.get(str(name).upper())
                if hit is not None:
                    if hit[0] == Effect.LAST_INSERT_ID and node.expressions:
                        hit = (Effect.LAST_INSERT_ID, "pin")
                    out.append(hit)
            elif isinstance(node, exp.Var) and str(node.this).upper() == "SQL_CALC_FOUND_ROWS":
                out.append((Effect.FOUND_ROWS, "pin"))
            elif isinstance(node, exp.SessionParameter):
                name = str(node.name).lower()
                if name in ("warning_count", "error_count"):
                    out.append((Effect.WARNINGS, "needs"))
                elif name in ("identity", "last_insert_id"):
                    out.append((Effect.LAST_INSERT_ID, "needs"))
    return out


def may_call_stored_function(sql: str | bytes) -> bool:
    """Could ``sql`` call a stored function (whose body may change session state)?

    Asked only when the server said "state changed" on a result set without saying what
    (a classic EOF). sqlglot parses calls to functions it does not know as ``Anonymous``:
    a stored function is one of those (so are a few builtins such as NOW(): a false
    "yes" only pins). A statement sqlglot cannot parse may call anything."""
    if isinstance(sql, bytes):
        sql = sql.decode("utf-8", "replace")
    if len(sql) > MAX_LENGTH:
        return True
    try:
        import sqlglot
        from sqlglot import exp

        trees = sqlglot.parse(sql, read="mysql")
    except Exception:  # noqa: BLE001 - any parse failure means "unknown"
        return True
    for tree in trees:
        if tree is None or isinstance(tree, exp.Command):
            return True
        if next(tree.find_all(exp.Anonymous), None) is not None:
            return True
    return False
