"""The settings vector (tainted_proxy.state.settings): baseline literals, folding what the
server reported into a vector, the SET statement that moves a connection from one vector
to another, and the distance the pool uses to pick the nearest idle connection.

Pure functions; one test (marked ``integration``) checks generated statements against a
private MariaDB server (the ``mariadb`` fixture of tests/conftest.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tainted_proxy.state.settings import (
    EMPTY,
    Baseline,
    Settings,
    apply_reported,
    distance,
    for_charset,
    settings_sql,
)

SQL_MODE = (
    "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION"
)
ANSI = "REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI"

# (VARIABLE_NAME, SESSION_VALUE, VARIABLE_TYPE) as information_schema.SYSTEM_VARIABLES
# gives them on MariaDB 10.11 (names upper case there).
ROWS = [
    ("CHARACTER_SET_CLIENT", "utf8mb4", "VARCHAR"),
    ("CHARACTER_SET_CONNECTION", "utf8mb4", "VARCHAR"),
    ("CHARACTER_SET_RESULTS", "utf8mb4", "VARCHAR"),
    ("COLLATION_CONNECTION", "utf8mb4_general_ci", "VARCHAR"),
    ("TIME_ZONE", "SYSTEM", "VARCHAR"),
    ("SQL_MODE", SQL_MODE, "SET"),
    ("AUTOCOMMIT", "ON", "BOOLEAN"),
    ("TX_ISOLATION", "REPEATABLE-READ", "ENUM"),
    ("WAIT_TIMEOUT", "28800", "BIGINT UNSIGNED"),
    ("DIV_PRECISION_INCREMENT", "4", "INT UNSIGNED"),
    ("AUTO_INCREMENT_OFFSET", "1", "INT"),
    ("SQL_SELECT_LIMIT", "18446744073709551615", "bigint"),
    ("MAX_STATEMENT_TIME", "0.000000", "DOUBLE"),
    ("DEFAULT_MASTER_CONNECTION", "", "VARCHAR"),
    ("DEFAULT_TMP_STORAGE_ENGINE", None, "VARCHAR"),
]
BASE = Baseline.from_rows(ROWS)


def vec(**kw: str) -> Settings:
    return frozenset(kw.items())


# -- Baseline ----------------------------------------------------------------------


def test_from_rows_lowercases_names_and_turns_null_into_empty_string():
    assert BASE.values["time_zone"] == "SYSTEM"
    assert BASE.values["collation_connection"] == "utf8mb4_general_ci"
    assert BASE.values["default_tmp_storage_engine"] == ""
    assert "TIME_ZONE" not in BASE.values


def test_from_rows_marks_integer_and_double_types_numeric_in_any_case():
    assert BASE.numeric == {
        "wait_timeout",
        "div_precision_increment",
        "auto_increment_offset",
        "sql_select_limit",
        "max_statement_time",
    }


def test_literal_leaves_numeric_variables_unquoted():
    assert BASE.literal("wait_timeout", "100", False) == "100"
    assert BASE.literal("max_statement_time", "2.500000", False) == "2.500000"
    assert BASE.literal("sql_select_limit", "18446744073709551615", True) == "18446744073709551615"


def test_literal_quotes_booleans_enums_and_sets_as_strings():
    assert BASE.literal("autocommit", "OFF", False) == "'OFF'"
    assert BASE.literal("tx_isolation", "READ-COMMITTED", False) == "'READ-COMMITTED'"
    assert BASE.literal("sql_mode", ANSI, False) == f"'{ANSI}'"
    assert BASE.literal("time_zone", "+05:30", False) == "'+05:30'"


def test_literal_of_an_unknown_variable_is_unquoted_only_when_it_looks_numeric():
    assert BASE.literal("not_in_baseline", "42", False) == "42"
    assert BASE.literal("not_in_baseline", "1.5", False) == "1.5"
    assert BASE.literal("not_in_baseline", "abc", False) == "'abc'"


def test_literal_doubles_single_quotes():
    assert BASE.literal("default_master_connection", "it's", False) == "'it''s'"
    assert BASE.literal("default_master_connection", "''", True) == "''''''"


def test_literal_doubles_backslashes_unless_no_backslash_escapes():
    assert BASE.literal("default_master_connection", "a\\b", False) == "'a\\\\b'"
    assert BASE.literal("default_master_connection", "a\\b", True) == "'a\\b'"
    assert BASE.literal("default_master_connection", "\\'", False) == "'\\\\'''"


def test_literal_of_empty_charset_or_collation_is_null():
    for name in (
        "character_set_client",
        "character_set_connection",
        "character_set_results",
        "collation_connection",
    ):
        assert BASE.literal(name, "", False) == "NULL"


def test_literal_of_empty_ordinary_string_is_an_empty_string():
    assert BASE.literal("sql_mode", "", False) == "''"
    assert BASE.literal("default_master_connection", "", False) == "''"


# -- apply_reported ----------------------------------------------------------------


def test_reported_value_different_from_baseline_enters_the_vector():
    assert apply_reported(EMPTY, {"time_zone": "+05:30"}, BASE) == vec(time_zone="+05:30")


def test_reported_value_equal_to_baseline_leaves_the_vector():
    v = vec(time_zone="+05:30", sql_mode=ANSI)
    assert apply_reported(v, {"time_zone": "SYSTEM"}, BASE) == vec(sql_mode=ANSI)


def test_reporting_the_baseline_on_a_clean_vector_keeps_it_empty():
    # SET NAMES utf8mb4 / SET autocommit=1 on a fresh connection: reported, not changed
    reported = {"autocommit": "ON", "character_set_results": "utf8mb4"}
    assert apply_reported(EMPTY, reported, BASE) == EMPTY


def test_re_reporting_the_same_value_is_a_no_op():
    v = apply_reported(EMPTY, {"time_zone": "+05:30", "wait_timeout": "100"}, BASE)
    assert apply_reported(v, {"time_zone": "+05:30"}, BASE) == v
    assert apply_reported(v, {}, BASE) is v


def test_new_value_replaces_the_previous_one():
    v = apply_reported(vec(time_zone="+05:30"), {"time_zone": "+01:00"}, BASE)
    assert v == vec(time_zone="+01:00")


def test_equal_canonical_values_give_equal_vectors_whatever_the_client_wrote():
    # '+5:30' and '+05:30' are one setting: the server reports the canonical form
    a = apply_reported(EMPTY, {"time_zone": "+05:30"}, BASE)
    b = apply_reported(
        apply_reported(EMPTY, {"time_zone": "+01:00"}, BASE), {"time_zone": "+05:30"}, BASE
    )
    assert a == b and hash(a) == hash(b)


def test_vector_is_hashable_and_independent_of_report_order():
    one = apply_reported(
        EMPTY, {"time_zone": "+05:30", "sql_mode": ANSI, "wait_timeout": "1"}, BASE
    )
    two = apply_reported(
        EMPTY, {"wait_timeout": "1", "sql_mode": ANSI, "time_zone": "+05:30"}, BASE
    )
    three = apply_reported(
        apply_reported(EMPTY, {"wait_timeout": "1"}, BASE),
        {"sql_mode": ANSI, "time_zone": "+05:30"},
        BASE,
    )
    assert one == two == three
    assert len({one, two, three}) == 1
    assert {one: "sub-pool"}[three] == "sub-pool"


def test_empty_reported_charset_is_kept_as_empty_string():
    # SET character_set_results = NULL is reported as '' (NULL)
    v = apply_reported(EMPTY, {"character_set_results": ""}, BASE)
    assert v == vec(character_set_results="")


# -- for_charset -------------------------------------------------------------------


def test_login_with_the_baseline_charset_gives_the_empty_vector():
    assert for_charset("utf8mb4", "utf8mb4_general_ci", BASE) == EMPTY


def test_login_with_latin1_gives_the_three_charsets_and_the_collation():
    v = for_charset("latin1", "latin1_swedish_ci", BASE)
    assert v == vec(
        character_set_client="latin1",
        character_set_connection="latin1",
        character_set_results="latin1",
        collation_connection="latin1_swedish_ci",
    )


def test_login_with_the_baseline_charset_but_another_collation_keys_only_the_collation():
    v = for_charset("utf8mb4", "utf8mb4_unicode_ci", BASE)
    assert v == vec(collation_connection="utf8mb4_unicode_ci")


def test_for_charset_keeps_the_other_settings_of_into():
    v = for_charset("latin1", "latin1_swedish_ci", BASE, vec(time_zone="+05:30"))
    assert ("time_zone", "+05:30") in v and len(v) == 5
    assert for_charset("utf8mb4", "utf8mb4_general_ci", BASE, v) == vec(time_zone="+05:30")


# -- settings_sql ------------------------------------------------------------------


def test_settings_sql_is_none_when_nothing_differs():
    assert settings_sql(EMPTY, EMPTY, BASE) is None
    v = vec(time_zone="+05:30", sql_mode=ANSI)
    assert settings_sql(v, frozenset(v), BASE) is None


def test_settings_sql_assigns_only_the_differences():
    current = vec(time_zone="+05:30", sql_mode=ANSI)
    target = vec(time_zone="+05:30", sql_mode="", wait_timeout="100")
    assert settings_sql(current, target, BASE) == b"SET SESSION sql_mode='', wait_timeout=100"


def test_variables_dropped_from_the_target_go_back_to_their_baseline_value():
    current = vec(time_zone="+05:30", wait_timeout="100", autocommit="OFF")
    sql = settings_sql(current, EMPTY, BASE)
    assert sql == b"SET SESSION autocommit='ON', time_zone='SYSTEM', wait_timeout=28800"


def test_charset_assignments_come_before_collation_connection():
    current = vec(time_zone="+05:30")
    target = for_charset("latin1", "latin1_swedish_ci", BASE, vec(sql_mode=ANSI))
    sql = settings_sql(current, target, BASE)
    assert sql is not None
    names = [part.split("=", 1)[0] for part in sql.decode()[len("SET SESSION ") :].split(", ")]
    assert names[-1] == "collation_connection"
    assert names[:3] == [
        "character_set_client",
        "character_set_connection",
        "character_set_results",
    ]
    assert set(names) == {n for n, _ in target} | {"time_zone"}


def test_going_back_to_the_baseline_charset_also_resets_charsets_before_collation():
    current = for_charset("latin1", "latin1_swedish_ci", BASE)
    assert settings_sql(current, EMPTY, BASE) == (
        b"SET SESSION character_set_client='utf8mb4', character_set_connection='utf8mb4', "
        b"character_set_results='utf8mb4', collation_connection='utf8mb4_general_ci'"
    )


def test_null_character_set_results_is_sent_as_null():
    assert (
        settings_sql(EMPTY, vec(character_set_results=""), BASE)
        == b"SET SESSION character_set_results=NULL"
    )


def test_settings_sql_escapes_for_the_connection_quoting_mode():
    target = vec(default_master_connection="it's a\\b")
    assert settings_sql(EMPTY, target, BASE) == (
        b"SET SESSION default_master_connection='it''s a\\\\b'"
    )
    assert settings_sql(EMPTY, target, BASE, no_backslash_escapes=True) == (
        b"SET SESSION default_master_connection='it''s a\\b'"
    )


def test_restoring_a_null_default_tmp_storage_engine_does_not_send_an_empty_string():
    sql = settings_sql(vec(default_tmp_storage_engine="MyISAM"), EMPTY, BASE)
    assert sql == b"SET SESSION default_tmp_storage_engine=NULL"


# -- distance ----------------------------------------------------------------------


def test_distance_is_zero_for_equal_vectors_and_symmetric():
    a = vec(time_zone="+05:30", sql_mode=ANSI)
    b = vec(time_zone="+01:00")
    assert distance(a, frozenset(a)) == 0
    assert distance(a, b) == distance(b, a)


def test_distance_counts_added_and_removed_variables():
    assert distance(EMPTY, vec(time_zone="+05:30")) == 1
    assert distance(vec(time_zone="+05:30", wait_timeout="1"), EMPTY) == 2
    assert distance(vec(a="1"), vec(b="2")) == 2


def test_distance_counts_a_changed_value_as_an_old_and_a_new_entry():
    # len(a ^ b): a variable with a different value costs 2, one missing on a side 1
    assert distance(vec(time_zone="+05:30"), vec(time_zone="+01:00")) == 2


def test_distance_orders_connections_by_how_much_must_change():
    want = vec(time_zone="+05:30", sql_mode=ANSI, wait_timeout="100")
    near = vec(time_zone="+05:30", sql_mode=ANSI)
    far = vec(autocommit="OFF")
    assert distance(near, want) < distance(EMPTY, want) < distance(far, want)


# -- property: settings_sql(a, b) turns a's full values into b's --------------------

UNIVERSE: dict[str, list[str]] = {
    "character_set_results": ["utf8mb4", "latin1", ""],
    "time_zone": ["SYSTEM", "+05:30", "-12:36"],
    "sql_mode": [SQL_MODE, ANSI, ""],
    "autocommit": ["ON", "OFF"],
    "wait_timeout": ["28800", "100", "0"],
    "max_statement_time": ["0.000000", "2.500000"],
    "default_master_connection": ["", "it's", "a\\b", "x,y=z", "'\\'"],
}


def _parse_set(sql: bytes, no_backslash_escapes: bool) -> dict[str, str]:
    """A tiny parser for ``SET SESSION a=<lit>, b=<lit>``: NULL (-> ''), bare numbers,
    and single-quoted strings with '' (and, unless no_backslash_escapes, \\x) escapes."""
    text = sql.decode()
    prefix = "SET SESSION "
    assert text.startswith(prefix)
    i = len(prefix)
    out: dict[str, str] = {}
    while True:
        eq = text.index("=", i)
        name = text[i:eq]
        assert name.isidentifier() and name not in out
        i = eq + 1
        if text.startswith("'", i):
            i += 1
            buf = []
            while True:
                ch = text[i]
                if ch == "\\" and not no_backslash_escapes:
                    buf.append(text[i + 1])
                    i += 2
                elif ch == "'":
                    if text.startswith("''", i):
                        buf.append("'")
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    buf.append(ch)
                    i += 1
            value = "".join(buf)
        else:
            end = text.find(", ", i)
            end = len(text) if end < 0 else end
            raw = text[i:end]
            i = end
            if raw == "NULL":
                value = ""
            else:
                float(raw)  # must be a number
                value = raw
        out[name] = value
        if i == len(text):
            return out
        assert text.startswith(", ", i)
        i += 2


def _full(v: Settings) -> dict[str, str]:
    full = {name: BASE.values[name] for name in UNIVERSE}
    full.update(dict(v))
    return full


@st.composite
def vectors(draw: st.DrawFn) -> Settings:
    reported = draw(
        st.dictionaries(
            st.sampled_from(sorted(UNIVERSE)),
            st.integers(0, 10),
        )
    )
    return apply_reported(
        EMPTY, {n: UNIVERSE[n][k % len(UNIVERSE[n])] for n, k in reported.items()}, BASE
    )


def test_tiny_parser_reads_what_settings_sql_writes():
    sql = b"SET SESSION a=NULL, b='x''y\\\\z, w', c=100"
    assert _parse_set(sql, False) == {"a": "", "b": "x'y\\z, w", "c": "100"}


@settings(max_examples=300, deadline=None)
@given(a=vectors(), b=vectors(), nbe=st.booleans())
def test_settings_sql_turns_the_full_values_of_a_into_those_of_b(a, b, nbe):
    sql = settings_sql(a, b, BASE, no_backslash_escapes=nbe)
    have = _full(a)
    want = _full(b)
    if sql is None:
        assert have == want
        return
    assigns = _parse_set(sql, nbe)
    # only the differences are sent
    assert set(assigns) == {n for n in UNIVERSE if have[n] != want[n]}
    have.update(assigns)
    assert have == want


# -- the generated statements on a real MariaDB ------------------------------------


@pytest.mark.integration
def test_generated_statements_are_valid_mariadb_and_read_back_as_the_target(mariadb):
    """Builds the Baseline like Proxy.probe_upstream (one information_schema query), then
    reads values back with ``@@SESSION.x``, on the private server of the ``mariadb``
    fixture."""
    conn = mariadb.connect(charset="utf8mb4", collation="utf8mb4_general_ci")
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT LOWER(VARIABLE_NAME), SESSION_VALUE, VARIABLE_TYPE "
            "FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_SCOPE <> 'GLOBAL'"
        )
        base = Baseline.from_rows((n, v, t or "") for n, v, t in cur.fetchall())

        def check(names: set[str], expected: dict[str, str], sql: bytes) -> None:
            order = sorted(names)
            cur.execute("SELECT " + ", ".join(f"@@SESSION.{n}" for n in order))
            for name, got in zip(order, cur.fetchone(), strict=True):
                want = expected[name]
                if name in base.numeric:
                    assert float(got) == float(want), (name, sql)
                else:
                    assert ("" if got is None else got) == want, (name, sql)

        latin1 = for_charset("latin1", "latin1_swedish_ci", base)
        steps: list[tuple[Settings, bool]] = [
            (
                apply_reported(
                    EMPTY,
                    {
                        "time_zone": "+05:30",
                        "sql_mode": ANSI,
                        "wait_timeout": "100",
                        "long_query_time": "2.500000",
                        "tx_isolation": "READ-COMMITTED",
                        "default_master_connection": "it's a\\b, c",
                    },
                    base,
                ),
                False,
            ),
            # a non-default collation: only right if it is assigned after the charsets
            (for_charset("latin1", "latin1_general_ci", base), False),
            (
                apply_reported(latin1, {"character_set_results": "", "time_zone": "-12:36"}, base),
                False,
            ),
            (
                apply_reported(
                    latin1,
                    {
                        "sql_mode": "NO_BACKSLASH_ESCAPES",
                        "default_master_connection": "x\\y''",
                        "div_precision_increment": "8",
                    },
                    base,
                ),
                False,
            ),
            # the previous step switched NO_BACKSLASH_ESCAPES on: the next statement is
            # parsed under it
            (apply_reported(EMPTY, {"default_master_connection": "back\\slash"}, base), True),
            (EMPTY, False),
        ]
        current: Settings = EMPTY
        for target, nbe in steps:
            sql = settings_sql(current, target, base, no_backslash_escapes=nbe)
            assert sql is not None
            cur.execute(sql.decode())
            names = {n for n, _ in current} | {n for n, _ in target} | {"collation_connection"}
            check(names, {n: base.values[n] for n in names} | dict(target), sql)
            current = target
    finally:
        conn.close()


def test_carried_user_variables_are_assigned_last_and_cleared_with_null():
    from tainted_proxy.state.settings import carried_user_vars, with_user_vars
    from tainted_proxy.taint import classify

    carried = carried_user_vars(classify("SET @a = 'x', @b = 2"))
    assert carried == {"@a": "'x'", "@b": "2"}
    vec_a = with_user_vars(vec(collation_connection="latin1_bin"), carried)
    sql = settings_sql(EMPTY, vec_a, BASE)
    assert sql is not None and sql.index(b"collation_connection") < sql.index(b"@a='x'")
    assert settings_sql(vec_a, vec(collation_connection="latin1_bin"), BASE).endswith(
        b"@a=NULL, @b=NULL"
    )
    assert carried_user_vars(classify("SET @a = 'it''s'")) is None  # not mode-proof
    assert carried_user_vars(classify("SET @a = 1, time_zone = 'UTC'")) is None


def test_a_user_variable_longer_than_the_carry_limit_is_not_carried():
    from tainted_proxy.state.settings import CARRY_VALUE_MAX, carried_user_vars
    from tainted_proxy.taint import classify

    fits = "'" + "x" * (CARRY_VALUE_MAX - 2) + "'"
    assert carried_user_vars(classify(f"SET @a = {fits}")) == {"@a": fits}
    too_long = "'" + "x" * (CARRY_VALUE_MAX - 1) + "'"
    # not carried: the statement pins its session (a user variable set some other way)
    assert carried_user_vars(classify(f"SET @a = {too_long}")) is None
