"""What the proxy learns about the upstream server once, at start-up: its version, its
collations (id -> charset and name, each charset's default), and the baseline of the
settings vectors (the session variables of a fresh connection, state.settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tainted_proxy.backend.server import ServerConn
from tainted_proxy.state.settings import Baseline


@dataclass(slots=True)
class Catalog:
    server_version: str = ""
    #: collation id -> (charset, collation)
    collations: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: charset -> its default collation (SET NAMES cs implies it)
    default_collation: dict[str, str] = field(default_factory=dict)
    charset_of_collation: dict[str, str] = field(default_factory=dict)
    baseline: Baseline = field(default_factory=Baseline)

    async def read(self, conn: ServerConn) -> None:
        """Fill the catalog from a connection opened like the pool's (same login, same
        handshake charset, so the baseline is what a pooled connection starts with)."""
        self.server_version = conn.server_version
        rows = await conn.query_rows(
            "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME, IS_DEFAULT "
            "FROM information_schema.COLLATIONS"
        )
        for cid, cs, coll, default in rows:
            if cid is not None and cs is not None and coll is not None:
                self.collations[int(cid)] = (cs.decode(), coll.decode())
                self.charset_of_collation[coll.decode()] = cs.decode()
                if default == b"Yes":
                    self.default_collation[cs.decode()] = coll.decode()
        rows = await conn.query_rows(
            "SELECT LOWER(VARIABLE_NAME), SESSION_VALUE, VARIABLE_TYPE "
            "FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_SCOPE <> 'GLOBAL'"
        )
        self.baseline = Baseline.from_rows(
            (
                n.decode(),
                None if v is None else v.decode("utf-8", "surrogateescape"),
                (t or b"").decode(),
            )
            for n, v, t in rows
            if n is not None
        )
