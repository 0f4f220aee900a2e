"""The one exception the wire layer raises for bytes that do not parse.

Decoders turn every malformed input (truncated payload, bad length, wrong header byte) into a
ProtocolError, so callers never have to catch IndexError/struct.error/UnicodeError from the codec.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A packet or payload violates the MySQL/MariaDB wire protocol."""
