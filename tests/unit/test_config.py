"""tainted_proxy.config: valid files, every error message, hashed vs plain passwords."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tainted_proxy.config import (
    Config,
    ConfigError,
    load_config,
    native_password_hash,
    native_password_stage2,
    parse_config,
    parse_listen,
)
from tainted_proxy.wire.auth import caching_sha2_stage2

# SELECT PASSWORD('app-secret') on MariaDB
APP_SECRET_HASH = "*" + hashlib.sha1(hashlib.sha1(b"app-secret").digest()).hexdigest().upper()
MIN_USER = '[users.app]\npassword = "app-secret"\n'

FULL = """
[proxy]
listen = "127.0.0.1:6033"
server_version = ""
max_client_connections = 10000
client_idle_timeout = 0
max_packet_size = 67108864
tls_cert = ""
tls_key = ""
tls_required = false
auth_timeout = 10
default_auth_plugin = "mysql_native_password"

[upstream]
host = "127.0.0.1"
port = 3306
unix_socket = ""
max_connections = 20
connect_timeout = 5.0
tls = "disabled"
tls_ca = ""
user = ""
password = ""

[pool]
default_mode = "session"
checkout_timeout = 5.0
idle_timeout = 300.0
min_idle = 0
max_lifetime = 3600.0
reset_on_release = true

[users.app]
password = "app-secret"
pool_mode = "session"
upstream_user = ""
# upstream_password (unset: upstream.password or the user's own; "" is an empty password)
max_connections = 0
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, "proxy.toml")
    lines = str(ei.value).splitlines()
    assert all(line.startswith("config error in proxy.toml: ") for line in lines)
    return [line.removeprefix("config error in proxy.toml: ") for line in lines]


def error(text: str) -> str:
    (only,) = errors(text)
    return only


# ---------------------------------------------------------------------------- valid configs


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_config(MIN_USER)
    assert cfg.proxy.listen == "127.0.0.1:6033"
    assert (cfg.proxy.listen_host, cfg.proxy.listen_port) == ("127.0.0.1", 6033)
    assert cfg.proxy.max_packet_size == 64 * 1024 * 1024 and not cfg.proxy.tls_enabled
    assert (cfg.upstream.host, cfg.upstream.port, cfg.upstream.max_connections) == (
        "127.0.0.1",
        3306,
        20,
    )
    assert cfg.upstream.tls == "disabled"
    assert cfg.pool.default_mode == "session" and cfg.pool.reset_on_release is True
    app = cfg.user("app")
    assert app is not None and app.name == "app" and app.pool_mode == "session"
    assert cfg.user("nobody") is None


def test_full_example_equals_defaults() -> None:
    assert parse_config(FULL) == parse_config(MIN_USER)


def test_docs_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    blocks = doc.split("```toml\n")[1:]
    assert blocks, "docs/configuration.md has no ```toml example"
    for block in blocks:
        text = block.split("```", 1)[0]
        if "tls_cert" in text and '"/' in text:
            continue  # examples with real file paths
        parse_config(text, "docs/configuration.md")


def test_pool_mode_defaults_to_pool_default() -> None:
    cfg = parse_config(
        '[pool]\ndefault_mode = "transaction"\n'
        + MIN_USER
        + '[users.s]\npassword = "x"\npool_mode = "statement"\n'
    )
    assert cfg.users["app"].pool_mode == "transaction"
    assert cfg.users["s"].pool_mode == "statement"


