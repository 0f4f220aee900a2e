"""Configuration: a TOML file validated with pydantic.

``load_config(path)`` / ``parse_config(text, source)`` return a frozen :class:`Config` or raise
:class:`ConfigError`, whose message says what is wrong and where, one problem per line::

    config error in proxy.toml: users.app.pool_mode: Input should be 'session', 'transaction' or 'statement'

Every key is documented in docs/configuration.md.  Values are strictly typed (``port = "3306"``
is an error, not a string to coerce), unknown keys are errors (with a "did you mean" hint), and
relative TLS file paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tainted_proxy.wire.auth import (
    caching_sha2_stage2,
    native_password_hash,
    native_password_stage2,
)

__all__ = [
    "AdminConfig",
    "ClientAuthPlugin",
    "Config",
    "ConfigError",
    "PoolMode",
    "PoolSection",
    "ProxySection",
    "UpstreamSection",
    "UpstreamTLS",
    "UserConfig",
    "load_config",
    "native_password_hash",
    "native_password_stage2",
    "parse_config",
    "parse_listen",
]

PoolMode = Literal["session", "transaction", "statement"]
UpstreamTLS = Literal["disabled", "preferred", "required", "verify_ca", "verify_identity"]
ClientAuthPlugin = Literal["mysql_native_password", "caching_sha2_password"]

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
SecondsOrZero = Annotated[float, Field(ge=0, allow_inf_nan=False)]

MAX_USER_NAME = 80  # MariaDB's limit on user names (characters)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The configuration is invalid.  ``problems`` is a list of ``(where, what)``; ``where`` is
    a dotted key path such as ``users.app.pool_mode`` ("" for the file as a whole)."""

    def __init__(self, source: str, problems: Iterable[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems) or [("", "invalid configuration")]
        super().__init__(
            "\n".join(
                f"config error in {source}: {where}: {what}"
                if where
                else f"config error in {source}: {what}"
                for where, what in self.problems
            )
        )


def _problem(field: str, message: str) -> PydanticCustomError:
    """An error raised from a model validator, reported at ``<model path>.<field>``."""
    return PydanticCustomError("config_field", "{message}", {"field": field, "message": message})


def _problems(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """Several cross-field errors at once (paths are absolute)."""
    summary = "; ".join(f"{w}: {m}" for w, m in problems)
    return PydanticCustomError(
        "config_problems", "{summary}", {"summary": summary, "problems": problems}
    )


# Native password math lives in wire/auth.py; re-exported here for config users.
_NATIVE_HASH_RE = re.compile(r"\*[0-9A-Fa-f]{40}")


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------

_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?"
)


def _check_host(host: str) -> str:
    """A host name, IPv4 address or IPv6 address (without brackets); returns it normalized."""
    if not host:
        raise ValueError("host must not be empty")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if ":" in host:
        raise ValueError(f"{host!r} is not a valid IPv6 address")
    if re.fullmatch(r"[0-9.]+", host) or not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"{host!r} is not a valid host name or IP address")
    return host


