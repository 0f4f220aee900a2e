"""Where does the server's response to a command end?

``ResponseTracker`` is a sans-IO state machine fed with raw server bytes. It walks packet
headers in place, never copies a row, and says how many bytes may be forwarded and whether
the response is complete. It knows every response shape the proxy relays (see
specs/protocol.md, "Response framing"):

- OK / ERR / EOF single packets (COM_PING, COM_INIT_DB, COM_RESET_CONNECTION ...);
- text and binary result sets, with or without CLIENT_DEPRECATE_EOF, one after another
  while SERVER_MORE_RESULTS_EXISTS is set (multi-statements, stored procedures);
- LOCAL INFILE requests (the client must then send the file; see ``needs_client_data``);
- COM_STMT_PREPARE responses (parameter and column definitions);
- cursors opened by COM_STMT_EXECUTE and the rows of COM_STMT_FETCH;
- COM_FIELD_LIST and COM_STATISTICS.

Rows are cut through: a row larger than what is buffered is forwarded as it arrives, so a
64 MiB row never sits whole in the proxy. Every packet the proxy must read (OK, EOF, ERR,
column counts, prepare OKs) is waited for until complete.
"""

from __future__ import annotations

from tainted_proxy.wire.constants import (
    COM_FIELD_LIST,
    COM_QUERY,
    COM_STATISTICS,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_SEND_LONG_DATA,
    MAX_PAYLOAD,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_CURSOR_EXISTS,
)
from tainted_proxy.wire.errors import ProtocolError

# states
FIRST = 0  # first packet of a result: OK, ERR, LOCAL INFILE or a column count
COLUMNS = 1  # column definitions remaining in ``_remaining``
COLUMNS_EOF = 2  # the EOF after column definitions (no DEPRECATE_EOF)
ROWS = 3  # rows until EOF / OK(0xFE) / ERR
SINGLE = 4  # any one packet ends the response
PREPARE_PARAMS = 5
PREPARE_PARAMS_EOF = 6
PREPARE_COLUMNS = 7
PREPARE_COLUMNS_EOF = 8
FIELD_LIST = 9  # column definitions until EOF / ERR
INFILE = 10  # waiting for the client's file data
EXECUTE_AFTER_COLUMNS = 11  # binary result: metadata EOF, or a cursor was opened
# every state from DONE up means "response complete"
DONE = 12
NO_RESPONSE = 13

# commands whose response is one OK / ERR / EOF packet (or one string: COM_STATISTICS)
_NO_RESPONSE = frozenset((COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA))


def _skip_lenenc(buf: bytes | bytearray | memoryview, pos: int) -> int:
    b = buf[pos]
    if b < 0xFB:
        return pos + 1
    if b == 0xFC:
        return pos + 3
    if b == 0xFD:
        return pos + 4
    if b == 0xFE:
        return pos + 9
    return pos + 1  # 0xFB NULL


def _lenenc(buf: bytes | bytearray | memoryview, pos: int) -> int:
    b = buf[pos]
    if b < 0xFB:
        return b
    if b == 0xFC:
        return buf[pos + 1] | buf[pos + 2] << 8
    if b == 0xFD:
        return buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16
    if b == 0xFE:
        return int.from_bytes(buf[pos + 1 : pos + 9], "little")
    raise ProtocolError("NULL where a length-encoded integer was expected")


