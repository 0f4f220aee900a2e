"""Reading a MariaDB/MySQL general query log as a stream of `Event` objects.

Three layouts are read, line by line (never the whole file at once):

* ``file``: the log file the server writes with ``log_output=FILE`` (MariaDB 10.x and
  MySQL 5.x: ``YYMMDD HH:MM:SS`` written only when the second changes, lines without a
  time prefix start with two tabs; MySQL 5.7+/8: an ISO time on every line). An entry
  is ``[time] \\t id command \\t argument``; a statement that spans several lines goes on
  in continuation lines that have no prefix at all. The header the server writes when it
  opens the file (``... started with:``, ``Tcp port: ...``, ``Time Id Command Argument``)
  is skipped wherever it appears.
* ``csv``: the ``mysql.general_log`` table (``log_output=TABLE``) as the CSV engine keeps
  it on disk (``general_log.CSV``: newlines written as ``\\n``) or as ``SELECT ... INTO
  OUTFILE ... FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"'`` writes it (a newline
  in a value is a backslash followed by a real newline); a header line naming the columns
  is allowed, and so are CSV files that double their quotes (``""``).
* ``tsv``: the same table exported tab-separated: ``SELECT * INTO OUTFILE`` with the
  default field options, or ``mariadb -B -e 'SELECT * FROM mysql.general_log'``
  (a header line, ``NULL`` for NULL).

Columns of the table: ``event_time, user_host, thread_id, server_id, command_type,
argument``. Pure parsing: the caller opens the file (`open_log`).
"""

from __future__ import annotations

import gzip
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

FORMATS = ("auto", "file", "csv", "tsv")

#: The commands the server writes in the ``Command`` column (MariaDB 10.11 and MySQL 8
#: names); a line that looks like an entry with any other command is a continuation line.
COMMANDS: frozenset[str] = frozenset(
    {
        "Sleep",
        "Quit",
        "Init DB",
        "Query",
        "Field List",
        "Create DB",
        "Drop DB",
        "Refresh",
        "Shutdown",
        "Statistics",
        "Processlist",
        "Connect",
        "Kill",
        "Debug",
        "Ping",
        "Time",
        "Delayed insert",
        "Change user",
        "Binlog Dump",
        "Table Dump",
        "Connect Out",
        "Register Slave",
        "Prepare",
        "Execute",
        "Long Data",
        "Close stmt",
        "Reset stmt",
        "Set option",
        "Fetch",
        "Daemon",
        "Unimpl get tid",
        "Reset connection",
        "Bulk_execute",
        "Slave_worker",
        "Slave_IO",
        "Slave_SQL",
        "Error",
        "Clone",
    }
)


@dataclass(slots=True)
class Event:
    """One entry of the log."""

    #: Seconds since the epoch (the log's clock, read as UTC), whole seconds for the file
    #: layout; None when no time has been seen yet.
    time: float | None
    #: The server's thread id (the connection).
    conn: int
    #: ``Connect``, ``Query``, ``Quit``, ``Init DB``, ``Change user``, ``Execute``...
    command: str
    #: The rest of the entry: the statement text, ``user@host on db using TCP/IP``...
    argument: str
    #: The account, when the layout says it on every row (the table's ``user_host``).
    user: str | None = None


# -- opening -------------------------------------------------------------------------------


class CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read from it (of the file on disk: for a
    gzip file, the compressed bytes), for a progress bar."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self.raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.count += n
        return n or 0

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_log(path: str) -> tuple[Iterator[bytes], CountingReader | None, int | None]:
    """(lines of the file as bytes, its byte counter, its size) for ``path``
    (``-``: standard input, no counter; ``*.gz``: gunzipped on the fly)."""
    import os
    import sys

    if path == "-":
        return iter(sys.stdin.buffer), None, None
    raw = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the caller via the reader)
    size = os.fstat(raw.fileno()).st_size
    counter = CountingReader(raw)
    buffered: BinaryIO = io.BufferedReader(counter, 1 << 20)
    if path.endswith(".gz"):
        buffered = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
    return iter(buffered), counter, size


def decode_line(line: bytes) -> str:
    """A line without its line break, as text (invalid UTF-8 replaced)."""
    text = line.decode("utf-8", "replace")
    if text[-1:] == "\n":
        return text[:-2] if text[-2:-1] == "\r" else text[:-1]
    return text


# -- format detection ---------------------------------------------------------------------

