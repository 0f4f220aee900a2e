"""Throwaway private MariaDB servers for tests and the demo.

``MariaDBServer`` runs its own ``mariadbd`` in a temporary directory, on a free TCP port on
127.0.0.1 and on a private Unix socket; it never touches a system server.  Typical use::

    with MariaDBServer(max_connections=20) as srv:
        srv.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        conn = srv.connect()          # pymysql, root, no password, database `test`
        srv.restart()                 # same datadir, same port
        srv.kill(); srv.restart()     # simulated crash + crash recovery

After start the server has:

* database ``test``;
* ``root`` at ``localhost``, ``127.0.0.1``, ``::1`` and ``%`` with an empty password and the
  ``mysql_native_password`` plugin, all privileges;
* ``--skip-name-resolve``, ``--max-connect-errors`` very high (so aborted handshakes in tests
  never block 127.0.0.1), ``--local-infile=1``, 64M ``max_allowed_packet``, ``utf8mb4``.

It is tuned for speed, not durability against OS crashes (``innodb_flush_log_at_trx_commit=2``,
no doublewrite): a committed transaction survives ``kill()`` (the process dies, the OS keeps the
log), which is all the tests need.

Creating a datadir with ``mariadb-install-db`` and setting the accounts up is done once per
process and per ``mariadbd`` binary: the result is kept as a pristine template in a temporary
directory and copied for every new server.

The API is blocking (subprocess + polling); from Trio code call it through
``trio.to_thread.run_sync``.  Stdlib and pymysql only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

__all__ = ["MariaDBError", "MariaDBNotFound", "MariaDBServer", "MariaDBStartError"]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 60.0

_INSTALL_HINT = (
    "install it with `apt-get install -y mariadb-server` (Debian/Ubuntu), "
    "`dnf install mariadb-server` (Fedora/RHEL) or `brew install mariadb` (macOS), "
    "or point TAINTED_PROXY_MARIADBD at a mariadbd binary"
)

# Extra places where distributions put the server binary (often not on a normal user's PATH).
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/local/mysql/bin", "/sbin")


class MariaDBError(RuntimeError):
    """A private MariaDB server could not be set up, started or stopped."""


class MariaDBNotFound(MariaDBError):
    """No usable ``mariadbd`` / ``mariadb-install-db`` is installed."""


# --------------------------------------------------------------------------------------------
# Locating binaries
# --------------------------------------------------------------------------------------------


def _executable(path: str | os.PathLike[str] | None) -> str | None:
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return os.path.abspath(path)
    return None


def _which(names: Sequence[str], extra_dirs: Sequence[str] = ()) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *extra_dirs])
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return os.path.abspath(found)
    return None


def _find_mariadbd(mariadbd: str | None, basedir: str | None) -> str:
    if mariadbd:
        found = _executable(mariadbd) or _which([mariadbd])
        if not found:
            raise MariaDBNotFound(f"mariadbd binary {mariadbd!r} does not exist; {_INSTALL_HINT}")
        return found
    env = os.environ.get("TAINTED_PROXY_MARIADBD")
    if env:
        found = _executable(env)
        if not found:
            raise MariaDBNotFound(f"TAINTED_PROXY_MARIADBD={env!r} is not an executable file")
        return found
    if basedir:
        for sub in ("sbin", "bin", "libexec"):
            for name in ("mariadbd", "mysqld"):
                found = _executable(os.path.join(basedir, sub, name))
                if found:
                    return found
        raise MariaDBNotFound(f"no mariadbd under basedir {basedir!r}; {_INSTALL_HINT}")
    found = _which(["mariadbd", "mysqld"], _SBIN_DIRS)
    if not found:
        raise MariaDBNotFound(f"MariaDB server (mariadbd) is not installed; {_INSTALL_HINT}")
    return found


def _find_install_db(mariadbd: str, basedir: str | None) -> str:
    names = ("mariadb-install-db", "mysql_install_db")
    dirs: list[str] = []
    if basedir:
        dirs += [os.path.join(basedir, "bin"), os.path.join(basedir, "scripts")]
    # /usr/sbin/mariadbd -> /usr/bin/mariadb-install-db; /opt/x/bin/mariadbd -> /opt/x/bin/...
    bindir = os.path.dirname(mariadbd)
    dirs += [bindir, os.path.join(os.path.dirname(bindir), "bin")]
    for d in dirs:
        for name in names:
            found = _executable(os.path.join(d, name))
            if found:
                return found
    found = _which(names, _SBIN_DIRS)
    if not found:
        raise MariaDBNotFound(
            f"mariadb-install-db is not installed (next to {mariadbd}); {_INSTALL_HINT}"
        )
    return found


def _binary_version(mariadbd: str) -> str:
    try:
        out = subprocess.run(
            [mariadbd, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except OSError as e:
        raise MariaDBNotFound(f"cannot run {mariadbd}: {e}; {_INSTALL_HINT}") from e
    m = re.search(r"Ver\s+(\S+)", out)
    if not m:
        raise MariaDBNotFound(f"cannot tell the version of {mariadbd} (output: {out.strip()!r})")
    version = m.group(1)
    if "mariadb" not in version.lower():
        raise MariaDBNotFound(f"{mariadbd} is not MariaDB (version {version}); {_INSTALL_HINT}")
    return version


def _run_as_user() -> str:
    """Value for ``--user``: mariadbd refuses to run as root unless told ``--user=root``."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or f"({path.name} is empty)"


