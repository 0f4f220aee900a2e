"""Pins: session state that lives on one upstream connection and cannot be re-applied
elsewhere, tracked object by object so a pin ends as soon as the state is provably gone.

``Pins`` is updated after each statement from the classifier's verdict (what the text
does, with object names) and from what the server said (an error, a
``state_change`` the text does not explain). Values that only the next statement may
read (warnings, FOUND_ROWS(), LAST_INSERT_ID()) never pin: the session carries them
(``state.values``). ``reason`` is the first reason that still
holds, or None: then the session may give its connection back. Pure data, no I/O.
"""

from __future__ import annotations

import re
from collections import Counter

from tainted_proxy.state.sql_prepared import parse_prepare
from tainted_proxy.taint.effects import PIN_BACKUP_LOCK, PIN_REASONS, Classification, Effect

# Reasons of the proxy's own (the classifier's are in taint.effects.PIN_REASONS).
UNEXPLAINED = "unexplained session state change (reported by the server)"
ROUTINE_STATE = "stored routine changed session state"
UNKEYABLE_VAR = "session variable that cannot be re-applied"
SET_OPTION = "COM_SET_OPTION (multi-statements switched)"
BINARY_CURSOR = "open cursor (COM_STMT_EXECUTE)"
LONG_DATA = "pending COM_STMT_SEND_LONG_DATA"

_TEMP = PIN_REASONS[Effect.TEMP_TABLE]
_LOCK = PIN_REASONS[Effect.ADVISORY_LOCK]
_PREPARE = PIN_REASONS[Effect.PREPARE]
_HANDLER = PIN_REASONS[Effect.HANDLER]
_XA = PIN_REASONS[Effect.XA]
_USER_VAR = PIN_REASONS[Effect.USER_VAR]
_NEXT_TX = PIN_REASONS[Effect.NEXT_TX]
# The object sets start as this shared empty frozenset and are replaced on change
# (``|=``, ``-=``), never mutated: most sessions never pin anything, and six empty sets
# were 1.3 KB of every idle session (issue 11: 10,000 idle clients in little memory).
_NONE: frozenset[str] = frozenset()

# Effects tracked object by object below; any other pin the classifier reports is sticky.
_TRACKED = frozenset(
    (
        Effect.TEMP_TABLE,
        Effect.ADVISORY_LOCK,
        Effect.PREPARE,
        Effect.EXECUTE,
        Effect.HANDLER,
        Effect.XA,
        Effect.TABLE_LOCK,
        Effect.USER_VAR,
        Effect.FOUND_ROWS,
        Effect.NEXT_TX,
        Effect.ROUTINE,
    )
)

_TABLES_UNLOCK = re.compile(r"\bUNLOCK\s+TABLES?\b", re.IGNORECASE)
_BACKUP_UNLOCK = re.compile(
    r"\bBACKUP\s+UNLOCK\b|\bBACKUP\s+STAGE\s+END\b|\bUNLOCK\s+INSTANCE\b", re.IGNORECASE
)

_RENAME = re.compile(r"\bRENAME\b", re.IGNORECASE)


def _text(c: Classification) -> str:
    return c.sql if isinstance(c.sql, str) else c.sql.decode("latin-1")


def _raw(c: Classification) -> bytes:
    return c.sql if isinstance(c.sql, bytes) else c.sql.encode("utf-8", "surrogateescape")


_PREPARE_TEXT = re.compile(
    r"\bPREPARE\s+`?(\w+)`?\s+FROM\s+'((?:[^'\\]|''|\\.)*)'", re.IGNORECASE | re.DOTALL
)


def _prepared_text_is_clean(sql: str, name: str, flags: int) -> bool:
    """True when ``PREPARE name FROM '<literal>'`` in ``sql`` prepares a text with no
    session effect (a text from a variable, or one we cannot read, is not clean)."""
    from tainted_proxy.taint.classifier import classify_flags

    for m in _PREPARE_TEXT.finditer(sql):
        if m.group(1).lower() != name:
            continue
        text = m.group(2).replace("''", "'")
        if "\\" in text:
            return False  # escapes: do not guess what the server unescapes
        got = classify_flags(text, flags)
        # reading the previous statement's values (LAST_INSERT_ID()...) leaves nothing
        return got is None or not (got.effects - got.needs)
    return False


_CASELESS = frozenset(("prepare", "deallocate", "handler_open", "handler_close"))

