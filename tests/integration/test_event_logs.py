"""The log lines an operator acts on are written, with what they need and no password."""

from __future__ import annotations

import logging

import pymysql
import pytest

pytestmark = pytest.mark.integration


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"event={name} ")]


def test_failed_login_is_logged_with_user_address_and_reason_never_the_password(
    pooling_proxy, caplog
):
    p = pooling_proxy("transaction")
    caplog.set_level(logging.INFO, logger="tainted_proxy")
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=p.port, user="app", password="not-the-Secret-42")
    (line,) = events(caplog, "login_failed")
    assert "address=127.0.0.1" in line and "1045" in line and "app" in line
    assert "not-the-Secret-42" not in caplog.text


def test_statement_mode_refusal_and_checkout_timeout_are_logged(pooling_proxy, connect, caplog):
    p = pooling_proxy("statement", max_connections=1, checkout_timeout=0.5)
    caplog.set_level(logging.INFO, logger="tainted_proxy")
    a = connect(p, autocommit=True)
    with pytest.raises(pymysql.err.NotSupportedError):
        a.cursor().execute("BEGIN")
    assert "statement=" in events(caplog, "statement_refused")[0]
    a.cursor().execute("CREATE TEMPORARY TABLE held (v INT)")  # pins the only connection
    with pytest.raises(pymysql.err.OperationalError):
        connect(p, autocommit=True)  # its login needs a connection: none comes
    assert events(caplog, "checkout_timeout")
    a.close()


def test_failed_logins_from_one_address_are_rate_limited(proxy_factory):
    p = proxy_factory(proxy={"max_login_failures": 3, "login_failure_window": 30})
    for _ in range(3):
        with pytest.raises(pymysql.err.OperationalError) as e:
            pymysql.connect(host="127.0.0.1", port=p.port, user="app", password="wrong")
        assert e.value.args[0] == 1045
    with pytest.raises(pymysql.err.OperationalError) as e:  # even with the right password
        pymysql.connect(host="127.0.0.1", port=p.port, user="app", password="app-secret")
    assert e.value.args[0] == 1129
