"""The SQL admin console: what a user named in ``[admin] users`` gets when it connects to
the proxy's own port with the database ``tainted_proxy`` (frontend.admin_session sends it).

``execute(proxy, session, sql, views)`` parses one statement and returns a ``ResultSet``
(columns and rows, for wire.packets.text_resultset) or ``Ok``, or raises ``ConsoleError``
(an ERR). It reads the running proxy's views only through admin.views (``views``: every
worker's, gathered beforehand by admin.fleet for the parts ``parts_needed`` names;
else this process's), so the console shows what the HTTP endpoint and the
page show. No I/O; built on the event loop's thread.

The views (column names are snake_case, as in the JSON views)::

    SHOW POOLS    [LIKE 'pattern']   one row per upstream login        LIKE: upstream_user
    SHOW SESSIONS [LIKE 'pattern']   one row per client session        LIKE: user
    SHOW SERVERS  [LIKE 'pattern']   one row per upstream connection   LIKE: upstream_user
    SHOW TAINTS   [LIKE 'pattern']   the taint ledger, with hints      LIKE: fingerprint
    SHOW SETTINGS [LIKE 'pattern']   sub-pools: login x settings key   LIKE: settings
    SHOW STATS    [LIKE 'pattern']   counters, name / value            LIKE: name
    SHOW CONFIG   [LIKE 'pattern']   configuration, no secrets         LIKE: name
    SHOW HELP                        the statements above

LIKE is MySQL's: ``%`` any run of characters, ``_`` one character, ``\\`` escapes,
case-insensitive, over the whole value.

So that client programs connect as they would to a server, the console also answers what
they send on their own (client-init statements): ``SET ...`` (an OK; ``autocommit`` is
remembered), ``SELECT`` of ``@@variables``, ``DATABASE()``, ``USER()``, ``VERSION()``,
``CONNECTION_ID()`` and literals, ``SHOW [GLOBAL|SESSION] VARIABLES [LIKE ...]``,
``SHOW WARNINGS`` / ``SHOW ERRORS`` (empty), ``SHOW DATABASES``, ``SHOW TABLES`` (empty),
``USE tainted_proxy``, and ``BEGIN`` / ``START TRANSACTION`` / ``COMMIT`` / ``ROLLBACK``
(OKs: there is nothing to commit). Anything else is ERR 1064 naming the statements above.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tainted_proxy.admin import views as admin_views
from tainted_proxy.admin.merge import POOL_COUNTS
from tainted_proxy.admin.views import Views

if TYPE_CHECKING:
    from tainted_proxy.frontend.client import Services as Proxy

CONSOLE_DATABASE = "tainted_proxy"
VERSION_COMMENT = "tainted-proxy admin console"

Value = str | int | None

ER_PARSE_ERROR = 1064
ER_UNKNOWN_SYSTEM_VARIABLE = 1193
ER_BAD_DB_ERROR = 1049


@dataclass(slots=True)
class ConsoleSession:
    """What the console remembers of one admin session."""

    user: str
    client_id: int
    host: str = "localhost"
    autocommit: bool = True


@dataclass(slots=True)
class ResultSet:
    columns: list[str]
    rows: list[list[Value]]


@dataclass(slots=True)
class Ok:
    pass


class ConsoleError(Exception):
    def __init__(self, code: int, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate
        self.message = message


def is_console_login(config_admin_users: Iterable[str], user: str, database: str | None) -> bool:
    """An admin console login: the user is in ``[admin] users`` and asks for the database
    ``tainted_proxy``."""
    return database == CONSOLE_DATABASE and user in config_admin_users


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>/\*.*?\*/|--(?:[ \t][^\n]*)?(?:\n|$)|\#[^\n]*)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<quoted>`(?:[^`]|``)*`)
  | (?P<sysvar>@@(?:(?:global|session|local)\.)?[A-Za-z0-9_$]+)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
  | (?P<punct>[(),=;*.])
    """,
    re.VERBOSE | re.DOTALL | re.IGNORECASE,
)


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper()

    def value(self) -> str:
        """A string literal's or a quoted identifier's value; a word's text."""
        if self.kind == "string":
            return _unquote_string(self.text)
        if self.kind == "quoted":
            return self.text[1:-1].replace("``", "`")
        return self.text


_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


