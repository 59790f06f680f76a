-- pgtrail 0003: tenant isolation with row-level security, and the payload-retention helper.
--
-- Who sees what:
--   * the owner of the tables (the role that ran `pgtrail migrate`, usually also the writer)
--     and superusers bypass row-level security: they see and write everything. Row-level
--     security is deliberately not FORCEd: PostgreSQL refuses COPY FROM under it, and the
--     owner's COPY fast path, spool replay, partition upkeep and retention must keep working;
--   * a role granted a tenant in pgtrail_tenant_grant (or a member of such a role) sees that
--     tenant's rows ("a role per tenant");
--   * a member of pgtrail_app (trusted application servers on a shared, pooled login) sees the
--     tenant named by the setting pgtrail.tenant, set per transaction with
--     SELECT set_config('pgtrail.tenant', 'acme', true); when it is unset it sees nothing
--     ("the session setting");
--   * a member of pgtrail_writer may insert rows for any tenant (plain INSERT: PostgreSQL
--     refuses COPY FROM under row-level security) and reads nothing;
--   * whenever pgtrail.tenant is set, every role above except the bypassing ones sees at most
--     that tenant, so a role granted several tenants can narrow its view to one.
-- Partitions carry row-level security with no policy and no grants: reading one directly
-- shows a non-owner nothing, even if a default privilege granted it SELECT.
--
-- Roles are cluster-wide. The migration creates pgtrail_app and pgtrail_writer when the
-- migrating role may create roles; otherwise it applies anyway and pgtrail_setup_roles()
-- (also `pgtrail tenant setup`) finishes the job once an administrator has run
--     CREATE ROLE pgtrail_app NOLOGIN; CREATE ROLE pgtrail_writer NOLOGIN;
--     GRANT pgtrail_app TO <owner>;   -- lets `pgtrail ... --tenant` scope the owner's reads

-- Functions below are pinned to this schema with pg_temp searched last, so a temporary
-- table can never stand in for one of ours.
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

-- Which roles may read which tenant ("a role per tenant"). Edited by `pgtrail tenant grant`.
CREATE TABLE pgtrail_tenant_grant (
    tenant_id  text        NOT NULL,
    role_name  text        NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by text        NOT NULL DEFAULT current_user,
    PRIMARY KEY (tenant_id, role_name)
);

-- True when the current role is a member of p_role; false when p_role does not exist.
CREATE FUNCTION pgtrail_is_member(p_role text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $fn$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles AS r
        WHERE r.rolname = p_role AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')
    )
$fn$;

-- A role sees its own grants (and those of the roles it belongs to); the owner sees all.
ALTER TABLE pgtrail_tenant_grant ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgtrail_own_grants ON pgtrail_tenant_grant FOR SELECT
    USING (pgtrail_is_member(role_name));
GRANT SELECT ON pgtrail_tenant_grant TO PUBLIC;

-- The tenants the current role may read in this transaction. Policies call it once per
-- statement (as an InitPlan), never per row.
CREATE FUNCTION pgtrail_visible_tenants()
RETURNS text[]
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $fn$
    WITH asked AS (
        SELECT nullif(current_setting('pgtrail.tenant', true), '') AS tenant
    ),
    allowed AS (
        SELECT g.tenant_id
        FROM pgtrail_tenant_grant AS g
        WHERE pgtrail_is_member(g.role_name)
        UNION
        SELECT asked.tenant
        FROM asked
        WHERE asked.tenant IS NOT NULL AND pgtrail_is_member('pgtrail_app')
    )
    SELECT coalesce(array_agg(allowed.tenant_id ORDER BY allowed.tenant_id), '{}')
    FROM allowed CROSS JOIN asked
    WHERE asked.tenant IS NULL OR allowed.tenant_id = asked.tenant
$fn$;

-- The four log tables: read by tenant, written by the writer group (and the owner).
ALTER TABLE logs_execution ENABLE ROW LEVEL SECURITY;
ALTER TABLE logs_user_journey ENABLE ROW LEVEL SECURITY;
ALTER TABLE logs_agent_execution ENABLE ROW LEVEL SECURITY;
ALTER TABLE logs_llm_execution ENABLE ROW LEVEL SECURITY;

CREATE POLICY pgtrail_tenant_read ON logs_execution FOR SELECT
    USING (tenant_id = ANY ((SELECT pgtrail_visible_tenants())::text[]));
