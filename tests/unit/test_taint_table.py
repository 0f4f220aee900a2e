"""Table-driven classifier test: (sql, expected effects, expected settings).

Effects are written as a space-separated string ("" = clean).  Settings are
checked exactly when given, skipped when None.  The real client statements
come from ../shared/reference/client-init-statements.md (section CLIENTS).
"""

from __future__ import annotations

import pytest

from tainted_proxy.taint import ALL_EFFECTS, classify
from tainted_proxy.taint.classifier import analyse
from tainted_proxy.taint.gate import is_clean

UTF8MB4 = {
    "character_set_client": "utf8mb4",
    "character_set_connection": "utf8mb4",
    "character_set_results": "utf8mb4",
    "collation_connection": None,
}


def names(cs: str, coll: str | None = None) -> dict[str, str | None]:
    return {
        "character_set_client": cs,
        "character_set_connection": cs,
        "character_set_results": cs,
        "collation_connection": coll,
    }


def charset(cs: str) -> dict[str, str | None]:
    return {
        "character_set_client": cs,
        "character_set_results": cs,
        "character_set_connection": None,
        "collation_connection": None,
    }


IC = "implicit_commit tx_end"

CASES: list[tuple[str, str, dict[str, str | None] | None]] = [
    # ---- settings: every spelling of a session-scope assignment
    ("SET NAMES utf8mb4", "settings", UTF8MB4),
    (
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
        "settings",
        names("utf8mb4", "utf8mb4_general_ci"),
    ),
    (
        "set names latin1 collate latin1_swedish_ci",
        "settings",
        names("latin1", "latin1_swedish_ci"),
    ),
    ("SET NAMES DEFAULT", "settings", names("DEFAULT")),
    ("SET NAMES `utf8mb4`", "settings", UTF8MB4),
    ("SET CHARACTER SET utf8", "settings", charset("utf8")),
    ("SET CHARSET 'latin1'", "settings", charset("latin1")),
    ("SET time_zone = '+00:00'", "settings", {"time_zone": "+00:00"}),
    ("SET SESSION time_zone = 'UTC'", "settings", {"time_zone": "UTC"}),
    ("SET LOCAL time_zone = '+01:00'", "settings", {"time_zone": "+01:00"}),
    ("SET @@time_zone = '+02:00'", "settings", {"time_zone": "+02:00"}),
    ("SET @@session.time_zone = '+03:00'", "settings", {"time_zone": "+03:00"}),
    ("SET @@local.time_zone = '+04:00'", "settings", {"time_zone": "+04:00"}),
    ("SET @@SESSION.Time_Zone = '+05:30'", "settings", {"time_zone": "+05:30"}),
    ('SET SESSION TIME_ZONE = "+06:00"', "settings", {"time_zone": "+06:00"}),
    ("SET sql_mode = 'ANSI'", "settings", {"sql_mode": "ANSI"}),
    ("SET sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')", "settings", {"sql_mode": None}),
    ("SET time_zone = @@global.time_zone", "settings", {"time_zone": None}),
    ("SET SESSION sql_mode = ''", "settings", {"sql_mode": ""}),
    ("SET wait_timeout = 100", "settings", {"wait_timeout": "100"}),
    ("SET wait_timeout = DEFAULT", "settings", {"wait_timeout": "DEFAULT"}),
    ("SET wait_timeout = default", "settings", {"wait_timeout": "DEFAULT"}),
    ("SET character_set_results = NULL", "settings", {"character_set_results": "NULL"}),
    (
        "SET collation_connection = utf8mb4_unicode_ci",
        "settings",
        {"collation_connection": "utf8mb4_unicode_ci"},
    ),
    ("SET time_zone = SYSTEM", "settings", {"time_zone": "SYSTEM"}),
    ("SET sql_select_limit = -1", "settings", {"sql_select_limit": "-1"}),
    ("SET max_statement_time = 2.5", "settings", {"max_statement_time": "2.5"}),
    ("SET tx_isolation = 'READ-COMMITTED'", "settings", {"tx_isolation": "READ-COMMITTED"}),
    (
        "SET transaction_isolation = 'READ-COMMITTED'",
        "settings",
        {"tx_isolation": "READ-COMMITTED"},
    ),
    ("SET SESSION transaction_read_only = 1", "settings", {"tx_read_only": "1"}),
    (
        "SET @@session.transaction_isolation = 'SERIALIZABLE'",
        "settings",
        {"tx_isolation": "SERIALIZABLE"},
    ),
    (
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "settings",
        {"tx_isolation": "READ-COMMITTED"},
    ),
    ("SET SESSION TRANSACTION READ ONLY", "settings", {"tx_read_only": "ON"}),
    ("SET LOCAL TRANSACTION READ WRITE", "settings", {"tx_read_only": "OFF"}),
    (
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE",
        "settings",
        {"tx_isolation": "REPEATABLE-READ", "tx_read_only": "OFF"},
    ),
    (
        "set session transaction isolation level read uncommitted",
        "settings",
        {"tx_isolation": "READ-UNCOMMITTED"},
    ),
    (
        "SET foreign_key_checks = 0, unique_checks = 0",
        "settings",
        {"foreign_key_checks": "0", "unique_checks": "0"},
    ),
    (
        "SET sql_mode = 'TRADITIONAL', time_zone = '+00:00'",
        "settings",
        {"sql_mode": "TRADITIONAL", "time_zone": "+00:00"},
    ),
    ("SET time_zone = _utf8mb4'+00:00'", "settings", {"time_zone": "+00:00"}),
    ("SET time_zone = N'+00:00'", "settings", {"time_zone": "+00:00"}),
    ("SET time_zone := '+00:00'", "settings", {"time_zone": "+00:00"}),
    ("SET sql_log_bin = 0", "settings", {"sql_log_bin": "0"}),
    ("SET timestamp = 1000000000", "settings", {"timestamp": "1000000000"}),
    (
        "SET sql_mode = 'STRICT_TRANS_TABLES' ',ANSI_QUOTES'",
        "settings",
        {"sql_mode": "STRICT_TRANS_TABLES,ANSI_QUOTES"},
    ),
    (
        "SET optimizer_switch = 'index_merge=off'",
        "settings",
        {"optimizer_switch": "index_merge=off"},
    ),
    ("SET group_concat_max_len = 1024 * 1024", "settings", {"group_concat_max_len": None}),
    (
        "SET time_zone = 'it''s', sql_mode = 'a\\'b'",
        "settings",
        {"time_zone": "it's", "sql_mode": "a'b"},
    ),
    ("SET NAMES utf8mb4, time_zone = '+00:00'", "settings", {**UTF8MB4, "time_zone": "+00:00"}),
    ("SET big_tables = ON", "settings", {"big_tables": "ON"}),
    ("SET unique_checks = off", "settings", {"unique_checks": "OFF"}),
    ("SET sql_auto_is_null = FALSE", "settings", {"sql_auto_is_null": "FALSE"}),
    ("SET lc_time_names = 'de_DE'", "settings", {"lc_time_names": "de_DE"}),
    ("SET timestamp = UNIX_TIMESTAMP()", "settings", {"timestamp": None}),
    ("SET @@session.time_zone = CURRENT_USER", "settings", {"time_zone": None}),
    ("SET div_precision_increment = 0x0A", "settings", {"div_precision_increment": "0x0A"}),
    # ---- autocommit, in every spelling the clients use
    ("SET autocommit=0", "autocommit", {"autocommit": "0"}),
    ("SET AUTOCOMMIT = 1", "autocommit", {"autocommit": "1"}),
    ("set autocommit=0", "autocommit", {"autocommit": "0"}),
    ("SET @@session.autocommit = OFF", "autocommit", {"autocommit": "OFF"}),
    ("SET @@autocommit = ON", "autocommit", {"autocommit": "ON"}),
    ("SET SESSION autocommit = TRUE", "autocommit", {"autocommit": "TRUE"}),
    ("SET autocommit := 1", "autocommit", {"autocommit": "1"}),
    ("SET LOCAL autocommit = 0", "autocommit", {"autocommit": "0"}),
    ("SET @@LOCAL.AUTOCOMMIT=1", "autocommit", {"autocommit": "1"}),
    # ---- global: not a session taint
    ("SET GLOBAL max_connections = 500", "global", {}),
    ("SET @@global.time_zone = '+00:00'", "global", {}),
    ("SET PERSIST max_connections = 500", "global", {}),
    ("SET PERSIST_ONLY max_connections = 500", "global", {}),
    ("SET @@persist.max_connections = 500", "global", {}),
    ("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED", "global", {}),
    ("SET GLOBAL autocommit = 0", "global", {}),
    (
        "SET GLOBAL sort_buffer_size = 1000000, SESSION sort_buffer_size = 2000000",
        "global settings",
        {"sort_buffer_size": "2000000"},
    ),
    ("SET GLOBAL a = 1, b = 2", "global", {}),
    ("SET GLOBAL a = 1, @@b = 2", "global settings", {"b": "2"}),
    ("SET DEFAULT ROLE r FOR u", "global", {}),
    # ---- next_tx: SET TRANSACTION without scope
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "next_tx", {}),
    ("SET TRANSACTION READ ONLY", "next_tx", {}),
    ("set transaction isolation level read committed", "next_tx", {}),
    ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", "next_tx", {}),
    # ---- schema
    ("USE test", "schema", {}),
    ("USE `my db`", "schema", {}),
    ("use Test", "schema", {}),
    ("/*!40101 USE db */", "schema", {}),
    # ---- user variables
    ("SET @x = 1", "user_var", {}),
    ("SET @x := 'a'", "user_var", {}),
    ("SET @x = NULL", "user_var", {}),
    ("SET @`my var` = 1", "user_var", {}),
    ("SET @'q' = 2", "user_var", {}),
    ('SET @"q" = 2', "user_var", {}),
    ("SELECT @y := 1", "user_var", None),
    ("SELECT @a:=1", "user_var", None),
    ("SELECT 1 INTO @z", "user_var", None),
    ("SELECT a, b INTO @a, @b FROM t WHERE id = 1", "user_var", None),
    ("SELECT a FROM t WHERE id = 1 INTO @a", "user_var", None),
    ("DO @q := 5", "user_var", None),
    ("UPDATE t SET a = @n := a + 1", "user_var", None),
    ("SELECT id, @rank := @rank + 1 AS rank FROM scores", "user_var", None),
    ("SELECT * FROM t WHERE (@x := 1) = 1", "user_var", None),
    ("INSERT INTO t SELECT @v := 1", "user_var", None),
    ("SET @a = 1, @b = 2", "user_var", {}),
    ("SET @x = 1, time_zone = '+00:00'", "user_var settings", {"time_zone": "+00:00"}),
    ("SET @x = (SELECT MAX(id) FROM t)", "user_var", {}),
    ("SET @x = @y := 2", "user_var", {}),
    (
        "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */",
        "user_var settings",
        {"sql_mode": "NO_AUTO_VALUE_ON_ZERO"},
    ),
    ("/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */", "user_var", {}),
    ("LOAD DATA INFILE '/tmp/x' INTO TABLE t (@c1) SET a = @c1", "user_var", None),
    ("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t", "", None),
    # ---- temporary tables
    ("CREATE TEMPORARY TABLE t (a INT)", "temp_table", None),
    ("CREATE TEMPORARY TABLE IF NOT EXISTS t LIKE u", "temp_table", None),
    ("create temporary table t select * from u", "temp_table", None),
    ("CREATE OR REPLACE TEMPORARY TABLE t (a int)", "temp_table", None),
    ("CREATE TEMPORARY TABLE t ENGINE=MEMORY AS SELECT 1", "temp_table", None),
    ("CREATE TEMPORARY TABLE t SELECT GET_LOCK('x', 1)", "temp_table advisory_lock", None),
    ("CREATE TEMPORARY SEQUENCE s", "temp_table", None),
    ("DROP TEMPORARY TABLE t", "temp_table_drop", None),
    ("DROP TEMPORARY TABLE IF EXISTS t1, t2", "temp_table_drop", None),
    ("drop temporary table `t`", "temp_table_drop", None),
    # ---- advisory locks
    ("SELECT GET_LOCK('a', 10)", "advisory_lock", None),
    ("DO GET_LOCK('a', 1)", "advisory_lock", None),
    ("INSERT INTO t SELECT GET_LOCK('x', 2)", "advisory_lock", None),
    ("SELECT get_lock('a', 0) AS l", "advisory_lock", None),
    ("SELECT GET_LOCK ('a', 1)", "advisory_lock", None),
    ("SELECT GET_LOCK/* c */('a', 1)", "advisory_lock", None),
    ("SET @l = GET_LOCK('a', 1)", "user_var advisory_lock", {}),
    ("SELECT * FROM t WHERE GET_LOCK(CONCAT('row', id), 0)", "advisory_lock", None),
    ("UPDATE t SET a = GET_LOCK('a', 1) WHERE id = 1", "advisory_lock", None),
    ("SELECT SERVICE_GET_WRITE_LOCKS('ns', 'a', 10)", "advisory_lock", None),
    ("SELECT RELEASE_LOCK('a')", "advisory_unlock", None),
    ("DO RELEASE_LOCK('a')", "advisory_unlock", None),
    ("SELECT RELEASE_ALL_LOCKS()", "advisory_unlock", None),
    ("SELECT IS_FREE_LOCK('a')", "", None),
    ("SELECT IS_USED_LOCK('a')", "", None),
    # ---- table locks
    ("LOCK TABLES t READ", f"table_lock {IC}", None),
    ("LOCK TABLE t WRITE, u READ LOCAL", f"table_lock {IC}", None),
    ("lock tables t as a read", f"table_lock {IC}", None),
    ("FLUSH TABLES WITH READ LOCK", f"table_lock {IC}", None),
    ("FLUSH TABLES t1, t2 WITH READ LOCK", f"table_lock {IC}", None),
    ("FLUSH LOCAL TABLES t FOR EXPORT", f"table_lock {IC}", None),
    ("UNLOCK TABLES", "table_unlock", None),
    ("unlock table", "table_unlock", None),
    ("FLUSH PRIVILEGES", IC, None),
    ("LOCK INSTANCE FOR BACKUP", "table_lock", None),
    ("UNLOCK INSTANCE", "table_unlock", None),
    ("BACKUP STAGE START", "table_lock", None),
    ("BACKUP STAGE BLOCK_COMMIT", "table_lock", None),
    ("BACKUP STAGE END", "table_unlock", None),
    ("BACKUP LOCK t", "table_lock", None),
    ("BACKUP UNLOCK", "table_unlock", None),
    # ---- transactions
    ("BEGIN", "tx_begin", None),
    ("BEGIN WORK", "tx_begin", None),
    ("begin", "tx_begin", None),
    ("START TRANSACTION", "tx_begin", None),
    ("START TRANSACTION READ ONLY", "tx_begin", None),
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT", "tx_begin", None),
    ("START TRANSACTION READ WRITE, WITH CONSISTENT SNAPSHOT", "tx_begin", None),
    ("COMMIT", "tx_end", None),
    ("commit", "tx_end", None),
    ("COMMIT WORK", "tx_end", None),
    ("COMMIT AND CHAIN", "tx_end tx_begin", None),
    ("COMMIT AND NO CHAIN NO RELEASE", "tx_end", None),
    ("COMMIT RELEASE", "tx_end disconnect", None),
    ("ROLLBACK", "tx_end", None),
    ("ROLLBACK WORK", "tx_end", None),
    ("ROLLBACK AND CHAIN", "tx_end tx_begin", None),
    ("ROLLBACK RELEASE", "tx_end disconnect", None),
    ("CREATE TABLE t (a INT)", IC, None),
    ("ALTER TABLE t ADD COLUMN b INT", IC, None),
    ("DROP TABLE t", IC, None),
    ("DROP TABLE IF EXISTS a, b", IC, None),
    ("TRUNCATE TABLE t", IC, None),
    ("RENAME TABLE a TO b", IC, None),
    ("CREATE INDEX i ON t (a)", IC, None),
    ("GRANT SELECT ON db.* TO 'u'@'%'", IC, None),
    ("REVOKE ALL PRIVILEGES ON *.* FROM 'u'@'%'", IC, None),
    ("CREATE USER 'u'@'localhost' IDENTIFIED BY 'p'", IC, None),
    ("DROP DATABASE d", IC, None),
    ("CREATE DATABASE IF NOT EXISTS d", IC, None),
    ("ANALYZE TABLE t", IC, None),
    ("OPTIMIZE TABLE t", IC, None),
    ("REPAIR TABLE t", IC, None),
    ("CHECK TABLE t", IC, None),
    ("CREATE PROCEDURE p() SELECT GET_LOCK('a', 1)", IC, None),
    (
        "CREATE DEFINER=`root`@`localhost` FUNCTION f() RETURNS INT RETURN LAST_INSERT_ID()",
        IC,
        None,
    ),
    (
        "CREATE OR REPLACE ALGORITHM=MERGE DEFINER=CURRENT_USER SQL SECURITY INVOKER VIEW v AS SELECT @x",
        IC,
        None,
    ),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @n = @n + 1", IC, None),
    ("CREATE TABLE t2 AS SELECT GET_LOCK('a', 1)", f"{IC} advisory_lock", None),
    ("START SLAVE", IC, None),
    ("STOP REPLICA", IC, None),
    ("RESET QUERY CACHE", IC, None),
    ("INSTALL SONAME 'auth_ed25519'", IC, None),
    # ---- savepoints
    ("SAVEPOINT sa_savepoint_1", "savepoint", None),
    ("ROLLBACK TO SAVEPOINT sa_savepoint_1", "savepoint", None),
    ("ROLLBACK TO sp", "savepoint", None),
    ("ROLLBACK WORK TO SAVEPOINT sp", "savepoint", None),
    ("RELEASE SAVEPOINT sa_savepoint_1", "savepoint", None),
    ("SAVEPOINT `s140095_x1`", "savepoint", None),
    # ---- XA
    ("XA START 'x'", "xa", None),
    ("XA BEGIN 'x'", "xa", None),
    ("XA END 'x'", "xa", None),
    ("XA PREPARE 'x'", "xa", None),
    ("XA COMMIT 'x'", "xa", None),
    ("XA COMMIT 'x' ONE PHASE", "xa", None),
    ("XA ROLLBACK 'x'", "xa", None),
    ("XA RECOVER", "xa", None),
    ("xa start 'a', 'b', 1", "xa", None),
    # ---- SQL-level prepared statements
    ("PREPARE s FROM 'SELECT 1'", "prepare", None),
    ("PREPARE stmt1 FROM @sql", "prepare", None),
    ("prepare s from 'SET @x = ?'", "prepare", None),
    ("DEALLOCATE PREPARE s", "deallocate", None),
    ("DROP PREPARE s", "deallocate", None),
    ("EXECUTE s", "execute", None),
    ("EXECUTE s USING @a, @b", "execute", None),
    ("EXECUTE IMMEDIATE 'SELECT 1'", "", None),
    ("EXECUTE IMMEDIATE 'SET @x = 1'", "user_var", None),
    ("EXECUTE IMMEDIATE 'SET time_zone = ''+01:00'''", "settings", {"time_zone": "+01:00"}),
    ("EXECUTE IMMEDIATE CONCAT('SELECT ', 1)", "execute", None),
    ("EXECUTE IMMEDIATE @sql", "execute", None),
    ("EXECUTE IMMEDIATE 'SELECT GET_LOCK(''a'', 1)'", "advisory_lock", None),
    # ---- found rows, last insert id, row count, sequences
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", "found_rows", None),
    ("select sql_calc_found_rows id from t limit 5", "found_rows", None),
    ("SELECT FOUND_ROWS()", "found_rows", None),
    ("select found_rows() as total", "found_rows", None),
    ("SELECT LAST_INSERT_ID()", "last_insert_id", None),
    ("SELECT last_insert_id()", "last_insert_id", None),
    ("INSERT INTO child (parent_id) VALUES (LAST_INSERT_ID())", "last_insert_id", None),
    ("UPDATE seq SET id = LAST_INSERT_ID(id + 1)", "last_insert_id", None),
    ("SELECT @@identity", "last_insert_id", None),
    ("SELECT @@IDENTITY AS id", "last_insert_id", None),
    ("SELECT @@last_insert_id", "last_insert_id", None),
    ("SELECT ROW_COUNT()", "row_count", None),
    ("SELECT LASTVAL(s)", "lastval", None),
    ("SELECT PREVIOUS VALUE FOR s", "lastval", None),
    ("SELECT NEXTVAL(s)", "sequence", None),
    ("SELECT NEXT VALUE FOR s", "sequence", None),
    # ---- warnings and diagnostics
    ("SHOW WARNINGS", "warnings", None),
    ("SHOW WARNINGS LIMIT 10", "warnings", None),
    ("show errors", "warnings", None),
    ("SHOW COUNT(*) WARNINGS", "warnings", None),
    ("SHOW COUNT(*) ERRORS", "warnings", None),
    ("GET DIAGNOSTICS @n = NUMBER", "warnings user_var", None),
    (
        "GET DIAGNOSTICS CONDITION 1 @p1 = RETURNED_SQLSTATE, @p2 = MESSAGE_TEXT",
        "warnings user_var",
        None,
    ),
    ("GET CURRENT DIAGNOSTICS CONDITION 1 @e = MYSQL_ERRNO", "warnings user_var", None),
    ("SELECT @@warning_count", "warnings", None),
    ("SELECT @@session.error_count", "warnings", None),
    # ---- HANDLER
    ("HANDLER t OPEN", "handler", None),
    ("HANDLER t OPEN AS h", "handler", None),
    ("HANDLER h READ FIRST", "handler", None),
    ("HANDLER h READ idx NEXT WHERE a > 1 LIMIT 5", "handler", None),
    ("HANDLER h CLOSE", "handler", None),
    ("HANDLER db.t OPEN", "handler", None),
    # ---- routines
    ("CALL p()", "routine", None),
    ("CALL db.p(1, 'a')", "routine", None),
    ("call p", "routine", None),
    ("CALL p(@out)", "routine user_var", None),
    ("BEGIN NOT ATOMIC SELECT 1; END", "routine unknown", None),
    # ---- role, password, session tracking, one-shot variables
    ("SET ROLE r", "role", None),
    ("SET ROLE NONE", "role", None),
    ("SET PASSWORD = PASSWORD('x')", f"password {IC}", None),
    ("SET PASSWORD FOR 'u'@'h' = 'hash'", f"password {IC}", None),
    (
        "SET session_track_system_variables = '*'",
        "session_track",
        {"session_track_system_variables": "*"},
    ),
    (
        "SET @@session.session_track_state_change = ON",
        "session_track",
        {"session_track_state_change": "ON"},
    ),
    ("SET SESSION session_track_schema = OFF", "session_track", {"session_track_schema": "OFF"}),
    ("SET GLOBAL session_track_schema = OFF", "global", {}),
    ("SET insert_id = 5", "settings", {"insert_id": "5"}),
    ("SET last_insert_id = 5", "settings", {"last_insert_id": "5"}),
    # ---- unknown: never clean
    ("FOO BAR", "unknown", None),
    ("SELECT @x, 'unterminated", "unknown", None),
    ("SELECT @x /* unterminated", "unknown", None),
    ("SELECT @x, `unterminated", "unknown", None),
    ("SET @x = 'unterminated", "unknown", None),
    ("/*!40101 SET NAMES utf8", "unknown settings", None),
    ("SET", "unknown", None),
    ("SET x", "unknown", None),
    ("SET x =", "unknown", None),
    ("SET GLOBAL", "unknown", None),
    ("'just a string'", "unknown", None),
    ("DELIMITER //", "unknown", None),
    ("BINLOG 'abc'", "unknown", None),
    ("DECLARE x INT", "unknown", None),
    ("END", "unknown", None),
    ("(SET @x = 1)", "unknown", None),
    ("XA FOO", "unknown", None),
    ("HANDLER t FOO", "unknown", None),
    ("LOCK t", "unknown", None),
    ("START SOMETHING", "unknown", None),
    ("SET NAMES", "unknown", None),
    ("USE", "unknown", None),
    ("SET TRANSACTION ISOLATION LEVEL SOMETIMES", "unknown", None),
    ("SET STATEMENT x=1", "unknown", None),
    ("COMMIT LATER", "unknown", None),
    # ---- clean, and the traps that must stay clean
    ("SELECT 1", "", None),
    ("SELECT 'SET NAMES x'", "", None),
    ("SELECT `lock` FROM t", "", None),
    ("SELECT /* GET_LOCK('a',1) */ 1", "", None),
    ("SELECT 1 -- SET @x = 1", "", None),
    ("SELECT 1 # GET_LOCK('a', 1)", "", None),
    ("SELECT 'a@b.com'", "", None),
    ("INSERT INTO users (email) VALUES ('bob@example.com')", "", None),
    ('SELECT "SET @x = 1"', "", None),
    ("SELECT 'it''s; SET @x=1'", "", None),
    ("SELECT 'a\\'; SET @x=1; -- '", "", None),
    ('SELECT "a\\" ; SET @x=1; -- "', "", None),
    ("SELECT @@sql_mode", "", None),
    ("SELECT @@session.time_zone, @@global.time_zone", "", None),
    ("SELECT @x", "", None),
    ("SELECT * FROM t WHERE a = @x", "", None),
    ("SELECT @x = 1", "", None),
    ("SELECT * FROM t FOR UPDATE", "", None),
    ("SELECT * FROM t LOCK IN SHARE MODE", "", None),
    ("SELECT * FROM t WHERE name = 'GET_LOCK(1)'", "", None),
    ("SELECT get_lock FROM t", "", None),
    ("SELECT last_insert_id FROM t", "", None),
    ("SELECT `GET_LOCK` FROM t", "", None),
    ("UPDATE t SET a = 1 WHERE id = 2", "", None),
    ("DELETE FROM t WHERE id = 1", "", None),
    ("REPLACE INTO t VALUES (1)", "", None),
    ("WITH c AS (SELECT 1) SELECT * FROM c", "", None),
    ("(SELECT 1) UNION (SELECT 2)", "", None),
    ("SHOW VARIABLES LIKE 'sql_mode'", "", None),
    ("SHOW FULL PROCESSLIST", "", None),
    ("SHOW SESSION STATUS", "", None),
    ("DESCRIBE t", "", None),
    ("EXPLAIN SELECT * FROM t", "", None),
    ("EXPLAIN ANALYZE SELECT GET_LOCK('a', 1)", "advisory_lock", None),
    ("ANALYZE FORMAT=JSON SELECT @x := 1", "user_var", None),
    ("KILL QUERY 5", "", None),
    ("SELECT 1;", "", None),
    ("  select 1  ", "", None),
    ("SELECT 1 /* SET @x=1 */ ; ", "", None),
    ("SET STATEMENT max_statement_time=10 FOR SELECT * FROM t", "", {}),
    ("SET STATEMENT sql_mode='' FOR UPDATE t SET a = 1", "", {}),
    ("SET STATEMENT max_statement_time=1 FOR SELECT GET_LOCK('a', 1)", "advisory_lock", {}),
    ("SELECT 'x' INTO OUTFILE '/tmp/x'", "", None),
    ("SELECT * FROM t WHERE a IN (SELECT b FROM u)", "", None),
    ("CHECKSUM TABLE t", "", None),
    ("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'x'", "", None),
    ("SELECT 'SQL_CALC_FOUND_ROWS'", "", None),
    ("SELECT x'40', b'01', 0x40", "", None),
    ("SELECT 1 -- comment with GET_LOCK(", "", None),
    ("SELECT 1--1", "", None),
    ("SELECT * FROM `t;SET @x=1`", "", None),
    ("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t", "", None),
    ("SELECT CONNECTION_ID()", "connection_id", None),
    ("HELP 'SET'", "", None),
    ("/* leading comment */ SELECT 1", "", None),
    # ---- multi-statement texts carry every statement's effects
    ("SELECT 1; SET NAMES utf8", "settings", names("utf8")),
    (
        "SET NAMES utf8; SET autocommit=0",
        "settings autocommit",
        {**names("utf8"), "autocommit": "0"},
    ),
    ("SELECT 1; SELECT GET_LOCK('a', 1)", "advisory_lock", None),
    ("BEGIN; INSERT INTO t VALUES (1); COMMIT", "tx_begin tx_end", None),
    ("SELECT 1;;SELECT 2", "", None),
    ("SELECT 1; /* x */ ; SELECT 2;", "", None),
    # ---- executable comments run
    ("/*!40101 SET NAMES utf8 */", "settings", names("utf8")),
    ("/*!40101 SET NAMES utf8 */;", "settings", names("utf8")),
    ("/*M!100101 SET @x = 1 */", "user_var", {}),
    ("/*m!100101 SET @x = 1 */", "user_var", {}),
    ("SELECT 1 /*!, GET_LOCK('a', 1) */", "advisory_lock", None),
    ("SELECT 1 /*!50000 , @x := 2 */", "user_var", None),
    (
        "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */",
        "user_var settings",
        {"unique_checks": "0"},
    ),
    ("/*!40000 ALTER TABLE `t` DISABLE KEYS */", IC, None),
    (
        "/*!50003 CREATE*/ /*!50020 DEFINER=`root`@`localhost`*/ /*!50003 PROCEDURE p() SELECT 1 */",
        IC,
        None,
    ),
    ("/*!40101 SET @a = '*/' */", "user_var", {}),
    # ---- SET sql_mode inside a batch changes how the rest is lexed
    ('SET sql_mode = \'ANSI_QUOTES\'; SELECT "a\\" ; SET @x=1; -- "', "settings user_var", None),
    (
        "SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\\'; SET @y=1; -- '",
        "settings user_var",
        None,
    ),
    (
        'SET sql_mode = CONCAT(@@sql_mode, \',ANSI_QUOTES\'); SELECT "a\\" ; SET @x=1; -- "',
        "settings user_var",
        None,
    ),
    ("SET sql_mode = 'ANSI'; SELECT \"it's\"", "settings", {"sql_mode": "ANSI"}),
    ("SET sql_mode = ''; SELECT 'a\\'; SET @y=1; -- '", "settings", {"sql_mode": ""}),
]