# What a server ``state_change`` may legitimately come from (else it is unexplained).
_STATEFUL = frozenset(
    (
        Effect.SETTINGS,
        Effect.AUTOCOMMIT,
        Effect.SCHEMA,
        Effect.USER_VAR,
        Effect.TEMP_TABLE,
        Effect.TEMP_TABLE_DROP,
        Effect.PREPARE,
        Effect.DEALLOCATE,
        Effect.EXECUTE,
        Effect.ROLE,
        Effect.SESSION_TRACK,
        Effect.NEXT_TX,
        Effect.UNKNOWN,
        Effect.IMPLICIT_COMMIT,
    )
)


class Pins:
    """The pinning state of one client session."""

    __slots__ = (
        "temp_tables",
        "locks",
        "table_locks",
        "prepared",
        "handlers",
        "xa",
        "user_vars",
        "sticky",
        "next_tx",
        "protocol",
        "schema",
        "prepared_clean",
    )

    def __init__(self) -> None:
        self.temp_tables: frozenset[str] = _NONE
        # GET_LOCK is recursive: a name taken twice needs two RELEASE_LOCKs
        self.locks: Counter[str] = Counter()
        # held lock kinds (LOCK TABLES / FTWRL and backup locks end separately)
        self.table_locks: frozenset[str] = _NONE
        self.prepared: frozenset[str] = _NONE
        self.handlers: frozenset[str] = _NONE
        self.xa = False
        self.user_vars: frozenset[str] = _NONE
        # never cleared while the session lives (the connection is reset when it ends)
        self.sticky: str | None = None
        self.next_tx = False
        # protocol-level holds (cursor, long data), set and cleared by the session
        self.protocol: str | None = None
        # the current schema: temporary tables are per schema (the session keeps it
        # in step with the server's reports; USE inside a batch moves it here)
        self.schema: str | None = None
        # SQL-level prepared statements whose literal text the classifier proved clean
        self.prepared_clean: frozenset[str] = _NONE

    def reason(self) -> str | None:
        """Why the session must keep its connection, or None."""
        if self.sticky:
            return self.sticky
        if self.protocol:
            return self.protocol
        if self.xa:
            return _XA
        if self.table_locks:
            return min(self.table_locks)
        if self.temp_tables:
            return _TEMP
        if self.locks:
            return _LOCK
        if self.prepared:
            return _PREPARE
        if self.handlers:
            return _HANDLER
        if self.user_vars:
            return _USER_VAR
        if self.next_tx:
            return _NEXT_TX
        return None

    def reasons(self) -> list[str]:
        """Every reason that holds now (``reason`` is the first of them)."""
        out: list[str] = []
        if self.sticky:
            out.append(self.sticky)
        if self.protocol:
            out.append(self.protocol)
        if self.xa:
            out.append(_XA)
        out.extend(sorted(self.table_locks))
        if self.temp_tables:
            out.append(_TEMP)
        if self.locks:
            out.append(_LOCK)
        if self.prepared:
            out.append(_PREPARE)
        if self.handlers:
            out.append(_HANDLER)
        if self.user_vars:
            out.append(_USER_VAR)
        if self.next_tx:
            out.append(_NEXT_TX)
        return out

    def objects(self) -> list[str]:
        """What holds, object by object (temporary tables, lock names...), for reports."""
        out = [f"temporary table {t}" for t in sorted(self.temp_tables)]
        out += [
            f"lock {n!r} x{k}" if k > 1 else f"lock {n!r}" for n, k in sorted(self.locks.items())
        ]
        out += [f"prepared statement {n}" for n in sorted(self.prepared)]
        out += [f"handler {h}" for h in sorted(self.handlers)]
        out += [f"@{v}" for v in sorted(self.user_vars)]
        return out

    def clear(self) -> None:
        """COM_RESET_CONNECTION / COM_CHANGE_USER: the server forgot everything."""
        schema = self.schema
        self.__init__()  # type: ignore[misc]
        self.schema = schema

    def _table(self, name: str) -> str:
        # names are compared as the server does with lower_case_table_names=0 (exact);
        # with =1 an exact comparison only over-pins, never under-pins
        if "." in name or self.schema is None:
            return name
        return f"{self.schema}.{name}"

    def pin_sticky(self, reason: str) -> None:
        if self.sticky is None:
            self.sticky = reason

    def after_statement(
        self,
        c: Classification | None,
        *,
        failed: bool,
        state_changed: bool,
        carried: frozenset[str] = frozenset(),
    ) -> None:
        """Account for one completed COM_QUERY: ``c`` is its classification (None when
        the gate proved it clean), ``failed`` whether it ended with an ERR,
        ``state_changed`` whether the server reported a ``state_change``."""
        if c is None or not c.effects:
            if state_changed:
                self.pin_sticky(UNEXPLAINED)
            return
        effects = c.effects
        # A failed statement may still have done part of its work (GET_LOCK in a SELECT
        # that then fails, the first statements of a batch): keep whatever it may have
        # added, trust no removal.
        additions_only = failed
        if state_changed and not (effects & _STATEFUL):
            if Effect.ROUTINE in effects:
                self.pin_sticky(ROUTINE_STATE)
            else:
                self.pin_sticky(UNEXPLAINED)
        elif state_changed and Effect.ROUTINE in effects:
            # a routine's state_change may be a user variable, a temp table, a prepare:
            # the tracker does not say which
            self.pin_sticky(ROUTINE_STATE)
        if Effect.EXECUTE in effects and any(
            action == "execute" and (name is None or name.lower() not in self.prepared_clean)
            for action, name in c.objects
        ):
            # the prepared text's own effects (a temp table, a lock, @v) outlive
            # DEALLOCATE; only texts proven clean at PREPARE time are let go
            self.pin_sticky(PIN_REASONS[Effect.EXECUTE])
        if self.temp_tables and _RENAME.search(_text(c)):
            # a renamed temporary table escapes name tracking
            self.pin_sticky(_TEMP)
        if c.pin is not None and not (effects & _TRACKED):
            self.pin_sticky(c.pin)
        elif c.pin is not None and Effect.UNKNOWN in effects:
            self.pin_sticky(c.pin)
        for action, name in c.objects:
            # table and lock names as written (GET_LOCK names are case-sensitive on
            # MariaDB: an exact comparison can only over-pin); statement and handler
            # names are case-insensitive identifiers
            key = name
            if name is not None and action in _CASELESS:
                key = name.lower()
            if action == "schema":
                if name is not None and not additions_only:
                    self.schema = name
            elif action == "temp_table":
                if key is None:
                    self.pin_sticky(_TEMP)
                else:
                    self.temp_tables |= {self._table(key)}
            elif action in ("temp_table_drop", "drop_table"):
                if key is not None and not additions_only:
                    self.temp_tables -= {self._table(key)}
            elif action == "advisory_lock":
                if key is None:
                    self.pin_sticky(_LOCK)
                else:
                    self.locks[key] += 1
            elif action == "advisory_unlock":
                if key is not None and not additions_only:
                    self.locks[key] -= 1
                    if self.locks[key] <= 0:
                        del self.locks[key]
            elif action == "advisory_unlock_all":
                if not additions_only:
                    self.locks.clear()
            elif action == "prepare":
                if key is None:
                    self.pin_sticky(_PREPARE)
                else:
                    if c.statements == 1 and parse_prepare(_raw(c), c.flags) is not None:
                        # PREPARE name FROM '<literal>': virtualized (state.sql_prepared)
                        self.prepared -= {key}
                    else:
                        self.prepared |= {key}
                    if _prepared_text_is_clean(_text(c), key, c.flags):
                        self.prepared_clean |= {key}
                    else:
                        self.prepared_clean -= {key}
            elif action == "deallocate":
                if key is not None and not additions_only:
                    self.prepared -= {key}
            elif action == "handler_open":
                self.handlers |= {key or "?"}
            elif action == "handler_close":
                if key is not None and not additions_only:
                    self.handlers -= {key}
            elif action == "xa_start":
                self.xa = True
            elif action in ("xa_commit", "xa_rollback"):
                if not additions_only:
                    self.xa = False
        if Effect.TABLE_LOCK in effects:
            self.table_locks |= {c.pin or PIN_REASONS[Effect.TABLE_LOCK]}
        elif Effect.TABLE_UNLOCK in effects and not additions_only and self.table_locks:
            # each unlock ends its own kind of lock: BACKUP UNLOCK leaves LOCK TABLES
            text = _text(c)
            if _BACKUP_UNLOCK.search(text):
                self.table_locks -= {PIN_BACKUP_LOCK}
            if _TABLES_UNLOCK.search(text):
                self.table_locks = frozenset(r for r in self.table_locks if r == PIN_BACKUP_LOCK)
        if Effect.USER_VAR in effects:
            if c.user_vars:
                for name, value in c.user_vars.items():
                    if name in carried:
                        # the session carries it (state/settings.carried_user_vars)
                        self.user_vars -= {name}
                        continue
                    # a failed batch may have stopped between setting and clearing
                    if value is not None and value.upper() == "NULL" and not additions_only:
                        self.user_vars -= {name}
                    else:
                        self.user_vars |= {name}
            else:
                self.user_vars |= {"?"}
        if Effect.NEXT_TX in effects:
            self.next_tx = True
        elif effects & {Effect.TX_BEGIN, Effect.TX_END}:
            self.next_tx = False
