"""admin.views: the per-minute series in the report (pins and events by
reason, empty minutes included), read with a controlled clock."""

from __future__ import annotations

from tainted_proxy import accounting
from tainted_proxy.accounting import Accounting
from tainted_proxy.admin import views
from tainted_proxy.app import Proxy
from tainted_proxy.config import parse_config

LOCK = "advisory lock (GET_LOCK)"
TEMP = "temporary table"


def test_minute_series():
    now = [1_800_000_000.0]  # a minute boundary: 30_000_000 * 60
    p = Proxy(parse_config('[users.app]\npassword = "x"\n'))
    p.accounting = acc = Accounting(clock=lambda: now[0])
    acc.pin_started("app", "web", "transaction", "SELECT GET_LOCK(?, ?)", [LOCK, TEMP])
    now[0] += 125  # two minutes later
    acc.pin_started("app", "web", "transaction", "SELECT GET_LOCK(?, ?)", [LOCK])
    acc.event("app", "web", "statement", "BEGIN", accounting.REFUSED)
    series = views.local(p).report(4)["series"]
    assert [m["minute"] for m in series] == [
        1_800_000_000 - 60,
        1_800_000_000,
        1_800_000_060,
        1_800_000_120,
    ]
    assert [m["total"] for m in series] == [0, 2, 0, 2]
    assert series[1]["by_reason"] == {LOCK: 1, TEMP: 1}
    assert series[3]["by_reason"] == {LOCK: 1, accounting.REFUSED: 1}
    assert len(views.local(p).report(60)["series"]) == 60
