"""may_call_stored_function: asked when a classic EOF says "state changed" without detail."""

import pytest

from tainted_proxy.taint.crosscheck import may_call_stored_function


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM information_schema.COLUMNS",
        "SHOW COLUMNS FROM mysql.user",
        "SHOW FULL TABLES",
        b"SELECT a FROM t WHERE b IN (SELECT x FROM y)",
        "SELECT CONCAT('a', 'b'), GREATEST(1, 2)",
    ],
)
def test_statements_without_unknown_function_calls_cannot_call_a_stored_function(sql):
    assert not may_call_stored_function(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT test.sets_user_var()",
        "SELECT my_fn(a) FROM t",
        "SELECT 1 FROM t WHERE b = other_fn(2)",
        "this is not SQL at all (",
    ],
)
def test_unknown_function_calls_and_unparsable_text_may_call_one(sql):
    assert may_call_stored_function(sql)
