"""Shared fixtures: private MariaDB servers (never the system server on :3306).

* ``mariadb`` (session): one shared server for most tests.  Do not stop, kill or reconfigure
  it; use ``mariadb_factory`` for that.  Create your own users/tables with unique names.
* ``mariadb_factory`` (function): ``make(max_connections=151, extra_args=(), **kw)`` starts a
  private server for this test only; every server it made is destroyed at teardown.

Tests under tests/integration are automatically marked ``integration``
(``pytest -m 'not integration'`` runs only the fast unit tests).

If MariaDB is not installed the fixtures skip the test locally, but fail it when ``CI`` is set
so that a broken CI machine cannot pass by skipping everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tainted_proxy.testing.mariadb import MariaDBNotFound, MariaDBServer

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def _start(srv: MariaDBServer) -> MariaDBServer:
    try:
        return srv.start()
    except MariaDBNotFound as e:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is required in CI: {e}", pytrace=False)
        pytest.skip(f"MariaDB not available: {e}")


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """One private MariaDB server shared by the whole session."""
    srv = MariaDBServer(max_connections=200)
    try:
        yield _start(srv)
    finally:
        srv.close()


MariaDBFactory = Callable[..., MariaDBServer]


@pytest.fixture
def mariadb_factory() -> Iterator[MariaDBFactory]:
    """``make(max_connections=151, extra_args=(), **kw) -> MariaDBServer`` (started)."""
    servers: list[MariaDBServer] = []

    def make(
        max_connections: int = 151, extra_args: Sequence[str] = (), **kw: Any
    ) -> MariaDBServer:
        srv = MariaDBServer(max_connections=max_connections, extra_args=extra_args, **kw)
        servers.append(srv)
        return _start(srv)

    try:
        yield make
    finally:
        for srv in servers:
            srv.close()