def _unquote_string(text: str) -> str:
    q, body = text[0], text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            # as MySQL: \% and \_ keep their backslash (for LIKE)
            out.append("\\" + n if n in "%_" else _ESCAPES.get(n, n))
            i += 2
        elif c == q and body[i + 1 : i + 2] == q:
            out.append(q)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _tokens(sql: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None:
            raise _unsupported(sql)
        kind = m.lastgroup or ""
        if kind not in ("space", "comment"):
            toks.append(_Tok(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    while toks and toks[-1].text == ";":
        toks.pop()
    return toks


# --------------------------------------------------------------------------------------------
# LIKE
# --------------------------------------------------------------------------------------------


def like_regex(pattern: str) -> re.Pattern[str]:
    """MySQL LIKE: ``%`` any run, ``_`` one character, ``\\`` escapes; case-insensitive."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def like(value: object, pattern: str) -> bool:
    return like_regex(pattern).fullmatch("" if value is None else str(value)) is not None


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


def _text(v: Any) -> str | None:
    """Any JSON-able value as a console cell (text)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))
    if isinstance(v, list):
        if all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in v):
            return ", ".join(str(x) for x in v)
        return json.dumps(v, sort_keys=True)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _when(t: float) -> str | None:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    if not t:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


# --------------------------------------------------------------------------------------------
# The views
# --------------------------------------------------------------------------------------------


def _settings_rows(v: Views) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for s in v.servers():
        key = (s["upstream_user"], s["settings"])
        g = groups.setdefault(
            key,
            {
                "upstream_user": key[0],
                "settings": key[1],
                "connections": 0,
                "in_use": 0,
                "idle": 0,
            },
        )
        g["connections"] += 1
        g["in_use" if s["state"] == "in use" else "idle"] += 1
    return sorted(groups.values(), key=lambda g: (g["upstream_user"], -g["connections"]))


def show_pools(v: Views) -> ResultSet:
    subpools: dict[str, int] = {}
    for g in _settings_rows(v):
        subpools[g["upstream_user"]] = subpools.get(g["upstream_user"], 0) + 1
    cols = [
        "upstream_user",
        "users",
        "modes",
        *POOL_COUNTS,
        "cap",
        "subpools",
        "multiplexing_ratio",
    ]
    rows: list[list[Value]] = []
    for p in v.pools():
        rows.append(
            [
                p["upstream_user"],
                _text(p["users"]),
                _text(p["modes"]),
                *(p[k] for k in POOL_COUNTS),
                _int(p["cap"]),
                subpools.get(p["upstream_user"], 0),
                _text(p["multiplexing_ratio"]),
            ]
        )
    return ResultSet(cols, rows)


def show_sessions(v: Views) -> ResultSet:
    cols = [
        "id",
        "user",
        "address",
        "program",
        "mode",
        "state",
        "upstream_thread_id",
        "pin",
        "pin_reasons",
        "pin_objects",
        "pin_age_seconds",
        "statement",
        "statement_age_seconds",
        "connected_seconds",
        "statements",
    ]
    rows: list[list[Value]] = []
    for s in v.sessions():
        rows.append(
            [
                s["id"],
                s["user"],
                s["address"],
                s["program"],
                s["mode"],
                s["state"],
                _int(s["upstream_thread_id"]),
                s["pin"],
                _text(s["pin_reasons"]) or None,
                _text(s["pin_objects"]) or None,
                _text(s["pin_age_seconds"]),
                s["statement"],
                _text(s["statement_age_seconds"]),
                _text(s["connected_seconds"]),
                s["statements"],
            ]
        )
    return ResultSet(cols, rows)


def show_servers(v: Views) -> ResultSet:
    cols = [
        "thread_id",
        "upstream_user",
        "state",
        "client_id",
        "settings",
        "age_seconds",
        "idle_seconds",
    ]
    rows: list[list[Value]] = [
        [
            s["thread_id"],
            s["upstream_user"],
            s["state"],
            _int(s["client_id"]),
            s["settings"],
            _text(s["age_seconds"]),
            _text(s["idle_seconds"]),
        ]
        for s in v.servers()
    ]
    return ResultSet(cols, rows)


def show_taints(v: Views) -> ResultSet:
    cols = [
        "user",
        "program",
        "mode",
        "reason",
        "fingerprint",
        "count",
        "pinned_seconds",
        "longest_pin_seconds",
        "first_seen",
        "last_seen",
        "hint",
    ]
    rows: list[list[Value]] = [
        [
            e["user"],
            e["program"],
            e["mode"],
            e["reason"],
            e["fingerprint"],
            e["count"],
            _text(e["pinned_seconds"]),
            _text(e["longest_pin_seconds"]),
            _when(e["first_seen"]),
            _when(e["last_seen"]),
            e["hint"],
        ]
        for e in v.report()["ledger"]
    ]
    return ResultSet(cols, rows)


