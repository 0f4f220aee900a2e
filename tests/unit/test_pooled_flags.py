"""frontend.pooled.parse_flags: the lexer flags of a session's sql_mode, remembered per
settings vector, and only for vectors small enough to keep."""

from __future__ import annotations

from types import SimpleNamespace

from tainted_proxy.frontend import pooled
from tainted_proxy.state.settings import with_user_vars
from tainted_proxy.taint.lexer import ANSI_QUOTES


def _session(settings: frozenset[tuple[str, str]]) -> object:
    baseline = SimpleNamespace(values={"sql_mode": "STRICT_TRANS_TABLES"})
    return SimpleNamespace(
        up=None,
        state=SimpleNamespace(settings=settings),
        services=SimpleNamespace(catalog=SimpleNamespace(baseline=baseline)),
    )


def test_flags_follow_sql_mode_and_only_small_vectors_are_remembered() -> None:
    pooled._FLAGS_BY_SETTINGS.clear()
    small = frozenset({("sql_mode", "ANSI_QUOTES")})
    assert pooled.parse_flags(_session(small)) == ANSI_QUOTES  # type: ignore[arg-type]
    assert small in pooled._FLAGS_BY_SETTINGS
    # a session carrying 5 KB of user variables: right flags, nothing kept
    big = with_user_vars(small, {f"@v{i}": "'" + "x" * 1000 + "'" for i in range(5)})
    assert pooled.parse_flags(_session(big)) == ANSI_QUOTES  # type: ignore[arg-type]
    assert big not in pooled._FLAGS_BY_SETTINGS
    assert pooled.parse_flags(_session(frozenset())) == 0  # type: ignore[arg-type]
    pooled._FLAGS_BY_SETTINGS.clear()
