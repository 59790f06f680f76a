-- pgtrail 0004: the read sandbox, and tenant binding a query cannot change.
--
-- Untrusted SQL (`pgtrail sql`, report files from user folders, every read of the web UI)
-- and every `--tenant` read run inside pgtrail_sandbox_query(): a SECURITY DEFINER function
-- owned by pgtrail_reader, a NOLOGIN role that holds SELECT on the log tables, the step view,
-- the price and prompt tables, and nothing else. Inside a SECURITY DEFINER function
-- PostgreSQL refuses SET ROLE and SET SESSION AUTHORIZATION, so a query cannot climb back
-- to the owner or a superuser that called it; it runs read-only, under the caller's
-- statement timeout, and its transaction is always rolled back.
--
-- Which tenant pgtrail_reader sees is bound by a signed token in the setting
-- pgtrail.sandbox: 't:<tenant>:<signature>' or '*:<signature>' (every tenant). The
-- signature is a keyed SHA-256 over the scope, the backend's pid and the transaction's start
-- time, with a key only the owner of the tables can read. A query can rewrite the setting,
-- but it cannot sign another scope, and a token seen once is worthless in any other
-- transaction. Only the owner (and superusers) may sign '*'; the owner and members of
-- pgtrail_app may sign a tenant.

SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE TABLE pgtrail_sandbox_key (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key      text    NOT NULL
);
INSERT INTO pgtrail_sandbox_key (key)
VALUES (encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                                 || gen_random_uuid()::text, 'UTF8')), 'hex'));
REVOKE ALL ON pgtrail_sandbox_key FROM PUBLIC;

-- The signature of p_scope for this backend and this transaction.
CREATE FUNCTION pgtrail_sandbox_sign(p_scope text)
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
    SELECT encode(sha256(convert_to(k.key || encode(sha256(convert_to(
               k.key || '|' || p_scope || '|' || pg_catalog.pg_backend_pid()::text || '|'
               || extract(epoch FROM pg_catalog.transaction_timestamp())::text,
               'UTF8')), 'hex'), 'UTF8')), 'hex')
    FROM pgtrail_sandbox_key AS k
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail_sandbox_sign(text) FROM PUBLIC;