CREATE POLICY pgtrail_tenant_read ON logs_user_journey FOR SELECT
    USING (tenant_id = ANY ((SELECT pgtrail_visible_tenants())::text[]));
CREATE POLICY pgtrail_tenant_read ON logs_agent_execution FOR SELECT
    USING (tenant_id = ANY ((SELECT pgtrail_visible_tenants())::text[]));
CREATE POLICY pgtrail_tenant_read ON logs_llm_execution FOR SELECT
    USING (tenant_id = ANY ((SELECT pgtrail_visible_tenants())::text[]));

CREATE POLICY pgtrail_writer_insert ON logs_execution FOR INSERT
    WITH CHECK ((SELECT pgtrail_is_member('pgtrail_writer')));
CREATE POLICY pgtrail_writer_insert ON logs_user_journey FOR INSERT
    WITH CHECK ((SELECT pgtrail_is_member('pgtrail_writer')));
CREATE POLICY pgtrail_writer_insert ON logs_agent_execution FOR INSERT
    WITH CHECK ((SELECT pgtrail_is_member('pgtrail_writer')));
CREATE POLICY pgtrail_writer_insert ON logs_llm_execution FOR INSERT
    WITH CHECK ((SELECT pgtrail_is_member('pgtrail_writer')));

-- Prompt bodies carry no tenant: a body is visible to whoever may see a call that uses it.
-- (Readers are not granted this table by default: the check scans the calls.)
ALTER TABLE pgtrail_prompt ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgtrail_tenant_read ON pgtrail_prompt FOR SELECT
    USING (EXISTS (SELECT 1 FROM logs_llm_execution AS l
                   WHERE l.prompt_hash = pgtrail_prompt.prompt_hash));
CREATE POLICY pgtrail_writer_insert ON pgtrail_prompt FOR INSERT
    WITH CHECK ((SELECT pgtrail_is_member('pgtrail_writer')));

-- The step view filters by itself as well, so it leaks nothing even where it runs with its
-- owner's rights (PostgreSQL 14 has no security_invoker views); security_barrier keeps a
-- caller's leaky functions from seeing rows before that filter.
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
   OR e.tenant_id = ANY ((SELECT pgtrail_visible_tenants())::text[]);

DO $do$
BEGIN
    -- PostgreSQL 15+: the view reads logs_execution with the caller's rights and policies.
    IF current_setting('server_version_num')::integer >= 150000 THEN
        EXECUTE 'ALTER VIEW logs_execution_step SET (security_invoker = true)';
    END IF;
END;
$do$;

-- Partitions created from now on get row-level security (and no grants) like those below.
-- SECURITY DEFINER: a writer that does not own the tables can still add the day it needs.
CREATE OR REPLACE FUNCTION pgtrail_ensure_partitions(p_from date, p_to date)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    parent     text;
    nsp        text;
    day        date;
    part       text;
    lo         timestamptz;
    hi         timestamptz;
    has_rows   boolean;
    created    integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgtrail_partitions'));
    FOREACH parent IN ARRAY ARRAY['logs_execution', 'logs_user_journey',
                                  'logs_agent_execution', 'logs_llm_execution'] LOOP
        SELECT n.nspname INTO nsp
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = to_regclass(parent);
        IF nsp IS NULL THEN
            RAISE EXCEPTION 'pgtrail table % not found on search_path', parent;
        END IF;
        day := p_from;
        WHILE day <= p_to LOOP
            part := parent || '_p' || to_char(day, 'YYYYMMDD');
            IF to_regclass(format('%I.%I', nsp, part)) IS NULL THEN
                lo := day::timestamp AT TIME ZONE 'UTC';
                hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE created_at >= $1 AND created_at < $2)',
                               nsp, parent || '_default')
                    INTO has_rows USING lo, hi;
                IF has_rows THEN
                    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                                   nsp, part, nsp, parent);
                    EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', nsp, part);
                    EXECUTE format('WITH moved AS (DELETE FROM %I.%I WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
                                   'INSERT INTO %I.%I SELECT * FROM moved',
                                   nsp, parent || '_default', nsp, part)
                        USING lo, hi;
                    EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                                   nsp, parent, nsp, part, lo, hi);
                ELSE
                    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                                   nsp, part, nsp, parent, lo, hi);
                    EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', nsp, part);
                END IF;
                created := created + 1;
            END IF;
            day := day + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END;
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail_ensure_partitions(date, date) FROM PUBLIC;

