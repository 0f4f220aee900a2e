"""[admin] listen / token / users: defaults, validation, the token rule off loopback."""

from __future__ import annotations

import pytest

from tainted_proxy.config import ConfigError, is_loopback_host, parse_config

BASE = '[users.app]\npassword = "x"\n'


def admin(text: str):
    return parse_config(BASE + "[admin]\n" + text).admin


def test_defaults():
    a = parse_config(BASE).admin
    assert a.listen == "127.0.0.1:6034"
    assert a.token == ""
    assert a.users == []
    assert (a.listen_host, a.listen_port) == ("127.0.0.1", 6034)


def test_empty_listen_disables():
    assert admin('listen = ""').listen == ""


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.9.9.9:6034", "[::1]:6034", "localhost:1"])
def test_loopback_without_token_is_fine(listen):
    assert admin(f'listen = "{listen}"').token == ""


@pytest.mark.parametrize("listen", ["0.0.0.0:6034", "[::]:6034", "10.1.2.3:6034", "db.example:1"])
def test_token_required_off_loopback(listen):
    with pytest.raises(ConfigError) as e:
        admin(f'listen = "{listen}"')
    assert "admin.token: is required when listen" in str(e.value)
    assert admin(f'listen = "{listen}"\ntoken = "s3cret-token"').token == "s3cret-token"


def test_token_must_be_header_safe():
    with pytest.raises(ConfigError, match="admin.token: must be printable ASCII"):
        admin('token = "two words"')


def test_bad_listen_and_unknown_key():
    with pytest.raises(ConfigError, match="admin.listen: 'nope': expected host:port"):
        admin('listen = "nope"')
    with pytest.raises(
        ConfigError, match="admin.listne: unknown key 'listne'; did you mean 'listen'"
    ):
        admin('listne = ""')


def test_token_not_in_repr():
    a = admin('listen = "0.0.0.0:1"\ntoken = "hunter2hunter2"')
    assert "hunter2" not in repr(a)


def test_is_loopback_host():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    assert is_loopback_host("LOCALHOST")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("example.org")