-- A token for one tenant, for this transaction: SELECT set_config('pgtrail.sandbox', ...).
CREATE FUNCTION pgtrail_sandbox_bind(p_tenant text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF p_tenant IS NULL OR btrim(p_tenant) = '' THEN
        RAISE EXCEPTION 'a tenant id cannot be empty';
    END IF;
    RETURN 't:' || p_tenant || ':' || pgtrail_sandbox_sign('t:' || p_tenant);
END;
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail_sandbox_bind(text) FROM PUBLIC;

-- A token for every tenant; only the owner and superusers may execute it.
CREATE FUNCTION pgtrail_sandbox_bind_all()
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
    SELECT '*:' || pgtrail_sandbox_sign('*')
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail_sandbox_bind_all() FROM PUBLIC;

-- The scope the current token proves ('*' or 't:<tenant>'), or NULL for none or a forgery.
CREATE FUNCTION pgtrail_sandbox_scope()
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    token text := current_setting('pgtrail.sandbox', true);
    scope text;
BEGIN
    IF token IS NULL OR length(token) < 66 OR substr(token, length(token) - 64, 1) <> ':' THEN
        RETURN NULL;
    END IF;
    scope := left(token, length(token) - 65);
    IF right(token, 64) = pgtrail_sandbox_sign(scope) THEN
        RETURN scope;
    END IF;
    RETURN NULL;
END;
$fn$;

-- The policies read these once per statement (as InitPlans), never per row.
CREATE FUNCTION pgtrail_sandbox_all()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $fn$
    SELECT coalesce(pgtrail_sandbox_scope() = '*', false)
$fn$;

CREATE FUNCTION pgtrail_sandbox_tenant()
RETURNS text
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $fn$
    SELECT CASE WHEN s LIKE 't:%' THEN substr(s, 3) END
    FROM (SELECT pgtrail_sandbox_scope() AS s) AS scope
$fn$;

DO $do$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['logs_execution', 'logs_user_journey', 'logs_agent_execution',
                             'logs_llm_execution'] LOOP
        EXECUTE format('CREATE POLICY pgtrail_sandbox_read ON %I FOR SELECT TO PUBLIC USING '
                       '((SELECT pgtrail_sandbox_all()) '
                       'OR tenant_id = (SELECT pgtrail_sandbox_tenant()))', t);
    END LOOP;
END;
$do$;

-- The step view filters by itself (PostgreSQL 14 runs views with their owner's rights), so
-- it learns the sandbox's scope too.
CREATE OR REPLACE VIEW logs_execution_step WITH (security_barrier = true) AS
SELECT
    e.execution_id,
    e.tenant_id,
    e.user_id,
    e.session_id,
    e.workflow,
    e.created_at                                   AS execution_created_at,
    step.ordinality::integer                       AS step_index,
    step.value ->> 'span_id'                       AS span_id,
    step.value ->> 'parent_span_id'                AS parent_span_id,
    step.value ->> 'name'                          AS name,
    (step.value ->> 'nesting_level')::integer      AS nesting_level,
    (step.value ->> 'started_at')::timestamptz     AS started_at,
    (step.value ->> 'duration_ms')::integer        AS duration_ms,
    step.value ->> 'status'                        AS status,
    step.value ->> 'error'                         AS error
FROM logs_execution AS e
CROSS JOIN LATERAL jsonb_array_elements(e.processes_executed) WITH ORDINALITY AS step (value, ordinality)
WHERE (SELECT NOT row_security_active('logs_execution'::regclass))
   OR e.tenant_id = ANY ((SELECT pgtrail_visible_tenants())::text[])
   OR (SELECT pgtrail_sandbox_all())
   OR e.tenant_id = (SELECT pgtrail_sandbox_tenant());

DO $do$
BEGIN
    IF current_setting('server_version_num')::integer >= 150000 THEN
        EXECUTE 'ALTER VIEW logs_execution_step SET (security_invoker = true)';
    END IF;
END;
$do$;

-- The sandbox. Owned by pgtrail_reader once pgtrail_setup_roles() could hand it over; until
-- then the query below refuses to run (pgtrail checks the owner before it calls it, too).
-- The query is wrapped as a subquery, so PostgreSQL itself refuses data-modifying WITH
-- clauses, SELECT INTO and several statements; p_limit (NULL: no limit) bounds the rows.
-- Large objects the query created and advisory locks it took are refused, and the caller
-- rolls the transaction back in any case.
CREATE FUNCTION pgtrail_sandbox_query(p_query text, p_params jsonb, p_limit bigint)
RETURNS SETOF record
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF current_user::text <> 'pgtrail_reader' THEN
        RAISE EXCEPTION 'pgtrail_sandbox_query() is not owned by pgtrail_reader; as the owner '
                        'of the pgtrail tables run `pgtrail tenant setup`';
    END IF;
    RETURN QUERY EXECUTE format(E'SELECT * FROM (%s\n) AS pgtrail_sandboxed LIMIT $2', p_query)
        USING p_params, p_limit;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata AS m
               WHERE m.lomowner = (SELECT r.oid FROM pg_catalog.pg_roles AS r
                                   WHERE r.rolname = current_user)) THEN
        RAISE EXCEPTION 'the query created large objects, which is not allowed';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_locks AS l
               WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory') THEN
        PERFORM pg_catalog.pg_advisory_unlock_all();
        RAISE EXCEPTION 'the query took advisory locks, which is not allowed';
    END IF;
END;
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail_sandbox_query(text, jsonb, bigint) FROM PUBLIC;

-- pgtrail_setup_roles() learns pgtrail_reader and hands the sandbox to it.
CREATE OR REPLACE FUNCTION pgtrail_setup_roles()
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    nsp        text := current_schema();
    me         text := current_user;
    may_admin  boolean;
    grp        text;
    note       text;
    lent       boolean := false;
    sandbox    regprocedure := to_regprocedure('pgtrail_sandbox_query(text, jsonb, bigint)');
BEGIN
    SELECT r.rolsuper OR r.rolcreaterole INTO may_admin
    FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user;
    FOREACH grp IN ARRAY ARRAY['pgtrail_app', 'pgtrail_writer', 'pgtrail_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = grp) THEN
            IF NOT may_admin THEN
                note := format('role %s does not exist and %s may not create roles; as an '
                               'administrator run: CREATE ROLE %I NOLOGIN; then run `pgtrail '
                               'tenant setup` (or SELECT pgtrail_setup_roles();) again',
                               grp, me, grp);
                RAISE NOTICE '%', note;
                RETURN NEXT note;
                CONTINUE;
            END IF;
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', grp);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        END IF;
        BEGIN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', nsp, grp);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- a schema we do not own (e.g. public): its owner decides who may use it
        END;
        IF grp = 'pgtrail_app' THEN
            EXECUTE format('GRANT SELECT ON logs_execution, logs_user_journey, logs_agent_execution, '
                           'logs_llm_execution, logs_execution_step, pgtrail_model_price TO %I', grp);
            EXECUTE format('GRANT EXECUTE ON FUNCTION pgtrail_sandbox_bind(text) TO %I', grp);
            IF NOT pg_catalog.pg_has_role(current_user, grp, 'MEMBER') THEN
                BEGIN
                    EXECUTE format('GRANT %I TO %I', grp, me);
                EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
                    note := format('%s is not a member of %s, so pooled application logins '
                                   'cannot be tried from it; as an administrator run: '
                                   'GRANT %I TO %I;', me, grp, grp, me);
                    RAISE NOTICE '%', note;
                    RETURN NEXT note;
                END;
            END IF;
        ELSIF grp = 'pgtrail_writer' THEN
            -- SELECT only so the writer's replay can copy the table shape; it reads no rows.
            EXECUTE format('GRANT SELECT, INSERT ON logs_execution, logs_user_journey, '
                           'logs_agent_execution, logs_llm_execution, pgtrail_prompt TO %I', grp);
            EXECUTE format('GRANT SELECT ON pgtrail_model_price TO %I', grp);
            EXECUTE format('GRANT EXECUTE ON FUNCTION pgtrail_ensure_partitions(date, date) TO %I',
                           grp);
        ELSE
            EXECUTE format('GRANT SELECT ON logs_execution, logs_user_journey, logs_agent_execution, '
                           'logs_llm_execution, logs_execution_step, pgtrail_model_price, '
                           'pgtrail_prompt TO %I', grp);
            IF sandbox IS NOT NULL AND (SELECT p.proowner FROM pg_catalog.pg_proc AS p
                                        WHERE p.oid = sandbox)
                                       <> (SELECT r.oid FROM pg_catalog.pg_roles AS r
                                           WHERE r.rolname = grp) THEN
                -- Handing a function to a role needs membership in it, for a moment.
                IF NOT pg_catalog.pg_has_role(current_user, grp, 'MEMBER') THEN
                    BEGIN
                        EXECUTE format('GRANT %I TO %I', grp, me);
                        lent := true;
                    EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
                        note := format('the read sandbox is not installed: %s may not hand '
                                       'pgtrail_sandbox_query() to %s, so `pgtrail sql`, '
                                       'reports and --tenant refuse to run; as an '
                                       'administrator run: GRANT %I TO %I; then `pgtrail '
                                       'tenant setup`', me, grp, grp, me);
                        RAISE NOTICE '%', note;
                        RETURN NEXT note;
                        CONTINUE;
                    END;
                END IF;
                -- The new owner of a function needs CREATE on its schema, for that moment only.
                BEGIN
                    EXECUTE format('GRANT CREATE ON SCHEMA %I TO %I', nsp, grp);
                    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', sandbox, grp);
                    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM %I', nsp, grp);
                EXCEPTION WHEN insufficient_privilege THEN
                    note := format('the read sandbox is not installed: %s may not grant %s '
                                   'CREATE on schema %s for the moment it takes to hand it '
                                   'pgtrail_sandbox_query(); as the owner of the schema run: '
                                   'GRANT CREATE ON SCHEMA %I TO %I; then `pgtrail tenant '
                                   'setup`, then REVOKE CREATE ON SCHEMA %I FROM %I;',
                                   me, grp, nsp, nsp, grp, nsp, grp);
                    RAISE NOTICE '%', note;
                    RETURN NEXT note;
                    IF lent THEN
                        EXECUTE format('REVOKE %I FROM %I', grp, me);
                    END IF;
                    CONTINUE;
                END;
                EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', sandbox);
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', sandbox, me);
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgtrail_app') THEN
                    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pgtrail_app', sandbox);
                END IF;
                IF lent THEN
                    EXECUTE format('REVOKE %I FROM %I', grp, me);
                END IF;
            END IF;
        END IF;
    END LOOP;
END;
$fn$;

REVOKE EXECUTE ON FUNCTION pgtrail_setup_roles() FROM PUBLIC;
SELECT count(*) FROM pgtrail_setup_roles();