_CSV_FIRST = re.compile(r'^"?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?"?,')
_TSV_FIRST = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?\t")
_HEADER_CSV = re.compile(r'^"?event_time"?\s*,', re.IGNORECASE)
_HEADER_TSV = re.compile(r"^event_time\t", re.IGNORECASE)


def detect_format(first_lines: Iterable[str]) -> str:
    """``file``, ``csv`` or ``tsv`` from the first non-empty lines of a log."""
    for line in first_lines:
        if not line.strip():
            continue
        if _CSV_FIRST.match(line) or _HEADER_CSV.match(line):
            return "csv"
        if _TSV_FIRST.match(line) or _HEADER_TSV.match(line):
            return "tsv"
        return "file"
    return "file"


def read_events(lines: Iterable[bytes], fmt: str = "auto") -> Iterator[Event]:
    """The events of a log given as binary lines (as a binary file iterates)."""
    texts = map(decode_line, lines)
    if fmt == "auto":
        head: list[str] = []
        for text in texts:
            head.append(text)
            if text.strip():
                break
        fmt = detect_format(head)
        texts = itertools.chain(head, texts)
    if fmt == "file":
        return parse_file(texts)
    if fmt == "csv":
        return parse_csv(texts)
    if fmt == "tsv":
        return parse_tsv(texts)
    raise ValueError(f"unknown log format {fmt!r} (expected one of {', '.join(FORMATS)})")


# -- the log file --------------------------------------------------------------------------

# MariaDB / MySQL 5: "261207  0:57:17\t     3 Query\tSELECT 1", or "\t\t     3 Quit\t";
# MySQL 5.7+: "2026-12-07T00:57:17.123456Z\t    3 Query\tSELECT 1"
_ENTRY = re.compile(
    r"^(?:(?P<old>\d{6}\s+\d{1,2}:\d\d:\d\d)|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)[^\t]*)?"
    r"\t+ *(?P<id>\d+) (?P<cmd>[A-Z][A-Za-z_ ]*?)(?:\t(?P<arg>.*))?$",
    re.DOTALL,
)
_HEADER = re.compile(
    r"^(?:.*, Version: .*started with:|Tcp port: \d+ +Unix socket: .*|Time\s+Id\s+Command\s+Argument)$"
)


def _old_time(text: str) -> float:
    # YYMMDD H:MM:SS (the hour is space-padded)
    d, t = text.split(None, 1)
    h, m, s = t.strip().split(":")
    year = 2000 + int(d[0:2])
    dt = datetime(year, int(d[2:4]), int(d[4:6]), int(h), int(m), int(s), tzinfo=UTC)
    return dt.timestamp()


def _iso_time(text: str) -> float:
    # YYYY-MM-DD[T ]HH:MM:SS, fractions dropped
    return datetime.fromisoformat(text[:10] + "T" + text[11:19]).replace(tzinfo=UTC).timestamp()


def parse_file(lines: Iterable[str]) -> Iterator[Event]:
    """Events of the general log file layout (continuation lines joined with newlines)."""
    cur: Event | None = None
    parts: list[str] = []
    now: float | None = None
    last_stamp = ""
    for line in lines:
        m = _ENTRY.match(line) if line[:1] in "\t0123456789" else None
        if m is not None and m.group("cmd") not in COMMANDS:
            m = None
        if m is None:
            if _HEADER.match(line):
                # the header of a (re-)opened log ends the entry before it
                if cur is not None:
                    cur.argument = "\n".join(parts)
                    yield cur
                    cur = None
            elif cur is not None:
                parts.append(line)
            continue
        if cur is not None:
            cur.argument = "\n".join(parts) if len(parts) > 1 else parts[0]
            yield cur
        stamp = m.group("old") or m.group("iso")
        if stamp is not None and stamp != last_stamp:
            last_stamp = stamp
            try:
                now = _old_time(stamp) if m.group("old") else _iso_time(stamp)
            except ValueError:
                pass
        cur = Event(now, int(m.group("id")), m.group("cmd"), "")
        parts = [m.group("arg") or ""]
    if cur is not None:
        cur.argument = "\n".join(parts) if len(parts) > 1 else parts[0]
        yield cur


# -- the table, exported -------------------------------------------------------------------

