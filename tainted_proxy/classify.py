"""``tainted-proxy classify``: ask "what does this statement do to my session?".

    tainted-proxy classify "SET NAMES utf8mb4" "SELECT 1"
    tainted-proxy classify --mode statement -f schema.sql -f queries.sql
    tainted-proxy classify --summary --pretty -f app-queries.sql
    tainted-proxy classify --pretty "SELECT GET_LOCK('job', 10)"

Each positional argument is one statement text, as a client sends it in one COM_QUERY.
``-f FILE`` (repeatable; ``-`` for standard input, also as a positional argument) reads
whole statements, split as the mariadb command-line client splits them: at ``;``
outside strings and comments, or at the delimiter a ``DELIMITER`` line sets. With no
argument at all, standard input is read the same way; input that holds no ``;`` at all
is read one statement per line, as earlier versions did.

One JSON object per statement, one per line, in order: ``sql``, ``effects`` (sorted;
``[]`` when clean), ``settings``, ``pin`` (null or the reason the proxy pins for, in
transaction mode), ``needs``, ``fingerprint``, the other `Classification` fields,
``source`` (``file:line``, for statements read from input) and ``verdict``: what the
proxy does with the statement in ``--mode`` (`tainted_proxy.state.verdict.Verdict`).
``--pretty`` prints an indented, human-oriented block per statement instead.
``--summary`` prints one summary over all statements instead (JSON, or text with
``--pretty``). Also runnable as ``python -m tainted_proxy.classify``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tainted_proxy.state.verdict import MODES, Verdict, verdict
from tainted_proxy.taint.classifier import classify
from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES, NUMBER, OP, WORD, tokenize


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tainted-proxy classify",
        description="Print what SQL statements do to a pooled session, one JSON object per line.",
    )
    p.add_argument(
        "sql",
        nargs="*",
        help="statement texts (each may hold several statements separated by ';'; '-' reads "
        "standard input like -f -); with no text and no -f, standard input is read",
    )
    p.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="FILE",
        help="read whole statements from FILE ('-': standard input); repeatable",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="transaction",
        help="the pool mode to judge in (default: transaction)",
    )
    p.add_argument(
        "--summary",
        action="store_true",
        help="print one summary over all statements instead of one object per statement",
    )
    p.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="how many pinning statement shapes the summary lists (default: 10)",
    )
    p.add_argument("--pretty", action="store_true", help="indented, human-readable output")
    p.add_argument(
        "--ansi-quotes",
        action="store_true",
        help='lex as under sql_mode ANSI_QUOTES ("..." is an identifier)',
    )
    p.add_argument(
        "--no-backslash-escapes",
        action="store_true",
        help="lex as under sql_mode NO_BACKSLASH_ESCAPES",
    )
    return p


# -- splitting a file into statements ---------------------------------------------------

_DELIMITER_LINE = re.compile(r"^[ \t]*delimiter[ \t]+(\S+)[^\n]*(?:\n|\Z)", re.IGNORECASE | re.M)
# whitespace and plain comments before a statement (not executable comments: those run)
_LEADING = re.compile(
    r"(?:\s+|/\*(?![!]|[Mm]!).*?\*/|(?:--(?=[ \t\r\n\f\v])|\#)[^\n\x00]*)*", re.DOTALL
)
_EXEC_OPEN = re.compile(r"/\*[Mm]?!")
_EXEC_CLOSE = re.compile(r"\s*\*/")
_CODE = frozenset((WORD, OP, NUMBER))


def split_sql(text: str, flags: int = 0) -> list[tuple[int, str]]:
    """The statements of a SQL script as (offset, text) pairs, split as the mariadb
    client splits them: at the delimiter (``;`` unless a ``DELIMITER`` line set another)
    outside strings, quoted names and comments. Surrounding whitespace and comments are
    dropped, executable comments (``/*!40101 ... */``) kept; each text is what the
    client would send as one COM_QUERY. ``flags``: the lexer's ANSI_QUOTES /
    NO_BACKSLASH_ESCAPES."""
    out: list[tuple[int, str]] = []
    delimiter = ";"
    pos = 0
    for m in _DELIMITER_LINE.finditer(text):
        if m.start() < pos or tokenize(text[pos : m.start()], flags).problems:
            continue  # inside a string or comment left open: not a client command
        out.extend(_split_region(text, pos, m.start(), delimiter, flags))
        delimiter = m.group(1)
        pos = m.end()
    out.extend(_split_region(text, pos, len(text), delimiter, flags))
    return out


def _split_region(
    text: str, start: int, end: int, delimiter: str, flags: int
) -> Iterator[tuple[int, str]]:
    region = text[start:end]
    lexed = tokenize(region, flags)
    code = [(t.start, t.end) for t in lexed.tokens if t.kind in _CODE]
    starts = [s for s, _ in code]
    piece = pos = 0
    while True:
        i = region.find(delimiter, pos)
        if i < 0:
            break
        k = bisect_right(starts, i) - 1
        if k >= 0 and i < code[k][1]:  # code, not inside a string or a comment
            got = _trim(region[piece:i], flags)
            if got is not None:
                yield start + piece + got[0], got[1]
            piece = pos = i + len(delimiter)
        else:
            pos = i + 1
    got = _trim(region[piece:], flags)
    if got is not None:
        yield start + piece + got[0], got[1]


def _trim(piece: str, flags: int) -> tuple[int, str] | None:
    """One statement without the whitespace and comments around it (None: empty)."""
    lexed = tokenize(piece, flags)
    lead = _LEADING.match(piece).end()  # type: ignore[union-attr]
    if lexed.problems:  # an unterminated string or comment: keep all of it (unknown)
        rest = piece[lead:].rstrip()
        return (lead, rest) if rest else None
    if not lexed.tokens:
        return None
    start, end = lexed.tokens[0].start, lexed.tokens[-1].end
    if lead < start and _EXEC_OPEN.match(piece, lead):
        # the statement opens inside an executable comment: keep it and its closing */
        m = _EXEC_CLOSE.match(piece, end)
        wrapped = piece[lead : m.end() if m else end]
        if not tokenize(wrapped, flags).problems:
            return lead, wrapped
    return start, piece[start:end]


def _has_delimiter(text: str, flags: int) -> bool:
    if _DELIMITER_LINE.search(text):
        return True
    return any(t.kind == OP and t.value == ";" for t in tokenize(text, flags).tokens)


# -- inputs ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Input:
    sql: str
    source: str | None = None


class _InputError(Exception):
    pass


def _read(name: str) -> tuple[str, str]:
    if name == "-":
        return "<stdin>", sys.stdin.read()
    try:
        with open(name, encoding="utf-8", errors="replace") as f:
            return name, f.read()
    except OSError as exc:
        raise _InputError(f"cannot read {name}: {exc.strerror or exc}") from exc


def _statements_of(label: str, text: str, flags: int) -> Iterator[_Input]:
    for offset, sql in split_sql(text, flags):
        yield _Input(sql, f"{label}:{text.count(chr(10), 0, offset) + 1}")


def _inputs(args: argparse.Namespace, flags: int) -> Iterable[_Input]:
    if not args.sql and not args.file:
        label, text = _read("-")
        if _has_delimiter(text, flags):
            yield from _statements_of(label, text, flags)
        else:  # no ';' anywhere: one statement per line (the classic behaviour)
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    yield _Input(line, f"{label}:{n}")
        return
    for sql in args.sql:
        if sql == "-":
            yield from _statements_of(*_read("-"), flags)
        else:
            yield _Input(sql)
    for name in args.file:
        yield from _statements_of(*_read(name), flags)


# -- output ------------------------------------------------------------------------------


def _pretty(d: dict[str, object], v: Verdict) -> str:
    lines = [str(d["sql"])]
    if d.get("source"):
        lines.append(f"  source:      {d['source']}")
    effects = d["effects"]
    lines.append("  effects:     " + (", ".join(effects) if effects else "none (clean)"))  # type: ignore[arg-type]
    if v.mode == "session":
        lines.append("  pin:         no (session mode: the session owns its connection)")
    else:
        lines.append("  pin:         " + (v.pins or "no"))
    for key in ("settings", "user_vars", "next_tx"):
        m = d[key]
        if m:
            shown = ", ".join(
                f"{k}={'?' if val is None else val}"
                for k, val in m.items()  # type: ignore[attr-defined]
            )
            lines.append(f"  {key + ':':<12} {shown}")
    for key in ("needs", "statement_vars"):
        if d[key]:
            lines.append(f"  {key + ':':<12} " + ", ".join(d[key]))  # type: ignore[arg-type]
    if d["objects"]:
        shown = ", ".join(f"{a} {n if n is not None else '?'}" for a, n in d["objects"])  # type: ignore[attr-defined,misc]
        lines.append(f"  objects:     {shown}")
    if d["emulable"]:
        lines.append(f"  emulable:    {d['emulable'][0]} as {d['emulable'][1]!r}")  # type: ignore[index]
    if d["unknown_reason"]:
        lines.append(f"  unknown:     {d['unknown_reason']}")
    if d["statements"] != 1:
        lines.append(f"  statements:  {d['statements']}")
    lines.append(f"  fingerprint: {d['fingerprint']}")
    lines.append(f"  verdict:     {v.mode} mode: {_sentence(v)}")
    if v.carried:
        lines.append("  carried:     " + ", ".join(v.carried))
    if v.holds:
        lines.append(f"  holds:       {v.holds}")
    if v.refused:
        lines.append(f"  refused:     {v.refused}")
    if v.may_pin:
        lines.append(f"  may pin:     {v.may_pin}")
    for r in v.resets:
        lines.append(f"  resets:      {r}")
    for n in v.notes:
        lines.append(f"  note:        {n}")
    return "\n".join(lines)


def _sentence(v: Verdict) -> str:
    """The verdict in a few words."""
    kind = v.kind
    if kind == "refused":
        return "refused with ERR 1235"
    if kind == "pins":
        return "pins the connection"
    if kind == "holds":
        return "holds the connection while a transaction is open"
    if v.mode == "session":
        return "reset at logout" if v.resets else "nothing to reset at logout"
    if kind == "carried":
        return "carried with the session; the connection goes back to the pool"
    if kind == "resets":
        return "the connection goes back to the pool, reset first"
    return "the connection goes back to the pool"


# -- summary -----------------------------------------------------------------------------

from tainted_proxy.state.advice import advice as hint  # noqa: E402  (re-exported)


@dataclass(slots=True)
class _Shape:
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    holds: Counter[str] = field(default_factory=Counter)
    first: str | None = None
    example: str = ""


@dataclass(slots=True)
class Summary:
    """Counts over the verdicts of many statements."""

    mode: str
    statements: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    pins: Counter[str] = field(default_factory=Counter)
    may_pin: Counter[str] = field(default_factory=Counter)
    carried: Counter[str] = field(default_factory=Counter)
    holds: Counter[str] = field(default_factory=Counter)
    resets: Counter[str] = field(default_factory=Counter)
    pinning: dict[str, _Shape] = field(default_factory=dict)
    refusing: dict[str, _Shape] = field(default_factory=dict)

    def add(self, fingerprint: str, sql: str, source: str | None, v: Verdict) -> None:
        self.statements += 1
        self.kinds[v.kind] += 1
        if v.pins:
            self.pins[v.pins] += 1
        if v.may_pin:
            self.may_pin[v.may_pin] += 1
        self.carried.update(v.carried)
        if v.holds and not v.pins:
            self.holds[v.holds] += 1
        self.resets.update(v.resets)
        if v.pins or v.refused:
            shapes = self.pinning if v.pins else self.refusing
            shape = shapes.get(fingerprint)
            if shape is None:
                shape = shapes[fingerprint] = _Shape(first=source, example=sql)
            shape.count += 1
            if v.pins:
                shape.reasons[v.pins] += 1
                if v.holds:
                    shape.holds[v.holds] += 1

    def top(self, shapes: dict[str, _Shape], n: int) -> list[dict[str, object]]:
        ranked = sorted(shapes.items(), key=lambda kv: (-kv[1].count, kv[0]))[: max(n, 0)]
        out: list[dict[str, object]] = []
        for fp, s in ranked:
            entry: dict[str, object] = {"fingerprint": fp, "count": s.count}
            if s.reasons:
                reason = s.reasons.most_common(1)[0][0]
                entry["reason"] = reason
                entry["holds"] = s.holds.most_common(1)[0][0] if s.holds else None
                entry["hint"] = hint(reason)
            entry["first"] = s.first
            entry["example"] = s.example
            out.append(entry)
        return out

    def as_dict(self, n: int) -> dict[str, object]:
        kinds = ("clean", "carried", "resets", "holds", "pins", "refused")
        d: dict[str, object] = {
            "mode": self.mode,
            "statements": self.statements,
            "verdicts": {k: self.kinds.get(k, 0) for k in kinds},
            "pins": dict(self.pins.most_common()),
            "may_pin": dict(self.may_pin.most_common()),
            "carried": dict(self.carried.most_common()),
            "holds": dict(self.holds.most_common()),
            "resets": dict(self.resets.most_common()),
            "top_pinning": self.top(self.pinning, n),
        }
        if self.refusing:
            d["top_refused"] = self.top(self.refusing, n)
        return d


def _pretty_summary(d: dict[str, object]) -> str:
    lines = [f"{d['statements']} statements, judged in {d['mode']} mode"]
    for kind, n in d["verdicts"].items():  # type: ignore[attr-defined]
        lines.append(f"  {kind:<9} {n:>6}")

    def counts(title: str, key: str) -> None:
        m = d[key]
        if m:
            lines.append(title)
            lines.extend(f"  {n:>6}  {what}" for what, n in m.items())  # type: ignore[attr-defined]

    counts("pins, by reason:", "pins")
    counts("may pin (if the server reports a session state change):", "may_pin")
    counts("carried with the session:", "carried")
    counts("holds the connection (transactions):", "holds")
    counts("reset at logout:" if d["mode"] == "session" else "resets:", "resets")
    for key, title in (("top_pinning", "pinning"), ("top_refused", "refused")):
        top = d.get(key)
        if not top:
            continue
        lines.append(f"top {title} statements:")
        for e in top:  # type: ignore[attr-defined]
            where = f"  (first: {e['first']})" if e["first"] else ""
            lines.append(f"  {e['count']:>6}  {e['fingerprint']}{where}")
            if "reason" in e:
                lines.append(f"          pins: {e['reason']}, {e['holds']}")
                lines.append(f"          hint: {e['hint']}")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run ``classify`` with `argv` (the arguments after ``classify``)."""
    args = _parser().parse_args(argv)
    flags = (ANSI_QUOTES if args.ansi_quotes else 0) | (
        NO_BACKSLASH_ESCAPES if args.no_backslash_escapes else 0
    )
    out = sys.stdout
    summary = Summary(args.mode) if args.summary else None
    first = True
    try:
        for item in _inputs(args, flags):
            sql = item.sql
            c = classify(
                sql, ansi_quotes=args.ansi_quotes, no_backslash_escapes=args.no_backslash_escapes
            )
            v = verdict(c, sql, args.mode)
            if summary is not None:
                summary.add(c.fingerprint, sql, item.source, v)
                continue
            d = c.as_dict()
            # the proxy's pin (transaction mode), not the classifier rule's
            d["pin"] = v.pins if args.mode == "transaction" else verdict(c, sql, "transaction").pins
            if item.source is not None:
                d["source"] = item.source
            d["verdict"] = v.as_dict()
            if args.pretty:
                if not first:
                    out.write("\n")
                out.write(_pretty(d, v) + "\n")
            else:
                out.write(json.dumps(d, ensure_ascii=False) + "\n")
            first = False
    except _InputError as exc:
        out.flush()
        print(f"tainted-proxy classify: {exc}", file=sys.stderr)
        return 2
    if summary is not None:
        d = summary.as_dict(args.top)
        if args.pretty:
            out.write(_pretty_summary(d) + "\n")
        else:
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
