"""Run ``tainted-proxy serve`` as a real process, for tests of what only a process has:
signals, exit codes, its log on stderr, ``--workers``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymysql

BIN = [sys.executable, "-m", "tainted_proxy"]


class Serving:
    """``tainted-proxy serve --config CONFIG ARGS`` listening on ``port``; stdout and stderr
    are captured (``finish`` returns stderr). Clients log in as ``app``."""

    def __init__(self, config: Path, port: int, *args: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [*BIN, "serve", "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None
                raise AssertionError(f"proxy exited: {self.proc.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("proxy not listening")

    def connect(self, password: str = "app-secret", **kw: Any) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="app",
            password=password,
            database="test",
            autocommit=True,
            read_timeout=30,
            **kw,
        )

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        """Wait for the process to exit: (exit code, stderr)."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"proxy did not exit: {err}") from None
        return self.proc.returncode, err
