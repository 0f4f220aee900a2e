"""Authentication math: scrambles, mysql_native_password, caching_sha2_password, RSA.

This module owns the cryptographic computations of the auth plugins, for both sides of the
proxy: the client side (computing responses to an upstream server's scramble) and the server
side (verifying a client's response against a stored verifier: SHA1(SHA1(password)) for
mysql_native_password, SHA256(SHA256(password)) for caching_sha2_password).
It does no I/O and knows nothing of packet layout.

Empty passwords: MySQL stores an empty password as an empty authentication string, and clients
send an empty auth response for it. Here the empty-password marker is ``b""`` as the stage-2
hash and ``""`` as the textual hash; it verifies only against an empty response.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from tainted_proxy.wire.errors import ProtocolError

SCRAMBLE_LENGTH = 20

# MySQL's generate_user_salt keeps scramble bytes 7-bit and avoids NUL and '$' (NUL would
# truncate NUL-terminated parsing of the handshake; '$' is the separator of stored hashes).
_SCRAMBLE_ALPHABET = bytes(b for b in range(1, 128) if b != ord("$"))
_HEX = frozenset(string.hexdigits)


def _pw(password: str | bytes) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else password


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def make_scramble() -> bytes:
    """20 random bytes in 1..127, excluding '$'."""
    return bytes(secrets.choice(_SCRAMBLE_ALPHABET) for _ in range(SCRAMBLE_LENGTH))


def native_password_response(password: str | bytes, scramble: bytes) -> bytes:
    """Client response for mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))."""
    pw = _pw(password)
    if not pw:
        return b""
    stage1 = hashlib.sha1(pw).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(scramble[:SCRAMBLE_LENGTH] + stage2).digest())


def native_password_stage2(password: str | bytes) -> bytes:
    """SHA1(SHA1(password)), the value servers store; ``b""`` for the empty password."""
    pw = _pw(password)
    if not pw:
        return b""
    return hashlib.sha1(hashlib.sha1(pw).digest()).digest()


def native_password_hash(password: str | bytes) -> str:
    """MySQL's textual hash: '*' + 40 uppercase hex digits; ``""`` for the empty password."""
    stage2 = native_password_stage2(password)
    return "*" + stage2.hex().upper() if stage2 else ""


def parse_native_hash(s: str) -> bytes | None:
    """Stage-2 bytes of a '*'+40-hex hash (any case); ``b""`` for ``""``; None if malformed."""
    if s == "":
        return b""  # MySQL's stored form of an empty password
    if len(s) != 41 or s[0] != "*" or not _HEX.issuperset(s[1:]):
        return None
    return bytes.fromhex(s[1:])


def verify_native_password(stage2: bytes, scramble: bytes, response: bytes) -> bool:
    """Server-side mysql_native_password check of a client ``response``.

    response XOR SHA1(scramble + stage2) recovers SHA1(pw); its SHA1 must equal ``stage2``.
    An empty ``stage2`` (empty password) accepts only an empty response.
    """
    if not stage2:
        return response == b""
    if len(stage2) != 20 or len(response) != 20:
        return False
    stage1 = _xor(response, hashlib.sha1(scramble[:SCRAMBLE_LENGTH] + stage2).digest())
    return hmac.compare_digest(hashlib.sha1(stage1).digest(), stage2)


def caching_sha2_response(password: str | bytes, scramble: bytes) -> bytes:
    """Fast-path response for caching_sha2_password:
    SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)."""
    pw = _pw(password)
    if not pw:
        return b""
    p1 = hashlib.sha256(pw).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + scramble[:SCRAMBLE_LENGTH]).digest())


def caching_sha2_stage2(password: str | bytes) -> bytes:
    """SHA256(SHA256(password)), the caching_sha2_password fast-path verifier (32 bytes);
    ``b""`` for the empty password. Only a plain-text password yields it: a native ``*HEX``
    hash is SHA1-based and cannot check a SHA-256 scramble."""
    pw = _pw(password)
    if not pw:
        return b""
    return hashlib.sha256(hashlib.sha256(pw).digest()).digest()


def is_empty_caching_sha2_response(response: bytes) -> bool:
    """An empty password's caching_sha2_password response: nothing, or the single NUL
    libmysqlclient sends (MySQL's server plugin takes both as "no password")."""
    return response in (b"", b"\0")


def verify_caching_sha2(stage2: bytes, scramble: bytes, response: bytes) -> bool:
    """Server-side caching_sha2_password fast-path check of a client ``response``.

    response XOR SHA256(stage2 + scramble) recovers SHA256(pw); its SHA256 must equal
    ``stage2``. The password itself is never needed, only the verifier. An empty ``stage2``
    (empty password) accepts only an empty response.
    """
    if not stage2:
        return is_empty_caching_sha2_response(response)
    if len(stage2) != 32 or len(response) != 32:
        return False
    stage1 = _xor(response, hashlib.sha256(stage2 + scramble[:SCRAMBLE_LENGTH]).digest())
    return hmac.compare_digest(hashlib.sha256(stage1).digest(), stage2)


def rsa_encrypt_password(password: str | bytes, scramble: bytes, public_key_pem: bytes) -> bytes:
    """Full-auth payload for caching_sha2_password / sha256_password over plain TCP.

    (password + NUL) XOR scramble (cycled), encrypted with RSA-OAEP (SHA-1, MGF1-SHA-1) under the
    server's public key. A key the server sent that does not load raises ProtocolError.
    """
    # imported lazily: cryptography is only needed when a server asks for full auth
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    salt = scramble[:SCRAMBLE_LENGTH]
    if not salt:
        raise ValueError("empty scramble")
    msg = _pw(password) + b"\0"
    xored = bytes(c ^ salt[i % len(salt)] for i, c in enumerate(msg))
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"server RSA public key does not load: {e}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProtocolError("server public key is not an RSA key")
    return key.encrypt(
        xored,
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
        ),
    )