def test_config_is_frozen() -> None:
    cfg = parse_config(MIN_USER)
    with pytest.raises(ValueError):
        cfg.proxy.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_passwords_hidden_from_repr() -> None:
    cfg = parse_config('[upstream]\nuser = "svc"\npassword = "svc-pw"\n' + MIN_USER)
    assert "app-secret" not in repr(cfg) and "svc-pw" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:6033", ("127.0.0.1", 6033)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:3306", ("localhost", 3306)),
        ("db-1.example.com:65535", ("db-1.example.com", 65535)),
        ("[::1]:6033", ("::1", 6033)),
        ("[::]:6033", ("::", 6033)),
        ("[0:0::1]:1", ("::1", 1)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
    cfg = parse_config(f'[proxy]\nlisten = "{text}"\n' + MIN_USER)
    assert (cfg.proxy.listen_host, cfg.proxy.listen_port) == expected


def test_unix_socket_and_tls_files(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    (tmp_path / "proxy.toml").write_text(
        '[proxy]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\ntls_required = true\n'
        '[upstream]\nunix_socket = "/run/mysqld/mysqld.sock"\ntls = "verify_ca"\ntls_ca = "ca.pem"\n'
        + MIN_USER
    )
    cfg = load_config(tmp_path / "proxy.toml")
    # relative paths are resolved against the config file's directory
    assert cfg.proxy.tls_cert == str((tmp_path / "cert.pem").resolve())
    assert cfg.upstream.tls_ca == str((tmp_path / "ca.pem").resolve())
    assert cfg.proxy.tls_enabled and cfg.proxy.tls_required
    assert cfg.upstream.unix_socket == "/run/mysqld/mysqld.sock"


def test_with_overrides() -> None:
    cfg = parse_config('[upstream]\nunix_socket = "/tmp/x.sock"\n' + MIN_USER)
    new = cfg.with_overrides(
        listen="[::1]:7000", upstream_host="db", upstream_port=3307, max_connections=5
    )
    assert new.proxy.listen_port == 7000 and new.proxy.listen_host == "::1"
    assert (new.upstream.host, new.upstream.port, new.upstream.max_connections) == ("db", 3307, 5)
    assert new.upstream.unix_socket == ""  # overriding host/port means TCP
    assert new.users == cfg.users and new.users["app"].name == "app"
    assert cfg.with_overrides() == cfg
    assert cfg.upstream.host == "127.0.0.1"  # the original is untouched


def test_with_overrides_validates() -> None:
    cfg = parse_config(MIN_USER)
    with pytest.raises(ConfigError) as ei:
        cfg.with_overrides(listen="nope")
    assert str(ei.value) == (
        "config error in command-line overrides: proxy.listen: "
        "'nope': expected host:port, e.g. 127.0.0.1:6033 or [::1]:6033"
    )
    with pytest.raises(
        ConfigError, match=r"upstream.max_connections: Input should be greater than or equal to 1"
    ):
        cfg.with_overrides(max_connections=0)


def test_workers_are_1_to_64_and_the_command_line_wins() -> None:
    assert parse_config(MIN_USER).proxy.workers == 1
    cfg = parse_config("[proxy]\nworkers = 4\n" + MIN_USER)
    assert cfg.proxy.workers == 4 and cfg.with_overrides(workers=2).proxy.workers == 2
    for bad in (0, 65):
        with pytest.raises(ConfigError, match="proxy.workers"):
            parse_config(f"[proxy]\nworkers = {bad}\n" + MIN_USER)
    with pytest.raises(ConfigError, match="proxy.workers"):
        cfg.with_overrides(workers=65)


# ---------------------------------------------------------------------------- passwords


def test_native_hash_helpers() -> None:
    assert native_password_hash("app-secret") == APP_SECRET_HASH
    # well-known value: SELECT PASSWORD('password')
    assert native_password_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    assert native_password_stage2("password") == bytes.fromhex(
        "2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    )


def test_plain_password() -> None:
    app = parse_config(MIN_USER).users["app"]
    assert not app.password_is_hash and app.password_plain == "app-secret"
    assert app.password_stage2 == native_password_stage2("app-secret")
    assert len(app.password_stage2) == 20
    assert app.caching_sha2_stage2 == caching_sha2_stage2("app-secret")
    assert app.caching_sha2_stage2 is app.caching_sha2_stage2  # computed once


@pytest.mark.parametrize("hash_text", [APP_SECRET_HASH, "*" + APP_SECRET_HASH[1:].lower()])
def test_hashed_password(hash_text: str) -> None:
    cfg = parse_config(f'[users.app]\npassword = "{hash_text}"\nupstream_password = "up"\n')
    app = cfg.users["app"]
    assert app.password_is_hash and app.password_plain is None
    assert app.password_stage2 == native_password_stage2("app-secret")  # same verifier
    assert app.caching_sha2_stage2 is None  # a SHA1 hash cannot check SHA-256 scrambles
    assert app.upstream_credentials(cfg) == ("app", "up")


def test_default_auth_plugin() -> None:
    assert parse_config(MIN_USER).proxy.default_auth_plugin == "mysql_native_password"
    text = '[proxy]\ndefault_auth_plugin = "caching_sha2_password"\n' + MIN_USER
    assert parse_config(text).proxy.default_auth_plugin == "caching_sha2_password"


def test_empty_password() -> None:
    cfg = parse_config('[users.app]\npassword = ""\n')
    assert cfg.users["app"].password_stage2 == b""
    assert cfg.users["app"].caching_sha2_stage2 == b""
    assert cfg.users["app"].upstream_credentials(cfg) == ("app", "")


def test_plain_password_that_merely_starts_with_star() -> None:
    app = parse_config('[users.app]\npassword = "*not-a-hash"\n').users["app"]
    assert not app.password_is_hash and app.password_plain == "*not-a-hash"


def test_upstream_credentials_resolution() -> None:
    cfg = parse_config(
        """
[upstream]
user = "svc"
password = "svc-pw"
[users.a]
password = "a-pw"
[users.b]
password = "b-pw"
upstream_user = "b_db"
[users.c]
password = "c-pw"
upstream_user = "c_db"
upstream_password = "c-db-pw"
[users.d]
password = "d-pw"
upstream_password = "d-db-pw"
[users.e]
password = "HASH"
""".replace("HASH", APP_SECRET_HASH)
    )
    creds = {name: u.upstream_credentials(cfg) for name, u in cfg.users.items()}
    assert creds == {
        "a": ("svc", "svc-pw"),  # the shared upstream account
        "b": ("b_db", "b-pw"),  # own upstream account: own password
        "c": ("c_db", "c-db-pw"),
        "d": ("svc", "d-db-pw"),
        "e": ("svc", "svc-pw"),  # hashed proxy password is fine with a shared upstream account
    }
    no_upstream_user = parse_config('[users.a]\npassword = "a-pw"\nupstream_user = "x"\n')
    assert no_upstream_user.users["a"].upstream_credentials(no_upstream_user) == ("x", "a-pw")


# ---------------------------------------------------------------------------- errors


def test_example_error_from_the_brief() -> None:
    assert error('[users.app]\npassword = "x"\npool_mode = "sessions"\n') == (
        "users.app.pool_mode: Input should be 'session', 'transaction' or 'statement'"
    )


def test_no_users() -> None:
    assert (
        error("")
        == 'users: no [users.*] defined: add at least one, e.g. [users.app] password = "..."'
    )
    assert error("[users]\n").startswith("users: no [users.*] defined")


def test_hash_without_upstream_password() -> None:
    assert error(f'[users.app]\npassword = "{APP_SECRET_HASH}"\n') == (
        "users.app.password: is given only as a hash, so the proxy cannot log in upstream without "
        "a plain password: set upstream_password for this user, or [upstream] user and password"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown keys and sections, with hints
        ("[proxy]\nlistn = 1\n", "proxy.listn: unknown key 'listn'; did you mean 'listen'?"),
        ("[proxy]\nport = 1\n", "proxy.port: unknown key 'port'; it belongs in [upstream]"),
        (
            "[pool]\nzzz = 1\n",
            "pool.zzz: unknown key 'zzz'; valid keys in [pool]: default_mode, checkout_timeout, idle_timeout, min_idle, max_lifetime, health_check_idle, reset_on_release, prepared_statement_cache",
        ),
        ("[proxi]\n", "proxi: unknown section [proxi]; did you mean [proxy]?"),
        (
            "[frobnicate]\n",
            "frobnicate: unknown section [frobnicate]; valid sections: [proxy], [upstream], [pool], [users.<name>]",
        ),
        ('listen = "x"\n', "listen: unknown key 'listen'; it belongs in [proxy]"),
        (
            '[users.x]\npassword = ""\npool_mod = "session"\n',
            "users.x.pool_mod: unknown key 'pool_mod'; did you mean 'pool_mode'?",
        ),
        (
            '[users.x]\npassword = ""\nname = "y"\n',
            "users.x.name: unknown key 'name'; the user name is the table name",
        ),
        # wrong types and shapes
        (
            '[upstream]\nport = "3306"\n',
            "upstream.port: Input should be a valid integer, got a string",
        ),
        (
            "[pool]\nreset_on_release = 1\n",
            "pool.reset_on_release: Input should be a valid boolean, got an integer",
        ),
        (
            "[proxy]\nmax_client_connections = 1.5\n",
            "proxy.max_client_connections: Input should be a valid integer, got a float",
        ),
        ("proxy = 1\n", "proxy: expected a table [proxy], got an integer"),
        ('[users]\nx = "pw"\n', "users.x: expected a table [users.x], got a string"),
        ("[users.x]\n", "users.x.password: required key is missing"),
        # listen
        (
            '[proxy]\nlisten = "6033"\n',
            "proxy.listen: '6033': expected host:port, e.g. 127.0.0.1:6033 or [::1]:6033",
        ),
        (
            '[proxy]\nlisten = "::1:6033"\n',
            "proxy.listen: '::1:6033': put IPv6 addresses in brackets, e.g. [::1]:6033",
        ),
        (
            '[proxy]\nlisten = ":6033"\n',
            "proxy.listen: ':6033': missing host; use 0.0.0.0:6033 to listen everywhere",
        ),
        (
            '[proxy]\nlisten = "[zz]:6033"\n',
            "proxy.listen: '[zz]:6033': 'zz' is not a valid IPv6 address",
        ),
        (
            '[proxy]\nlisten = "1.2.3.999:6033"\n',
            "proxy.listen: '1.2.3.999' is not a valid host name or IP address",
        ),
        (
            '[proxy]\nlisten = "a b:6033"\n',
            "proxy.listen: 'a b' is not a valid host name or IP address",
        ),
        (
            '[proxy]\nlisten = "127.0.0.1:70000"\n',
            "proxy.listen: '127.0.0.1:70000': port must be between 0 and 65535",
        ),
        # numbers
        ("[upstream]\nport = 0\n", "upstream.port: Input should be greater than or equal to 1"),
        (
            "[upstream]\nport = 65536\n",
            "upstream.port: Input should be less than or equal to 65535",
        ),
        (
            "[upstream]\nmax_connections = 0\n",
            "upstream.max_connections: Input should be greater than or equal to 1",
        ),
        (
            "[upstream]\nconnect_timeout = 0\n",
            "upstream.connect_timeout: Input should be greater than 0",
        ),
        ("[proxy]\nauth_timeout = -1\n", "proxy.auth_timeout: Input should be greater than 0"),
        (
            '[proxy]\ndefault_auth_plugin = "sha256_password"\n',
            "proxy.default_auth_plugin: Input should be 'mysql_native_password' or "
            "'caching_sha2_password'",
        ),
        (
            "[proxy]\nclient_idle_timeout = -1\n",
            "proxy.client_idle_timeout: Input should be greater than or equal to 0",
        ),
        (
            "[proxy]\nclient_idle_timeout = inf\n",
            "proxy.client_idle_timeout: Input should be a finite number",
        ),
        (
            "[proxy]\nmax_packet_size = 100\n",
            "proxy.max_packet_size: Input should be greater than or equal to 1024",
        ),
        ("[pool]\ncheckout_timeout = 0\n", "pool.checkout_timeout: Input should be greater than 0"),
        (
            "[pool]\nidle_timeout = -5\n",
            "pool.idle_timeout: Input should be greater than or equal to 0",
        ),
        ("[pool]\nmin_idle = 21\n", "pool.min_idle: 21 exceeds upstream.max_connections (20)"),
        (
            '[users.x]\npassword = ""\nmax_connections = -1\n',
            "users.x.max_connections: Input should be greater than or equal to 0",
        ),
        # enums and strings
        (
            '[upstream]\ntls = "on"\n',
            "upstream.tls: Input should be 'disabled', 'preferred', 'required', 'verify_ca' or 'verify_identity'",
        ),
        (
            '[pool]\ndefault_mode = "txn"\n',
            "pool.default_mode: Input should be 'session', 'transaction' or 'statement'",
        ),
        (
            '[upstream]\nhost = "bad host"\n',
            "upstream.host: 'bad host' is not a valid host name or IP address",
        ),
        ('[upstream]\nhost = ""\n', "upstream.host: host must not be empty"),
        (
            '[proxy]\nserver_version = "MariaDB"\n',
            "proxy.server_version: 'MariaDB' should be empty or a version like 10.11.6-MariaDB (printable, no spaces, starting with major.minor.patch)",
        ),
        # cross-field
        ('[upstream]\npassword = "x"\n', "upstream.password: is set but upstream.user is empty"),
        ("[proxy]\ntls_required = true\n", "proxy.tls_required: needs tls_cert and tls_key"),
        (
            '[users.x]\npassword = "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1G"\n',
            "users.x.password: looks like a native password hash ('*' + 40 hex digits) but is not valid hex",
        ),
        ('[users.""]\npassword = ""\n', 'users."": user name must not be empty'),
        (
            f'[users.{"u" * 81}]\npassword = ""\n',
            f"users.{'u' * 81}: user name longer than 80 characters",
        ),
        # TOML itself
        (
            "[proxy\n",
            "invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)",
        ),
    ],
)
def test_error_messages(text: str, expected: str) -> None:
    if "[users" not in text and "users" not in text:
        text += MIN_USER
    assert error(text) == expected


def test_several_errors_are_all_reported() -> None:
    got = errors('[proxy]\nlisten = "x"\n[upstream]\nport = 0\n[users.a]\npassword = 1\n')
    assert got == [
        "proxy.listen: 'x': expected host:port, e.g. 127.0.0.1:6033 or [::1]:6033",
        "upstream.port: Input should be greater than or equal to 1",
        "users.a.password: Input should be a valid string, got an integer",
    ]


def test_tls_file_errors(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    missing = tmp_path / "missing.pem"
    assert (
        error(f'[proxy]\ntls_cert = "{missing}"\n' + MIN_USER)
        == f"proxy.tls_cert: file not found: {missing}"
    )
    assert error(f'[proxy]\ntls_cert = "{tmp_path / "cert.pem"}"\n' + MIN_USER) == (
        "proxy.tls_key: must be set when tls_cert is set"
    )
    assert error(f'[proxy]\ntls_key = "{tmp_path / "cert.pem"}"\n' + MIN_USER) == (
        "proxy.tls_cert: must be set when tls_key is set"
    )
    assert error(f'[upstream]\ntls_ca = "{tmp_path / "cert.pem"}"\n' + MIN_USER) == (
        'upstream.tls_ca: is set but tls = "disabled"; set tls = "verify_ca" or similar'
    )
    assert error(f'[upstream]\ntls = "verify_ca"\ntls_ca = "{tmp_path}"\n' + MIN_USER) == (
        f"upstream.tls_ca: file not found: {tmp_path}"
    )


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nope.toml")
    assert (
        str(ei.value)
        == f"config error in {tmp_path / 'nope.toml'}: cannot read the file: No such file or directory"
    )
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"^config error in .*bad.toml: not UTF-8 text"):
        load_config(bad)
    wrong = tmp_path / "proxy.toml"
    wrong.write_text('[users.app]\npassword = "x"\npool_mode = "sessions"\n')
    with pytest.raises(ConfigError) as ei:
        load_config(str(wrong))
    assert ei.value.source == str(wrong)
    assert ei.value.problems == [
        ("users.app.pool_mode", "Input should be 'session', 'transaction' or 'statement'")
    ]


def test_config_error_is_an_exception_with_problems() -> None:
    e = ConfigError("x.toml", [("a.b", "bad"), ("", "worse")])
    assert str(e) == "config error in x.toml: a.b: bad\nconfig error in x.toml: worse"
    assert isinstance(e, Exception)


def test_config_model_validates_directly() -> None:
    # Config can also be built from Python data (e.g. tests); cross-checks still apply.
    cfg = Config.model_validate({"users": {"u": {"password": "p"}}})
    assert cfg.users["u"].name == "u" and cfg.users["u"].pool_mode == "session"


def test_an_explicit_empty_upstream_password_is_used_not_ignored():
    from tainted_proxy.config import parse_config

    cfg = parse_config(
        '[users.app]\npassword = "client-secret"\nupstream_user = "root"\nupstream_password = ""\n'
    )
    assert cfg.users["app"].upstream_credentials(cfg) == ("root", "")


def test_overrides_keep_a_users_own_password_for_the_upstream_login():
    # `tainted-proxy serve` always applies the command-line overrides (and SIGHUP re-applies
    # them): re-validating the dump must not turn "unset" into an empty password
    from tainted_proxy.config import parse_config

    cfg = parse_config('[users.app]\npassword = "own-secret"\n').with_overrides(listen=None)
    assert cfg.users["app"].upstream_credentials(cfg) == ("app", "own-secret")