def show_settings(v: Views) -> ResultSet:
    cols = ["upstream_user", "settings", "connections", "in_use", "idle"]
    rows: list[list[Value]] = [
        [g["upstream_user"], g["settings"], g["connections"], g["in_use"], g["idle"]]
        for g in _settings_rows(v)
    ]
    return ResultSet(cols, rows)


def _flatten(prefix: str, v: Any, out: list[list[Value]]) -> None:
    if isinstance(v, dict) and v:
        for k, v2 in v.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v2, out)
    else:
        out.append([prefix, _text(v)])


def show_stats(v: Views) -> ResultSet:
    rows: list[list[Value]] = []
    totals = v.totals()
    totals.pop("history", None)
    _flatten("", totals, rows)
    _flatten("", v.stats(), rows)
    return ResultSet(["name", "value"], rows)


def show_config(v: Views) -> ResultSet:
    rows: list[list[Value]] = []
    _flatten("", v.config(), rows)
    return ResultSet(["name", "value"], rows)


HELP: list[tuple[str, str]] = [
    ("SHOW POOLS [LIKE 'upstream_user']", "one row per upstream login: clients, connections"),
    ("SHOW SESSIONS [LIKE 'user']", "one row per client session: state, pin, statement"),
    ("SHOW SERVERS [LIKE 'upstream_user']", "one row per upstream connection"),
    ("SHOW TAINTS [LIKE 'fingerprint']", "the taint ledger: what pinned, how long; hints"),
    ("SHOW SETTINGS [LIKE 'settings']", "sub-pools: connections per login and settings key"),
    ("SHOW STATS [LIKE 'name']", "counters, name / value"),
    ("SHOW CONFIG [LIKE 'name']", "the configuration in force, secrets left out"),
    ("SHOW HELP", "this list"),
]


def show_help(v: Views) -> ResultSet:
    return ResultSet(["statement", "description"], [[s, d] for s, d in HELP])


# view name -> (builder, the column LIKE matches)
VIEWS: dict[str, tuple[Callable[[Views], ResultSet], str | None]] = {
    "POOLS": (show_pools, "upstream_user"),
    "SESSIONS": (show_sessions, "user"),
    "SERVERS": (show_servers, "upstream_user"),
    "TAINTS": (show_taints, "fingerprint"),
    "SETTINGS": (show_settings, "settings"),
    "STATS": (show_stats, "name"),
    "CONFIG": (show_config, "name"),
    "HELP": (show_help, None),
}

SUPPORTED = ", ".join(f"SHOW {name}" for name in VIEWS)
_SUPPORTED_LIKE = (
    "SHOW " + "|".join(n for n, (_, col) in VIEWS.items() if col) + " [LIKE 'pattern'], SHOW HELP"
)


def _unsupported(sql: str) -> ConsoleError:
    shown = " ".join(sql.split())
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConsoleError(
        ER_PARSE_ERROR,
        "42000",
        f"tainted-proxy admin console: unsupported statement {shown!r}; "
        f"supported: {_SUPPORTED_LIKE}",
    )


def _filtered(result: ResultSet, column: str | None, pattern: str | None) -> ResultSet:
    if pattern is None or column is None:
        return result
    i = result.columns.index(column)
    rx = like_regex(pattern)
    rows = [r for r in result.rows if rx.fullmatch("" if r[i] is None else str(r[i]))]
    return ResultSet(result.columns, rows)


# --------------------------------------------------------------------------------------------
# What client programs send on their own
# --------------------------------------------------------------------------------------------