# ---- what real clients send (../shared/reference/client-init-statements.md)
CLIENTS: list[tuple[str, str, dict[str, str | None] | None]] = [
    # PyMySQL / mysqlclient / peewee / go-sql-driver connect
    ("SET NAMES utf8mb4", "settings", UTF8MB4),
    ("SET AUTOCOMMIT = 0", "autocommit", {"autocommit": "0"}),
    ("SET AUTOCOMMIT = 1", "autocommit", {"autocommit": "1"}),
    ("SET autocommit=0", "autocommit", {"autocommit": "0"}),
    ("SET autocommit=1", "autocommit", {"autocommit": "1"}),
    # mysql-connector-python
    (
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
        "settings",
        names("utf8mb4", "utf8mb4_general_ci"),
    ),
    ("SET @@session.autocommit = OFF", "autocommit", {"autocommit": "OFF"}),
    ("set autocommit=0", "autocommit", {"autocommit": "0"}),
    # SQLAlchemy dialect initialisation
    ("SELECT VERSION()", "", {}),
    ("SELECT DATABASE()", "", {}),
    ("SELECT @@tx_isolation", "", {}),
    ("SELECT @@sql_mode", "", {}),
    ("SELECT @@lower_case_table_names", "", {}),
    ("ROLLBACK", "tx_end", {}),
    # Django
    (
        "SELECT VERSION(), @@sql_mode, @@default_storage_engine, @@sql_auto_is_null, "
        "@@lower_case_table_names, CONVERT_TZ('2001-01-01 01:00:00', 'UTC', 'UTC') IS NOT NULL",
        "",
        {},
    ),
    (
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "settings",
        {"tx_isolation": "READ-COMMITTED"},
    ),
    # MariaDB Connector/J 2.7
    (
        "set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')",
        "autocommit settings",
        {"autocommit": "1", "sql_mode": None},
    ),
    (
        "SELECT @@max_allowed_packet,@@system_time_zone,@@time_zone,@@auto_increment_increment",
        "",
        {},
    ),
    # per transaction
    ("BEGIN", "tx_begin", {}),
    ("COMMIT", "tx_end", {}),
    ("commit", "tx_end", {}),
    ("START TRANSACTION", "tx_begin", {}),
    ("START TRANSACTION READ ONLY", "tx_begin", {}),
    ("SAVEPOINT sa_savepoint_1", "savepoint", {}),
    ("ROLLBACK TO SAVEPOINT sa_savepoint_1", "savepoint", {}),
    ("RELEASE SAVEPOINT sa_savepoint_1", "savepoint", {}),
    ("SAVEPOINT `s140095_x1`", "savepoint", {}),
    ("RELEASE SAVEPOINT `s140095_x1`", "savepoint", {}),
    ("ROLLBACK TO SAVEPOINT `s140095_x1`", "savepoint", {}),
    ("SAVEPOINT `s3f2a9c0e1b7d4f6a8c5e2d1b0a9f8e7d`", "savepoint", {}),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", "next_tx", {}),
]

