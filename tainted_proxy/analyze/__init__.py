"""``tainted-proxy analyze LOGFILE``: how a workload would behave behind the proxy.

Reads a MariaDB/MySQL general query log (the log file, or the ``mysql.general_log``
table exported as CSV or tab-separated: `analyze.logs`), groups the statements by
connection, runs each connection's statements through the proxy's own session model
(`analyze.model`: `state.pins.Pins`, carried settings and user variables, transactions,
statement-mode refusals), and reports per user (`analyze.report`): how its sessions
would behave in session, transaction and statement mode (the share of sessions that
pin and why, for how many statements, how many are refused, how many distinct settings
vectors they use, how many upstream connections the workload would need at peak in each
mode), the statement shapes that pin or are refused most with a hint each
(`analyze.hints.hint`), and the recommended mode. See docs/analyze.md.

It streams: memory grows with the connections open at once and the number of distinct
offending statement shapes (bounded), not with the size of the log.

    tainted-proxy analyze /var/log/mysql/general.log
    tainted-proxy analyze --json general_log.CSV > report.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator

from tainted_proxy.analyze.hints import hint
from tainted_proxy.analyze.logs import FORMATS, CountingReader, Event, open_log, read_events
from tainted_proxy.analyze.report import PIN_THRESHOLD, STATEMENT_MS, Analyzer
from tainted_proxy.taint.lexer import ANSI_QUOTES, NO_BACKSLASH_ESCAPES

__all__ = ["Analyzer", "analyze_events", "analyze_lines", "hint", "main"]


def analyze_events(events: Iterable[Event], **options: object) -> dict[str, object]:
    """The report (a JSON-ready dict) over ``events``; ``options``: `Analyzer`'s, and
    ``top`` (offenders listed, default 10)."""
    top = int(options.pop("top", 10))  # type: ignore[call-overload]
    a = Analyzer(**options)  # type: ignore[arg-type]
    for ev in events:
        a.feed(ev)
    a.finish()
    return a.report(top)


def analyze_lines(
    lines: Iterable[bytes | str], fmt: str = "auto", **options: object
) -> dict[str, object]:
    """The report over a log given as lines (bytes or text, with or without line breaks)."""

    def as_bytes(it: Iterable[bytes | str]) -> Iterator[bytes]:
        for line in it:
            yield line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line

    return analyze_events(read_events(as_bytes(lines), fmt), **options)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tainted-proxy analyze",
        description="Read a MariaDB/MySQL general query log and report, per user, how its "
        "sessions would behave behind the proxy in each pool mode.",
    )
    p.add_argument(
        "logfile",
        help="the general log file, or mysql.general_log exported as CSV or TSV "
        "('-': standard input; *.gz: gunzipped)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="the log's layout (default: detected from its first line)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--top", type=int, default=10, metavar="N", help="offenders listed (default: 10)"
    )
    p.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME",
        help="report only this user (repeatable)",
    )
    p.add_argument(
        "--pin-threshold",
        type=float,
        default=PIN_THRESHOLD,
        metavar="SHARE",
        help="pins are rare, and transaction mode is recommended over session mode, when "
        "the share of sessions that pin or the share of statements run pinned is below "
        f"this (default: {PIN_THRESHOLD})",
    )
    p.add_argument(
        "--statement-ms",
        type=float,
        default=STATEMENT_MS,
        metavar="MS",
        help="assumed mean statement duration, for the peaks' allowance for statements in "
        "flight: ceil(statements in the second x MS / 1000) (default: "
        f"{STATEMENT_MS:g}); the JSON's peak_connections_upper counts every session that "
        "ran a statement in the second instead",
    )
    p.add_argument(
        "--ansi-quotes",
        action="store_true",
        help="the server's default sql_mode has ANSI_QUOTES",
    )
    p.add_argument(
        "--no-backslash-escapes",
        action="store_true",
        help="the server's default sql_mode has NO_BACKSLASH_ESCAPES",
    )
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return p


def _progress_wanted(args: argparse.Namespace) -> bool:
    return (
        not args.no_progress and args.logfile != "-" and sys.stderr.isatty() and sys.stdout.isatty()
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``analyze`` with ``argv`` (the arguments after ``analyze``)."""
    args = _parser().parse_args(argv)
    flags = (ANSI_QUOTES if args.ansi_quotes else 0) | (
        NO_BACKSLASH_ESCAPES if args.no_backslash_escapes else 0
    )
    try:
        lines, counter, size = open_log(args.logfile)
    except OSError as exc:
        print(
            f"tainted-proxy analyze: cannot read {args.logfile}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    a = Analyzer(flags=flags, statement_ms=args.statement_ms, pin_threshold=args.pin_threshold)
    events = read_events(lines, args.format)
    try:
        if _progress_wanted(args) and counter is not None:
            _run_with_progress(a, events, counter, size, args.logfile)
        else:
            for ev in events:
                a.feed(ev)
    except KeyboardInterrupt:
        print("tainted-proxy analyze: interrupted; reporting what was read", file=sys.stderr)
    finally:
        if counter is not None:
            counter.close()
    a.finish()
    report = a.report(args.top if not args.user else 1 << 30)
    if args.user:
        wanted = set(args.user)
        users = [u for u in report["users"] if u["user"] in wanted]  # type: ignore[attr-defined]
        report["users"] = users
        report["sessions"] = sum(u["sessions"] for u in users)
        report["statements"] = sum(u["statements"] for u in users)
        report["other_offenders"] = [
            o
            for o in report["other_offenders"]  # type: ignore[attr-defined]
            if o["user"] in wanted
        ]
        report["top_offenders"] = [
            o
            for o in report["top_offenders"]
            if o["user"] in wanted  # type: ignore[attr-defined]
        ][: args.top]
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        return 0
    from rich.console import Console

    from tainted_proxy.analyze.render import render

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    render(report, Console(width=width, highlight=False), os.path.basename(args.logfile))
    return 0


def _run_with_progress(
    a: Analyzer, events: Iterable[Event], counter: CountingReader, size: int | None, name: str
) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(os.path.basename(name), total=size)
        n = 0
        for ev in events:
            a.feed(ev)
            n += 1
            if n & 0x3FFF == 0:
                progress.update(task, completed=counter.count)
        progress.update(task, completed=counter.count)


if __name__ == "__main__":
    raise SystemExit(main())