def _tmp_root() -> str:
    # Unix socket paths are limited to ~107 bytes: fall back to /tmp if TMPDIR is deep.
    root = tempfile.gettempdir()
    return root if len(root) < 60 else "/tmp"


# --------------------------------------------------------------------------------------------
# Process handling shared by the template builder and the servers
# --------------------------------------------------------------------------------------------


def _server_args(
    mariadbd: str,
    basedir: str | None,
    datadir: Path,
    socket_path: Path,
    pid_file: Path,
    port: int | None,
    max_connections: int,
    extra_args: Sequence[str],
) -> list[str]:
    args = [mariadbd, "--no-defaults"]
    if basedir:
        args.append(f"--basedir={basedir}")
    # A private tmpdir: at start-up mariadbd deletes every "#sql*" file in its tmpdir,
    # which in a shared /tmp are other servers' live internal temporary tables
    # (information_schema queries on them then fail with ERR 6, or crash the server).
    tmpdir = datadir.parent / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    args += [
        f"--datadir={datadir}",
        f"--tmpdir={tmpdir}",
        f"--socket={socket_path}",
        f"--pid-file={pid_file}",
        f"--log-error={datadir / 'error.log'}",
        f"--user={_run_as_user()}",
        "--skip-log-bin",
        "--skip-name-resolve",
        "--max-connect-errors=1000000000",
        f"--max-connections={max_connections}",
        "--local-infile=1",
        "--max-allowed-packet=64M",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_general_ci",
        "--innodb-buffer-pool-size=32M",
        "--innodb-log-file-size=8M",
        "--innodb-flush-log-at-trx-commit=2",
        "--innodb-doublewrite=0",
        "--innodb-use-native-aio=0",
        "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
        "--performance-schema=0",
    ]
    if port is None:
        args.append("--skip-networking")
    else:
        args += [f"--port={port}", f"--bind-address={HOST}"]
    args += list(extra_args)  # last occurrence wins: callers can override any of the above
    return args


def _spawn(args: list[str], stderr_path: Path) -> subprocess.Popen[bytes]:
    with open(stderr_path, "ab") as err:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,  # a Ctrl-C in the terminal is for us, not for mariadbd
        )


def _terminate(proc: subprocess.Popen[bytes] | None, *, graceful: bool) -> None:
    if proc is None or proc.poll() is not None:
        return
    if graceful:
        proc.send_signal(signal.SIGTERM)  # mariadbd shuts down cleanly on SIGTERM
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


# --------------------------------------------------------------------------------------------
# Pristine datadir template (once per process and binary)
# --------------------------------------------------------------------------------------------

_SETUP_HOSTS = ("localhost", "127.0.0.1", "::1", "%")


@dataclass
class _Template:
    datadir: Path
    version: str


_templates: dict[tuple[str, str | None], _Template] = {}
_template_dirs: list[str] = []
_templates_lock = threading.Lock()


