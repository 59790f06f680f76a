"""Adversarial corpus for ``sqlcheck.check_read_only``, the parser-based allow-list.

Each refused case names the technique, the statement and a phrase the refusal must hold
(the offending function, relation, type or statement kind). The legitimate corpus holds
analytical queries that must pass. No database: the execution layer has its own tests.
"""

from __future__ import annotations

import pytest

import test_verbatim_queries as verbatim
from pgtrail.errors import ReportFileError
from pgtrail.read import reports, sqlcheck

Case = tuple[str, str, str]

UNICODE_ESCAPES: list[Case] = [
    ("u&-pg_read_file", "SELECT U&\"\\0070g_read_file\"('/etc/passwd')", "pg_read_file()"),
    (
        "u&-whole-name",
        "SELECT U&\"\\0070\\0067\\005f\\006c\\0073\\005f\\0064\\0069\\0072\"('.')",
        "pg_ls_dir()",
    ),
    ("u&-plus-escape", 'SELECT U&"\\+000070g_sleep"(1)', "pg_sleep()"),
    ("u&-uescape", "SELECT U&\"!0070g_read_file\" UESCAPE '!'('/etc/passwd')", "pg_read_file()"),
    ("u&-set_config", "SELECT U&\"set\\005fconfig\"('a.b', 'c', false)", "set_config()"),
    (
        "u&-query_to_xml",
        "SELECT U&\"query\\005fto\\005fxml\"('SELECT 1', true, true, '')",
        "query_to_xml()",
    ),
    ("u&-lo_import", "SELECT U&\"lo\\005fimport\"('/etc/passwd')", "lo_import()"),
    ("u&-relation", 'SELECT * FROM U&"pg\\005fauthid"', "pg_authid"),
    (
        "u&-schema-and-relation",
        'SELECT * FROM U&"pg\\005fcatalog".U&"pg\\005fshadow"',
        "pg_catalog.pg_shadow",
    ),
    (
        "u&-schema-of-call",
        "SELECT U&\"pg\\005fcatalog\".pg_read_file('/etc/passwd')",
        "pg_read_file()",
    ),
    ("u&-type", "SELECT 'pg_class'::U&\"reg\\0063lass\"", "regclass"),
    ("u&-in-cte", "WITH x AS (SELECT U&\"dblink\\005fexec\"('a', 'b')) SELECT 1", "dblink_exec()"),
    (
        "u&-in-lateral",
        "SELECT * FROM logs_execution, LATERAL U&\"pg\\005fls\\005fdir\"('.') AS d",
        "pg_ls_dir()",
    ),
    (
        "u&-partition",
        'SELECT * FROM U&"logs\\005fllm\\005fexecution\\005fp20261101"',
        "logs_llm_execution_p20261101",
    ),
    (
        "u&-string-literal-not-a-call",
        "SELECT pg_read_file(U&'\\002fetc\\002fpasswd')",
        "pg_read_file()",
    ),
]

QUOTED_IDENTIFIERS: list[Case] = [
    ("quoted-upper-case", "SELECT \"PG_READ_FILE\"('/etc/passwd')", "PG_READ_FILE()"),
    ("quoted-mixed-case", 'SELECT "Pg_Sleep"(1)', "Pg_Sleep()"),
    ("quoted-lower-case", "SELECT \"pg_read_file\"('/etc/passwd')", "pg_read_file()"),
    ("quoted-upper-count", 'SELECT "COUNT"(*) FROM logs_execution', "COUNT()"),
    ("quoted-relation-case", 'SELECT * FROM "PG_AUTHID"', "PG_AUTHID"),
    ("quoted-relation-space", 'SELECT * FROM "logs_execution "', "logs_execution "),
    ("quoted-function-dot", 'SELECT "pg_catalog.pg_sleep"(1)', "pg_catalog.pg_sleep()"),
    ("unquoted-upper-is-lowered", "SELECT PG_READ_FILE('/etc/passwd')", "pg_read_file()"),
    ("quoted-type-case", 'SELECT 1::"INT"', "INT"),
]

SCHEMA_QUALIFIED: list[Case] = [
    (
        "pg_catalog-read_file",
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        "pg_catalog.pg_read_file()",
    ),
    ("pg_catalog-sleep", "SELECT pg_catalog.pg_sleep(1)", "pg_catalog.pg_sleep()"),
    ("public-evil", "SELECT public.evil()", "public.evil()"),
    ("public-count", "SELECT public.count(*) FROM logs_execution", "public.count()"),
    ("public-lower", "SELECT public.lower('A')", "public.lower()"),
    ("pg_temp-function", "SELECT pg_temp.f()", "pg_temp.f()"),
    ("three-part-function", "SELECT db.pg_catalog.lower('a')", "db.pg_catalog.lower()"),
    (
        "information_schema-function",
        "SELECT information_schema._pg_truetypid(1, 2)",
        "information_schema._pg_truetypid()",
    ),
    ("other-schema-relation", "SELECT * FROM app.users", "app.users"),
    (
        "pg_catalog-log-table",
        "SELECT * FROM pg_catalog.logs_execution",
        "pg_catalog.logs_execution",
    ),
    (
        "catalog-qualified-relation",
        "SELECT * FROM mydb.public.logs_execution",
        "mydb.public.logs_execution",
    ),
    ("pg_temp-relation", "SELECT * FROM pg_temp.logs_execution", "pg_temp.logs_execution"),
    ("operator-public", "SELECT 1 OPERATOR(public.+) 2", "public.+"),
    ("operator-pg_temp", "SELECT 'a' OPERATOR(pg_temp.===) 'b'", "pg_temp.==="),
    ("custom-operator-symbol", "SELECT 1 === 2", "==="),
    (
        "order-by-using-custom",
        "SELECT 1 FROM logs_execution ORDER BY 1 USING OPERATOR(public.<)",
        "public.<",
    ),
    (
        "operator-any-subquery",
        "SELECT 1 WHERE 1 OPERATOR(public.=) ANY (SELECT 1 FROM logs_execution)",
        "public.=",
    ),
    ("setseed", "SELECT setseed(0.5)", "setseed()"),
    ("public-type", "SELECT 1::public.mytype", "public.mytype"),
]

