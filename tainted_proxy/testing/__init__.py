"""Helpers for tests and the demo: throwaway private MariaDB servers."""

from tainted_proxy.testing.mariadb import (
    MariaDBError,
    MariaDBNotFound,
    MariaDBServer,
    MariaDBStartError,
)

__all__ = ["MariaDBError", "MariaDBNotFound", "MariaDBServer", "MariaDBStartError"]
