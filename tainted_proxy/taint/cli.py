"""``tainted-proxy classify``: ask "will this statement pin my connection?".

    tainted-proxy classify "SET NAMES utf8mb4" "SELECT 1"
    printf 'SET @x = 1\\nSELECT 1\\n' | tainted-proxy classify
    tainted-proxy classify --pretty "SELECT GET_LOCK('job', 10)"

One JSON object per statement text, one per line, in order: ``sql``,
``effects`` (sorted; ``[]`` when clean), ``settings``, ``pin`` (null or the
reason), ``needs``, ``fingerprint``, and the other `Classification` fields.
``--pretty`` prints an indented, human-oriented block per statement instead.
Also runnable as ``python -m tainted_proxy.taint.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable

from tainted_proxy.taint.classifier import classify


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tainted-proxy classify",
        description="Print the session effects of SQL statements, one JSON object per line.",
    )
    p.add_argument(
        "sql",
        nargs="*",
        help="statement texts (each may hold several statements separated by ';'); "
        "read from stdin, one per line, when none is given",
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


def _pretty(d: dict[str, object]) -> str:
    lines = [str(d["sql"])]
    effects = d["effects"]
    lines.append("  effects:     " + (", ".join(effects) if effects else "none (clean)"))  # type: ignore[arg-type]
    lines.append("  pin:         " + (str(d["pin"]) if d["pin"] else "no"))
    for key in ("settings", "user_vars", "next_tx"):
        m = d[key]
        if m:
            shown = ", ".join(
                f"{k}={'?' if v is None else v}"
                for k, v in m.items()  # type: ignore[attr-defined]
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
    return "\n".join(lines)


def _inputs(args: argparse.Namespace) -> Iterable[str]:
    if args.sql:
        return args.sql
    return (line.rstrip("\r\n") for line in sys.stdin if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run ``classify`` with `argv` (the arguments after ``classify``)."""
    args = _parser().parse_args(argv)
    out = sys.stdout
    first = True
    for sql in _inputs(args):
        c = classify(
            sql, ansi_quotes=args.ansi_quotes, no_backslash_escapes=args.no_backslash_escapes
        )
        d = c.as_dict()
        if args.pretty:
            if not first:
                out.write("\n")
            out.write(_pretty(d) + "\n")
        else:
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
        first = False
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