def parse_listen(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[ipv6]:port"`` -> ``(host, port)``.  Port 0 = any free port."""
    example = "expected host:port, e.g. 127.0.0.1:6033 or [::1]:6033"
    m = re.fullmatch(r"\[([^\]]*)\]:(\d+)", text) or re.fullmatch(r"([^:\[\]]*):(\d+)", text)
    if not m:
        if text.count(":") > 1 and not text.startswith("["):
            raise ValueError(f"{text!r}: put IPv6 addresses in brackets, e.g. [::1]:6033")
        raise ValueError(f"{text!r}: {example}")
    host, port_text = m.group(1), m.group(2)
    if not host:
        raise ValueError(f"{text!r}: missing host; use 0.0.0.0:{port_text} to listen everywhere")
    if text.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not a valid IPv6 address") from None
    else:
        host = _check_host(host)
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{text!r}: port must be between 0 and 65535")
    return host, port


def _check_file(value: str, info: ValidationInfo) -> str:
    """ "" stays ""; otherwise the file must exist; relative paths are resolved against the
    config file's directory (``base_dir`` in the validation context), else the cwd."""
    if not value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir")
        path = Path(base or os.getcwd()) / path
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file not readable: {path}")
    return str(path.resolve())


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class ProxySection(BaseModel):
    """``[proxy]``: the client-facing side."""

    model_config = _STRICT

    listen: str = "127.0.0.1:6033"
    server_version: str = ""
    max_client_connections: int = Field(10000, ge=1)
    client_idle_timeout: SecondsOrZero = 0.0
    max_packet_size: int = Field(64 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    tls_cert: str = ""
    tls_key: str = ""
    tls_required: bool = False
    auth_timeout: Seconds = 10.0
    #: the plugin the greeting names; either way the proxy verifies both plugins (a
    #: client answering with the other one is checked, or switched, as in frontend.handshake)
    default_auth_plugin: ClientAuthPlugin = "mysql_native_password"
    #: graceful shutdown (SIGTERM, SIGINT): how long open transactions and pinned sessions
    #: may go on before everything is closed
    shutdown_timeout: SecondsOrZero = 30.0
    #: failed logins from one client address within login_failure_window before its
    #: next logins are refused (ERR 1129) until the window passes; 0 = never
    max_login_failures: int = Field(10, ge=0)
    login_failure_window: Seconds = 60.0
    #: worker processes accepting on ``listen`` (SO_REUSEPORT), sharing one upstream
    #: budget (tainted_proxy.workers); 1 = the single process, nothing shared
    workers: int = Field(1, ge=1, le=64)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("server_version")
    @classmethod
    def _server_version(cls, v: str) -> str:
        if v and not re.fullmatch(r"\d+\.\d+\.\d+[\x21-\x7e]*", v):
            raise ValueError(
                f"{v!r} should be empty or a version like 10.11.6-MariaDB "
                "(printable, no spaces, starting with major.minor.patch)"
            )
        return v

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _tls_files(cls, v: str, info: ValidationInfo) -> str:
        return _check_file(v, info)

    @model_validator(mode="after")
    def _tls_pair(self) -> ProxySection:
        if self.tls_cert and not self.tls_key:
            raise _problem("tls_key", "must be set when tls_cert is set")
        if self.tls_key and not self.tls_cert:
            raise _problem("tls_cert", "must be set when tls_key is set")
        if self.tls_required and not self.tls_cert:
            raise _problem("tls_required", "needs tls_cert and tls_key")
        return self

    @property
    def listen_host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


class UpstreamSection(BaseModel):
    """``[upstream]``: the MySQL/MariaDB server behind the proxy."""

    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(3306, ge=1, le=65535)
    unix_socket: str = ""
    max_connections: int = Field(20, ge=1)
    connect_timeout: Seconds = 5.0
    #: at start, exit 1 if the upstream cannot be reached (else start anyway, log it and
    #: retry with backoff; clients get ERR 1105 until it is up)
    fail_fast: bool = False
    tls: UpstreamTLS = "disabled"
    tls_ca: str = ""
    user: str = ""
    password: str = Field("", repr=False)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v.startswith("[") and v.endswith("]"):
            v = v[1:-1]
        return _check_host(v)

    @field_validator("tls_ca")
    @classmethod
    def _tls_ca(cls, v: str, info: ValidationInfo) -> str:
        return _check_file(v, info)

    @model_validator(mode="after")
    def _checks(self) -> UpstreamSection:
        if self.password and not self.user:
            raise _problem("password", "is set but upstream.user is empty")
        if self.tls_ca and self.tls == "disabled":
            raise _problem(
                "tls_ca", 'is set but tls = "disabled"; set tls = "verify_ca" or similar'
            )
        return self


class PoolSection(BaseModel):
    """``[pool]``: upstream connection pooling."""

    model_config = _STRICT

    default_mode: PoolMode = "session"
    checkout_timeout: Seconds = 5.0
    idle_timeout: SecondsOrZero = 300.0
    min_idle: int = Field(0, ge=0)
    max_lifetime: SecondsOrZero = 3600.0
    #: idle upstream connections unchecked this long get a COM_PING from the pool's
    #: janitor, so one the server killed is closed before a client is handed it; 0 = off
    health_check_idle: SecondsOrZero = 30.0
    reset_on_release: bool = True
    # transaction/statement pooling: binary prepared statements kept per upstream
    # connection (least recently used ones are closed beyond this)
    prepared_statement_cache: int = Field(256, ge=1)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name ``localhost``."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminConfig(BaseModel):
    """``[admin]``: the admin surface (docs/admin.md)."""

    model_config = _STRICT

    #: the HTTP endpoint (JSON views, /metrics, the page): host:port, "" = off
    listen: str = "127.0.0.1:6034"
    #: bearer token every HTTP request must carry (required unless listen is loopback)
    token: str = Field("", repr=False)
    # proxy user names (``[users.<name>]``) allowed in the SQL console (database
    # ``tainted_proxy`` on the proxy's own port)
    users: list[str] = []
    #: taint-ledger entries kept per user (statement fingerprint x reason x program x
    #: mode); past it, new ones are counted in the user's "(other statements)" entry
    ledger_entries_per_user: int = Field(200, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v:
            parse_listen(v)
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        if v and not re.fullmatch(r"[\x21-\x7e]+", v):
            raise ValueError("must be printable ASCII without spaces (it is sent in a header)")
        return v

    @model_validator(mode="after")
    def _token_off_loopback(self) -> AdminConfig:
        if self.listen and not self.token and not is_loopback_host(self.listen_host):
            raise _problem(
                "token",
                f"is required when listen ({self.listen}) is not a loopback address: "
                "anyone who can reach it could read the sessions and statements",
            )
        return self

    @property
    def listen_host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen(self.listen)[1]


class UserConfig(BaseModel):
    """``[users.<name>]``: a user allowed to log in to the proxy.

    After loading, ``pool_mode`` is always set (the pool default when the file omits it) and
    ``name`` is the table key.
    """

    model_config = _STRICT

    # Filled from the table key by Config; not a TOML key (see Config._inject_names).
    name: str = Field("", exclude=True)
    password: str = Field(repr=False)
    pool_mode: PoolMode | None = None
    upstream_user: str = ""
    #: None: not written (then upstream.password or the user's own); "" is an empty password
    upstream_password: str | None = Field(None, repr=False)
    max_connections: int = Field(0, ge=0)
    # transaction/statement pooling: upstream connections this user's sessions may hold
    # pinned at once (0: no cap); at the cap a pinning statement waits, then fails
    max_pinned: int = Field(0, ge=0)

    @field_validator("password")
    @classmethod
    def _password(cls, v: str) -> str:
        if v.startswith("*") and len(v) == 41 and not _NATIVE_HASH_RE.fullmatch(v):
            raise ValueError(
                "looks like a native password hash ('*' + 40 hex digits) but is not valid hex"
            )
        return v

    @property
    def password_is_hash(self) -> bool:
        """True when ``password`` is a ``*HEX`` native hash rather than plain text."""
        return bool(_NATIVE_HASH_RE.fullmatch(self.password))

    @property
    def password_plain(self) -> str | None:
        """The plain-text password, or None when only a hash is configured."""
        return None if self.password_is_hash else self.password

    # Verifiers are cached (the model is frozen; a reload makes new UserConfig objects) so a
    # login hashes the client's response, not the configured password, each time.
    @cached_property
    def password_stage2(self) -> bytes:
        """SHA1(SHA1(password)), the mysql_native_password verifier (20 bytes).

        ``b""`` for an empty password: the client must then send an empty auth response.
        """
        if self.password_is_hash:
            return bytes.fromhex(self.password[1:])
        return native_password_stage2(self.password)

    @cached_property
    def caching_sha2_stage2(self) -> bytes | None:
        """SHA256(SHA256(password)), the caching_sha2_password verifier (32 bytes; ``b""``
        for an empty password), or None when only a native hash is configured: a SHA1-based
        hash cannot check a SHA-256 scramble, so such users are switched to native."""
        plain = self.password_plain
        return None if plain is None else caching_sha2_stage2(plain)

    def _upstream(self, upstream: UpstreamSection) -> tuple[str, str | None]:
        user = self.upstream_user or upstream.user or self.name
        if self.upstream_password is not None:
            # (an explicit empty upstream_password is an empty password, not "unset")
            return user, self.upstream_password
        if upstream.user and user == upstream.user:
            return user, upstream.password
        return user, self.password_plain

    def upstream_credentials(self, cfg: Config) -> tuple[str, str]:
        """``(user, password)`` the proxy logs in upstream with for this user.

        user: ``upstream_user``, else ``upstream.user``, else this user's name.
        password: ``upstream_password`` (even ``""``, when it is written), else
        ``upstream.password`` if the upstream user is ``upstream.user``, else this user's
        own (plain-text) password.
        """
        user, password = self._upstream(cfg.upstream)
        if password is None:  # prevented by Config validation
            raise ConfigError("<config>", [(f"users.{self.name}.password", _NO_PLAIN)])
        return user, password


_NO_PLAIN = (
    "is given only as a hash, so the proxy cannot log in upstream without a plain password: "
    "set upstream_password for this user, or [upstream] user and password"
)


# A user table's "name" key is moved here so that it is reported as an unknown key.
_NAME_KEY = "\x00name"


def _key(name: str) -> str:
    """A TOML key as written in a dotted path (quoted when needed)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('"', '\\"') + '"'


class LogSection(BaseModel):
    """``[log]``: what the proxy logs and how (``--log-level`` / ``--log-format`` win)."""

    model_config = _STRICT

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: "text": key=value event lines; "json": one JSON object per line
    format: Literal["text", "json"] = "text"


class Config(BaseModel):
    """The whole configuration file."""

    model_config = _STRICT

    proxy: ProxySection = ProxySection()
    upstream: UpstreamSection = UpstreamSection()
    pool: PoolSection = PoolSection()
    log: LogSection = LogSection()
    admin: AdminConfig = AdminConfig()
    users: dict[str, UserConfig] = {}

    @model_validator(mode="before")
    @classmethod
    def _inject_names(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
            return data
        users = {}
        for name, raw in data["users"].items():
            if isinstance(raw, dict):
                raw = dict(raw)
                if "name" in raw:  # not a TOML key: let extra="forbid" report it (_translate)
                    raw[_NAME_KEY] = raw.pop("name")
                raw["name"] = name
            users[name] = raw
        return {**data, "users": users}

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems: list[tuple[str, str]] = []
        if not self.users:
            problems.append(
                (
                    "users",
                    'no [users.*] defined: add at least one, e.g. [users.app] password = "..."',
                )
            )
        if self.pool.min_idle > self.upstream.max_connections:
            problems.append(
                (
                    "pool.min_idle",
                    f"{self.pool.min_idle} exceeds upstream.max_connections ({self.upstream.max_connections})",
                )
            )
        for name, user in self.users.items():
            where = f"users.{_key(name)}"
            if not name.strip():
                problems.append((where, "user name must not be empty"))
            elif len(name) > MAX_USER_NAME:
                problems.append((where, f"user name longer than {MAX_USER_NAME} characters"))
            if user._upstream(self.upstream)[1] is None:
                problems.append((f"{where}.password", _NO_PLAIN))
        if problems:
            raise _problems(problems)
        # Resolve defaults.
        resolved = {
            name: u if u.pool_mode else u.model_copy(update={"pool_mode": self.pool.default_mode})
            for name, u in self.users.items()
        }
        object.__setattr__(self, "users", resolved)
        return self

    def user(self, name: str) -> UserConfig | None:
        return self.users.get(name)

    def with_overrides(
        self,
        *,
        listen: str | None = None,
        upstream_host: str | None = None,
        upstream_port: int | None = None,
        max_connections: int | None = None,
        workers: int | None = None,
    ) -> Config:
        """A copy with command-line overrides applied and validated (``None`` = keep).

        Overriding the upstream host or port also clears ``upstream.unix_socket``.
        ``max_connections`` is ``upstream.max_connections``.
        """
        data = self.model_dump()
        if listen is not None:
            data["proxy"]["listen"] = listen
        if upstream_host is not None:
            data["upstream"]["host"] = upstream_host
        if upstream_port is not None:
            data["upstream"]["port"] = upstream_port
        if upstream_host is not None or upstream_port is not None:
            data["upstream"]["unix_socket"] = ""
        if max_connections is not None:
            data["upstream"]["max_connections"] = max_connections
        if workers is not None:
            data["proxy"]["workers"] = workers
        return _validate(data, "command-line overrides", None)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_SECTIONS: dict[str, type[BaseModel]] = {
    "proxy": ProxySection,
    "upstream": UpstreamSection,
    "pool": PoolSection,
    "admin": AdminConfig,
}


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    if not loc:
        return Config
    if len(loc) == 1:
        return _SECTIONS.get(loc[0])
    if len(loc) == 2 and loc[0] == "users":
        return UserConfig
    return None


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return [k for k, f in model.model_fields.items() if not f.exclude]


def _path(loc: Iterable[Any]) -> str:
    return ".".join(_key(str(p)) for p in loc)


def _describe(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def _translate(err: Any) -> list[tuple[str, str]]:
    loc = tuple(str(p) for p in err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "config_problems":
        return list(ctx["problems"])
    if kind == "config_field":
        return [(_path(loc + (ctx["field"],)), ctx["message"])]
    where = _path(loc)
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        if key == _NAME_KEY:
            return [
                (_path(parent + ("name",)), "unknown key 'name'; the user name is the table name")
            ]
        model = _model_at(parent)
        valid = _valid_keys(model) if model else []
        top = model is Config
        if top:
            what = (
                f"unknown section [{key}]"
                if isinstance(err.get("input"), dict)
                else f"unknown key {key!r}"
            )
        else:
            what = f"unknown key {key!r}"
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        homes = [
            name for name, sec in _SECTIONS.items() if sec is not model and key in _valid_keys(sec)
        ]
        if close:
            hint = f"did you mean [{close[0]}]?" if top else f"did you mean {close[0]!r}?"
        elif homes:
            hint = f"it belongs in [{homes[0]}]"
        elif top:
            hint = "valid sections: [proxy], [upstream], [pool], [users.<name>]"
        else:
            hint = f"valid keys in [{_path(parent)}]: {', '.join(valid)}"
        return [(where, f"{what}; {hint}")]
    if kind == "missing":
        return [(where, "required key is missing")]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        table = f"[{where}]" if where else "a table"
        return [(where, f"expected a table {table}, got {_describe(err.get('input'))}")]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind in ("string_type", "int_type", "float_type", "bool_type") and "input" in err:
        msg = f"{msg}, got {_describe(err['input'])}"
    return [(where, msg)]


def _validate(data: Any, source: str, base_dir: str | None) -> Config:
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        problems = [p for err in e.errors(include_url=False) for p in _translate(err)]
        raise ConfigError(source, problems) from None


def parse_config(
    text: str, source: str = "<string>", *, base_dir: str | Path | None = None
) -> Config:
    """Parse and validate TOML text.  Relative file paths are resolved against ``base_dir``
    (default: the current directory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [("", f"invalid TOML: {e}")]) from None
    return _validate(data, source, os.fspath(base_dir) if base_dir is not None else None)


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a config file."""
    source = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(source, [("", f"cannot read the file: {e.strerror or e}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(source, [("", f"not UTF-8 text: {e}")]) from None
    return parse_config(text, source, base_dir=Path(path).resolve().parent)