def _remove_templates() -> None:
    for d in _template_dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_remove_templates)


def _template(mariadbd: str, basedir: str | None) -> _Template:
    key = (mariadbd, basedir)
    with _templates_lock:
        tpl = _templates.get(key)
        if tpl is None:
            tpl = _build_template(mariadbd, basedir)
            _templates[key] = tpl
        return tpl


def _build_template(mariadbd: str, basedir: str | None) -> _Template:
    _binary_version(mariadbd)  # fail early and clearly if this is not a MariaDB server
    install_db = _find_install_db(mariadbd, basedir)
    root = tempfile.mkdtemp(prefix="tpmdb-tpl-", dir=_tmp_root())
    _template_dirs.append(root)
    rootp = Path(root)
    datadir = rootp / "data"
    cmd = [install_db, "--no-defaults"]
    if basedir:
        cmd.append(f"--basedir={basedir}")
    cmd += [
        f"--datadir={datadir}",
        f"--user={_run_as_user()}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
        # passed through to the bootstrap mariadbd: keep the files small and identical to
        # what the servers run with
        "--innodb-log-file-size=8M",
        "--innodb-buffer-pool-size=32M",
        "--skip-log-bin",
    ]
    try:
        res = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MariaDBError(f"{install_db} failed: {e}") from e
    if res.returncode != 0:
        out = "\n".join((res.stdout + res.stderr).strip().splitlines()[-30:])
        raise MariaDBError(f"{' '.join(cmd)} failed with exit code {res.returncode}:\n{out}")

    # Boot it once (no TCP) to create the test database and the root accounts, then shut it
    # down cleanly so the files can be copied.
    sock = rootp / "mysqld.sock"
    pid_file = rootp / "mysqld.pid"
    args = _server_args(mariadbd, basedir, datadir, sock, pid_file, None, 151, ())
    proc = _spawn(args, rootp / "mariadbd.stderr")
    try:
        conn = _wait_ready(
            proc, datadir, rootp, lambda: {"unix_socket": str(sock)}, STARTUP_TIMEOUT
        )
        try:
            version = _setup_accounts(conn)
        finally:
            conn.close()
    finally:
        _terminate(proc, graceful=True)
    if proc.returncode != 0:
        raise MariaDBError(
            f"template server did not shut down cleanly (exit {proc.returncode}):\n"
            f"{_tail(datadir / 'error.log')}"
        )
    for leftover in ("error.log",):
        with contextlib.suppress(FileNotFoundError):
            (datadir / leftover).unlink()
    return _Template(datadir=datadir, version=version)


def _setup_accounts(conn: pymysql.Connection) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
        cur.execute("CREATE DATABASE IF NOT EXISTS test")
        # Host-specific accounts made by mariadb-install-db (root@<hostname>, anonymous users)
        # would make the template depend on the machine: drop them.
        cur.execute(
            "SELECT user, host FROM mysql.user WHERE (user = 'root' AND host NOT IN %s) OR user = ''",
            (_SETUP_HOSTS,),
        )
        for user, host in cur.fetchall():
            cur.execute("DROP USER %s@%s", (user, host))
        for host in _SETUP_HOSTS:
            cur.execute("CREATE USER IF NOT EXISTS 'root'@%s", (host,))
            cur.execute(
                "ALTER USER 'root'@%s IDENTIFIED VIA mysql_native_password USING PASSWORD('')",
                (host,),
            )
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@%s WITH GRANT OPTION", (host,))
            cur.execute("GRANT PROXY ON ''@'%%' TO 'root'@%s WITH GRANT OPTION", (host,))
    return version


