"""The admin page in a real headless Chromium (Debian's ``chromium``, driven by Playwright;
never ``playwright install``), in front of a transaction-mode proxy with a live workload:
SQLAlchemy apps with their own time zones, a client that pins with GET_LOCK and one with a
temporary table. The page must log in with the token, fill its tables, draw both charts,
sort a table when a header is clicked, and show no script error. The screenshot is saved
in the test's tmp dir (and as docs/admin-page.png with TP_UPDATE_DOCS_SCREENSHOT=1).

Skipped when chromium is not installed, except in CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tainted_proxy import app as app_module

from .conftest import APP_PASSWORD, APP_USER, q

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "page-test-token-51"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "admin-page.png"
TABLE = "test.tp_admin_orders"


def wait_js(page: Any, predicate: str, timeout: float = 15.0, what: str = "") -> Any:
    """Poll a JS function with page.evaluate (which the page's CSP allows, unlike
    wait_for_function's string evaluation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        time.sleep(0.1)


def need_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    why = f"Debian's chromium is not installed ({CHROMIUM}): apt-get install -y chromium"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; .ci/run installs it, CI must run this test", pytrace=False)
    pytest.skip(why)


class Workload:
    """Client threads against the proxy until ``stop``; errors are kept for the test."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def run(self, name: str, fn: Callable[[], None]) -> None:
        def loop() -> None:
            try:
                while not self.stop.is_set():
                    fn()
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)

        t = threading.Thread(target=loop, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


@pytest.fixture
def busy_proxy(pooling_proxy, connect, monkeypatch) -> Iterator[tuple[Any, Workload]]:
    # the multiplexing history is sampled every 5 s in production: faster here, so the
    # line chart has points within the test's few seconds
    monkeypatch.setattr(app_module, "HISTORY_INTERVAL", 0.4)
    p = pooling_proxy(
        "transaction", max_connections=4, admin={"listen": "127.0.0.1:0", "token": TOKEN}
    )
    p.server.execute(f"DROP TABLE IF EXISTS {TABLE}")
    p.server.execute(
        f"CREATE TABLE {TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, app VARCHAR(20), n INT)"
    )
    import sqlalchemy as sa

    engines = []
    work = Workload()
    for app_name, tz in (("orders-api", "+01:00"), ("billing-worker", "+05:30")):
        engine = sa.create_engine(
            f"mysql+pymysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{p.port}/test",
            pool_size=2,
            max_overflow=0,
            connect_args={"program_name": app_name, "init_command": f"SET time_zone = '{tz}'"},
        )
        engines.append(engine)

        def orm(engine: Any = engine, app_name: str = app_name) -> None:
            with engine.begin() as conn:  # BEGIN ... COMMIT, as an ORM session does
                conn.execute(
                    sa.text(f"INSERT INTO {TABLE} (app, n) VALUES (:a, 1)"), {"a": app_name}
                )
                conn.execute(
                    sa.text(f"SELECT COUNT(*) FROM {TABLE} WHERE app = :a"), {"a": app_name}
                )
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT NOW()"))
                conn.rollback()
            time.sleep(0.05)

        for i in range(2):
            work.run(f"{app_name}-{i}", orm)

    locker = connect(p, program_name="report-job", autocommit=True)

    def lock_cycle() -> None:
        q(locker, "SELECT GET_LOCK('tp_admin_page', 2)")
        q(locker, f"SELECT COUNT(*) FROM {TABLE}")
        time.sleep(0.4)
        q(locker, "SELECT RELEASE_LOCK('tp_admin_page')")
        time.sleep(0.2)

    work.run("locker", lock_cycle)

    scratch = connect(p, program_name="etl-loader", autocommit=True)
    q(scratch, "CREATE TEMPORARY TABLE tp_admin_staging (id INT, v VARCHAR(10))")

    def staging() -> None:
        q(scratch, "INSERT INTO tp_admin_staging VALUES (1, 'x')")
        q(scratch, "SELECT COUNT(*) FROM tp_admin_staging")
        time.sleep(0.3)

    work.run("etl", staging)
    try:
        yield p, work
    finally:
        work.close()
        for c in (locker, scratch):
            c.close()
        for e in engines:
            e.dispose()


def test_admin_page_in_chromium(busy_proxy, tmp_path):
    need_chromium()
    from playwright.sync_api import sync_playwright

    p, work = busy_proxy
    url = p.proxy.admin_url
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type == "error" and "401" not in m.text
                    else None
                ),
            )
            # with a token, a browser first gets the token form (HTTP 401)
            resp = page.goto(url + "/?refresh=1&minutes=5")
            assert resp is not None and resp.status == 401
            page.fill("#t", TOKEN)
            with page.expect_navigation():
                page.click("button")
            page.wait_for_selector("body[data-loaded]", timeout=10_000)

            # the tables fill: 6 client sessions (4 ORM + the locker + the ETL), a ledger
            # with both pinning clients, sub-pools (settings keys of the apps' time zones)
            wait_js(
                page,
                """() => {
                  const rows = (id) => document.querySelectorAll(`#${id} tbody tr:not(:has(td.empty))`).length;
                  const text = document.getElementById("ledger").textContent;
                  return rows("sessions") >= 6 && rows("subpools") >= 2 && rows("pools") >= 1
                    && text.includes("report-job") && text.includes("etl-loader");
                }""",
                what="the tables have rows",
            )
            # both charts drew: the ratio line has points, the bars count pins
            wait_js(
                page,
                """() => Number(document.getElementById("ratio-chart").dataset.points) >= 4
                   && Number(document.getElementById("pins-chart").dataset.total) > 0""",
                what="both charts drew",
            )
            for chart in ("ratio-chart", "pins-chart"):
                painted = page.evaluate(
                    """(id) => {
                      const c = document.getElementById(id);
                      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                      let n = 0;
                      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                      return n;
                    }""",
                    chart,
                )
                assert painted > 500, f"{chart}: only {painted} painted pixels"
            legend = page.inner_text("#pins-legend")
            assert "advisory lock (GET_LOCK)" in legend and "temporary table" in legend

            sessions = page.inner_text("#sessions")
            assert "orders-api" in sessions and "billing-worker" in sessions
            assert "lock 'tp_admin_page'" in sessions or "tp_admin_staging" in sessions
            subpools = page.inner_text("#subpools")
            assert "time_zone=+01:00" in subpools or "time_zone=+05:30" in subpools
            assert "release them promptly" in page.inner_text("#ledger")  # a hint
            totals = page.inner_text("#totals")
            assert "multiplexing ratio" in totals and "client sessions" in totals

            # sort the sessions by program, then the other way round
            column = """() => {
              const ths = [...document.querySelectorAll("#sessions thead th")];
              const i = ths.findIndex((th) => th.dataset.key === "program");
              return [ths[i].getAttribute("aria-sort"),
                      [...document.querySelectorAll("#sessions tbody tr")].map((tr) => tr.cells[i].textContent)];
            }"""
            page.click("#sessions thead th[data-key=program]")
            state, programs = page.evaluate(column)
            assert state == "ascending"
            assert programs == sorted(programs) and len(set(programs)) >= 4
            page.click("#sessions thead th[data-key=program]")
            state, programs = page.evaluate(column)
            assert state == "descending" and programs == sorted(programs, reverse=True)
            # the order survives the next refresh
            loaded = page.evaluate("Number(document.body.dataset.loaded)")
            wait_js(page, f"() => Number(document.body.dataset.loaded) > {loaded}", 10, "a refresh")
            state, programs = page.evaluate(column)
            assert state == "descending" and programs == sorted(programs, reverse=True)

            # the ledger comes largest count first; a click turns it round
            counts = """() => [...document.querySelectorAll("#ledger tbody tr")].map(
                     (tr) => Number(tr.cells[5].textContent.replace(/,/g, "")))"""
            first = page.evaluate(counts)
            assert len(first) >= 2 and first == sorted(first, reverse=True)
            page.click("#ledger thead th[data-key=count]")
            assert page.evaluate(counts) == sorted(page.evaluate(counts))
            page.click("#ledger thead th[data-key=count]")

            shot = tmp_path / "admin-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            if os.environ.get("TP_UPDATE_DOCS_SCREENSHOT"):
                shutil.copyfile(shot, DOCS_SCREENSHOT)  # docs/admin.md shows it
        finally:
            browser.close()
    assert not problems, problems
    assert not work.errors, work.errors