SQL_EXECUTING: list[Case] = [
    (
        "query_to_xml",
        "SELECT query_to_xml('DELETE FROM logs_execution RETURNING 1', true, true, '')",
        "query_to_xml()",
    ),
    (
        "query_to_xmlschema",
        "SELECT query_to_xmlschema('SELECT 1', true, true, '')",
        "query_to_xmlschema()",
    ),
    (
        "query_to_xml_and_xmlschema",
        "SELECT query_to_xml_and_xmlschema('SELECT 1', true, true, '')",
        "query_to_xml_and_xmlschema()",
    ),
    ("cursor_to_xml", "SELECT cursor_to_xml('c', 1, true, true, '')", "cursor_to_xml()"),
    (
        "cursor_to_xmlschema",
        "SELECT cursor_to_xmlschema('c', true, true, '')",
        "cursor_to_xmlschema()",
    ),
    ("table_to_xml", "SELECT table_to_xml('pg_authid', true, true, '')", "table_to_xml()"),
    (
        "table_to_xmlschema",
        "SELECT table_to_xmlschema('pg_authid', true, true, '')",
        "table_to_xmlschema()",
    ),
    (
        "table_to_xml_and_xmlschema",
        "SELECT table_to_xml_and_xmlschema('t', true, true, '')",
        "table_to_xml_and_xmlschema()",
    ),
    ("schema_to_xml", "SELECT schema_to_xml('pg_catalog', true, true, '')", "schema_to_xml()"),
    (
        "schema_to_xmlschema",
        "SELECT schema_to_xmlschema('public', true, true, '')",
        "schema_to_xmlschema()",
    ),
    (
        "schema_to_xml_and_xmlschema",
        "SELECT schema_to_xml_and_xmlschema('public', true, true, '')",
        "schema_to_xml_and_xmlschema()",
    ),
    ("database_to_xml", "SELECT database_to_xml(true, true, '')", "database_to_xml()"),
    (
        "database_to_xmlschema",
        "SELECT database_to_xmlschema(true, true, '')",
        "database_to_xmlschema()",
    ),
    (
        "database_to_xml_and_xmlschema",
        "SELECT database_to_xml_and_xmlschema(true, true, '')",
        "database_to_xml_and_xmlschema()",
    ),
    (
        "ts_stat",
        "SELECT * FROM ts_stat('SELECT to_tsvector(rolpassword) FROM pg_authid')",
        "ts_stat()",
    ),
    (
        "ts_rewrite-with-query",
        "SELECT ts_rewrite('a'::tsquery, 'SELECT t, s FROM aliases')",
        "ts_rewrite()",
    ),
    ("xpath", "SELECT xpath('/a', '<a/>'::xml)", "xpath()"),
    ("xpath_exists", "SELECT xpath_exists('/a', '<a/>')", "xpath_exists()"),
    ("xmlexists", "SELECT xmlexists('/a' PASSING '<a/>')", "xmlexists()"),
    ("xml-cast", "SELECT '<a/>'::xml", "xml"),
    (
        "xmlparse",
        "SELECT xmlparse(document '<!DOCTYPE a SYSTEM \"file:///etc/passwd\"><a/>')",
        "XML expression",
    ),
    ("xmlelement", "SELECT xmlelement(name a, 'x')", "XML expression"),
    ("xmlserialize", "SELECT xmlserialize(content 'a' AS text)", "XMLSERIALIZE"),
    ("xmltable", "SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS x int)", "XMLTABLE"),
    ("xmlagg", "SELECT xmlagg(x) FROM logs_execution", "xmlagg()"),
    ("dblink", "SELECT * FROM dblink('dbname=postgres', 'DROP TABLE x') AS t (x text)", "dblink()"),
    ("dblink_exec", "SELECT dblink_exec('dbname=postgres', 'DROP TABLE x')", "dblink_exec()"),
    ("dblink_connect", "SELECT dblink_connect('c', 'dbname=postgres')", "dblink_connect()"),
    ("dblink_send_query", "SELECT dblink_send_query('c', 'SELECT 1')", "dblink_send_query()"),
    ("postgres_fdw_handler", "SELECT postgres_fdw_handler()", "postgres_fdw_handler()"),
    (
        "postgres_fdw_disconnect",
        "SELECT postgres_fdw_disconnect_all()",
        "postgres_fdw_disconnect_all()",
    ),
    ("pg_get_viewdef", "SELECT pg_get_viewdef('x')", "pg_get_viewdef()"),
    ("tablesample", "SELECT * FROM logs_execution TABLESAMPLE system(10)", "TABLESAMPLE"),
]