def _variables(proxy: Proxy, session: ConsoleSession) -> dict[str, Value]:
    """Plausible values of the variables clients read on connect (lower-case names)."""
    cfg = proxy.config
    return {
        "auto_increment_increment": 1,
        "auto_increment_offset": 1,
        "autocommit": int(session.autocommit),
        "character_set_client": "utf8mb4",
        "character_set_connection": "utf8mb4",
        "character_set_database": "utf8mb4",
        "character_set_results": "utf8mb4",
        "character_set_server": "utf8mb4",
        "character_set_system": "utf8mb3",
        "collation_connection": "utf8mb4_general_ci",
        "collation_database": "utf8mb4_general_ci",
        "collation_server": "utf8mb4_general_ci",
        "default_storage_engine": "InnoDB",
        "have_ssl": "YES" if proxy.ssl_context is not None else "DISABLED",
        "hostname": "tainted-proxy",
        "init_connect": "",
        "interactive_timeout": 28800,
        "license": "GPL",
        "lower_case_table_names": 0,
        "max_allowed_packet": cfg.proxy.max_packet_size,
        "net_buffer_length": 16384,
        "net_read_timeout": 30,
        "net_write_timeout": 60,
        "performance_schema": 0,
        "port": cfg.proxy.listen_port,
        "query_cache_size": 0,
        "query_cache_type": "OFF",
        "sql_auto_is_null": 0,
        "sql_mode": "",
        "system_time_zone": "UTC",
        "time_zone": "SYSTEM",
        "transaction_isolation": "REPEATABLE-READ",
        "transaction_read_only": 0,
        "tx_isolation": "REPEATABLE-READ",
        "tx_read_only": 0,
        "version": proxy.catalog.server_version,
        "version_comment": VERSION_COMMENT,
        "version_compile_machine": "x86_64",
        "version_compile_os": "Linux",
        "wait_timeout": int(cfg.proxy.client_idle_timeout) or 28800,
    }


_FUNCTIONS: dict[str, Callable[[Proxy, ConsoleSession], Value]] = {
    "DATABASE": lambda p, s: CONSOLE_DATABASE,
    "SCHEMA": lambda p, s: CONSOLE_DATABASE,
    "USER": lambda p, s: f"{s.user}@{s.host}",
    "SESSION_USER": lambda p, s: f"{s.user}@{s.host}",
    "SYSTEM_USER": lambda p, s: f"{s.user}@{s.host}",
    "CURRENT_USER": lambda p, s: f"{s.user}@%",
    "VERSION": lambda p, s: p.catalog.server_version,
    "CONNECTION_ID": lambda p, s: s.client_id,
}


def _select(proxy: Proxy, session: ConsoleSession, sql: str, toks: list[_Tok]) -> ResultSet:
    """``SELECT item, ... [LIMIT n]`` of @@variables, the functions above and literals."""
    if len(toks) >= 2 and toks[-2].upper == "LIMIT" and toks[-1].kind == "number":
        limit: int | None = int(float(toks[-1].text))
        toks = toks[:-2]
    else:
        limit = None
    variables: dict[str, Value] | None = None
    columns: list[str] = []
    values: list[Value] = []
    i = 1
    while True:
        if i >= len(toks):
            raise _unsupported(sql)
        t = toks[i]
        start = t.start
        if t.kind == "sysvar":
            name = t.text[2:].split(".")[-1].lower()
            variables = variables or _variables(proxy, session)
            if name not in variables:
                raise ConsoleError(
                    ER_UNKNOWN_SYSTEM_VARIABLE, "HY000", f"Unknown system variable '{name}'"
                )
            value = variables[name]
            i += 1
        elif t.kind == "word" and t.upper in _FUNCTIONS:
            value = _FUNCTIONS[t.upper](proxy, session)
            i += 1
            if toks[i : i + 2] and [x.text for x in toks[i : i + 2]] == ["(", ")"]:
                i += 2
            elif t.upper != "CURRENT_USER":
                raise _unsupported(sql)
        elif t.kind == "number":
            value = int(t.text) if t.text.isdigit() else t.text
            i += 1
        elif t.kind == "string":
            value = t.value()
            i += 1
        else:
            raise _unsupported(sql)
        name = sql[start : toks[i - 1].end]
        if t.kind == "string":
            name = value if isinstance(value, str) else name
        if i < len(toks) and toks[i].upper == "AS":
            i += 1
        if i < len(toks) and toks[i].kind in ("word", "quoted", "string"):
            name = toks[i].value()
            i += 1
        columns.append(name)
        values.append(value)
        if i == len(toks):
            break
        if toks[i].text != ",":
            raise _unsupported(sql)
        i += 1
    rows: list[list[Value]] = [values]
    return ResultSet(columns, rows[:limit] if limit is not None else rows)


def _like_tail(sql: str, toks: list[_Tok]) -> str | None:
    """The pattern of a trailing ``LIKE 'pattern'`` (or None); anything else is refused."""
    if not toks:
        return None
    if len(toks) == 2 and toks[0].upper == "LIKE" and toks[1].kind == "string":
        return toks[1].value()
    raise _unsupported(sql)


