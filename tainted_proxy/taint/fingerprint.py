"""Statement fingerprints: one string per statement *shape*, for reports.

``fingerprint("select * from t where id in (1, 2, 3) and name = 'x'")`` is
``"SELECT * FROM t WHERE id IN (...) AND name = ?"``:

* literals (strings with their introducer, numbers with their sign, hex and
  bit literals) become ``?``; ``NULL``, ``TRUE`` and ``FALSE`` stay;
* keywords and well-known function names are upper-cased; identifiers keep
  their spelling (table names are case-sensitive on most servers);
  variables are lower-cased (their names are case-insensitive);
* comments are dropped, except the *contents* of executable comments
  (``/*!40101 SET NAMES utf8 */`` -> ``SET NAMES utf8``), which run;
* whitespace is normalised: tokens separated by one space, none inside
  parentheses or around ``.``, none before ``,``;
* ``IN (?, ?, …)`` lists and multi-row ``VALUES (…), (…)`` collapse to
  ``(...)``;
* statements of a multi-statement text are joined by ``"; "``.
"""

from __future__ import annotations

from tainted_proxy.taint.lexer import (
    HEXLIT,
    NUMBER,
    OP,
    QIDENT,
    STRING,
    SYSVAR,
    USERVAR,
    WORD,
    Token,
    decode,
    split_statements,
    tokenize,
)

#: Words upper-cased in fingerprints (MySQL/MariaDB keywords).
KEYWORDS = frozenset(
    """
    ACCESSIBLE ACTION ADD AFTER AGAINST ALGORITHM ALL ALTER ANALYZE AND ANY AS ASC ASENSITIVE
    AT ATOMIC AUTO_INCREMENT AVG_ROW_LENGTH BACKUP BEFORE BEGIN BETWEEN BIGINT BINARY BINLOG
    BIT BLOB BOOL BOOLEAN BOTH BTREE BY CACHE CALL CASCADE CASE CHAIN CHANGE CHAR CHARACTER
    CHARSET CHECK CHECKSUM CLOSE COLLATE COLUMN COLUMNS COMMENT COMMIT COMMITTED CONDITION
    CONSISTENT CONSTRAINT CONTINUE CONVERT COUNT CREATE CROSS CURRENT CURRENT_DATE
    CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURSOR DATA DATABASE DATABASES DATE DATETIME
    DAY DAY_HOUR DAY_MICROSECOND DAY_MINUTE DAY_SECOND DEALLOCATE DEC DECIMAL DECLARE
    DEFAULT DEFINER DELAYED DELETE DESC DESCRIBE DETERMINISTIC DIAGNOSTICS DISTINCT
    DISTINCTROW DIV DO DOUBLE DROP DUAL DUPLICATE EACH ELSE ELSEIF ENCLOSED END ENGINE ENUM
    ERRORS ESCAPED EVENT EXCEPT EXCLUSIVE EXECUTE EXISTS EXIT EXPLAIN EXPORT EXTENDED FALSE
    FETCH FIELDS FIRST FLOAT FLUSH FOR FORCE FOREIGN FORMAT FROM FULL FULLTEXT FUNCTION
    GET GLOBAL GRANT GROUP HANDLER HASH HAVING HIGH_PRIORITY HOUR HOUR_MICROSECOND
    HOUR_MINUTE HOUR_SECOND IF IGNORE IMMEDIATE IN INDEX INFILE INNER INOUT INSENSITIVE
    INSERT INSTANCE INT INTEGER INTERSECT INTERVAL INTO IS ISOLATION ITERATE JOIN JSON KEY
    KEYS KILL LANGUAGE LAST LEADING LEAVE LEFT LEVEL LIKE LIMIT LINES LOAD LOCAL LOCK LOCKED
    LOGS LONG LOOP LOW_PRIORITY MASTER MATCH MEDIUMINT MINUTE MINUTE_MICROSECOND
    MINUTE_SECOND MOD MODE MODIFIES NAMES NATURAL NEXT NO NONE NOT NOWAIT NO_WRITE_TO_BINLOG
    NULL NUMERIC OFFSET ON ONE ONLY OPEN OPTIMIZE OPTION OPTIONALLY OR ORDER OUT OUTER
    OUTFILE OVER PARTITION PASSWORD PERSIST PERSIST_ONLY PHASE PRECISION PREPARE PREVIOUS
    PRIMARY PROCEDURE PURGE QUERY QUICK RANGE READ READS REAL RECOVER RECURSIVE REFERENCES
    REGEXP RELEASE RENAME REPAIR REPEAT REPEATABLE REPLACE REQUIRE RESET RESIGNAL RESTRICT
    RETURN RETURNING RETURNS REVOKE RIGHT RLIKE ROLE ROLLBACK ROLLUP ROW ROWS SAVEPOINT
    SCHEMA SCHEMAS SECOND SECOND_MICROSECOND SECURITY SELECT SENSITIVE SEPARATOR SEQUENCE
    SERIALIZABLE SESSION SET SHARE SHOW SIGNAL SKIP SMALLINT SNAPSHOT SOME SONAME SPATIAL
    SQL SQL_BIG_RESULT SQL_BUFFER_RESULT SQL_CACHE SQL_CALC_FOUND_ROWS SQL_NO_CACHE
    SQL_SMALL_RESULT SSL STAGE START STARTING STATEMENT STATUS STOP STRAIGHT_JOIN TABLE
    TABLES TEMPORARY TERMINATED TEXT THEN TIME TIMESTAMP TINYINT TO TRAILING TRANSACTION
    TRIGGER TRUE TRUNCATE UNCOMMITTED UNION UNIQUE UNLOCK UNSIGNED UPDATE USAGE USE USER
    USING VALUE VALUES VARBINARY VARCHAR VARIABLES VIEW WAIT WARNINGS WHEN WHERE WHILE
    WINDOW WITH WORK WRITE XA XML XOR YEAR YEAR_MONTH ZEROFILL
    """.split()
)

