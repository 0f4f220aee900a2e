"""tainted-proxy: a session-aware MySQL/MariaDB connection-pooling proxy."""

__version__ = "0.1.0"
