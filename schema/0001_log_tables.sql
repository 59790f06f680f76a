-- pgtrail 0001: the migrations ledger, the four log tables, their step view and daily partitions.
--
-- Every log table is range-partitioned on created_at (one partition per UTC day) with a
-- DEFAULT partition, so a row is never rejected for its timestamp. Rows are written once
-- and never updated; the primary key (event_id, created_at) makes a replayed event a no-op.
-- Names are unqualified: the runner sets search_path to the configured schema.

CREATE TABLE IF NOT EXISTS pgtrail_migrations (
    version      integer     PRIMARY KEY,
    name         text        NOT NULL,
    checksum     text        NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    applied_by   text        NOT NULL DEFAULT current_user,
    execution_ms integer     NOT NULL DEFAULT 0
);

-- One row per finished execution (workflow run).
CREATE TABLE logs_execution (
    event_id            uuid        NOT NULL,
    execution_id        uuid        NOT NULL,
    created_at          timestamptz NOT NULL,
    tenant_id           text        NOT NULL DEFAULT 'default',
    user_id             text,
    session_id          text,
    span_id             text,
    event_type          text        NOT NULL DEFAULT 'execution_finalized',
    particular_data     jsonb       NOT NULL DEFAULT '{}',
    workflow            text        NOT NULL,
    parent_execution_id uuid,
    status              text        NOT NULL DEFAULT 'success'
                        CHECK (status IN ('success', 'error', 'abandoned')),
    error               text,
    processes_executed  jsonb       NOT NULL DEFAULT '[]',
    context             jsonb       NOT NULL DEFAULT '{}',
    finalized_at        timestamptz,
    duration_ms         integer,
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);

-- Event sourcing of user interactions: messages, state transitions, feedback.
CREATE TABLE logs_user_journey (
    event_id        uuid        NOT NULL,
    execution_id    uuid        NOT NULL,
    created_at      timestamptz NOT NULL,
    tenant_id       text        NOT NULL DEFAULT 'default',
    user_id         text,
    session_id      text,
    span_id         text,
    event_type      text        NOT NULL,
    particular_data jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);

-- What agents decided: decisions, compression, tool calls, retrievals, guardrails, handoffs.
CREATE TABLE logs_agent_execution (
    event_id        uuid        NOT NULL,
    execution_id    uuid        NOT NULL,
    created_at      timestamptz NOT NULL,
    tenant_id       text        NOT NULL DEFAULT 'default',
    user_id         text,
    session_id      text,
    span_id         text,
    event_type      text        NOT NULL,
    particular_data jsonb       NOT NULL DEFAULT '{}',
    agent_type      text,
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);

-- Raw model calls. Reports aggregate the narrow typed columns; request and response
-- bodies live in payload alone, which is compressed out of line by TOAST.
CREATE TABLE logs_llm_execution (
    event_id               uuid        NOT NULL,
    execution_id           uuid        NOT NULL,
    created_at             timestamptz NOT NULL,
    tenant_id              text        NOT NULL DEFAULT 'default',
    user_id                text,
    session_id             text,
    span_id                text,
    event_type             text        NOT NULL DEFAULT 'llm_valid_execution',
    particular_data        jsonb       NOT NULL DEFAULT '{}',
    agent_type             text,
    provider               text,
    model_target           text,
    prompt_hash            text,
    prompt_version         text,
    input_tokens           integer,
    output_tokens          integer,
    cached_input_tokens    integer,
    reasoning_tokens       integer,
    processing_time_ms     integer,
    time_to_first_token_ms integer,
    input_cost             numeric,
    output_cost            numeric,
    total_cost             numeric,
    error                  text,
    payload                jsonb,
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE logs_execution_default PARTITION OF logs_execution DEFAULT;
CREATE TABLE logs_user_journey_default PARTITION OF logs_user_journey DEFAULT;
CREATE TABLE logs_agent_execution_default PARTITION OF logs_agent_execution DEFAULT;
CREATE TABLE logs_llm_execution_default PARTITION OF logs_llm_execution DEFAULT;

-- Trace and journey look-ups.
CREATE INDEX logs_execution_execution_id_idx ON logs_execution (execution_id);
CREATE INDEX logs_execution_user_idx ON logs_execution (user_id, created_at);
CREATE INDEX logs_user_journey_execution_id_idx ON logs_user_journey (execution_id);
CREATE INDEX logs_user_journey_user_idx ON logs_user_journey (user_id, created_at);
CREATE INDEX logs_agent_execution_execution_id_idx ON logs_agent_execution (execution_id);
CREATE INDEX logs_llm_execution_execution_id_idx ON logs_llm_execution (execution_id);

-- The processes of each execution, one row per step, in start order.
CREATE VIEW logs_execution_step AS
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
CROSS JOIN LATERAL jsonb_array_elements(e.processes_executed) WITH ORDINALITY AS step (value, ordinality);

-- Content-addressed prompt bodies: a 43,000-character system prompt is stored once.
CREATE TABLE pgtrail_prompt (
    prompt_hash   text        PRIMARY KEY,
    body          text        NOT NULL,
    body_chars    integer     NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Creates the daily partitions covering [p_from, p_to] for every log table. Rows already
-- sitting in a DEFAULT partition for a new day are moved into it, so attaching never fails.
-- Serialised by a transaction-level advisory lock: concurrent callers cannot collide.
CREATE FUNCTION pgtrail_ensure_partitions(p_from date, p_to date)
RETURNS integer
LANGUAGE plpgsql
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
                    EXECUTE format('WITH moved AS (DELETE FROM %I.%I WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
                                   'INSERT INTO %I.%I SELECT * FROM moved',
                                   nsp, parent || '_default', nsp, part)
                        USING lo, hi;
                    EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                                   nsp, parent, nsp, part, lo, hi);
                ELSE
                    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                                   nsp, part, nsp, parent, lo, hi);
                END IF;
                created := created + 1;
            END IF;
            day := day + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END;
$fn$;

-- Drops the daily partitions that end on or before p_before; returns the names dropped.
CREATE FUNCTION pgtrail_drop_partitions_before(p_before date, p_dry_run boolean DEFAULT false)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    rec record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgtrail_partitions'));
    FOR rec IN
        SELECT n.nspname AS nsp, c.relname AS part
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE i.inhparent IN (to_regclass('logs_execution'), to_regclass('logs_user_journey'),
                              to_regclass('logs_agent_execution'), to_regclass('logs_llm_execution'))
          AND c.relname ~ '_p[0-9]{8}$'
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < p_before
        ORDER BY c.relname
    LOOP
        IF NOT p_dry_run THEN
            EXECUTE format('DROP TABLE %I.%I', rec.nsp, rec.part);
        END IF;
        RETURN NEXT rec.part;
    END LOOP;
END;
$fn$;

SELECT pgtrail_ensure_partitions(current_date - 7, current_date + 14);
