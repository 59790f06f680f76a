-- Statements of pgtrail.ops: migrations, daily partitions, retention, rollups and tenant grants.
-- Each block is loaded by pgtrail.statements; the name says which module runs it.

-- name: migrate_ledger_exists
-- Whether the migration ledger exists; the parameter is its schema-qualified name.
SELECT to_regclass(%s) IS NOT NULL;

-- name: migrate_lock
-- Takes the session-level advisory lock that serialises concurrent migrations.
SELECT pg_advisory_lock(hashtextextended(%s, 0));

-- name: migrate_unlock
-- Releases the lock migrate_lock took.
SELECT pg_advisory_unlock(hashtextextended(%s, 0));

-- name: partitions_ensure
-- Creates the missing daily partitions of every log table from the first to the last date.
SELECT pgtrail_ensure_partitions(%s, %s);

-- name: partitions_of_table
-- The dates (YYYYMMDD) of the daily partitions of one log table.
SELECT right(c.relname, 8)
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass(%s) AND c.relname ~ '_p[0-9]{8}$';

-- name: retention_partitions
-- Every partition of the given log tables, with its bounds read from the catalog.
SELECT p.relname, n.nspname, c.relname,
       (regexp_match(b.bound, 'FROM \(''([^'']*)''\)'))[1]::timestamptz,
       (regexp_match(b.bound, 'TO \(''([^'']*)''\)'))[1]::timestamptz,
       b.bound = 'DEFAULT'
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
JOIN pg_class AS p ON p.oid = i.inhparent
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
WHERE i.inhparent = ANY (ARRAY(SELECT to_regclass(t) FROM unnest(%s::text[]) AS t))
ORDER BY p.relname, c.relname;

-- name: retention_partition_lock
-- The transaction-level advisory lock pgtrail_ensure_partitions takes too.
SELECT pg_advisory_xact_lock(hashtext(%s));

-- name: retention_partition_exists
-- Whether a table (schema, name) still exists.
SELECT EXISTS (SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n
ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s);

-- name: retention_rollup_rows_before
-- The rollup rows of the hours before a time (what --keep-rollups would delete).
SELECT (SELECT count(*) FROM pgtrail_rollup_llm WHERE bucket < %(before)s)
       + (SELECT count(*) FROM pgtrail_rollup_llm_outcome WHERE bucket < %(before)s);

-- name: tenancy_isolation_installed
-- How many of the given log tables exist, and how many have row-level security on.
SELECT count(c.oid), count(*) FILTER (WHERE c.relrowsecurity)
FROM unnest(%s::text[]) AS t (name)
LEFT JOIN pg_class AS c ON c.oid = to_regclass(t.name);

-- name: tenancy_set_local
-- Sets a setting (name, value) for the current transaction only; the sandbox uses it too.
SELECT set_config(%s, %s, true);

-- name: tenancy_may_read
-- Whether the connected role may read the given tenant.
SELECT %s = ANY (pgtrail_visible_tenants());

-- name: tenancy_role_state
-- Superuser, BYPASSRLS, and membership in the tables' owner, of one role (no row: no role).
SELECT r.rolsuper, r.rolbypassrls, pg_has_role(r.oid, c.relowner, 'MEMBER')
FROM pg_roles AS r, pg_class AS c
WHERE r.rolname = %s AND c.oid = to_regclass('logs_llm_execution');

-- name: tenancy_grant_insert
-- Records that a role (tenant, role) may read a tenant; a row comes back when it is new.
INSERT INTO pgtrail_tenant_grant (tenant_id, role_name) VALUES (%s, %s)
ON CONFLICT DO NOTHING RETURNING true;

-- name: tenancy_grant_delete
-- Removes one tenant grant (tenant, role); a row comes back when it existed.
DELETE FROM pgtrail_tenant_grant WHERE tenant_id = %s AND role_name = %s
RETURNING true;

-- name: tenancy_grants_of_role
-- How many tenants a role is still granted.
SELECT count(*) FROM pgtrail_tenant_grant WHERE role_name = %s;

-- name: tenancy_grants
-- Every tenant grant the connected role may see, with the state of each grantee role.
SELECT g.tenant_id, g.role_name, g.granted_at, g.granted_by,
       r.oid IS NOT NULL, coalesce(r.rolcanlogin, false)
FROM pgtrail_tenant_grant AS g
LEFT JOIN pg_roles AS r ON r.rolname = g.role_name
ORDER BY g.tenant_id, g.role_name;

-- name: tenancy_role_exists
-- A row when the named role exists.
SELECT 1 FROM pg_roles WHERE rolname = %s;

-- name: tenancy_role_members
-- The roles directly members of the named group role.
SELECT m.rolname
FROM pg_auth_members AS am
JOIN pg_roles AS g ON g.oid = am.roleid
JOIN pg_roles AS m ON m.oid = am.member
WHERE g.rolname = %s
ORDER BY m.rolname;

-- name: tenancy_setup_roles
-- Creates and grants pgtrail's group roles where it may; each row is a step left to do.
SELECT * FROM pgtrail_setup_roles();

-- name: devservices_database_exists
-- Whether a database of that name exists on the throwaway server.
SELECT 1 FROM pg_database WHERE datname = %s;

-- name: rollups_compact
-- Merges every hour's partial rollup rows into one row per key; returns the rows written.
SELECT pgtrail_rollup_compact();

-- name: rollups_rebuild
-- Recomputes the rollup hours that [from, until) touches from raw rows; returns rows written.
SELECT pgtrail_rollup_rebuild(%s, %s);

-- name: rollups_prune
-- Deletes the rollup rows of the hours before a time; returns the rows deleted.
SELECT pgtrail_rollup_prune(%s);

-- name: rollups_state
-- Rollup rows, those still partial, the first hour held, and the bytes the tables take.
SELECT (SELECT count(*) FROM pgtrail_rollup_llm) + (SELECT count(*) FROM pgtrail_rollup_llm_outcome),
       (SELECT count(*) FROM pgtrail_rollup_llm WHERE NOT compacted)
           + (SELECT count(*) FROM pgtrail_rollup_llm_outcome WHERE NOT compacted),
       (SELECT min(bucket) FROM pgtrail_rollup_llm),
       pg_total_relation_size('pgtrail_rollup_llm')
           + pg_total_relation_size('pgtrail_rollup_llm_outcome');

-- name: rollups_raw_from
-- Where raw calls begin: retention dropped those before it (NULL until it first does).
SELECT CASE WHEN isfinite(raw_from) THEN raw_from END FROM pgtrail_rollup_horizon;

-- name: rollups_raw_gone
-- Records that raw calls before a time are gone.
SELECT pgtrail_rollup_raw_gone(%s) IS NOT NULL;