LARGE_OBJECTS: list[Case] = [
    ("lo_import", "SELECT lo_import('/etc/passwd')", "lo_import()"),
    ("lo_export", "SELECT lo_export(1, '/tmp/x')", "lo_export()"),
    ("lo_create", "SELECT lo_create(0)", "lo_create()"),
    ("lo_creat", "SELECT lo_creat(-1)", "lo_creat()"),
    ("lo_unlink", "SELECT lo_unlink(1)", "lo_unlink()"),
    ("lo_from_bytea", "SELECT lo_from_bytea(0, 'x')", "lo_from_bytea()"),
    ("lo_put", "SELECT lo_put(1, 0, 'x')", "lo_put()"),
    ("lo_get", "SELECT lo_get(1)", "lo_get()"),
    ("lo_open", "SELECT lo_open(1, 131072)", "lo_open()"),
    ("lo_close", "SELECT lo_close(0)", "lo_close()"),
    ("lo_truncate", "SELECT lo_truncate(0, 0)", "lo_truncate()"),
    ("lo_truncate64", "SELECT lo_truncate64(0, 0)", "lo_truncate64()"),
    ("lo_lseek", "SELECT lo_lseek(0, 0, 0)", "lo_lseek()"),
    ("lo_tell", "SELECT lo_tell(0)", "lo_tell()"),
    ("lowrite", "SELECT lowrite(0, 'x')", "lowrite()"),
    ("loread", "SELECT loread(0, 100)", "loread()"),
    ("largeobject-table", "SELECT * FROM pg_largeobject", "pg_largeobject"),
    ("largeobject-metadata", "SELECT * FROM pg_largeobject_metadata", "pg_largeobject_metadata"),
]

