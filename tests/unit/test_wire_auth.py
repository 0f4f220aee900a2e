"""Authentication math, checked against pymysql's independent implementation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st
from pymysql import _auth as pymysql_auth

from tainted_proxy.wire.auth import (
    caching_sha2_response,
    caching_sha2_stage2,
    make_scramble,
    native_password_hash,
    native_password_response,
    native_password_stage2,
    parse_native_hash,
    rsa_encrypt_password,
    verify_caching_sha2,
    verify_native_password,
)
from tainted_proxy.wire.errors import ProtocolError

# the scramble of the MariaDB handshake captured in test_wire_packets.py
SCRAMBLE = b"WbfYk.BA]1y45L\\l+0O{"

_password = st.text(max_size=40) | st.binary(max_size=40)
_scramble = st.binary(min_size=20, max_size=20)


def _b(pw: str | bytes) -> bytes:
    return pw.encode() if isinstance(pw, str) else pw


def test_make_scramble_is_20_bytes_without_nul_dollar_or_high_bit() -> None:
    seen = set()
    for _ in range(200):
        s = make_scramble()
        assert len(s) == 20
        assert all(1 <= b <= 127 and b != ord("$") for b in s)
        seen.add(s)
    assert len(seen) == 200


def test_known_native_password_hash_of_password() -> None:
    assert native_password_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    assert native_password_stage2(b"password").hex().upper() == (
        "2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    )


def test_native_password_response_matches_pymysql_on_a_real_scramble() -> None:
    assert native_password_response("secret", SCRAMBLE) == (
        pymysql_auth.scramble_native_password(b"secret", SCRAMBLE)
    )


def test_native_password_response_ignores_a_trailing_nul_on_the_scramble() -> None:
    assert native_password_response("pw", SCRAMBLE + b"\0") == native_password_response(
        "pw", SCRAMBLE
    )


@given(_password, _scramble)
def test_native_password_response_matches_pymysql(password: str | bytes, scramble: bytes) -> None:
    assert native_password_response(password, scramble) == (
        pymysql_auth.scramble_native_password(_b(password), scramble)
    )


@given(_password, _scramble)
def test_caching_sha2_response_matches_pymysql(password: str | bytes, scramble: bytes) -> None:
    assert caching_sha2_response(password, scramble) == (
        pymysql_auth.scramble_caching_sha2(_b(password), scramble)
    )


def test_empty_password_gives_empty_responses() -> None:
    assert native_password_response("", SCRAMBLE) == b""
    assert caching_sha2_response(b"", SCRAMBLE) == b""


@given(st.text(min_size=1, max_size=40), _scramble)
def test_server_accepts_the_response_computed_by_a_client(password: str, scramble: bytes) -> None:
    stage2 = native_password_stage2(password)
    assert verify_native_password(stage2, scramble, native_password_response(password, scramble))


def test_server_rejects_wrong_password_wrong_scramble_and_bad_lengths() -> None:
    stage2 = native_password_stage2("right")
    good = native_password_response("right", SCRAMBLE)
    assert verify_native_password(stage2, SCRAMBLE, good)
    assert not verify_native_password(stage2, SCRAMBLE, native_password_response("wrong", SCRAMBLE))
    assert not verify_native_password(stage2, b"x" * 20, good)
    assert not verify_native_password(stage2, SCRAMBLE, good[:19])
    assert not verify_native_password(stage2, SCRAMBLE, b"")


def test_empty_password_verifies_only_against_an_empty_response() -> None:
    empty = native_password_stage2("")
    assert empty == b""
    assert native_password_hash("") == ""
    assert verify_native_password(empty, SCRAMBLE, b"")
    assert not verify_native_password(empty, SCRAMBLE, native_password_response("x", SCRAMBLE))


# caching_sha2_password, the server side. Vectors computed outside this code: the stage-2 with
# coreutils (printf password | sha256sum | xxd -r -p | sha256sum), the response with pymysql's
# _auth.scramble_caching_sha2(b"secret", SCRAMBLE).
SHA2_STAGE2_OF_PASSWORD = "73641c99f7719f57d8f4beb11a303afcd190243a51ced8782ca6d3dbe014d146"
SHA2_RESPONSE_SECRET = "ef152e838e9be6fa4b38e915384c4666b94e84ef9ab39784bfe9c379c31a0454"


def test_known_caching_sha2_stage2_and_response() -> None:
    assert caching_sha2_stage2("password").hex() == SHA2_STAGE2_OF_PASSWORD
    assert caching_sha2_stage2(b"password").hex() == SHA2_STAGE2_OF_PASSWORD
    assert caching_sha2_stage2("") == b""
    assert pymysql_auth.scramble_caching_sha2(b"secret", SCRAMBLE).hex() == SHA2_RESPONSE_SECRET
    assert verify_caching_sha2(
        caching_sha2_stage2("secret"), SCRAMBLE, bytes.fromhex(SHA2_RESPONSE_SECRET)
    )
    # the scramble may arrive with its trailing NUL
    assert verify_caching_sha2(
        caching_sha2_stage2("secret"), SCRAMBLE + b"\0", bytes.fromhex(SHA2_RESPONSE_SECRET)
    )


@given(_password.filter(lambda p: len(p) > 0), _scramble)
def test_caching_sha2_verifies_pymysqls_response(password: str | bytes, scramble: bytes) -> None:
    response = pymysql_auth.scramble_caching_sha2(_b(password), scramble)
    assert verify_caching_sha2(caching_sha2_stage2(password), scramble, response)


def test_caching_sha2_rejects_wrong_password_wrong_scramble_and_bad_lengths() -> None:
    stage2 = caching_sha2_stage2("right")
    good = caching_sha2_response("right", SCRAMBLE)
    assert verify_caching_sha2(stage2, SCRAMBLE, good)
    assert not verify_caching_sha2(stage2, SCRAMBLE, caching_sha2_response("wrong", SCRAMBLE))
    assert not verify_caching_sha2(stage2, b"x" * 20, good)
    assert not verify_caching_sha2(stage2, SCRAMBLE, good[:31])
    assert not verify_caching_sha2(stage2, SCRAMBLE, good + b"\0")
    assert not verify_caching_sha2(stage2, SCRAMBLE, b"")
    assert not verify_caching_sha2(stage2, SCRAMBLE, b"\0")
    # a native (SHA1) verifier or response never passes for caching_sha2
    assert not verify_caching_sha2(native_password_stage2("right"), SCRAMBLE, good)
    assert not verify_caching_sha2(stage2, SCRAMBLE, native_password_response("right", SCRAMBLE))


def test_caching_sha2_empty_password_verifies_only_an_empty_response() -> None:
    empty = caching_sha2_stage2("")
    # pymysql and mysql-connector send nothing, libmysqlclient a single NUL
    assert verify_caching_sha2(empty, SCRAMBLE, b"")
    assert verify_caching_sha2(empty, SCRAMBLE, b"\0")
    assert not verify_caching_sha2(empty, SCRAMBLE, caching_sha2_response("x", SCRAMBLE))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19", native_password_stage2("password")),
        ("*2470c0c06dee42fd1618bb99005adca2ec9d1e19", native_password_stage2("password")),
        ("", b""),
        ("2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19", None),  # no '*'
        ("*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1", None),  # 39 hex digits
        ("*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1G", None),  # not hex
        ("*2470C0C06DEE42FD1618BB99005ADCA2EC9D1 19", None),  # fromhex would skip the space
        ("password", None),
    ],
)
def test_parse_native_hash(text: str, expected: bytes | None) -> None:
    assert parse_native_hash(text) == expected


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _decrypt(key: rsa.RSAPrivateKey, blob: bytes) -> bytes:
    return key.decrypt(
        blob,
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
        ),
    )


def _unxor(blob: bytes, scramble: bytes) -> bytes:
    return bytes(c ^ scramble[i % len(scramble)] for i, c in enumerate(blob))


def test_rsa_encrypted_password_decrypts_to_password_nul_xor_scramble(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    password = "a longer password than the 20-byte scramble"
    blob = rsa_encrypt_password(password, SCRAMBLE, _pem(rsa_key))
    assert len(blob) == 256
    assert _unxor(_decrypt(rsa_key, blob), SCRAMBLE) == password.encode() + b"\0"


def test_rsa_encrypted_password_matches_pymysql_after_decryption(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    ours = rsa_encrypt_password(b"pw", SCRAMBLE + b"\0", _pem(rsa_key))
    theirs = pymysql_auth.sha2_rsa_encrypt(b"pw", SCRAMBLE, _pem(rsa_key))
    assert ours != theirs  # OAEP is randomised ...
    assert _decrypt(rsa_key, ours) == _decrypt(rsa_key, theirs)  # ... the plaintext is not


def test_garbage_public_key_from_the_server_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        rsa_encrypt_password("pw", SCRAMBLE, b"-----BEGIN PUBLIC KEY-----\nnope\n")