class ResponseTracker:
    """Follows one command's response packet by packet.

    Usage: ``start(command)``, then ``scan(buf, end)`` after every read: it returns how
    many bytes of ``buf`` belong to the response and are safe to forward, and ``done``
    tells whether the response is complete. ``status`` holds the server status flags of
    the last OK/EOF seen; ``error`` whether the response ended with an ERR.
    """

    __slots__ = (
        "deprecate_eof",
        "state",
        "_remaining",
        "_prepare_columns",
        "_binary",
        "_skip",
        "_continuing",
        "status",
        "error",
        "warnings",
        "ok_packets",
        "collect_ok",
        "affected_rows",
        "last_insert_id",
        "results",
        "cursor_opened",
        "prepared_stmt_id",
        "eof_ssc",
        "resultset",
        "rows",
        "last_resultset",
        "insert_ids",
    )

    def __init__(self, deprecate_eof: bool) -> None:
        self.deprecate_eof = deprecate_eof
        self.state = DONE
        self._remaining = 0
        self._prepare_columns = 0
        self._binary = False
        self._skip = 0
        self._continuing = False
        self.status = 0
        self.error = False
        self.warnings = 0
        # offsets (start, end) of OK payloads in the buffer of the last scan, when asked
        self.collect_ok = False
        self.ok_packets: list[tuple[int, int]] = []
        self.affected_rows = 0
        self.last_insert_id = 0
        self.results = 0
        self.cursor_opened = False
        self.prepared_stmt_id = -1
        # a classic EOF ended rows with SERVER_SESSION_STATE_CHANGED: the server changed
        # session state but an EOF has no room for the tracker's data (it is lost)
        self.eof_ssc = False
        self.resultset = False  # the response had a result set
        # rows of the last result set (FOUND_ROWS() without SQL_CALC_FOUND_ROWS)
        self.rows = 0
        # the last result was a result set, not an OK (ROW_COUNT() is then -1)
        self.last_resultset = False
        # OK packets of this response that carried a non-zero insert id
        self.insert_ids = 0

    # -- lifecycle ---------------------------------------------------------------
    def start(self, command: int) -> None:
        """A command was sent; its response begins with the next server packet."""
        self.error = False
        self.results = 0
        self.cursor_opened = False
        self.eof_ssc = False
        self.resultset = False
        self.rows = 0
        self.last_resultset = False
        self.insert_ids = 0
        self.affected_rows = 0
        self.last_insert_id = 0
        self._binary = command == COM_STMT_EXECUTE
        if command == COM_QUERY or command == COM_STMT_EXECUTE:
            self.state = FIRST
        elif command == COM_STMT_PREPARE:
            self.state = PREPARE_PARAMS
            self._remaining = -1  # the prepare OK comes first
        elif command == COM_STMT_FETCH:
            self._binary = True
            self.state = ROWS
        elif command == COM_FIELD_LIST:
            self.state = FIELD_LIST
        elif command in _NO_RESPONSE:
            self.state = NO_RESPONSE
        elif command == COM_STATISTICS:
            self.state = SINGLE
        else:
            self.state = SINGLE

    @property
    def done(self) -> bool:
        return self.state >= DONE

    @property
    def needs_client_data(self) -> bool:
        """The server asked for a LOCAL INFILE: relay client packets until an empty one,
        then call ``infile_sent()``."""
        return self.state == INFILE

    def infile_sent(self) -> None:
        # the OK/ERR that follows may carry MORE_RESULTS_EXISTS (LOAD DATA in a batch)
        self.state = FIRST

    @property
    def mid_packet(self) -> bool:
        """True while a forwarded packet is incomplete (the peer saw part of it)."""
        return bool(self._skip) or self._continuing

    # -- the scanner -------------------------------------------------------------
    def scan(self, buf: bytes | bytearray | memoryview, end: int, pos: int = 0) -> int:
        """Walk ``buf[pos:end]``; return the offset up to which bytes belong to this
        response and may be forwarded. Stops right after the last packet of the
        response, so bytes of a pipelined next response are never consumed."""
        if self.collect_ok:
            self.ok_packets.clear()
        while pos < end and self.state < DONE:
            if self._skip:
                k = end - pos
                if k >= self._skip:
                    pos += self._skip
                    self._skip = 0
                    continue
                self._skip -= k
                return end
            if end - pos < 4:
                return pos
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            body = pos + 4
            stop = body + length
            if self._continuing:
                # the tail fragments of a logical packet >= 16 MiB: pass them through
                self._continuing = length == MAX_PAYLOAD
                if stop > end:
                    self._skip = stop - end
                    return end
                pos = stop
                continue
            state = self.state
            if state == ROWS:
                if length and body < end:
                    first = buf[body]
                    if (first != 0xFE or length >= MAX_PAYLOAD) and first != 0xFF:
                        # a row: forward what we have, even if incomplete
                        self.rows += 1
                        if length == MAX_PAYLOAD:
                            self._continuing = True
                        if stop > end:
                            self._skip = stop - end
                            return end
                        pos = stop
                        continue
                elif length:
                    return pos
            if stop > end:
                return pos  # wait for the whole packet
            if length == MAX_PAYLOAD:
                # only rows and column values can be this large; treat as opaque
                self._continuing = True
                pos = stop
                continue
            self._packet(buf, body, stop, length)
            pos = stop
        return pos

    # -- per packet --------------------------------------------------------------
    def _terminator(self, buf: bytes | bytearray | memoryview, body: int, stop: int) -> None:
        """An EOF (classic) or an OK with header 0xFE (DEPRECATE_EOF) ending rows."""
        if self.deprecate_eof:
            self._ok(buf, body, stop)
        else:
            if stop - body >= 5:
                self.warnings = buf[body + 1] | buf[body + 2] << 8
                self.status = buf[body + 3] | buf[body + 4] << 8
                if self.status & SERVER_SESSION_STATE_CHANGED:
                    self.eof_ssc = True
        self.results += 1
        self.state = FIRST if self.status & SERVER_MORE_RESULTS_EXISTS else DONE

    def _ok(self, buf: bytes | bytearray | memoryview, body: int, stop: int) -> None:
        p = body + 1
        try:
            self.affected_rows = _lenenc(buf, p)
            p = _skip_lenenc(buf, p)
            self.last_insert_id = _lenenc(buf, p)
            p = _skip_lenenc(buf, p)
            if p + 4 > stop:
                raise ProtocolError("OK packet too short")
        except IndexError as exc:
            raise ProtocolError("OK packet too short") from exc
        self.status = buf[p] | buf[p + 1] << 8
        self.warnings = buf[p + 2] | buf[p + 3] << 8
        if self.last_insert_id:
            self.insert_ids += 1
        if self.collect_ok:
            self.ok_packets.append((body, stop))

    def _packet(
        self, buf: bytes | bytearray | memoryview, body: int, stop: int, length: int
    ) -> None:
        state = self.state
        first = buf[body] if length else -1
        if first == 0xFF:
            self.error = True
            self.state = DONE
            return
        if state == FIRST:
            if first == 0x00:
                self._ok(buf, body, stop)
                self.last_resultset = False
                self.results += 1
                self.state = FIRST if self.status & SERVER_MORE_RESULTS_EXISTS else DONE
            elif first == 0xFB:
                self.state = INFILE
            elif first == 0xFE and length < 9:
                # never a valid column count; seen only from broken servers
                raise ProtocolError("unexpected EOF packet at the start of a result")
            else:
                try:
                    n = _lenenc(buf, body)
                except IndexError as exc:
                    raise ProtocolError("bad column count") from exc
                if n == 0:
                    raise ProtocolError("result set with zero columns")
                self.resultset = True
                self.last_resultset = True
                self.rows = 0
                self._remaining = n
                self.state = COLUMNS
        elif state == COLUMNS:
            self._remaining -= 1
            if self._remaining == 0:
                if self._binary:
                    self.state = EXECUTE_AFTER_COLUMNS
                elif self.deprecate_eof:
                    self.state = ROWS
                else:
                    self.state = COLUMNS_EOF
        elif state == COLUMNS_EOF:
            if first != 0xFE:
                raise ProtocolError("expected EOF after column definitions")
            self.status = buf[body + 3] | buf[body + 4] << 8 if length >= 5 else self.status
            self.state = ROWS
        elif state == EXECUTE_AFTER_COLUMNS:
            # Binary result: the metadata may end with an EOF (classic), or a cursor
            # was opened (status has CURSOR_EXISTS, no rows follow), or under
            # DEPRECATE_EOF this is already a row or the terminator of an empty result.
            if first == 0xFE and length < MAX_PAYLOAD:
                if self.deprecate_eof:
                    self._ok(buf, body, stop)
                elif length >= 5:
                    self.warnings = buf[body + 1] | buf[body + 2] << 8
                    self.status = buf[body + 3] | buf[body + 4] << 8
                if self.status & SERVER_STATUS_CURSOR_EXISTS:
                    self.cursor_opened = True
                    self.results += 1
                    self.state = DONE
                elif self.deprecate_eof:
                    self.results += 1
                    self.state = FIRST if self.status & SERVER_MORE_RESULTS_EXISTS else DONE
                else:
                    self.state = ROWS
            else:
                self.rows += 1
                self.state = ROWS  # that was the first row
        elif state == ROWS:
            # only terminators reach here (rows are cut through in scan)
            self._terminator(buf, body, stop)
        elif state == SINGLE:
            if first == 0x00:
                self._ok(buf, body, stop)
            elif first == 0xFE and length < 9 and length >= 5:
                self.warnings = buf[body + 1] | buf[body + 2] << 8
                self.status = buf[body + 3] | buf[body + 4] << 8
            self.state = DONE
        elif state == PREPARE_PARAMS:
            if self._remaining == -1:
                # COM_STMT_PREPARE_OK: 0x00, stmt_id(4), columns(2), params(2), 0, warnings(2)
                if first != 0x00 or length < 12:
                    raise ProtocolError("bad COM_STMT_PREPARE response")
                self.prepared_stmt_id = int.from_bytes(buf[body + 1 : body + 5], "little")
                self._prepare_columns = buf[body + 5] | buf[body + 6] << 8
                params = buf[body + 7] | buf[body + 8] << 8
                self.warnings = buf[body + 10] | buf[body + 11] << 8
                self._remaining = params
                if params == 0:
                    self._after_params()
            else:
                self._remaining -= 1
                if self._remaining == 0:
                    if self.deprecate_eof:
                        self._after_params()
                    else:
                        self.state = PREPARE_PARAMS_EOF
        elif state == PREPARE_PARAMS_EOF:
            self._after_params()
        elif state == PREPARE_COLUMNS:
            self._remaining -= 1
            if self._remaining == 0:
                self.state = DONE if self.deprecate_eof else PREPARE_COLUMNS_EOF
        elif state == PREPARE_COLUMNS_EOF:
            self.state = DONE
        elif state == FIELD_LIST:
            if first == 0xFE and length < MAX_PAYLOAD and (length < 9 or self.deprecate_eof):
                self._terminator(buf, body, stop)
                self.state = DONE
        else:
            raise ProtocolError(f"server packet in state {state}")

    def _after_params(self) -> None:
        self._remaining = self._prepare_columns
        self.state = PREPARE_COLUMNS if self._remaining else DONE
