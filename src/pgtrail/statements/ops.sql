-- Statements of pgtrail.ops: migrations, daily partitions, retention and tenant grants.
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