_COLUMNS = ("event_time", "user_host", "thread_id", "server_id", "command_type", "argument")
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "0": "\0",
    "Z": "\x1a",
    "b": "\b",
    "\n": "\n",
}
_BACKSLASH = re.compile(r"\\(.)", re.DOTALL)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.|"")*)"', re.DOTALL)
_UNQUOTED = re.compile(r"[^,]*")
# "priv_user[user] @ host [ip]": the login name is in the first brackets
_USER_HOST = re.compile(r"^[^\[]*\[([^\]]*)\]")


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _BACKSLASH.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), value)


class _Incomplete(Exception):
    pass


def _csv_fields(record: str) -> list[str | None]:
    """The fields of one CSV record; raises _Incomplete when a quoted field is still
    open at the end (the record goes on on the next line)."""
    out: list[str | None] = []
    pos = 0
    n = len(record)
    while True:
        if record.startswith('"', pos):
            m = _QUOTED.match(record, pos)
            if m is None:
                raise _Incomplete
            body = m.group(1)
            if '""' in body:
                body = body.replace('""', '"')
            out.append(_unescape(body))
        else:
            m = _UNQUOTED.match(record, pos)
            raw = m.group()  # type: ignore[union-attr]
            out.append(None if raw in ("\\N", "NULL") else _unescape(raw))
        pos = m.end()  # type: ignore[union-attr]
        if pos >= n:
            return out
        if record[pos] != ",":
            # text after a closing quote: a quote inside a field the writer did not
            # escape; keep reading as if it were part of the field
            raise _Incomplete
        pos += 1


def _user(user_host: str | None) -> str | None:
    if not user_host:
        return None
    m = _USER_HOST.match(user_host)
    if m is not None and m.group(1):
        return m.group(1)
    return user_host.split("@", 1)[0].strip() or None


class _Rows:
    """Maps the table's columns to an `Event` (by the header's names when there is one)."""

    def __init__(self) -> None:
        self.index = {name: i for i, name in enumerate(_COLUMNS)}
        self.stamp = ""
        self.time: float | None = None

    def header(self, fields: list[str | None]) -> bool:
        names = [(f or "").strip().lower() for f in fields]
        if "event_time" in names and "thread_id" in names:
            self.index = {name: i for i, name in enumerate(names)}
            return True
        return False

    def event(self, fields: list[str | None]) -> Event | None:
        ix = self.index
        try:
            stamp = fields[ix["event_time"]] or ""
            conn = int(fields[ix["thread_id"]] or "")
            command = fields[ix["command_type"]] or ""
        except (IndexError, KeyError, ValueError):
            return None
        arg_ix = ix.get("argument")
        argument = fields[arg_ix] if arg_ix is not None and arg_ix < len(fields) else None
        uh_ix = ix.get("user_host")
        user = _user(fields[uh_ix]) if uh_ix is not None and uh_ix < len(fields) else None
        if stamp[:19] != self.stamp:
            self.stamp = stamp[:19]
            try:
                self.time = _iso_time(stamp)
            except ValueError:
                pass
        return Event(self.time, conn, command, argument or "", user)


#: A record longer than this many lines is abandoned (a quote that never closes).
MAX_RECORD_LINES = 100_000


def parse_csv(lines: Iterable[str]) -> Iterator[Event]:
    """Events of the table exported as CSV."""
    rows = _Rows()
    first = True
    pending: list[str] = []
    for line in lines:
        if pending:
            pending.append(line)
            record = "\n".join(pending)
        else:
            if not line:
                continue
            record = line
        try:
            fields = _csv_fields(record)
        except _Incomplete:
            if not pending:
                pending.append(line)
            elif len(pending) > MAX_RECORD_LINES:
                pending = []
            continue
        pending = []
        if first:
            first = False
            if rows.header(fields):
                continue
        ev = rows.event(fields)
        if ev is not None:
            yield ev


def parse_tsv(lines: Iterable[str]) -> Iterator[Event]:
    """Events of the table exported tab-separated (backslash escapes)."""
    rows = _Rows()
    first = True
    pending: list[str] = []
    for line in lines:
        if not line and not pending:
            continue
        # a backslash escaping the line break: the value goes on on the next line
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending.append(line[:-1] + "\n")
            if len(pending) > MAX_RECORD_LINES:
                pending = []
            continue
        record = "".join(pending) + line if pending else line
        pending = []
        raw = record.split("\t")
        fields: list[str | None] = [None if f in ("\\N", "NULL") else _unescape(f) for f in raw]
        if first:
            first = False
            if rows.header(fields):
                continue
        ev = rows.event(fields)
        if ev is not None:
            yield ev
