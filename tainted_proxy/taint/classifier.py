"""`classify()`: the session effects of a COM_QUERY text.

Pipeline, cheapest first:

1. **cache**: a bounded LRU (`CACHE_SIZE` entries and `CACHE_BYTES` per
   quoting mode) keyed by the exact text (str or bytes), so the statements an
   application repeats (``SET NAMES``, ``ROLLBACK``, ``SELECT @@tx_isolation`` …)
   cost one dict lookup;
2. **gate** (`tainted_proxy.taint.gate`): ordinary DML proven clean in about a
   microsecond; such results are not cached (client-side interpolation makes
   most of those texts unique, and they would only evict useful entries);
3. **rules** (`tainted_proxy.taint.rules`) on the tokens of each statement
   (`tainted_proxy.taint.lexer`), plus the sqlglot second opinion for DML the
   rules found clean (`tainted_proxy.taint.crosscheck`).

A multi-statement text carries the effects of all its statements.  A
session-scope ``SET sql_mode`` inside a multi-statement text changes how the
rest of the text is lexed (ANSI_QUOTES, NO_BACKSLASH_ESCAPES): the rest is
re-lexed with the new mode, or with every mode when the value is not a
literal, and the effects are united.
"""

from __future__ import annotations

from sys import getsizeof
from types import MappingProxyType
from typing import Final

from tainted_proxy.taint import crosscheck
from tainted_proxy.taint.effects import (
    PIN_REASONS,
    Classification,
    Effect,
    clean_classification,
)
from tainted_proxy.taint.gate import is_clean
from tainted_proxy.taint.lexer import (
    OP,
    QIDENT,
    STRING,
    SYSVAR,
    WORD,
    decode,
    split_statements,
    tokenize,
)
from tainted_proxy.taint.rules import FLAGS_UNKNOWN, Acc, classify_tokens
from tainted_proxy.taint.settings import split_sysvar

#: Longer texts that the gate does not clear are not analysed: they count as unknown
#: (and pin). Analysing costs about 22 µs a statement of a batch and up to 2 µs a token,
#: so a 64 MB text could take half a minute; the proxy analyses texts over
#: frontend.classification.OFFLOAD_MIN in a thread, and the gate reads 2 MB in 10 ms.
ANALYSE_MAX = 8 * 1024 * 1024
#: Entries per quoting mode in the LRU cache.
CACHE_SIZE = 10_000
#: Bytes per quoting mode, by ``entry_cost``: the text is the key and a classification
#: can hold parts of it again (a user variable's value, the fingerprint), so a count
#: alone would let 10,000 long statements (``SET @v = '<1 MB>'``) keep gigabytes.
CACHE_BYTES = 32 * 1024 * 1024
#: What a classification costs besides its text and values (measured: about 1.8 KB in
#: all for a short ``SET @v = '...', time_zone = '...'``).
ENTRY_OVERHEAD = 2048
#: Entries that would cost more than this are analysed every time, not kept.
CACHE_ENTRY_MAX = CACHE_BYTES // 16

#: Ask sqlglot for a second opinion before declaring a DML candidate clean.
SQLGLOT_CROSSCHECK = True

#: EXECUTE IMMEDIATE nesting deeper than this is `unknown`.
MAX_DEPTH = 16

_caches: list[dict[str | bytes, Classification]] = [{} for _ in range(4)]
_cache_bytes = [0, 0, 0, 0]  # by entry_cost, per quoting mode


def classify(
    sql: str | bytes, *, ansi_quotes: bool = False, no_backslash_escapes: bool = False
) -> Classification:
    """Classify one COM_QUERY text (one or more statements).

    `sql` is the client's text, as str or as the raw COM_QUERY bytes (UTF-8,
    or Latin-1 when not valid UTF-8).  `ansi_quotes` and
    `no_backslash_escapes` are the connection's sql_mode, which decide what
    is a string (the proxy reads them from OK-packet status flags, see
    `tainted_proxy.taint.lexer.flags_from_status`).
    """
    flags = (1 if ansi_quotes else 0) | (2 if no_backslash_escapes else 0)
    return classify_flags(sql, flags) or clean_classification(sql, flags)


