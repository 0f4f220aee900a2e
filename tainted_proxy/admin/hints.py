"""The sentence the live report, page and SQL console show per ledger entry: who, how
often, by which statement, and what to change (state.advice, shared with ``classify
--summary`` and ``analyze``)."""

from __future__ import annotations

from tainted_proxy.state.advice import advice


def hint(reason: str, *, user: str = "", count: int = 0, fingerprint: str = "") -> str:
    """The advice for one ledger entry: ``412 pins of user app by `SELECT GET_LOCK(?, ?)`:
    advisory locks pin until RELEASE_LOCK; release them promptly``."""
    what_to_do = advice(reason)
    who = f" of user {user}" if user else ""
    what = f" by `{fingerprint}`" if fingerprint else ""
    if count:
        return f"{count} × {reason}{who}{what}: {what_to_do}"
    return what_to_do