def _wait_ready(
    proc: subprocess.Popen[bytes],
    datadir: Path,
    rundir: Path,
    conn_args: Any,
    timeout: float,
) -> pymysql.Connection:
    """Poll until the server accepts a root connection; return it.  ``conn_args()`` -> kwargs."""
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    expected = os.path.realpath(datadir)
    while True:
        if proc.poll() is not None:
            raise MariaDBStartError(
                f"mariadbd exited with code {proc.returncode} during startup",
                _tail(datadir / "error.log"),
                _tail(rundir / "mariadbd.stderr", 10),
            )
        try:
            conn = pymysql.connect(
                user="root", password="", connect_timeout=2, autocommit=True, **conn_args()
            )
        except (
            pymysql.err.MySQLError,
            OSError,
        ) as e:  # refused, handshake from a non-MySQL port...
            last_err = e
        else:
            # Make sure we reached *our* server (not something that grabbed the port first).
            with conn.cursor() as cur:
                cur.execute("SELECT @@datadir")
                got = cur.fetchone()[0]
            if os.path.realpath(got) == expected:
                return conn
            conn.close()
            last_err = MariaDBError(f"port is served by another server (datadir {got})")
        if time.monotonic() > deadline:
            _terminate(proc, graceful=False)
            raise MariaDBStartError(
                f"mariadbd did not accept connections within {timeout:.0f}s (last error: {last_err})",
                _tail(datadir / "error.log"),
                _tail(rundir / "mariadbd.stderr", 10),
            )
        time.sleep(0.03)


class MariaDBStartError(MariaDBError):
    """mariadbd exited or did not become ready; the message has the tail of error.log."""

    def __init__(self, what: str, error_log: str, stderr: str) -> None:
        self.error_log = error_log
        super().__init__(f"{what}\n--- error.log (tail) ---\n{error_log}\n--- stderr ---\n{stderr}")

    @property
    def port_in_use(self) -> bool:
        return bool(
            re.search(r"Address already in use|another .*server running on port", self.error_log)
        )


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass
class _State:
    """Everything the finalizer needs (it must not reference the server object)."""

    rundir: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cleanup(self) -> None:
        _terminate(self.proc, graceful=False)
        self.proc = None
        if self.rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None