FILES_AND_SERVER: list[Case] = [
    ("pg_read_file", "SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
    ("pg_read_binary_file", "SELECT pg_read_binary_file('/etc/passwd')", "pg_read_binary_file()"),
    ("pg_ls_dir", "SELECT pg_ls_dir('.')", "pg_ls_dir()"),
    ("pg_ls_logdir", "SELECT * FROM pg_ls_logdir()", "pg_ls_logdir()"),
    ("pg_ls_waldir", "SELECT * FROM pg_ls_waldir()", "pg_ls_waldir()"),
    ("pg_stat_file", "SELECT pg_stat_file('postgresql.conf')", "pg_stat_file()"),
    ("pg_file_write", "SELECT pg_file_write('x', 'y', false)", "pg_file_write()"),
    ("pg_terminate_backend", "SELECT pg_terminate_backend(1)", "pg_terminate_backend()"),
    ("pg_cancel_backend", "SELECT pg_cancel_backend(1)", "pg_cancel_backend()"),
    ("pg_signal_backend", "SELECT pg_signal_backend(1, 15)", "pg_signal_backend()"),
    (
        "pg_log_backend_memory",
        "SELECT pg_log_backend_memory_contexts(1)",
        "pg_log_backend_memory_contexts()",
    ),
    ("pg_reload_conf", "SELECT pg_reload_conf()", "pg_reload_conf()"),
    ("pg_rotate_logfile", "SELECT pg_rotate_logfile()", "pg_rotate_logfile()"),
    ("pg_switch_wal", "SELECT pg_switch_wal()", "pg_switch_wal()"),
    ("pg_promote", "SELECT pg_promote()", "pg_promote()"),
    ("pg_create_restore_point", "SELECT pg_create_restore_point('x')", "pg_create_restore_point()"),
    ("pg_backup_start", "SELECT pg_backup_start('x')", "pg_backup_start()"),
    (
        "pg_create_slot",
        "SELECT pg_create_logical_replication_slot('s', 'p')",
        "pg_create_logical_replication_slot()",
    ),
    (
        "set_config",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "set_config()",
    ),
    ("current_setting", "SELECT current_setting('data_directory')", "current_setting()"),
    ("current_setting-missing-ok", "SELECT current_setting('x', true)", "current_setting()"),
    ("pg_settings", "SELECT * FROM pg_settings", "pg_settings"),
    ("pg_stat_reset", "SELECT pg_stat_reset()", "pg_stat_reset()"),
    ("pg_advisory_lock", "SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
    ("pg_try_advisory_lock", "SELECT pg_try_advisory_lock(1)", "pg_try_advisory_lock()"),
    ("pg_advisory_xact_lock", "SELECT pg_advisory_xact_lock(1)", "pg_advisory_xact_lock()"),
    ("pg_advisory_unlock_all", "SELECT pg_advisory_unlock_all()", "pg_advisory_unlock_all()"),
    ("pg_notify", "SELECT pg_notify('c', 'x')", "pg_notify()"),
    ("nextval", "SELECT nextval('s')", "nextval()"),
    ("setval", "SELECT setval('s', 1)", "setval()"),
    ("currval", "SELECT currval('s')", "currval()"),
    ("lastval", "SELECT lastval()", "lastval()"),
    ("pg_sleep", "SELECT pg_sleep(30)", "pg_sleep()"),
    ("pg_sleep_for", "SELECT pg_sleep_for('1 hour')", "pg_sleep_for()"),
    ("pg_sleep_until", "SELECT pg_sleep_until('tomorrow')", "pg_sleep_until()"),
    ("txid_current", "SELECT txid_current()", "txid_current()"),
    ("pg_current_xact_id", "SELECT pg_current_xact_id()", "pg_current_xact_id()"),
    ("version", "SELECT version()", "version()"),
    ("inet_server_addr", "SELECT inet_server_addr()", "inet_server_addr()"),
    (
        "pgtrail-function",
        "SELECT pgtrail_ensure_partitions(current_date, current_date + 1)",
        "pgtrail_ensure_partitions()",
    ),
    ("pg_typeof-qualified-other", "SELECT other.pg_typeof(1)", "other.pg_typeof()"),
    ("current_user", "SELECT current_user", "current_user"),
    ("session_user", "SELECT session_user", "session_user"),
    ("current_schema", "SELECT current_schema", "current_schema"),
    ("format_type", "SELECT format_type(23, -1)", "format_type()"),
]

RELATIONS: list[Case] = [
    ("pg_authid", "SELECT rolname, rolpassword FROM pg_authid", "pg_authid"),
    ("pg_shadow", "SELECT * FROM pg_shadow", "pg_shadow"),
    ("pg_class", "SELECT relname FROM pg_class", "pg_class"),
    ("pg_catalog.pg_class", "SELECT relname FROM pg_catalog.pg_class", "pg_catalog.pg_class"),
    ("pg_user_mappings", "SELECT * FROM pg_user_mappings", "pg_user_mappings"),
    ("pg_stat_activity", "SELECT query FROM pg_stat_activity", "pg_stat_activity"),
    ("pg_proc", "SELECT prosrc FROM pg_proc", "pg_proc"),
    ("pg_roles", "SELECT * FROM pg_roles", "pg_roles"),
    ("information_schema", "SELECT * FROM information_schema.tables", "information_schema.tables"),
    ("other-app-table", "SELECT * FROM users", "users"),
    ("partition", "SELECT * FROM logs_llm_execution_p20261101", "logs_llm_execution_p20261101"),
    ("default-partition", "SELECT * FROM logs_execution_default", "logs_execution_default"),
    ("only-partition", "SELECT * FROM ONLY logs_execution_p20261101", "logs_execution_p20261101"),
    ("join-catalog", "SELECT * FROM logs_execution e JOIN pg_roles r ON true", "pg_roles"),
    ("union-catalog", "SELECT 1 FROM logs_execution UNION SELECT 1 FROM pg_authid", "pg_authid"),
    ("exists-subquery", "SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_authid)", "pg_authid"),
    ("scalar-subquery", "SELECT (SELECT rolpassword FROM pg_authid LIMIT 1)", "pg_authid"),
    (
        "in-subquery",
        "SELECT 1 FROM logs_execution WHERE user_id IN (SELECT rolname FROM pg_roles)",
        "pg_roles",
    ),
    ("array-subquery", "SELECT ARRAY(SELECT usename FROM pg_user)", "pg_user"),
    (
        "cte-out-of-scope",
        "SELECT * FROM (WITH pg_authid AS (SELECT 1) SELECT 1) s, pg_authid",
        "pg_authid",
    ),
    (
        "cte-not-self-visible",
        "WITH pg_authid AS (SELECT * FROM pg_authid) SELECT * FROM pg_authid",
        "pg_authid",
    ),
    ("cte-later-not-visible", "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "b"),
    (
        "cte-qualified-is-table",
        "WITH secret AS (SELECT 1) SELECT * FROM public.secret",
        "public.secret",
    ),
    (
        "cte-in-sibling-subquery",
        "SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s) a, (SELECT * FROM s) b",
        "reading s ",
    ),
    (
        "recursive-cte-hides-catalog",
        "WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT 1 FROM r, pg_class) SELECT * FROM r",
        "pg_class",
    ),
    ("view-name-guess", "SELECT * FROM pg_stat_statements", "pg_stat_statements"),
    ("other-schema-option", "SELECT * FROM pgtrail.logs_execution", "pgtrail.logs_execution"),
]

WRITES_AND_STATEMENTS: list[Case] = [
    (
        "cte-delete",
        "WITH gone AS (DELETE FROM logs_llm_execution RETURNING 1) SELECT count(*) FROM gone",
        "DELETE is not allowed",
    ),
    (
        "cte-update",
        "WITH x AS (UPDATE logs_llm_execution SET total_cost = 0 RETURNING 1) SELECT 1",
        "UPDATE is not allowed",
    ),
    (
        "cte-insert",
        "WITH x AS (INSERT INTO logs_execution DEFAULT VALUES RETURNING 1) SELECT 1",
        "INSERT is not allowed",
    ),
    (
        "cte-merge",
        "WITH x AS (MERGE INTO logs_execution t USING logs_execution s ON true"
        " WHEN MATCHED THEN DELETE RETURNING 1) SELECT 1",
        "MERGE is not allowed",
    ),
    (
        "nested-cte-delete",
        "WITH a AS (SELECT 1) SELECT * FROM"
        " (WITH b AS (DELETE FROM logs_execution RETURNING 1) SELECT * FROM b) s",
        "DELETE is not allowed",
    ),
    (
        "with-then-delete",
        "WITH x AS (SELECT 1) DELETE FROM logs_execution",
        "DELETE is not allowed",
    ),
    ("select-into", "SELECT * INTO stolen FROM logs_llm_execution", "SELECT INTO is not allowed"),
    ("select-into-temp", "SELECT 1 INTO TEMP t", "SELECT INTO is not allowed"),
    ("for-update", "SELECT * FROM logs_llm_execution FOR UPDATE", "locking clause"),
    ("for-share", "SELECT * FROM logs_llm_execution FOR SHARE", "locking clause"),
    (
        "for-no-key-update",
        "SELECT * FROM logs_llm_execution FOR NO KEY UPDATE SKIP LOCKED",
        "locking clause",
    ),
    (
        "for-key-share-subquery",
        "SELECT * FROM (SELECT * FROM logs_execution FOR KEY SHARE) s",
        "locking clause",
    ),
    (
        "insert",
        "INSERT INTO logs_user_journey SELECT * FROM logs_user_journey",
        "INSERT is not allowed",
    ),
    ("update", "UPDATE logs_execution SET status = 'x'", "UPDATE is not allowed"),
    ("delete", "DELETE FROM logs_execution", "DELETE is not allowed"),
    ("truncate", "TRUNCATE logs_llm_execution", "TRUNCATE is not allowed"),
    ("create-table-as", "CREATE TABLE stolen AS SELECT 1", "CREATE is not allowed"),
    ("create-view", "CREATE VIEW v AS SELECT 1", "CREATE VIEW is not allowed"),
    ("drop", "DROP TABLE logs_execution", "DROP is not allowed"),
    ("copy-to-program", "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'", "COPY is not allowed"),
    ("copy-to-file", "COPY logs_llm_execution TO '/tmp/x.csv'", "COPY is not allowed"),
    ("copy-from-stdin", "COPY logs_execution FROM STDIN", "COPY is not allowed"),
    ("do", "DO $$ BEGIN DELETE FROM logs_llm_execution; END $$", "DO is not allowed"),
    ("call", "CALL pgtrail_cleanup()", "CALL is not allowed"),
    ("explain-analyze", "EXPLAIN ANALYZE DELETE FROM logs_llm_execution", "EXPLAIN is not allowed"),
    ("explain-select", "EXPLAIN SELECT 1", "EXPLAIN is not allowed"),
    ("set", "SET default_transaction_read_only = off", "SET/RESET is not allowed"),
    ("set-role", "SET ROLE postgres", "SET/RESET is not allowed"),
    ("set-local", "SET LOCAL statement_timeout = 0", "SET/RESET is not allowed"),
    ("reset", "RESET ALL", "SET/RESET is not allowed"),
    ("show", "SHOW data_directory", "SHOW is not allowed"),
    ("begin", "BEGIN", "transaction command"),
    ("commit", "COMMIT", "transaction command"),
    ("prepare", "PREPARE wipe AS DELETE FROM logs_llm_execution", "PREPARE is not allowed"),
    ("execute", "EXECUTE wipe", "EXECUTE is not allowed"),
    ("notify", "NOTIFY c, 'x'", "NOTIFY is not allowed"),
    ("listen", "LISTEN c", "LISTEN is not allowed"),
    ("lock", "LOCK TABLE logs_execution", "LOCK is not allowed"),
    ("vacuum", "VACUUM logs_execution", "VACUUM/ANALYZE is not allowed"),
    ("analyze", "ANALYZE logs_execution", "VACUUM/ANALYZE is not allowed"),
    ("grant", "GRANT ALL ON logs_execution TO PUBLIC", "GRANT is not allowed"),
    ("declare-cursor", "DECLARE c CURSOR FOR SELECT 1", "DECLARE CURSOR is not allowed"),
    ("load", "LOAD 'plpgsql'", "LOAD is not allowed"),
    ("discard", "DISCARD ALL", "DISCARD is not allowed"),
    ("alter-system", "ALTER SYSTEM SET fsync = off", "AlterSystem statement is not allowed"),
    (
        "create-function",
        "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
        "CreateFunction statement",
    ),
]

MULTIPLE_STATEMENTS: list[Case] = [
    ("two", "SELECT 1; DROP TABLE logs_llm_execution", "exactly one statement"),
    (
        "after-line-comment",
        "SELECT 1 -- harmless\n; DELETE FROM logs_execution",
        "exactly one statement",
    ),
    (
        "after-block-comment",
        "SELECT 1 /* ; */ ; DELETE FROM logs_execution /* */",
        "exactly one statement",
    ),
    (
        "after-nested-comment",
        "SELECT 1 /* /* ; */ ; */ ; DELETE FROM logs_execution",
        "exactly one statement",
    ),
    ("after-dollar-quote", "SELECT $a$ ; $a$; DELETE FROM logs_execution", "exactly one statement"),
    ("after-string", "SELECT ';'; DELETE FROM logs_execution", "exactly one statement"),
    ("after-escape-string", "SELECT E'\\';'; DELETE FROM logs_execution", "exactly one statement"),
    ("two-selects", "SELECT 1; SELECT 2", "found 2"),
    ("three", "SELECT 1; SELECT 2; SELECT 3", "found 3"),
    ("commit-then-drop", "COMMIT; DROP TABLE logs_execution", "exactly one statement"),
    ("no-space", "SELECT 1;SELECT 2", "exactly one statement"),
]

CASTS: list[Case] = [
    ("regclass", "SELECT 'pg_authid'::regclass", "regclass"),
    ("regproc", "SELECT 'pg_sleep'::regproc", "regproc"),
    ("regprocedure", "SELECT 'pg_sleep(float8)'::regprocedure", "regprocedure"),
    ("regrole", "SELECT 'postgres'::regrole", "regrole"),
    ("regnamespace", "SELECT 'pg_catalog'::regnamespace", "regnamespace"),
    ("regtype", "SELECT 'int'::regtype", "regtype"),
    ("regconfig", "SELECT 'english'::regconfig", "regconfig"),
    ("pg_catalog-regclass", "SELECT 'x'::pg_catalog.regclass", "pg_catalog.regclass"),
    ("oid", "SELECT 1::oid", "oid"),
    ("xml", "SELECT 'x'::xml", "xml"),
    ("unknown-type", "SELECT 1::frobnicate", "frobnicate"),
    ("typed-literal-regclass", "SELECT regclass 'pg_authid'", "regclass"),
    ("cast-syntax-regclass", "SELECT CAST('pg_authid' AS regclass)", "regclass"),
    ("array-of-regclass", "SELECT '{pg_authid}'::regclass[]", "regclass"),
    ("pct-type", "SELECT 1::logs_execution.status%TYPE", "logs_execution.status"),
    ("coldef-type", "SELECT * FROM jsonb_to_record('{}') AS x(a regclass)", "regclass"),
    ("pg_lsn", "SELECT '0/0'::pg_lsn", "pg_lsn"),
    ("txid_snapshot", "SELECT '1:1:'::txid_snapshot", "txid_snapshot"),
]

HIDDEN: list[Case] = [
    (
        "comment-hides-nothing",
        "SELECT /* harmless */ pg_read_file('/etc/passwd') -- ok",
        "pg_read_file()",
    ),
    ("dollar-quote-not-hiding-call", "SELECT $$x$$, pg_sleep(1)", "pg_sleep()"),
    ("call-in-where", "SELECT 1 FROM logs_execution WHERE pg_sleep(1) IS NULL", "pg_sleep()"),
    ("call-in-order-by", "SELECT 1 FROM logs_execution ORDER BY pg_sleep(1)", "pg_sleep()"),
    ("call-in-group-by", "SELECT 1 FROM logs_execution GROUP BY pg_sleep(1)", "pg_sleep()"),
    (
        "call-in-having",
        "SELECT 1 FROM logs_execution HAVING bool_and(pg_sleep(1) IS NULL)",
        "pg_sleep()",
    ),
    ("call-in-limit", "SELECT 1 LIMIT (SELECT pg_sleep(1))::int", "pg_sleep()"),
    ("call-in-case", "SELECT CASE WHEN true THEN pg_read_file('x') END", "pg_read_file()"),
    ("call-in-coalesce", "SELECT coalesce(NULL, pg_read_file('x'))", "pg_read_file()"),
    (
        "call-in-filter",
        "SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM logs_execution",
        "pg_sleep()",
    ),
    (
        "call-in-window",
        "SELECT row_number() OVER (ORDER BY pg_sleep(1)) FROM logs_execution",
        "pg_sleep()",
    ),
    (
        "call-in-join-on",
        "SELECT 1 FROM logs_execution a JOIN logs_execution b ON pg_sleep(1) IS NULL",
        "pg_sleep()",
    ),
    (
        "call-in-lateral",
        "SELECT * FROM logs_execution, LATERAL (SELECT pg_read_file('x')) s",
        "pg_read_file()",
    ),
    ("call-in-from", "SELECT * FROM pg_ls_dir('.') AS d", "pg_ls_dir()"),
    (
        "call-in-rows-from",
        "SELECT * FROM ROWS FROM (generate_series(1, 2), pg_ls_dir('.')) AS t",
        "pg_ls_dir()",
    ),
    ("call-in-values", "VALUES (1), (pg_sleep(1))", "pg_sleep()"),
    ("call-in-cte", "WITH a AS (SELECT lo_import('/etc/passwd')) SELECT * FROM a", "lo_import()"),
    (
        "call-in-deep-subquery",
        "SELECT (SELECT (SELECT (SELECT set_config('a.b', 'c', false))))",
        "set_config()",
    ),
    ("call-in-array", "SELECT ARRAY[1, pg_backend_pid()]", "pg_backend_pid()"),
    ("call-in-row", "SELECT ROW(1, pg_postmaster_start_time())", "pg_postmaster_start_time()"),
    ("call-as-argument", "SELECT length(pg_read_file('x'))", "pg_read_file()"),
    ("call-in-cast", "SELECT pg_read_file('x')::text", "pg_read_file()"),
    (
        "call-in-agg-order",
        "SELECT string_agg(x, ',' ORDER BY pg_sleep(1)) FROM logs_execution",
        "pg_sleep()",
    ),
    (
        "call-in-within-group",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY pg_sleep(1)) FROM logs_execution",
        "pg_sleep()",
    ),
    ("call-in-in-list", "SELECT 1 WHERE 1 IN (1, pg_sleep(1))", "pg_sleep()"),
    ("call-in-any", "SELECT 1 WHERE 1 = ANY(pg_ls_dir('.'))", "pg_ls_dir()"),
    ("call-in-union-branch", "SELECT 1 UNION ALL SELECT pg_sleep(1)", "pg_sleep()"),
    ("call-in-intersect", "SELECT 1 INTERSECT SELECT 1 FROM pg_authid", "pg_authid"),
    ("call-in-collate", "SELECT pg_read_file('x') COLLATE \"C\"", "pg_read_file()"),
    (
        "call-in-window-frame",
        "SELECT sum(1) OVER (ROWS BETWEEN pg_backend_pid() PRECEDING AND CURRENT ROW)"
        " FROM logs_execution",
        "pg_backend_pid()",
    ),
    ("call-in-distinct-on", "SELECT DISTINCT ON (pg_sleep(1)) 1 FROM logs_execution", "pg_sleep()"),
    (
        "call-in-grouping-sets",
        "SELECT 1 FROM logs_execution GROUP BY GROUPING SETS ((pg_sleep(1)))",
        "pg_sleep()",
    ),
    (
        "call-in-recursive-cte",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + pg_backend_pid() FROM r)"
        " SELECT * FROM r",
        "pg_backend_pid()",
    ),
    ("call-in-json-constructor", "SELECT json_object('a': pg_read_file('x'))", "pg_read_file()"),
]

PARSE_FAILURES: list[Case] = [
    ("full-width-semicolon", "SELECT 1；DROP TABLE logs_execution", "does not parse"),
    ("not-sql", "please drop everything", "does not parse"),
    ("unterminated-string", "SELECT 'abc", "does not parse"),
    ("unterminated-dollar", "SELECT $a$ abc", "does not parse"),
    ("only-comment", "  -- just a comment\n", "no SQL statement"),
    ("only-semicolons", ";;", "no SQL statement"),
    ("nul-byte", "SELECT 1\x00; DROP TABLE logs_execution", "NUL byte"),
]

REFUSED: list[Case] = (
    UNICODE_ESCAPES
    + QUOTED_IDENTIFIERS
    + SCHEMA_QUALIFIED
    + SQL_EXECUTING
    + LARGE_OBJECTS
    + FILES_AND_SERVER
    + RELATIONS
    + WRITES_AND_STATEMENTS
    + MULTIPLE_STATEMENTS
    + CASTS
    + HIDDEN
    + PARSE_FAILURES
)

ALLOWED: list[tuple[str, str]] = [
    ("seed-slow-agent-executions", verbatim.SLOW_AGENT_EXECUTIONS),
    ("seed-cost-by-agent-type", verbatim.COST_BY_AGENT_TYPE),
    ("seed-user-journey", verbatim.USER_JOURNEY),
    ("literal", "SELECT 1"),
    ("values", "VALUES (1, 'a'), (2, 'b')"),
    ("trailing-semicolon-and-comment", "SELECT 1; -- done\n"),
    ("semicolon-in-string", "SELECT 'a; DROP TABLE logs_execution' AS t"),
    ("semicolon-in-dollar-quote", "SELECT $x$; DELETE FROM logs_execution; $x$ AS t"),
    ("function-name-in-string", "SELECT 'pg_read_file(''/etc/passwd'')' AS t"),
    ("function-name-in-comment", "SELECT 1 /* pg_read_file('x') */ -- pg_sleep(1)"),
    (
        "window-functions",
        "SELECT agent_type, row_number() OVER w, rank() OVER w, lag(total_cost) OVER w,"
        " sum(total_cost) OVER (PARTITION BY agent_type ORDER BY created_at"
        " ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)"
        " FROM logs_llm_execution WINDOW w AS (PARTITION BY agent_type ORDER BY created_at)",
    ),
    (
        "ctes",
        "WITH daily AS (SELECT date_trunc('day', created_at) AS d, count(*) AS n"
        " FROM logs_execution GROUP BY 1), ranked AS (SELECT d, n, dense_rank() OVER"
        " (ORDER BY n DESC) AS r FROM daily) SELECT * FROM ranked WHERE r <= 3",
    ),
    (
        "cte-shadowing-a-table",
        "WITH logs_execution AS (SELECT 1 AS x) SELECT x FROM logs_execution",
    ),
    ("cte-named-like-catalog", "WITH pg_authid AS (SELECT 1 AS x) SELECT x FROM pg_authid"),
    (
        "recursive-cte",
        "WITH RECURSIVE tree AS (SELECT execution_id, parent_execution_id FROM logs_execution"
        " WHERE parent_execution_id IS NULL UNION ALL SELECT e.execution_id,"
        " e.parent_execution_id FROM logs_execution e JOIN tree t"
        " ON e.parent_execution_id = t.execution_id) SELECT count(*) FROM tree",
    ),
    (
        "filter",
        "SELECT count(*) FILTER (WHERE status = 'error') * 100.0 / nullif(count(*), 0)"
        " FROM logs_execution",
    ),
    (
        "jsonb-operators",
        "SELECT particular_data->'a'->>'b', particular_data #>> '{a,b}',"
        " particular_data ? 'x', particular_data @> '{\"k\": 1}'::jsonb,"
        " particular_data ?| array['a', 'b'], jsonb_typeof(particular_data)"
        " FROM logs_user_journey",
    ),
    (
        "percentile-within-group",
        "SELECT agent_type, percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms),"
        " percentile_disc(0.5) WITHIN GROUP (ORDER BY processing_time_ms),"
        " mode() WITHIN GROUP (ORDER BY model) FROM logs_llm_execution GROUP BY agent_type",
    ),
    (
        "generate-series-join",
        "SELECT d::date, count(e.*) FROM generate_series(now() - interval '7 days', now(),"
        " interval '1 day') AS d LEFT JOIN logs_execution e"
        " ON date_trunc('day', e.created_at) = d GROUP BY d ORDER BY d",
    ),
    (
        "case-extract",
        "SELECT CASE WHEN EXTRACT(hour FROM created_at) < 12 THEN 'am' ELSE 'pm' END,"
        " extract(epoch FROM created_at)::bigint, date_part('dow', created_at)"
        " FROM logs_execution",
    ),
    (
        "string-functions",
        "SELECT lower(agent_type), upper(left(model, 3)), split_part(model, '/', 1),"
        " regexp_replace(model, '[0-9]+', 'N', 'g'), substring(model FROM 1 FOR 4),"
        " trim(BOTH ' ' FROM model), position('a' IN model), concat_ws('-', a, b),"
        " format('%s=%s', a, b), md5(model), model ILIKE '%gpt%', model SIMILAR TO 'g%',"
        " model LIKE 'a!%%' ESCAPE '!' FROM logs_llm_execution",
    ),
    (
        "date-functions",
        "SELECT now(), current_date, current_timestamp, localtimestamp, age(created_at),"
        " date_bin('15 minutes', created_at, timestamp '2026-01-01'),"
        " created_at AT TIME ZONE 'UTC', make_interval(days => 1), to_char(created_at, 'YYYY'),"
        " justify_interval(interval '36 hours'), clock_timestamp() FROM logs_execution",
    ),
    (
        "json-builders",
        "SELECT jsonb_build_object('n', count(*)), jsonb_agg(agent_type),"
        " jsonb_object_agg(agent_type, 1), to_jsonb(array_agg(DISTINCT model)),"
        " json_build_array(1, 2) FROM logs_llm_execution",
    ),
    (
        "json-set-returning",
        "SELECT k, v FROM logs_user_journey, jsonb_each(particular_data) AS kv(k, v),"
        " LATERAL jsonb_array_elements(coalesce(particular_data->'items', '[]')) AS i",
    ),
    (
        "jsonb-path",
        "SELECT jsonb_path_query_array(particular_data, '$.a[*]') FROM logs_user_journey",
    ),
    (
        "arrays",
        "SELECT array_length(a, 1), cardinality(a), array_to_string(a, ','),"
        " unnest(string_to_array('a,b', ',')), a[1], a[1:2], 1 = ANY(a), a && ARRAY[1]"
        " FROM (SELECT ARRAY[1, 2, 3] AS a) s",
    ),
    (
        "numeric",
        "SELECT round(avg(total_cost)::numeric, 4), trunc(1.5), ceil(1.2), floor(1.2),"
        " abs(-1), sqrt(4), power(2, 3), ln(2), log(10), exp(1), width_bucket(5, 0, 10, 4),"
        " random(), greatest(1, 2), least(1, 2), 7 % 3, 2 ^ 3, -total_cost"
        " FROM logs_llm_execution",
    ),
    (
        "casts",
        "SELECT '1'::int, '1'::bigint, 1::numeric(10, 2), 1::double precision, 'a'::text,"
        " 'a'::varchar(10), 'true'::boolean, '2026-01-01'::date, now()::timestamptz,"
        " '1 day'::interval, gen_random_uuid()::uuid, '{}'::jsonb, '{a}'::text[],"
        " CAST('1' AS integer), timestamp with time zone '2026-01-01', 'x'::bytea",
    ),
    (
        "set-operations",
        "SELECT agent_type FROM logs_llm_execution UNION SELECT agent_type FROM"
        " logs_agent_execution EXCEPT SELECT 'x' INTERSECT SELECT 'y'",
    ),
    (
        "subqueries",
        "SELECT * FROM logs_execution e WHERE EXISTS (SELECT 1 FROM logs_llm_execution l"
        " WHERE l.execution_id = e.execution_id) AND e.user_id IN (SELECT user_id FROM"
        " logs_user_journey) AND e.created_at > (SELECT min(created_at) FROM logs_execution)",
    ),
    (
        "lateral-top-n",
        "SELECT a.agent_type, t.* FROM (SELECT DISTINCT agent_type FROM logs_agent_execution) a,"
        " LATERAL (SELECT execution_id FROM logs_agent_execution b WHERE b.agent_type ="
        " a.agent_type ORDER BY created_at DESC LIMIT 3) t",
    ),
    ("schema-qualified", "SELECT count(*) FROM public.logs_execution"),
    (
        "pg_catalog-qualified-call",
        "SELECT pg_catalog.lower('A'), pg_catalog.count(*) FROM logs_execution",
    ),
    ("pg_typeof", "SELECT pg_typeof(1)"),
    ("pricing-and-prompts", "SELECT * FROM pgtrail_model_price p JOIN pgtrail_prompt q ON true"),
    ("steps", "SELECT * FROM logs_execution_step"),
    (
        "text-search",
        "SELECT ts_rank(to_tsvector('english', x), plainto_tsquery('a')) FROM logs_execution",
    ),
    (
        "is-distinct-between",
        "SELECT 1 WHERE 1 IS DISTINCT FROM 2 AND 2 BETWEEN 1 AND 3"
        " AND 2 NOT BETWEEN SYMMETRIC 5 AND 4",
    ),
    ("null-tests", "SELECT x IS NULL, x IS NOT TRUE, nullif(x, 0) FROM logs_execution"),
    (
        "order-limit-offset",
        "SELECT * FROM logs_execution ORDER BY created_at DESC NULLS LAST LIMIT 10 OFFSET 5",
    ),
    ("fetch-first", "SELECT * FROM logs_execution FETCH FIRST 3 ROWS ONLY"),
    (
        "grouping-sets",
        "SELECT agent_type, model, count(*) FROM logs_llm_execution"
        " GROUP BY ROLLUP (agent_type, model)",
    ),
    (
        "stats-aggregates",
        "SELECT stddev(x), variance(x), corr(x, y), regr_slope(y, x), bool_or(b), every(b)"
        " FROM logs_execution",
    ),
    ("uescape-of-allowed-name", "SELECT U&\"\\006cower\"('A')"),
    ("unicode-string-literal", "SELECT U&'d\\0061t\\+000061'"),
    ("escape-string", "SELECT E'\\n', 'it''s'"),
    ("is-json", "SELECT particular_data::text IS JSON FROM logs_user_journey"),
]


@pytest.mark.parametrize(("what", "text", "phrase"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_a_message_naming_the_offender(what: str, text: str, phrase: str) -> None:
    with pytest.raises(ReportFileError) as refused:
        sqlcheck.check_read_only(text, "sql", strict=False)
    assert phrase in str(refused.value), f"{what}: {refused.value}"


@pytest.mark.parametrize(("what", "text"), ALLOWED, ids=[c[0] for c in ALLOWED])
def test_legitimate_query_passes(what: str, text: str) -> None:
    sqlcheck.check_read_only(text, "sql", strict=False)


def test_the_corpus_is_large() -> None:
    assert len(REFUSED) >= 150
    assert len({c[0] for c in REFUSED}) == len(REFUSED), "case ids must be unique"


def test_every_shipped_report_passes() -> None:
    catalog = reports.load_catalog()
    assert len(catalog.reports) >= 15


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("SELECT 1\nFROM logs_execution\nWHERE pg_sleep(1) IS NULL", 3),
        ("SELECT 1;\n\n-- comment\n/* block */\nSELECT 2", 5),
        ("SELECT 'é', 'ü',\n  pg_read_file('x')", 2),
        ("WITH x AS (SELECT 1)\nDELETE FROM logs_execution", 2),
        ("SELECT\n  1::regclass", 2),
        ("SELECT 1\nFROM\n  pg_authid", 3),
        ("SELECT * INTO\n  stolen FROM logs_execution", 2),
    ],
)
def test_the_line_points_at_the_offender(text: str, line: int) -> None:
    with pytest.raises(ReportFileError) as refused:
        sqlcheck.check_read_only(text, "q.sql", strict=True)
    assert refused.value.line == line, str(refused.value)


def test_psql_variables_are_replaced_before_parsing() -> None:
    text = "SELECT *\nFROM logs_execution\nWHERE created_at > :'since'::timestamptz LIMIT :n"
    uses = sqlcheck.scan_psql_variables(text, "r.sql")
    sqlcheck.check_read_only(text, "r.sql", strict=True, placeholders=uses)


def test_the_relation_allow_list_and_schema_are_parameters() -> None:
    sqlcheck.check_read_only(
        "SELECT * FROM app.orders", "sql", strict=False, relations={"orders"}, schema="app"
    )
    with pytest.raises(ReportFileError, match="reading logs_execution is not allowed"):
        sqlcheck.check_read_only(
            "SELECT * FROM logs_execution", "sql", strict=False, relations={"orders"}
        )
    with pytest.raises(ReportFileError, match=r"reading public\.orders is not allowed"):
        sqlcheck.check_read_only(
            "SELECT * FROM public.orders", "sql", strict=False, relations={"orders"}, schema="app"
        )