def classify_flags(sql: str | bytes, flags: int = 0) -> Classification | None:
    """The proxy's hot path: like `classify`, with the flags as one int.

    Returns None when the gate proves the text clean (nothing allocated),
    else the cached or new `Classification` (which may be clean too).
    """
    if type(sql) is not str and type(sql) is not bytes:
        sql = str(sql) if isinstance(sql, str) else bytes(sql)  # bytearray, memoryview
    r = lookup(sql, flags)
    if r is MISS:
        r = analyse(sql, flags & 3)
        remember(sql, flags, r)
    return r  # type: ignore[return-value]


class _Miss:
    """``lookup``'s answer when the text must be analysed."""


MISS: Final = _Miss()


def lookup(sql: str | bytes, flags: int) -> Classification | None | _Miss:
    """The cached classification of ``sql`` (now the most recently used), None when the
    gate proves it clean, else ``MISS``: ``analyse`` it (frontend.classification does
    that for long texts off the event loop), then ``remember`` it."""
    cache = _caches[flags & 3]
    r = cache.get(sql)
    if r is not None:
        del cache[sql]  # move to the most-recently-used end
        cache[sql] = r
        return r
    if is_clean(sql, flags):
        return None
    return MISS


def remember(sql: str | bytes, flags: int, r: Classification) -> None:
    """Keep ``analyse``'s answer for ``sql``, evicting the least recently used entries
    while the cache is over ``CACHE_SIZE`` or ``CACHE_BYTES``; an entry over
    ``CACHE_ENTRY_MAX`` is not kept."""
    cost = entry_cost(sql, r)
    if cost > CACHE_ENTRY_MAX:
        return
    mode = flags & 3
    cache = _caches[mode]
    if sql in cache:  # (analysed twice meanwhile: off the event loop, by two sessions)
        return
    used = _cache_bytes[mode] + cost
    while cache and (len(cache) >= CACHE_SIZE or used > CACHE_BYTES):
        oldest = next(iter(cache))
        used -= entry_cost(oldest, cache.pop(oldest))
    cache[sql] = r
    _cache_bytes[mode] = used


def entry_cost(sql: str | bytes, r: Classification) -> int:
    """What keeping ``r`` for ``sql`` is counted as: the text's object, as much again
    for its fingerprint (kept once computed), the values it carries (a user variable's
    literal: 4 bytes a character once one is outside Latin-1) and ``ENTRY_OVERHEAD``."""
    cost = getsizeof(sql) + len(sql) + ENTRY_OVERHEAD
    for values in (r.user_vars, r.settings, r.next_tx):
        for v in values.values():
            if v is not None:
                cost += getsizeof(v)
    return cost


def cache_clear() -> None:
    """Forget every cached classification."""
    for c in _caches:
        c.clear()
    _cache_bytes[:] = [0, 0, 0, 0]


def cache_len() -> int:
    """Number of cached classifications (all modes)."""
    return sum(len(c) for c in _caches)


def cache_bytes() -> int:
    """What the cached classifications count as (``entry_cost``, all modes)."""
    return sum(_cache_bytes)


def analyse(sql: str | bytes, flags: int = 0) -> Classification:
    """Classify without gate or cache (what `classify` does on a miss)."""
    text = decode(sql)
    acc = Acc()
    if len(text) > ANALYSE_MAX:
        acc.bad(f"a text of {len(text):,} characters, over the {ANALYSE_MAX:,} analysed")
        count = 0
    else:
        count, _ = _run(text, flags, acc, 0)
    effects = frozenset(acc.effects)
    if acc.unknown:
        pin: str | None = PIN_REASONS[Effect.UNKNOWN]
    else:
        pin = acc.pins[0] if acc.pins else None
    emulable = None
    if count == 1 and acc.needs and not acc.pins and effects == acc.needs:
        emulable = _emulable(text, flags)
    return Classification(
        effects=effects,
        settings=MappingProxyType(acc.settings),
        pin=pin,
        needs=frozenset(acc.needs),
        statements=count,
        user_vars=MappingProxyType(acc.user_vars),
        next_tx=MappingProxyType(acc.next_tx),
        statement_vars=frozenset(acc.statement_vars),
        objects=tuple(acc.objects),
        emulable=emulable,
        unknown_reason="; ".join(dict.fromkeys(acc.unknown)) or None,
        sql=sql,
        flags=flags,
    )