class MariaDBServer:
    """A private, throwaway ``mariadbd``; see the module docstring.

    ``start()`` creates the datadir (a copy of a cached pristine template) and picks a free port
    on first use; ``stop()`` shuts down cleanly, ``kill()`` sends SIGKILL (a crash),
    ``restart()`` stops if needed and starts again on the same datadir and port.  ``close()``
    (also ``__exit__`` and garbage collection / interpreter exit) kills the server and deletes
    its files.
    """

    def __init__(
        self,
        *,
        max_connections: int = 151,
        extra_args: Sequence[str] = (),
        mariadbd: str | None = None,
        basedir: str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of arguments, not a string")
        if max_connections < 10:
            # mariadbd silently clamps smaller values to 10
            raise ValueError(f"max_connections={max_connections}: MariaDB's minimum is 10")
        self.max_connections = max_connections
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self.basedir = basedir
        self.startup_timeout = startup_timeout
        self._mariadbd_arg = mariadbd
        self._mariadbd: str | None = None
        self._port: int | None = None
        self._version: str | None = None
        self._state = _State()
        self._finalizer = weakref.finalize(self, self._state.cleanup)

    # -- properties ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise MariaDBError("server not started yet: no port")
        return self._port

    @property
    def rundir(self) -> Path:
        """The temporary directory holding the datadir, socket, pid file."""
        if self._state.rundir is None:
            raise MariaDBError("server not started yet (or closed): no directory")
        return Path(self._state.rundir)

    @property
    def datadir(self) -> Path:
        return self.rundir / "data"

    @property
    def socket_path(self) -> Path:
        return self.rundir / "mysqld.sock"

    @property
    def error_log(self) -> Path:
        return self.datadir / "error.log"

    @property
    def pid(self) -> int | None:
        """The mariadbd process id, or None when it is not running."""
        proc = self._state.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def version(self) -> str:
        """The server version string, e.g. ``10.11.19-MariaDB-0+deb12u1``."""
        if self._version is None:
            self._version = _binary_version(self._binary())
        return self._version

    # -- lifecycle ----------------------------------------------------------------------------

    def _binary(self) -> str:
        if self._mariadbd is None:
            self._mariadbd = _find_mariadbd(self._mariadbd_arg, self.basedir)
        return self._mariadbd

    def _prepare(self) -> None:
        mariadbd = self._binary()
        tpl = _template(mariadbd, self.basedir)
        self._version = tpl.version
        rundir = tempfile.mkdtemp(prefix="tpmdb-", dir=_tmp_root())
        self._state.rundir = rundir
        shutil.copytree(tpl.datadir, Path(rundir) / "data", symlinks=True)

    def start(self) -> MariaDBServer:
        """Start the server (creating its datadir on first use) and wait until it is ready."""
        if self.running:
            raise MariaDBError(f"server already running (pid {self.pid})")
        if self._state.rundir is None:
            self._prepare()
        fixed_port = self._port is not None
        attempts = 1 if fixed_port else 5
        for attempt in range(attempts):
            if not fixed_port:
                self._port = _free_port()
            try:
                self._launch()
                return self
            except MariaDBStartError as e:
                if e.port_in_use and attempt + 1 < attempts:
                    continue
                raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        for stale in (self.socket_path, self.rundir / "mysqld.pid"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        args = _server_args(
            self._binary(),
            self.basedir,
            self.datadir,
            self.socket_path,
            self.rundir / "mysqld.pid",
            self.port,
            self.max_connections,
            self.extra_args,
        )
        proc = _spawn(args, self.rundir / "mariadbd.stderr")
        self._state.proc = proc
        try:
            conn = _wait_ready(
                proc,
                self.datadir,
                self.rundir,
                lambda: {"host": HOST, "port": self.port},
                self.startup_timeout,
            )
        except BaseException:
            _terminate(proc, graceful=False)
            self._state.proc = None
            raise
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                self._version = cur.fetchone()[0]
        finally:
            conn.close()

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM, wait).  The datadir and port are kept."""
        _terminate(self._state.proc, graceful=True)
        self._state.proc = None

    def kill(self) -> None:
        """SIGKILL the server, as in a crash.  ``restart()`` runs crash recovery."""
        _terminate(self._state.proc, graceful=False)
        self._state.proc = None

    def restart(self) -> MariaDBServer:
        """Stop (cleanly) if running, then start again with the same datadir and port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Kill the server and delete all its files.  Idempotent."""
        self._state.cleanup()

    def __enter__(self) -> MariaDBServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<MariaDBServer {HOST}:{self._port} {state}>"

    # -- helpers ------------------------------------------------------------------------------

    def connection_kwargs(self, **kw: Any) -> dict[str, Any]:
        """pymysql-style connection arguments (root, no password, database ``test``)."""
        args: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "user": "root",
            "password": "",
            "database": "test",
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": 10,
        }
        args.update(kw)
        return args

    def connect(self, **kw: Any) -> pymysql.Connection:
        """A new pymysql connection over TCP: root, empty password, database ``test``,
        autocommit on.  Any pymysql argument can be overridden."""
        return pymysql.connect(**self.connection_kwargs(**kw))

    def execute(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as root on a fresh connection; return its rows ([] if none)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = cur.fetchall()
                return [tuple(r) for r in rows] if rows else []
        finally:
            conn.close()

    def create_user(
        self,
        name: str,
        password: str,
        plugin: str = "mysql_native_password",
        grants: str | None = "ALL PRIVILEGES ON *.*",
        host: str = "%",
    ) -> None:
        """(Re)create ``name@host`` authenticating with ``plugin`` and grant it ``grants``.

        ``plugin`` is any plugin accepting ``USING PASSWORD(...)`` (``mysql_native_password``,
        ``ed25519`` -- installed on demand); ``grants=None`` grants nothing.
        """
        if not re.fullmatch(r"\w+", plugin):
            raise ValueError(f"bad plugin name {plugin!r}")
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                if plugin == "ed25519":
                    cur.execute(
                        "SELECT COUNT(*) FROM information_schema.plugins "
                        "WHERE plugin_name = 'ed25519' AND plugin_status = 'ACTIVE'"
                    )
                    if not cur.fetchone()[0]:
                        cur.execute("INSTALL SONAME 'auth_ed25519'")
                cur.execute(
                    f"CREATE OR REPLACE USER %s@%s IDENTIFIED VIA {plugin} USING PASSWORD(%s)",
                    (name, host, password),
                )
                if grants:
                    cur.execute(f"GRANT {grants.replace('%', '%%')} TO %s@%s", (name, host))
        finally:
            conn.close()