#: Function names upper-cased in fingerprints (when followed by "(").
FUNCTIONS = frozenset(
    """
    ABS AVG CAST CEIL CEILING COALESCE CONCAT CONCAT_WS CONNECTION_ID CONVERT_TZ COUNT
    CURDATE CURTIME DATABASE DATE_ADD DATE_FORMAT DATE_SUB DATEDIFF EXISTS FIND_IN_SET
    FLOOR FOUND_ROWS FROM_UNIXTIME GET_LOCK GREATEST GROUP_CONCAT HEX IF IFNULL
    IS_FREE_LOCK IS_USED_LOCK ISNULL JSON_ARRAY JSON_EXTRACT JSON_OBJECT JSON_UNQUOTE
    LAST_INSERT_ID LASTVAL LCASE LEAST LEFT LENGTH LOCATE LOWER LPAD LTRIM MAX MD5 MIN
    MOD NEXTVAL NOW NULLIF RAND RELEASE_ALL_LOCKS RELEASE_LOCK REPLACE RIGHT ROUND
    ROW_COUNT RPAD RTRIM SCHEMA SETVAL SHA1 SHA2 SLEEP SUBSTR SUBSTRING SUM SYSDATE TRIM
    TRUNCATE UCASE UNHEX UNIX_TIMESTAMP UPPER USER UTC_TIMESTAMP UUID VERSION
    """.split()
)

_LITERALS = (STRING, NUMBER, HEXLIT)
_NO_SPACE_BEFORE = frozenset({",", ")", ".", ";"})
_NO_SPACE_AFTER = frozenset({"(", "."})
_SIGN_CONTEXT = frozenset(
    {"(", ",", "=", "<", ">", "<=", ">=", "<>", "!=", "<=>", "+", "-", "*", "/"}
)


def fingerprint(
    sql: str | bytes, *, ansi_quotes: bool = False, no_backslash_escapes: bool = False
) -> str:
    """The fingerprint of a COM_QUERY text (see the module docstring)."""
    text = decode(sql)
    flags = (1 if ansi_quotes else 0) | (2 if no_backslash_escapes else 0)
    lexed = tokenize(text, flags)
    stmts = split_statements(lexed.tokens, len(text))
    return "; ".join(_statement(st.tokens, text) for st in stmts)


def _pieces(toks: list[Token], text: str) -> list[str]:
    out: list[str] = []
    prev: Token | None = None
    for idx, t in enumerate(toks):
        k = t.kind
        if k in _LITERALS:
            if prev is not None:
                if k == STRING and prev.kind == STRING:
                    prev = t  # 'a' 'b' is one literal
                    continue
                if (
                    prev.kind == WORD
                    and prev.end == t.start
                    and (prev.value.startswith("_") or prev.value == "N")
                ):
                    out.pop()  # _utf8mb4'x', N'x'
                elif (
                    k == NUMBER
                    and prev.kind == OP
                    and prev.value in "-+"
                    and (idx < 2 or _sign_context(toks[idx - 2]))
                ):
                    out.pop()  # -1 is one literal
            out.append("?")
        elif k == WORD:
            v = t.value
            nxt_paren = (
                idx + 1 < len(toks) and toks[idx + 1].kind == OP and toks[idx + 1].value == "("
            )
            if v in KEYWORDS or (nxt_paren and v in FUNCTIONS):
                out.append(v)
            else:
                out.append(text[t.start : t.end])
        elif k == QIDENT:
            out.append(text[t.start : t.end])
        elif k == USERVAR or k == SYSVAR:
            out.append(text[t.start : t.end].lower())
        else:
            out.append(t.value)
        prev = t
    return out


def _sign_context(t: Token) -> bool:
    if t.kind == OP:
        return t.value in _SIGN_CONTEXT
    return t.kind == WORD and t.value in KEYWORDS


def _collapse(pieces: list[str]) -> list[str]:
    """IN (?, ?, …) -> IN (...); VALUES (…), (…) -> VALUES (...)."""
    out: list[str] = []
    i = 0
    n = len(pieces)
    while i < n:
        p = pieces[i]
        out.append(p)
        i += 1
        if p in ("IN", "VALUES", "VALUE") and i < n and pieces[i] == "(":
            j = i
            rows = 0
            while j < n and pieces[j] == "(":
                k = j + 1
                while k < n and pieces[k] in ("?", ",", "NULL", "DEFAULT"):
                    k += 1
                if k >= n or pieces[k] != ")" or k == j + 1:
                    break
                rows += 1
                j = k + 1
                if p == "IN" or not (j < n - 1 and pieces[j] == "," and pieces[j + 1] == "("):
                    break
                j += 1
            if rows:
                out.extend(("(", "...", ")"))
                i = j
    return out


def _statement(toks: list[Token], text: str) -> str:
    pieces = _collapse(_pieces(toks, text))
    buf: list[str] = []
    prev = ""
    for p in pieces:
        if buf:
            glue = " "
            if p in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER:
                glue = ""
            elif p == "(" and (
                prev in FUNCTIONS
                or (prev not in KEYWORDS and (prev[:1].isalnum() or prev[:1] in "_`$"))
            ):
                glue = ""  # function call or table(column list)
            buf.append(glue)
        buf.append(p)
        prev = p
    return "".join(buf)
