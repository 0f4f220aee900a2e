"""Per-statement classification rules, decided from tokens.

One function per leading keyword (``HANDLERS``), plus `scan`, which looks
through any token range for the effects that can hide inside expressions:
lock functions, ``@x :=``, ``INTO @x``, ``SQL_CALC_FOUND_ROWS``,
``LAST_INSERT_ID()``, ``FOUND_ROWS()``, ``ROW_COUNT()``, ``LASTVAL()`` and reads
of ``@@warning_count``/``@@identity``.  A statement whose leading keyword has
no rule, or whose shape a rule does not recognise, gets the ``unknown``
effect: never clean.  ``specs/taint-rules.md`` lists every rule with examples.

The rules never look at sqlglot output: the decisions the issue lists as
traps (``SET SESSION TRANSACTION`` vs ``SET TRANSACTION``, statements sqlglot
turns into a generic Command or rejects) are all made here.
"""

from __future__ import annotations

from collections.abc import Callable

from tainted_proxy.taint.effects import (
    PIN_BACKUP_LOCK,
    PIN_COMPOUND,
    PIN_EXECUTE_IMMEDIATE,
    PIN_FLUSH_FOR_EXPORT,
    PIN_GLOBAL_READ_LOCK,
    PIN_INSERT_ID,
    PIN_REASONS,
    Effect,
)
from tainted_proxy.taint.lexer import (
    NUMBER,
    OP,
    QIDENT,
    STRING,
    SYSVAR,
    USERVAR,
    WORD,
    Token,
)
from tainted_proxy.taint.settings import (
    ISOLATION_LEVELS,
    ONE_SHOT_VARIABLES,
    SCOPES,
    canonical_name,
    charset_settings,
    flags_for_sql_mode,
    literal_value,
    names_settings,
    split_sysvar,
    sql_literal,
)

#: `Acc.flags_after` value when a SET sql_mode value cannot be known.
FLAGS_UNKNOWN = -1


class Acc:
    """Mutable accumulator of one statement's (or one text's) findings."""

    __slots__ = (
        "effects",
        "pins",
        "needs",
        "settings",
        "user_vars",
        "next_tx",
        "statement_vars",
        "objects",
        "unknown",
        "flags_after",
        "dml",
        "head",
    )

    def __init__(self) -> None:
        self.effects: set[str] = set()
        self.pins: list[str] = []
        self.needs: set[str] = set()
        self.settings: dict[str, str | None] = {}
        self.user_vars: dict[str, str | None] = {}
        self.next_tx: dict[str, str | None] = {}
        self.statement_vars: set[str] = set()
        self.objects: list[tuple[str, str | None]] = []
        self.unknown: list[str] = []
        #: New lexer flags after a session-scope SET sql_mode (None: unchanged).
        self.flags_after: int | None = None
        #: True for DML statements (candidates for the sqlglot cross-check).
        self.dml = False
        #: Leading keyword of the statement being classified.
        self.head = ""

    def add(self, effect: str, pin: str | None = None) -> None:
        self.effects.add(str(effect))
        if pin is not None:
            self.pins.append(pin)

    def pin_default(self, effect: str) -> None:
        self.add(effect, PIN_REASONS[effect])

    def need(self, effect: str) -> None:
        self.effects.add(str(effect))
        self.needs.add(str(effect))

    def bad(self, reason: str) -> None:
        self.effects.add(str(Effect.UNKNOWN))
        self.unknown.append(reason)

    def user_var(self, name: str, value: str | None) -> None:
        self.pin_default(Effect.USER_VAR)
        self.user_vars[name] = value

    def implicit_commit(self) -> None:
        self.add(Effect.IMPLICIT_COMMIT)
        self.add(Effect.TX_END)

    def merge(self, other: Acc) -> None:
        self.effects |= other.effects
        self.pins.extend(other.pins)
        self.needs |= other.needs
        self.settings.update(other.settings)
        self.user_vars.update(other.user_vars)
        self.next_tx.update(other.next_tx)
        self.statement_vars |= other.statement_vars
        self.objects.extend(other.objects)
        self.unknown.extend(other.unknown)


# ---------------------------------------------------------------- helpers


def _w(toks: list[Token], i: int) -> str:
    """The upper-cased word at i, or "" (not a word / out of range)."""
    if 0 <= i < len(toks) and toks[i].kind == WORD:
        return toks[i].value
    return ""


def _is_op(toks: list[Token], i: int, op: str) -> bool:
    return 0 <= i < len(toks) and toks[i].kind == OP and toks[i].value == op