def _show(
    proxy: Proxy, session: ConsoleSession, sql: str, toks: list[_Tok], views: Views | None
) -> ResultSet:
    words = [t.upper if t.kind == "word" else "" for t in toks]
    what = words[1] if len(words) > 1 else ""
    if what in VIEWS:
        build, column = VIEWS[what]
        pattern = _like_tail(sql, toks[2:])
        if pattern is not None and column is None:
            raise _unsupported(sql)
        return _filtered(build(views or admin_views.local(proxy)), column, pattern)
    rest = toks[1:]
    if rest and rest[0].upper in ("GLOBAL", "SESSION", "LOCAL"):
        rest = rest[1:]
    if rest and rest[0].upper == "VARIABLES":
        pattern = _like_tail(sql, rest[1:])
        rows: list[list[Value]] = [
            [name, _text(v)] for name, v in sorted(_variables(proxy, session).items())
        ]
        return _filtered(ResultSet(["Variable_name", "Value"], rows), "Variable_name", pattern)
    if what in ("WARNINGS", "ERRORS"):
        return ResultSet(["Level", "Code", "Message"], [])
    if what in ("DATABASES", "SCHEMAS"):
        pattern = _like_tail(sql, toks[2:])
        return _filtered(ResultSet(["Database"], [[CONSOLE_DATABASE]]), "Database", pattern)
    if what == "TABLES":
        return ResultSet([f"Tables_in_{CONSOLE_DATABASE}"], [])
    raise _unsupported(sql)


def _set(session: ConsoleSession, toks: list[_Tok]) -> Ok:
    """Any SET is accepted (there is no session to change); ``autocommit`` is remembered
    so that ``SELECT @@autocommit`` reads it back."""
    for i, t in enumerate(toks[:-2]):
        name = t.text.lower().lstrip("@").split(".")[-1]
        if name == "autocommit" and toks[i + 1].text == "=":
            v = toks[i + 2].value().upper()
            if v in ("0", "OFF", "FALSE"):
                session.autocommit = False
            elif v in ("1", "ON", "TRUE"):
                session.autocommit = True
    return Ok()


# view -> the parts of admin.views it reads
_PARTS_OF: dict[str, tuple[str, ...]] = {
    "POOLS": ("pools", "servers"),
    "SESSIONS": ("sessions",),
    "SERVERS": ("servers",),
    "TAINTS": ("ledger",),
    "SETTINGS": ("servers",),
    "STATS": ("totals", "stats"),
}


def parts_needed(sql: str) -> tuple[str, ...]:
    """The parts of the views ``sql`` reads (asked of every worker first); () for a
    statement that reads none, or that is not valid (``execute`` says why)."""
    try:
        toks = _tokens(sql)
    except ConsoleError:
        return ()
    if len(toks) < 2 or toks[0].upper != "SHOW":
        return ()
    return _PARTS_OF.get(toks[1].upper, ())


def execute(
    proxy: Proxy, session: ConsoleSession, sql: str, views: Views | None = None
) -> ResultSet | Ok:
    """Run one admin statement. Raises ConsoleError for an ERR."""
    toks = _tokens(sql)
    if not toks:
        raise ConsoleError(1065, "42000", "Query was empty")
    if any(t.text == ";" for t in toks):
        raise ConsoleError(
            ER_PARSE_ERROR,
            "42000",
            f"tainted-proxy admin console: one statement at a time; supported: {_SUPPORTED_LIKE}",
        )
    head = toks[0].upper
    if head == "SHOW":
        return _show(proxy, session, sql, toks, views)
    if head == "SELECT":
        return _select(proxy, session, sql, toks)
    if head == "SET":
        return _set(session, toks)
    if head == "USE" and len(toks) == 2:
        db = toks[1].value()
        if db != CONSOLE_DATABASE:
            raise bad_database(db)
        return Ok()
    if _words(toks) in _NO_OPS:
        return Ok()
    raise _unsupported(sql)


def bad_database(db: str) -> ConsoleError:
    return ConsoleError(
        ER_BAD_DB_ERROR,
        "42000",
        f"Unknown database '{db}' (the tainted-proxy admin console has only "
        f"'{CONSOLE_DATABASE}'; connect without it to use the proxy)",
    )


def _words(toks: Sequence[_Tok]) -> tuple[str, ...]:
    return tuple(t.upper for t in toks)


_NO_OPS = {
    ("BEGIN",),
    ("BEGIN", "WORK"),
    ("START", "TRANSACTION"),
    ("COMMIT",),
    ("COMMIT", "WORK"),
    ("ROLLBACK",),
    ("ROLLBACK", "WORK"),
}