def _run(text: str, flags: int, total: Acc, depth: int) -> tuple[int, int | None]:
    """Classify every statement of `text` into `total`.

    Returns (statement count, lexer flags in force at the end when a SET
    sql_mode changed them, else None).
    """
    if depth > MAX_DEPTH:
        total.bad("EXECUTE IMMEDIATE nested too deeply")
        return 0, None

    def recurse(inner: str, acc: Acc) -> None:
        _, after = _run(inner, flags, acc, depth + 1)
        if after is not None:
            acc.flags_after = after

    lexed = tokenize(text, flags)
    stmts = split_statements(lexed.tokens, len(text))
    multi = len(stmts) > 1
    cutoff = len(text) + 1
    count = 0
    flags_end: int | None = None
    for idx, st in enumerate(stmts):
        acc = Acc()
        classify_tokens(st.tokens, text, acc, recurse)
        if acc.dml and not acc.effects and SQLGLOT_CROSSCHECK and flags == 0:
            one = text[st.start : st.end]
            # what the gate proves clean needs no second opinion, as for a text of one
            # statement (sqlglot costs ~0.5 ms a statement: a batch of 20,000 INSERTs
            # took 3.2 s, the event loop stalled for every session meanwhile)
            if not (multi and is_clean(one, flags)):
                _second_opinion(one, acc)
        total.merge(acc)
        count += 1
        if acc.flags_after is not None:
            flags_end = acc.flags_after
            if idx + 1 < len(stmts):
                # The rest of the text is lexed under the new sql_mode.
                cutoff = st.next_start
                rest = text[cutoff:]
                variants = range(4) if acc.flags_after == FLAGS_UNKNOWN else [acc.flags_after]
                counts = []
                for f in variants:
                    n, after = _run(rest, f, total, depth)
                    counts.append(n)
                    if after is not None:
                        flags_end = after
                count += max(counts)
                break
    for offset, message in lexed.problems:
        if offset < cutoff:
            total.bad(message)
    return count, flags_end


def _second_opinion(sql: str, acc: Acc) -> None:
    for effect, how in crosscheck.findings(sql):
        if how == "pin":
            acc.add(effect, PIN_REASONS.get(effect))
        elif how == "needs":
            acc.need(effect)
        else:
            acc.add(effect)


_EMULABLE_FUNCTIONS = {
    "LAST_INSERT_ID": Effect.LAST_INSERT_ID.value,
    "ROW_COUNT": Effect.ROW_COUNT.value,
    "FOUND_ROWS": Effect.FOUND_ROWS.value,
}


def _emulable(text: str, flags: int) -> tuple[str, str] | None:
    """(kind, column name) for ``SELECT LAST_INSERT_ID() [[AS] alias]`` & co."""
    stmts = split_statements(tokenize(text, flags).tokens, len(text))
    if len(stmts) != 1:
        return None
    toks = stmts[0].tokens
    if not toks or toks[0].kind != WORD or toks[0].value != "SELECT" or len(toks) < 2:
        return None
    t = toks[1]
    kind = None
    j = 2
    if t.kind == WORD and t.value in _EMULABLE_FUNCTIONS:
        if (
            len(toks) >= 4
            and toks[2].kind == OP
            and toks[2].value == "("
            and toks[3].kind == OP
            and toks[3].value == ")"
        ):
            kind = _EMULABLE_FUNCTIONS[t.value]
            j = 4
    elif t.kind == SYSVAR:
        scope, name = split_sysvar(t.value)
        if scope != "global" and name in ("identity", "last_insert_id"):
            kind = Effect.LAST_INSERT_ID.value
    if kind is None:
        return None
    column = text[t.start : toks[j - 1].end]
    rest = toks[j:]
    if rest and rest[0].kind == WORD and rest[0].value == "AS":
        rest = rest[1:]
        if not rest:
            return None
    if rest:
        if len(rest) != 1 or rest[0].kind not in (WORD, QIDENT, STRING):
            return None
        a = rest[0]
        column = a.value if a.kind != WORD else text[a.start : a.end]
    return kind, column
