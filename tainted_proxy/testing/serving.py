"""Run ``tainted-proxy serve`` as a real process, for tests of what only a process has:
signals, exit codes, its log on stderr, ``--workers``."""

from __future__ import annotations

import os
import signal
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
    are captured (``finish`` returns stderr). Clients log in as ``app``. A test that fails
    before ``finish`` leaves it running: ``stop_all`` (an autouse fixture of the tests
    that use it) ends every one still running, workers included."""

    running: list[Serving] = []

    def __init__(self, config: Path, port: int, *args: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [*BIN, "serve", "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        Serving.running.append(self)

    def stop(self, timeout: float = 10.0) -> None:
        """End the process and its workers if they still run (SIGCONT first: a test may
        have stopped one), SIGTERM, then SIGKILL after ``timeout``."""
        pids = [self.proc.pid, *_children(self.proc.pid)]
        for pid in pids:
            _signal(pid, signal.SIGCONT)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        for pid in pids[1:]:
            _signal(pid, signal.SIGKILL)

    @classmethod
    def stop_all(cls) -> None:
        while cls.running:
            cls.running.pop().stop()

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


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