DO $do$
DECLARE
    rec record;
BEGIN
    FOR rec IN
        SELECT n.nspname AS nsp, c.relname AS part
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE i.inhparent IN ('logs_execution'::regclass, 'logs_user_journey'::regclass,
                              'logs_agent_execution'::regclass, 'logs_llm_execution'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', rec.nsp, rec.part);
    END LOOP;
END;
$do$;

-- Creates pgtrail_app and pgtrail_writer when it may, and grants them what they need here.
-- Returns a line per thing it could not do, with what an administrator should run. Safe to
-- run again at any time (`pgtrail tenant setup`).
CREATE FUNCTION pgtrail_setup_roles()
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    nsp       text := current_schema();
    may_admin boolean;
    grp       text;
    note      text;
BEGIN
    SELECT r.rolsuper OR r.rolcreaterole INTO may_admin
    FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user;
    FOREACH grp IN ARRAY ARRAY['pgtrail_app', 'pgtrail_writer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = grp) THEN
            IF NOT may_admin THEN
                note := format('role %s does not exist and %s may not create roles; as an '
                               'administrator run: CREATE ROLE %I NOLOGIN; then run `pgtrail '
                               'tenant setup` (or SELECT pgtrail_setup_roles();) again',
                               grp, current_user, grp);
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
            IF NOT pg_catalog.pg_has_role(current_user, grp, 'MEMBER') THEN
                BEGIN
                    EXECUTE format('GRANT %I TO %I', grp, current_user);
                EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
                    note := format('%s is not a member of %s, so `--tenant` cannot scope its '
                                   'reads; as an administrator run: GRANT %I TO %I;',
                                   current_user, grp, grp, current_user);
                    RAISE NOTICE '%', note;
                    RETURN NEXT note;
                END;
            END IF;
        ELSE
            -- SELECT only so the writer's replay can copy the table shape; it reads no rows.
            EXECUTE format('GRANT SELECT, INSERT ON logs_execution, logs_user_journey, '
                           'logs_agent_execution, logs_llm_execution, pgtrail_prompt TO %I', grp);
            EXECUTE format('GRANT SELECT ON pgtrail_model_price TO %I', grp);
            EXECUTE format('GRANT EXECUTE ON FUNCTION pgtrail_ensure_partitions(date, date) TO %I',
                           grp);
        END IF;
    END LOOP;
END;
$fn$;

REVOKE EXECUTE ON FUNCTION pgtrail_setup_roles() FROM PUBLIC;
SELECT count(*) FROM pgtrail_setup_roles();

-- Payload retention: every JSON string longer than max_chars, at any depth, becomes a short
-- note of its length; numbers, booleans, short strings and the document's shape stay.
-- PL/pgSQL with the recursive call qualified by schema, not a SQL function with a SET clause:
-- retention runs it over millions of rows and that is about ten times faster.
DO $do$
BEGIN
    EXECUTE format($ddl$
CREATE FUNCTION pgtrail_blank_long_strings(doc jsonb, max_chars integer)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
AS $fn$
DECLARE
    kind   text := jsonb_typeof(doc);
    result jsonb;
BEGIN
    IF kind = 'string' THEN
        IF length(doc #>> '{}') > max_chars THEN
            RETURN to_jsonb(format('[removed: %%s chars]', length(doc #>> '{}')));
        END IF;
        RETURN doc;
    ELSIF kind NOT IN ('object', 'array') OR octet_length(doc::text) <= max_chars THEN
        RETURN doc;  -- a document this short cannot hold a longer string
    ELSIF kind = 'object' THEN
        SELECT jsonb_object_agg(f.key, %1$I.pgtrail_blank_long_strings(f.value, max_chars))
        INTO result
        FROM jsonb_each(doc) AS f;
        RETURN result;
    END IF;
    SELECT jsonb_agg(%1$I.pgtrail_blank_long_strings(a.value, max_chars) ORDER BY a.n)
    INTO result
    FROM jsonb_array_elements(doc) WITH ORDINALITY AS a (value, n);
    RETURN result;
END;
$fn$
$ddl$, current_schema());
END;
$do$;
