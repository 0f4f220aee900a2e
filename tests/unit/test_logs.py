"""Log lines: key=value event text, and the same fields as JSON."""

from __future__ import annotations

import json
import logging

from tainted_proxy.logs import JsonFormatter, fields


def test_event_fields_are_parsed_with_quoted_values():
    line = "event=login_failed client=2000000001 address=127.0.0.1 code=1045 reason='Access denied'"
    assert fields(line) == {
        "event": "login_failed",
        "client": "2000000001",
        "address": "127.0.0.1",
        "code": "1045",
        "reason": "Access denied",
    }


def test_json_lines_carry_the_event_fields():
    record = logging.LogRecord(
        "tainted_proxy.login", logging.INFO, __file__, 1, "event=x user=%s n=%s", ("app", 3), None
    )
    doc = json.loads(JsonFormatter().format(record))
    assert (doc["event"], doc["user"], doc["n"], doc["level"]) == ("x", "app", "3", "info")
    plain = logging.LogRecord("t", logging.WARNING, __file__, 1, "listening on x", (), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "listening on x"