def _name_at(toks: list[Token], i: int, text: str) -> tuple[str | None, int]:
    """A possibly qualified object name at i: (name as written, next index)."""
    parts: list[str] = []
    j = i
    while j < len(toks):
        t = toks[j]
        if t.kind == WORD:
            parts.append(text[t.start : t.end])
        elif t.kind == QIDENT:
            parts.append(t.value)
        else:
            break
        j += 1
        if _is_op(toks, j, ".") and j + 1 < len(toks):
            j += 1
        else:
            break
    if not parts:
        return None, i
    return ".".join(parts), j


def _value_of(t: Token, text: str) -> str | None:
    """A single-token literal-ish value: string content, word as written."""
    if t.kind == STRING or t.kind == QIDENT:
        return t.value
    if t.kind == WORD:
        return t.value if t.value == "DEFAULT" else text[t.start : t.end]
    if t.kind == NUMBER:
        return t.value
    return None


def _split_commas(toks: list[Token], lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) split on commas at parenthesis depth 0."""
    out: list[tuple[int, int]] = []
    depth = 0
    start = lo
    for j in range(lo, hi):
        t = toks[j]
        if t.kind == OP:
            v = t.value
            if v == "(":
                depth += 1
            elif v == ")":
                depth -= 1
            elif v == "," and depth == 0:
                out.append((start, j))
                start = j + 1
    out.append((start, hi))
    return out


# ------------------------------------------------------ expression scanning

_LOCK = "lock"
_UNLOCK = "unlock"
_UNLOCK_ALL = "unlock_all"

#: Function name -> what calling it does.
FUNCTIONS: dict[str, str] = {
    "GET_LOCK": _LOCK,
    "SERVICE_GET_WRITE_LOCKS": _LOCK,
    "SERVICE_GET_READ_LOCKS": _LOCK,
    "VERSION_TOKENS_LOCK_SHARED": _LOCK,
    "VERSION_TOKENS_LOCK_EXCLUSIVE": _LOCK,
    "RELEASE_LOCK": _UNLOCK,
    "SERVICE_RELEASE_LOCKS": _UNLOCK,
    "RELEASE_ALL_LOCKS": _UNLOCK_ALL,
    "VERSION_TOKENS_UNLOCK": _UNLOCK_ALL,
    "FOUND_ROWS": Effect.FOUND_ROWS,
    "LAST_INSERT_ID": Effect.LAST_INSERT_ID,
    "ROW_COUNT": Effect.ROW_COUNT,
    "LASTVAL": Effect.LASTVAL,
    "CONNECTION_ID": Effect.CONNECTION_ID,
    "NEXTVAL": Effect.SEQUENCE,
}


def scan(
    toks: list[Token], lo: int, hi: int, acc: Acc, *, any_uservar_assigns: bool = False
) -> None:
    """Find the effects that can appear inside any expression in [lo, hi).

    With `any_uservar_assigns`, every ``@x`` counts as an assignment (CALL
    arguments may be OUT parameters; LOAD DATA column lists assign;
    GET DIAGNOSTICS targets).
    """
    for j in range(lo, hi):
        t = toks[j]
        k = t.kind
        if k == WORD or k == QIDENT:
            v = t.value if k == WORD else t.value.upper()
            what = FUNCTIONS.get(v)
            if what is not None and _is_op(toks, j + 1, "("):
                _function(toks, j, hi, what, acc)
            elif k == WORD:
                if v == "SQL_CALC_FOUND_ROWS":
                    # the proxy reads FOUND_ROWS() before the connection goes back
                    acc.add(Effect.FOUND_ROWS)
                    acc.objects.append(("calc_found_rows", None))
                elif v == "INTO":
                    m = j + 1
                    while m < hi and toks[m].kind == USERVAR:
                        acc.user_var(toks[m].value, None)
                        if _is_op(toks, m + 1, ","):
                            m += 2
                        else:
                            break
                elif v == "PREVIOUS" and _w(toks, j + 1) == "VALUE" and _w(toks, j + 2) == "FOR":
                    acc.need(Effect.LASTVAL)
                elif v == "NEXT" and _w(toks, j + 1) == "VALUE" and _w(toks, j + 2) == "FOR":
                    acc.add(Effect.SEQUENCE)
                    acc.objects.append(("nextval", None))
        elif k == USERVAR:
            if any_uservar_assigns or _is_op(toks, j + 1, ":="):
                acc.user_var(t.value, None)
        elif k == SYSVAR:
            name = split_sysvar(t.value)[1]
            if name == "warning_count" or name == "error_count":
                acc.need(Effect.WARNINGS)
            elif name == "identity" or name == "last_insert_id":
                acc.need(Effect.LAST_INSERT_ID)


_WRITES = frozenset({"INSERT", "UPDATE", "REPLACE", "DELETE"})


def _function(toks: list[Token], j: int, hi: int, what: str, acc: Acc) -> None:
    arg = toks[j + 2] if j + 2 < hi else None
    literal = arg.value if arg is not None and arg.kind == STRING else None
    if what == _LOCK:
        acc.pin_default(Effect.ADVISORY_LOCK)
        acc.objects.append(("advisory_lock", literal))
    elif what == _UNLOCK:
        acc.add(Effect.ADVISORY_UNLOCK)
        acc.objects.append(("advisory_unlock", literal))
    elif what == _UNLOCK_ALL:
        acc.add(Effect.ADVISORY_UNLOCK)
        acc.objects.append(("advisory_unlock_all", None))
    elif what == Effect.LAST_INSERT_ID:
        if _is_op(toks, j + 2, ")"):
            acc.need(Effect.LAST_INSERT_ID)
        else:
            # LAST_INSERT_ID(expr) sets the value later reads return: the proxy reads
            # it back before the connection goes to another session
            acc.add(Effect.LAST_INSERT_ID)
            acc.objects.append(("set_last_insert_id", None))
    elif what == Effect.SEQUENCE:
        acc.add(Effect.SEQUENCE)
        acc.objects.append(("nextval", None))
    else:
        acc.need(what)


# ------------------------------------------------------------------ rules

Rule = Callable[[list[Token], int, str, Acc, "Recurse"], None]
Recurse = Callable[[str, Acc], None]


def _dml(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    acc.dml = True
    scan(toks, 0, len(toks), acc)


def _scan_only(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    scan(toks, 0, len(toks), acc)


def _ddl(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    acc.implicit_commit()


def _global(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    acc.add(Effect.GLOBAL)


def _load(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    nxt = _w(toks, i + 1)
    if nxt in ("DATA", "XML"):
        scan(toks, 0, len(toks), acc, any_uservar_assigns=True)
    elif nxt == "INDEX":
        acc.implicit_commit()
    else:
        acc.bad("unrecognised LOAD statement")


def _use(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    name, j = _name_at(toks, i + 1, text)
    if name is None or j != len(toks):
        acc.bad("unrecognised USE statement")
        return
    acc.add(Effect.SCHEMA)
    acc.objects.append(("schema", name))


def _begin(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    rest = [t.value if t.kind == WORD else "?" for t in toks[i + 1 :]]
    if rest in ([], ["WORK"]):
        acc.add(Effect.TX_BEGIN)
    elif rest[:2] == ["NOT", "ATOMIC"]:
        # A MariaDB anonymous compound statement: arbitrary statements run.
        acc.add(Effect.ROUTINE, PIN_COMPOUND)
        scan(toks, 0, len(toks), acc, any_uservar_assigns=True)
    else:
        acc.bad("unrecognised BEGIN statement")


_REPLICATION_WORDS = frozenset({"SLAVE", "REPLICA", "ALL", "GROUP_REPLICATION"})


def _start(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    nxt = _w(toks, i + 1)
    if nxt == "TRANSACTION":
        allowed = {"WITH", "CONSISTENT", "SNAPSHOT", "READ", "ONLY", "WRITE"}
        for t in toks[i + 2 :]:
            if not ((t.kind == WORD and t.value in allowed) or (t.kind == OP and t.value == ",")):
                acc.bad("unrecognised START TRANSACTION characteristic")
                return
        acc.add(Effect.TX_BEGIN)
    elif nxt in _REPLICATION_WORDS:
        acc.implicit_commit()
    else:
        acc.bad("unrecognised START statement")


def _stop(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    if _w(toks, i + 1) in _REPLICATION_WORDS:
        acc.implicit_commit()
    else:
        acc.bad("unrecognised STOP statement")


def _completion(toks: list[Token], j: int, acc: Acc) -> bool:
    """[WORK] [AND [NO] CHAIN] [[NO] RELEASE] from j to the end."""
    words = [t.value if t.kind == WORD else "?" for t in toks[j:]]
    if words[:1] == ["WORK"]:
        words = words[1:]
    if words[:2] == ["AND", "CHAIN"]:
        acc.add(Effect.TX_BEGIN)
        words = words[2:]
    elif words[:3] == ["AND", "NO", "CHAIN"]:
        words = words[3:]
    if words == ["RELEASE"]:
        acc.add(Effect.DISCONNECT)
        words = []
    elif words == ["NO", "RELEASE"]:
        words = []
    return not words


def _commit(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    tmp = Acc()
    if not _completion(toks, i + 1, tmp):
        acc.bad("unrecognised COMMIT statement")
        return
    acc.add(Effect.TX_END)
    acc.merge(tmp)


def _rollback(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    j = i + 1
    if _w(toks, j) == "WORK":
        j += 1
    if _w(toks, j) == "TO":
        j += 1
        if _w(toks, j) == "SAVEPOINT":
            j += 1
        name, end = _name_at(toks, j, text)
        if name is None or end != len(toks):
            acc.bad("unrecognised ROLLBACK TO statement")
            return
        acc.add(Effect.SAVEPOINT)
        acc.objects.append(("rollback_to", name))
        return
    tmp = Acc()
    if not _completion(toks, i + 1, tmp):
        acc.bad("unrecognised ROLLBACK statement")
        return
    acc.add(Effect.TX_END)
    acc.merge(tmp)


def _savepoint(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    name, end = _name_at(toks, i + 1, text)
    if name is None or end != len(toks):
        acc.bad("unrecognised SAVEPOINT statement")
        return
    acc.add(Effect.SAVEPOINT)
    acc.objects.append(("savepoint", name))


def _release(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    name, end = _name_at(toks, i + 2, text)
    if _w(toks, i + 1) != "SAVEPOINT" or name is None or end != len(toks):
        acc.bad("unrecognised RELEASE statement")
        return
    acc.add(Effect.SAVEPOINT)
    acc.objects.append(("release_savepoint", name))


_XA_VERBS = {
    "START": ("xa_start", True),
    "BEGIN": ("xa_start", True),
    "END": ("xa_end", True),
    "PREPARE": ("xa_prepare", True),
    "COMMIT": ("xa_commit", False),
    "ROLLBACK": ("xa_rollback", False),
    "RECOVER": ("xa_recover", False),
}


def _xa(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    verb = _XA_VERBS.get(_w(toks, i + 1))
    if verb is None:
        acc.bad("unrecognised XA statement")
        return
    action, pins = verb
    acc.add(Effect.XA, PIN_REASONS[Effect.XA] if pins else None)
    xid = None
    if i + 2 < len(toks) and action != "xa_recover":
        xid = _value_of(toks[i + 2], text)
    acc.objects.append((action, xid))


def _lock(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    nxt = _w(toks, i + 1)
    if nxt in ("TABLE", "TABLES"):
        acc.pin_default(Effect.TABLE_LOCK)
        acc.implicit_commit()
    elif nxt == "INSTANCE" and _w(toks, i + 2) == "FOR" and _w(toks, i + 3) == "BACKUP":
        acc.add(Effect.TABLE_LOCK, PIN_BACKUP_LOCK)
    else:
        acc.bad("unrecognised LOCK statement")


def _unlock(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    if _w(toks, i + 1) in ("TABLE", "TABLES", "INSTANCE") and len(toks) == i + 2:
        acc.add(Effect.TABLE_UNLOCK)
    else:
        acc.bad("unrecognised UNLOCK statement")


def _flush(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    acc.implicit_commit()
    j = i + 1
    while _w(toks, j) in ("NO_WRITE_TO_BINLOG", "LOCAL"):
        j += 1
    if _w(toks, j) not in ("TABLE", "TABLES"):
        return
    words = [t.value for t in toks[j:] if t.kind == WORD]
    for k in range(len(words) - 1):
        if words[k : k + 3] == ["WITH", "READ", "LOCK"]:
            acc.add(Effect.TABLE_LOCK, PIN_GLOBAL_READ_LOCK)
            return
        if words[k : k + 2] == ["FOR", "EXPORT"]:
            acc.add(Effect.TABLE_LOCK, PIN_FLUSH_FOR_EXPORT)
            return


def _backup(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    nxt = _w(toks, i + 1)
    if nxt == "STAGE":
        stage = _w(toks, i + 2)
        if stage == "END":
            acc.add(Effect.TABLE_UNLOCK)
        elif stage in ("START", "FLUSH", "BLOCK_DDL", "BLOCK_COMMIT"):
            acc.add(Effect.TABLE_LOCK, PIN_BACKUP_LOCK)
        else:
            acc.bad("unrecognised BACKUP STAGE")
    elif nxt == "LOCK":
        acc.add(Effect.TABLE_LOCK, PIN_BACKUP_LOCK)
    elif nxt == "UNLOCK":
        acc.add(Effect.TABLE_UNLOCK)
    else:
        acc.bad("unrecognised BACKUP statement")


def _prepare(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    name, j = _name_at(toks, i + 1, text)
    if name is None or _w(toks, j) != "FROM" or j + 1 >= len(toks):
        acc.bad("unrecognised PREPARE statement")
        return
    acc.pin_default(Effect.PREPARE)
    acc.objects.append(("prepare", name))


def _deallocate(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    name, j = _name_at(toks, i + 2, text)
    if _w(toks, i + 1) != "PREPARE" or name is None or j != len(toks):
        acc.bad("unrecognised DEALLOCATE statement")
        return
    acc.add(Effect.DEALLOCATE)
    acc.objects.append(("deallocate", name))


def _execute(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    if _w(toks, i + 1) == "IMMEDIATE":
        j = i + 2
        if (
            j < len(toks)
            and toks[j].kind == STRING
            and (j + 1 == len(toks) or _w(toks, j + 1) == "USING")
        ):
            recurse(toks[j].value, acc)  # the literal is the statement that runs
            scan(toks, j + 1, len(toks), acc)
        else:
            acc.add(Effect.EXECUTE, PIN_EXECUTE_IMMEDIATE)
            scan(toks, j, len(toks), acc)
        return
    name, j = _name_at(toks, i + 1, text)
    if name is None or (j < len(toks) and _w(toks, j) != "USING"):
        acc.bad("unrecognised EXECUTE statement")
        return
    acc.pin_default(Effect.EXECUTE)
    acc.objects.append(("execute", name))


def _handler(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    name, j = _name_at(toks, i + 1, text)
    verb = _w(toks, j)
    if name is None or verb not in ("OPEN", "READ", "CLOSE"):
        acc.bad("unrecognised HANDLER statement")
        return
    if verb == "OPEN":
        k = j + 1
        if _w(toks, k) == "AS":
            k += 1
        alias, _ = _name_at(toks, k, text)
        acc.pin_default(Effect.HANDLER)
        acc.objects.append(("handler_open", alias or name))
    elif verb == "READ":
        acc.pin_default(Effect.HANDLER)
        acc.objects.append(("handler_read", name))
        scan(toks, j, len(toks), acc)
    else:
        acc.add(Effect.HANDLER)
        acc.objects.append(("handler_close", name))


def _call(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    acc.pin_default(Effect.ROUTINE)
    scan(toks, i + 1, len(toks), acc, any_uservar_assigns=True)


def _show(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    nxt = _w(toks, i + 1)
    if nxt in ("WARNINGS", "ERRORS"):
        acc.need(Effect.WARNINGS)
    elif (
        nxt == "COUNT"
        and _is_op(toks, i + 2, "(")
        and _is_op(toks, i + 3, "*")
        and _is_op(toks, i + 4, ")")
        and _w(toks, i + 5) in ("WARNINGS", "ERRORS")
    ):
        acc.need(Effect.WARNINGS)
    else:
        scan(toks, i + 1, len(toks), acc)


def _get(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    j = i + 1
    if _w(toks, j) in ("CURRENT", "STACKED"):
        j += 1
    if _w(toks, j) != "DIAGNOSTICS":
        acc.bad("unrecognised GET statement")
        return
    acc.need(Effect.WARNINGS)
    scan(toks, j + 1, len(toks), acc, any_uservar_assigns=True)


_DEFINITIONS = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "VIEW", "PACKAGE"})
_AFTER_DEFINER = _DEFINITIONS | {"SQL", "AGGREGATE", "DEFINER", "ALGORITHM"}
_CREATE_SKIP = frozenset(
    {"OR", "REPLACE", "AGGREGATE", "ONLINE", "OFFLINE", "UNIQUE", "FULLTEXT", "SPATIAL"}
)


def _create(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    j = i + 1
    temporary = False
    n = len(toks)
    while j < n:
        w = _w(toks, j)
        if w in _CREATE_SKIP:
            j += 1
        elif w == "TEMPORARY":
            temporary = True
            j += 1
        elif w in ("DEFINER", "ALGORITHM"):
            # DEFINER = user | CURRENT_USER[()]; ALGORITHM = x: skip to the next
            # keyword that can follow them.
            j += 1
            while j < n and _w(toks, j) not in _AFTER_DEFINER:
                j += 1
        elif w == "SQL" and _w(toks, j + 1) == "SECURITY":
            j += 3
        else:
            break
    kind = _w(toks, j)
    if temporary and kind in ("TABLE", "SEQUENCE"):
        k = j + 1
        if _w(toks, k) == "IF" and _w(toks, k + 1) == "NOT" and _w(toks, k + 2) == "EXISTS":
            k += 3
        name, _ = _name_at(toks, k, text)
        acc.pin_default(Effect.TEMP_TABLE)
        acc.objects.append(("temp_table", name))
        scan(toks, k, n, acc)  # CREATE TEMPORARY TABLE t SELECT …
        return
    acc.implicit_commit()
    if kind not in _DEFINITIONS:  # a routine/view body does not run now
        scan(toks, j, n, acc)  # CREATE TABLE t SELECT GET_LOCK(…)


def _drop(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    j = i + 1
    temporary = _w(toks, j) == "TEMPORARY"
    if temporary:
        j += 1
    kind = _w(toks, j)
    if kind == "PREPARE" and not temporary:
        name, end = _name_at(toks, j + 1, text)
        if name is None or end != len(toks):
            acc.bad("unrecognised DROP PREPARE statement")
            return
        acc.add(Effect.DEALLOCATE)
        acc.objects.append(("deallocate", name))
        return
    if kind in ("TABLE", "TABLES", "SEQUENCE"):
        k = j + 1
        if _w(toks, k) == "IF" and _w(toks, k + 1) == "EXISTS":
            k += 2
        names = []
        for lo, hi in _split_commas(toks, k, len(toks)):
            name, _ = _name_at(toks, lo, text)
            if name is not None and lo < hi:
                names.append(name)
        if temporary:
            acc.add(Effect.TEMP_TABLE_DROP)
            acc.objects.extend(("temp_table_drop", nm) for nm in names)
            return
        acc.objects.extend(("drop_table", nm) for nm in names)
    elif temporary:
        acc.bad("unrecognised DROP TEMPORARY statement")
        return
    acc.implicit_commit()


def _analyze(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    if _w(toks, i + 1) in ("TABLE", "TABLES", "NO_WRITE_TO_BINLOG", "LOCAL"):
        acc.implicit_commit()
        return
    # MariaDB's ANALYZE <statement> runs the statement.
    _inner_statement(toks, i + 1, text, acc, recurse)


def _explain(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    j = i + 1
    if _w(toks, j) == "ANALYZE":  # MySQL 8 EXPLAIN ANALYZE runs the statement
        _inner_statement(toks, j + 1, text, acc, recurse)
        return
    # EXPLAIN does not run the statement, but the optimizer may evaluate
    # constant subqueries: look for effects anyway (the safe side).
    scan(toks, j, len(toks), acc)


def _inner_statement(toks: list[Token], j: int, text: str, acc: Acc, recurse: Recurse) -> None:
    while _w(toks, j) == "FORMAT" and _is_op(toks, j + 1, "="):
        j += 3
    inner = toks[j:]
    if not inner:
        acc.bad("ANALYZE/EXPLAIN without a statement")
        return
    classify_tokens(inner, text, acc, recurse)


def _unknown_compound(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    acc.bad(f"{toks[i].value} outside a stored program or compound statement")
    scan(toks, 0, len(toks), acc)


# ------------------------------------------------------------------- SET


def _tx_characteristics(toks: list[Token], j: int) -> dict[str, str | None] | None:
    """ISOLATION LEVEL …, READ ONLY|WRITE from j to the end; None if malformed."""
    out: dict[str, str | None] = {}
    words = [t.value if t.kind == WORD else ("," if t.value == "," else "?") for t in toks[j:]]
    for part in " ".join(words).split(","):
        p = tuple(part.split())
        if p[:2] == ("ISOLATION", "LEVEL") and p[2:] in ISOLATION_LEVELS:
            out["tx_isolation"] = ISOLATION_LEVELS[p[2:]]
        elif p == ("READ", "ONLY"):
            out["tx_read_only"] = "ON"
        elif p == ("READ", "WRITE"):
            out["tx_read_only"] = "OFF"
        else:
            return None
    return out


def _set(toks: list[Token], i: int, text: str, acc: Acc, recurse: Recurse) -> None:
    j = i + 1
    w1 = _w(toks, j)
    if w1 == "STATEMENT":
        _set_statement(toks, j + 1, text, acc, recurse)
        return
    if w1 == "TRANSACTION" or (w1 in SCOPES_UPPER and _w(toks, j + 1) == "TRANSACTION"):
        scope = None if w1 == "TRANSACTION" else SCOPES[w1.lower()]
        chars = _tx_characteristics(toks, j + (1 if scope is None else 2))
        if chars is None:
            acc.bad("unrecognised SET TRANSACTION characteristics")
        elif scope is None:  # no scope: the next transaction only
            acc.pin_default(Effect.NEXT_TX)
            acc.next_tx.update(chars)
        elif scope == "global":
            acc.add(Effect.GLOBAL)
        else:
            acc.add(Effect.SETTINGS)
            acc.settings.update(chars)
        return
    if w1 == "PASSWORD":
        acc.add(Effect.PASSWORD)
        acc.implicit_commit()
        return
    if w1 == "ROLE":
        acc.pin_default(Effect.ROLE)
        return
    if w1 == "DEFAULT" and _w(toks, j + 1) == "ROLE":
        acc.add(Effect.GLOBAL)  # an account property, not session state
        return
    if j >= len(toks):
        acc.bad("SET without assignments")
        return
    sticky = "session"
    for lo, hi in _split_commas(toks, j, len(toks)):
        sticky = _set_item(toks, lo, hi, text, acc, sticky)


SCOPES_UPPER = frozenset(s.upper() for s in SCOPES)


def _charset_value(toks: list[Token], k: int, hi: int, text: str) -> tuple[str | None, int, bool]:
    """A character set or collation name at k: (value, next, ok)."""
    if k >= hi:
        return None, k, False
    t = toks[k]
    if t.kind in (STRING, WORD, QIDENT):
        return _value_of(t, text), k + 1, True
    return None, k, False


def _set_item(toks: list[Token], lo: int, hi: int, text: str, acc: Acc, sticky: str) -> str:
    """One assignment of a SET list; returns the scope for the next ones."""
    if lo >= hi:
        acc.bad("empty SET assignment")
        return sticky
    k = lo
    scope: str | None = None
    w = _w(toks, k)
    if w in SCOPES_UPPER:
        scope = SCOPES[w.lower()]
        sticky = scope
        k += 1
        w = _w(toks, k)
    if w == "NAMES":
        cs, k, ok = _charset_value(toks, k + 1, hi, text)
        coll = None
        if ok and _w(toks, k) == "COLLATE":
            coll, k, ok = _charset_value(toks, k + 1, hi, text)
        if not ok or k != hi:
            acc.bad("unrecognised SET NAMES")
            return sticky
        acc.add(Effect.SETTINGS)
        acc.settings.update(names_settings(cs, coll))
        return sticky
    if w == "CHARSET" or (w == "CHARACTER" and _w(toks, k + 1) == "SET"):
        k += 1 if w == "CHARSET" else 2
        cs, k, ok = _charset_value(toks, k, hi, text)
        if not ok or k != hi:
            acc.bad("unrecognised SET CHARACTER SET")
            return sticky
        acc.add(Effect.SETTINGS)
        acc.settings.update(charset_settings(cs))
        return sticky
    t = toks[k] if k < hi else None
    if t is None:
        acc.bad("unrecognised SET assignment")
        return sticky
    if t.kind == USERVAR and scope is None:
        target = ("user", t.value)
        k += 1
    elif t.kind == SYSVAR and scope is None:
        s, name = split_sysvar(t.value)
        target = (s or "session", name)
        k += 1
    elif t.kind in (WORD, QIDENT):
        name, k = _name_at(toks, k, text)
        assert name is not None
        target = (scope or sticky, canonical_name(name))
    else:
        acc.bad("unrecognised SET assignment")
        return sticky
    if not (k < hi and toks[k].kind == OP and toks[k].value in ("=", ":=")) or k + 1 >= hi:
        acc.bad("unrecognised SET assignment")
        return sticky
    value = toks[k + 1 : hi]
    kind, name = target
    if kind == "user":
        acc.user_var(name, sql_literal(value, text))
    elif kind == "global":
        acc.add(Effect.GLOBAL)
    else:
        if name == "autocommit":
            acc.add(Effect.AUTOCOMMIT)
        elif name.startswith("session_track_"):
            acc.pin_default(Effect.SESSION_TRACK)
        else:
            acc.add(Effect.SETTINGS, PIN_INSERT_ID if name in ONE_SHOT_VARIABLES else None)
        lit = literal_value(value, text)
        acc.settings[name] = lit
        if name == "sql_mode":
            new = flags_for_sql_mode(lit)
            acc.flags_after = FLAGS_UNKNOWN if new is None else new
    scan(toks, k + 1, hi, acc)
    return sticky


def _set_statement(toks: list[Token], j: int, text: str, acc: Acc, recurse: Recurse) -> None:
    """MariaDB ``SET STATEMENT var=value [, …] FOR <statement>``."""
    depth = 0
    for_at = -1
    for m in range(j, len(toks)):
        t = toks[m]
        if t.kind == OP:
            if t.value == "(":
                depth += 1
            elif t.value == ")":
                depth -= 1
        elif depth == 0 and t.kind == WORD and t.value == "FOR":
            for_at = m
            break
    if for_at < 0 or for_at + 1 >= len(toks):
        acc.bad("SET STATEMENT without FOR <statement>")
        return
    for lo, hi in _split_commas(toks, j, for_at):
        t = toks[lo] if lo < hi else None
        if t is None or not _is_op(toks, lo + 1, "="):
            acc.bad("unrecognised SET STATEMENT variable")
            return
        if t.kind == SYSVAR:
            name = split_sysvar(t.value)[1]
        elif t.kind in (WORD, QIDENT):
            name = canonical_name(t.value)
        else:
            acc.bad("unrecognised SET STATEMENT variable")
            return
        acc.statement_vars.add(name)
        scan(toks, lo + 2, hi, acc)
    classify_tokens(toks[for_at + 1 :], text, acc, recurse)


# --------------------------------------------------------------- dispatch

HANDLERS: dict[str, Rule] = {
    "SELECT": _dml,
    "WITH": _dml,
    "VALUES": _dml,
    "TABLE": _dml,
    "INSERT": _dml,
    "REPLACE": _dml,
    "UPDATE": _dml,
    "DELETE": _dml,
    "DO": _dml,
    "LOAD": _load,
    "SET": _set,
    "USE": _use,
    "BEGIN": _begin,
    "START": _start,
    "STOP": _stop,
    "COMMIT": _commit,
    "ROLLBACK": _rollback,
    "SAVEPOINT": _savepoint,
    "RELEASE": _release,
    "XA": _xa,
    "LOCK": _lock,
    "UNLOCK": _unlock,
    "FLUSH": _flush,
    "BACKUP": _backup,
    "PREPARE": _prepare,
    "DEALLOCATE": _deallocate,
    "EXECUTE": _execute,
    "HANDLER": _handler,
    "CALL": _call,
    "SHOW": _show,
    "GET": _get,
    "CREATE": _create,
    "DROP": _drop,
    "ALTER": _ddl,
    "RENAME": _ddl,
    "TRUNCATE": _ddl,
    "GRANT": _ddl,
    "REVOKE": _ddl,
    "INSTALL": _ddl,
    "UNINSTALL": _ddl,
    "OPTIMIZE": _ddl,
    "REPAIR": _ddl,
    "CHECK": _ddl,
    "CACHE": _ddl,
    "RESET": _ddl,
    "CHANGE": _ddl,
    "ANALYZE": _analyze,
    "EXPLAIN": _explain,
    "DESCRIBE": _explain,
    "DESC": _explain,
    "CHECKSUM": _scan_only,
    "KILL": _scan_only,
    "SIGNAL": _scan_only,
    "RESIGNAL": _scan_only,
    "HELP": _scan_only,
    "PURGE": _global,
    "SHUTDOWN": _global,
}

for _kw in ("DECLARE", "IF", "WHILE", "LOOP", "REPEAT", "CASE", "LEAVE", "ITERATE"):
    HANDLERS[_kw] = _unknown_compound
for _kw in ("RETURN", "FETCH", "OPEN", "CLOSE", "END", "FOR"):
    HANDLERS[_kw] = _unknown_compound

#: Statements that may start with "(".
_PAREN_HEADS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})


def classify_tokens(toks: list[Token], text: str, acc: Acc, recurse: Recurse) -> None:
    """Apply the rules to the tokens of one statement."""
    i = 0
    n = len(toks)
    while i < n and toks[i].kind == OP and toks[i].value == "(":
        i += 1
    head = _w(toks, i)
    if not head:
        acc.bad("statement does not start with a keyword")
        scan(toks, 0, n, acc)
        return
    acc.head = head
    rule = HANDLERS.get(head)
    if rule is None or (i > 0 and head not in _PAREN_HEADS):
        acc.bad(f"unrecognised statement {head}")
        scan(toks, 0, n, acc)
        return
    rule(toks, i, text, acc, recurse)
