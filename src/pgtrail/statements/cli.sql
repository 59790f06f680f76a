-- Statements of pgtrail.cli: the checks of `pgtrail doctor`.
-- Each block is loaded by pgtrail.statements; the name says which module runs it.

-- name: doctor_server_version_num
-- The server's version as a number (140000 for 14.0).
SHOW server_version_num;

-- name: doctor_server_version
-- The server's version as it names it.
SHOW server_version;

-- name: doctor_tenancy
-- Log tables with row-level security on, the missing group roles among the first
-- parameter's, and how many tenant grants there are; the second parameter is the log tables.
SELECT count(*) FILTER (WHERE c.relrowsecurity),
       (SELECT array_agg(r ORDER BY r) FROM unnest(%s::text[]) AS r
        WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)),
       (SELECT count(*) FROM pgtrail_tenant_grant)
FROM unnest(%s::text[]) AS t (name)
JOIN pg_class AS c ON c.oid = to_regclass(t.name);
