"""Log output: one line per event an operator needs, as ``key=value`` text (the default)
or JSON (``--log-format json`` / ``[log] format = "json"``).

Event lines are written as ``event=<name> key=value ...`` (values with spaces quoted with
repr); the JSON formatter turns those pairs into fields, so both formats carry the same
data. Passwords never reach a log line: nothing logs a login's auth data.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

_PAIR = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\[[^\]]*\]|\S+)")


def fields(message: str) -> dict[str, str]:
    """The ``key=value`` pairs of an event line (quotes of repr'd values removed)."""
    out = {}
    for k, v in _PAIR.findall(message):
        if len(v) >= 2 and v[0] in "'\"" and v[-1] == v[0]:
            v = v[1:-1]
        out[k] = v
    return out


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if self.worker is not None:
            doc["worker"] = self.worker
        pairs = fields(message) if message.startswith("event=") else {}
        if pairs:
            doc.update(pairs)
        else:
            doc["message"] = message
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text", worker: int | None = None) -> None:
    """Set up the root logger for ``tainted-proxy serve``; ``worker``: this process is
    that worker of ``serve --workers N`` (every line says which)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = "" if worker is None else f"[worker {worker}]"
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