ALL = CASES + CLIENTS


def test_table_is_big_enough() -> None:
    assert len(ALL) >= 200
    used = set()
    for _, effects, _ in ALL:
        used |= set(effects.split())
    # every effect of the vocabulary is exercised by the table
    assert used == set(ALL_EFFECTS), set(ALL_EFFECTS) - used


@pytest.mark.parametrize(("sql", "effects", "settings"), ALL, ids=[f"{i}" for i in range(len(ALL))])
def test_table(sql: str, effects: str, settings: dict[str, str | None] | None) -> None:
    c = classify(sql)
    assert c.effects == frozenset(effects.split()), (sql, c.unknown_reason)
    if settings is not None:
        assert dict(c.settings) == settings, sql
    # invariants that hold for every statement
    assert c.effects <= ALL_EFFECTS
    if not c.effects:
        assert c.pin is None and not c.settings and not c.needs
    if "unknown" in c.effects:
        assert c.pin == "unclassified statement" and c.unknown_reason
    assert c.needs <= c.effects
    # the same text as bytes gives the same answer
    b = classify(sql.encode())
    assert b.effects == c.effects and dict(b.settings) == dict(c.settings)
    # the gate never calls an effectful statement clean
    if is_clean(sql):
        assert not c.effects
    # the cache and the full analysis agree
    a = analyse(sql)
    assert a.effects == c.effects and a.pin == c.pin


def test_gate_clean_even_if_unterminated() -> None:
    # No trigger anywhere in the text: whatever the server makes of the
    # unterminated string (a syntax error), nothing can have an effect.
    assert classify("SELECT 'unterminated").effects == frozenset()
    assert analyse("SELECT 'unterminated").effects == {"unknown"}
