-- pgtrail 0006: hourly rollups of the model calls, so cost and latency reports stay fast at
-- 100M rows and keep a year of history after raw retention.
--
-- What is kept. pgtrail_rollup_llm holds, per UTC hour, tenant, agent type, provider, model,
-- prompt version and outcome (event_type): calls, token sums, exact numeric cost sums, the
-- first and last timed call, and two mergeable latency histograms (processing_time_ms and
-- time_to_first_token_ms). pgtrail_rollup_llm_outcome holds calls per UTC hour, tenant,
-- feature, model and outcome. A histogram is two arrays, cells and counts: exact values
-- while a row has few, log-spaced buckets 1% wide past that, so any percentile read from
-- them (interpolated like percentile_cont) is exact for small groups and within 0.5% of
-- percentile_cont for large ones.
--
-- How rows get in: an AFTER INSERT trigger FOR EACH STATEMENT with a transition table, on
-- logs_llm_execution. It aggregates the statement's new rows and appends one partial row per
-- hour and key; it never updates a rollup row, so concurrent writers never wait on each other
-- (no row locks, no upsert conflicts), and a COPY of 500 rows costs one aggregation, not 500
-- row triggers. Whatever path a row takes through the table (the writer's COPY, its
-- idempotent replay with ON CONFLICT DO NOTHING, OTLP, INSERT or COPY from psql, a backfill
-- with old timestamps), its partial row commits in the same transaction as the row itself: a
-- report sees both or neither, so it never double counts and never misses. A replayed event
-- that already exists is not inserted, so it adds nothing.
--
-- Why not a watermark on an ingest sequence: sequence values are taken at insert but become
-- visible at commit, in another order, so a watermark either waits for the oldest open
-- transaction or misses rows; it also adds a column and a sequence round trip to every row,
-- and rewrites the tables to add it. Citus restricts triggers on distributed tables; there the
-- same rollup is kept by `pgtrail rollup --rebuild` over the hours that closed (the function
-- below is plain SQL over the raw rows, and runs distributed), documented in README.
--
-- Compaction: `pgtrail rollup` (SELECT pgtrail_rollup_compact()) merges each hour's partial
-- rows into one row per key. Reports are exact without it; it keeps the tables small. A
-- rebuild (SELECT pgtrail_rollup_rebuild(from, to)) recomputes whole hours from raw rows.
-- Each is one statement, so the rows it deletes and the rows it reads come from one snapshot.
--
-- Deletes and updates of raw rows (retention, payload blanking) do not touch the rollups on
-- purpose: they outlive raw retention (`pgtrail retention --keep-rollups`). Rows moved from a
-- DEFAULT partition into a new daily one go into the partition directly, so the trigger on
-- the parent does not count them twice; a row inserted into a partition by name is not seen
-- (rebuild its hours).
--
-- Reports read whole hours inside their window from the rollups and the partial hours at
-- both ends from raw rows, through the BRIN index on created_at added here. The percentile
-- reports read raw rows exactly where they still exist (after pgtrail_rollup_horizon) and
-- the histograms only for the hours retention dropped.

SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

-- A histogram cell is an integer: a value >= 0 is an exact latency in ms; a value below 0,
-- -1 - i, is the log-spaced bucket i that holds (1.01^(i-2), 1.01^(i-1)] ms (i = 0 holds 0).
-- A row keeps exact values while it has at most 100 distinct ones, so small groups give
-- percentiles equal to percentile_cont; past that its cells become buckets 1% wide.

-- The log bucket cell of a value in ms.
CREATE FUNCTION pgtrail_latency_bucket(p_ms integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN -1 - CASE WHEN p_ms < 1 THEN 0 ELSE 1 + ceil(ln(p_ms) / ln(1.01::float8))::integer END;

-- The value a cell stands for: the exact value, or the point within 0.5% of a bucket's values.
CREATE FUNCTION pgtrail_latency_value(p_cell integer)
RETURNS float8
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN CASE WHEN p_cell >= 0 THEN p_cell
            WHEN p_cell = -1 THEN 0
            ELSE 2 * power(1.01::float8, -2 - p_cell) / 2.01 END;

-- The p_fraction percentile of a histogram (cells and their counts; a cell may repeat),
-- interpolated between the two nearest ranks as percentile_cont does.
CREATE FUNCTION pgtrail_hist_percentile(p_cells integer[], p_counts bigint[], p_fraction float8)
RETURNS float8
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN (
    WITH cells AS (
        SELECT v, sum(h.n) OVER (ORDER BY v) AS upto, sum(h.n) OVER () AS total
        FROM unnest(p_cells, p_counts) AS h (c, n)
        CROSS JOIN LATERAL (SELECT pgtrail_latency_value(h.c) AS v) AS value
        WHERE h.n > 0
    ),
    rank AS (
        SELECT p_fraction * (max(total) - 1) AS pos FROM cells
    ),
    ends AS (
        SELECT r.pos,
               (SELECT min(c.v) FROM cells AS c WHERE c.upto > floor(r.pos)) AS lo,
               (SELECT min(c.v) FROM cells AS c WHERE c.upto > ceil(r.pos))  AS hi
        FROM rank AS r
    )
    SELECT lo + (pos - floor(pos)) * (hi - lo) FROM ends
);

CREATE TABLE pgtrail_rollup_llm (
    bucket              timestamptz NOT NULL,   -- start of the UTC hour
    tenant_id           text        NOT NULL,
    agent_type          text,
    provider            text,
    model_target        text,
    prompt_version      text,
    event_type          text        NOT NULL,
    calls               bigint      NOT NULL,
    input_tokens        bigint,
    output_tokens       bigint,
    cached_input_tokens bigint,
    reasoning_tokens    bigint,
    input_cost          numeric,
    output_cost         numeric,
    total_cost          numeric,
    first_at            timestamptz,            -- first and last call with a processing_time_ms
    last_at             timestamptz,
    latency_calls       bigint      NOT NULL,   -- calls with a processing_time_ms
    latency_sum         bigint,
    latency_max         integer,
    latency_buckets     integer[]   NOT NULL,
    latency_counts      integer[]   NOT NULL,
    ttft_buckets        integer[]   NOT NULL,   -- of the calls that have a processing_time_ms
    ttft_counts         integer[]   NOT NULL,
    compacted           boolean     NOT NULL DEFAULT false
);
CREATE INDEX pgtrail_rollup_llm_bucket_idx ON pgtrail_rollup_llm (bucket);
CREATE INDEX pgtrail_rollup_llm_fresh_idx ON pgtrail_rollup_llm (bucket) WHERE NOT compacted;

CREATE TABLE pgtrail_rollup_llm_outcome (
    bucket       timestamptz NOT NULL,
    tenant_id    text        NOT NULL,
    feature      text,
    model_target text,
    event_type   text        NOT NULL,
    calls        bigint      NOT NULL,
    compacted    boolean     NOT NULL DEFAULT false
);
CREATE INDEX pgtrail_rollup_llm_outcome_bucket_idx ON pgtrail_rollup_llm_outcome (bucket);
CREATE INDEX pgtrail_rollup_llm_outcome_fresh_idx ON pgtrail_rollup_llm_outcome (bucket)
    WHERE NOT compacted;

-- Where raw calls begin: before raw_from retention has dropped them (an hour; -infinity
-- until it first drops calls). Percentile reports read raw rows after it, exactly, and the
-- rollups' histograms before it. Not secret: every role may read it.
CREATE TABLE pgtrail_rollup_horizon (
    only_row boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    raw_from timestamptz NOT NULL
);
INSERT INTO pgtrail_rollup_horizon (raw_from) VALUES ('-infinity');
REVOKE ALL ON pgtrail_rollup_horizon FROM PUBLIC;
GRANT SELECT ON pgtrail_rollup_horizon TO PUBLIC;

-- The partial hours at the ends of a report's window are read from raw rows by time.
CREATE INDEX logs_llm_execution_created_at_brin ON logs_llm_execution USING brin (created_at);

-- The trigger and the maintenance functions, generated from one text of each aggregation.
-- The trigger runs llm_partial: one hash aggregation of the statement's rows (%1$s), whose
-- histograms list each call's exact latency with a count of 1 (a cell may repeat; readers
-- sum per cell). *_raw turns rows of logs_llm_execution (%1$s: the table with a time range)
-- into partial rows, one call each; *_merge aggregates partial rows (%1$s) into one row per
-- hour and key, summing histograms per cell and turning a row of more than 100 distinct
-- exact values into log buckets, with compacted = %2$s.
DO $do$
DECLARE
    llm_merge text := $sql$
INSERT INTO pgtrail_rollup_llm (bucket, tenant_id, agent_type, provider, model_target,
    prompt_version, event_type, calls, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, input_cost, output_cost, total_cost, first_at, last_at, latency_calls,
    latency_sum, latency_max, latency_buckets, latency_counts, ttft_buckets, ttft_counts,
    compacted)
WITH parts AS MATERIALIZED (%1$s),
cells AS (
    SELECT bucket, tenant_id, agent_type, provider, model_target, prompt_version, event_type,
           0 AS kind, NULL::integer AS b, NULL::bigint AS n,
           sum(calls) AS calls, sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens, sum(cached_input_tokens) AS cached_input_tokens,
           sum(reasoning_tokens) AS reasoning_tokens, sum(input_cost) AS input_cost,
           sum(output_cost) AS output_cost, sum(total_cost) AS total_cost,
           min(first_at) AS first_at, max(last_at) AS last_at,
           sum(latency_calls) AS latency_calls, sum(latency_sum) AS latency_sum,
           max(latency_max) AS latency_max
    FROM parts
    GROUP BY bucket, tenant_id, agent_type, provider, model_target, prompt_version, event_type
    UNION ALL
    SELECT p.bucket, p.tenant_id, p.agent_type, p.provider, p.model_target, p.prompt_version,
           p.event_type, 1, h.b, sum(h.n),
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM parts AS p CROSS JOIN LATERAL unnest(p.latency_buckets, p.latency_counts) AS h (b, n)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, h.b
    UNION ALL
    SELECT p.bucket, p.tenant_id, p.agent_type, p.provider, p.model_target, p.prompt_version,
           p.event_type, 2, h.b, sum(h.n),
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM parts AS p CROSS JOIN LATERAL unnest(p.ttft_buckets, p.ttft_counts) AS h (b, n)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, h.b
),
sized AS (
    -- Past 100 distinct exact values a histogram turns into log buckets.
    SELECT bucket, tenant_id, agent_type, provider, model_target, prompt_version, event_type,
           kind, n,
           CASE WHEN b >= 0 AND count(*) OVER (PARTITION BY bucket, tenant_id, agent_type,
                     provider, model_target, prompt_version, event_type, kind) > 100
                THEN pgtrail_latency_bucket(b) ELSE b END AS b
    FROM cells
    WHERE kind > 0
),
hist AS (
    SELECT * FROM cells WHERE kind = 0
    UNION ALL
    SELECT bucket, tenant_id, agent_type, provider, model_target, prompt_version, event_type,
           kind, b, sum(n),
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM sized
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
)
SELECT bucket, tenant_id, agent_type, provider, model_target, prompt_version, event_type,
       max(calls), max(input_tokens), max(output_tokens), max(cached_input_tokens),
       max(reasoning_tokens), max(input_cost), max(output_cost), max(total_cost),
       max(first_at), max(last_at), max(latency_calls), max(latency_sum), max(latency_max),
       coalesce(array_agg(b ORDER BY b) FILTER (WHERE kind = 1), '{}'),
       coalesce(array_agg(n::integer ORDER BY b) FILTER (WHERE kind = 1), '{}'),
       coalesce(array_agg(b ORDER BY b) FILTER (WHERE kind = 2), '{}'),
       coalesce(array_agg(n::integer ORDER BY b) FILTER (WHERE kind = 2), '{}'),
       %2$s
FROM hist
GROUP BY bucket, tenant_id, agent_type, provider, model_target, prompt_version, event_type
$sql$;
    llm_partial text := $sql$
INSERT INTO pgtrail_rollup_llm (bucket, tenant_id, agent_type, provider, model_target,
    prompt_version, event_type, calls, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, input_cost, output_cost, total_cost, first_at, last_at, latency_calls,
    latency_sum, latency_max, latency_buckets, latency_counts, ttft_buckets, ttft_counts,
    compacted)
SELECT date_trunc('hour', created_at, 'UTC'), tenant_id, agent_type, provider, model_target,
       prompt_version, event_type, count(*), sum(input_tokens), sum(output_tokens),
       sum(cached_input_tokens), sum(reasoning_tokens), sum(input_cost), sum(output_cost),
       sum(total_cost),
       min(created_at) FILTER (WHERE processing_time_ms IS NOT NULL),
       max(created_at) FILTER (WHERE processing_time_ms IS NOT NULL),
       count(processing_time_ms), sum(processing_time_ms), max(processing_time_ms),
       coalesce(array_agg(greatest(processing_time_ms, 0))
                    FILTER (WHERE processing_time_ms IS NOT NULL), '{}'),
       array_fill(1, ARRAY[count(processing_time_ms)::integer]),
       coalesce(array_agg(greatest(time_to_first_token_ms, 0))
                    FILTER (WHERE processing_time_ms IS NOT NULL
                            AND time_to_first_token_ms IS NOT NULL), '{}'),
       array_fill(1, ARRAY[(count(time_to_first_token_ms)
                            FILTER (WHERE processing_time_ms IS NOT NULL))::integer]),
       false
FROM %1$s
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$;
    llm_raw text := $sql$
SELECT date_trunc('hour', created_at, 'UTC') AS bucket, tenant_id, agent_type, provider,
       model_target, prompt_version, event_type, 1::bigint AS calls,
       input_tokens::bigint AS input_tokens, output_tokens::bigint AS output_tokens,
       cached_input_tokens::bigint AS cached_input_tokens,
       reasoning_tokens::bigint AS reasoning_tokens, input_cost, output_cost, total_cost,
       CASE WHEN processing_time_ms IS NOT NULL THEN created_at END AS first_at,
       CASE WHEN processing_time_ms IS NOT NULL THEN created_at END AS last_at,
       (processing_time_ms IS NOT NULL)::integer::bigint AS latency_calls,
       processing_time_ms::bigint AS latency_sum, processing_time_ms AS latency_max,
       CASE WHEN processing_time_ms IS NOT NULL
            THEN ARRAY[greatest(processing_time_ms, 0)] ELSE '{}' END AS latency_buckets,
       CASE WHEN processing_time_ms IS NOT NULL THEN ARRAY[1] ELSE '{}' END AS latency_counts,
       CASE WHEN processing_time_ms IS NOT NULL AND time_to_first_token_ms IS NOT NULL
            THEN ARRAY[greatest(time_to_first_token_ms, 0)] ELSE '{}' END AS ttft_buckets,
       CASE WHEN processing_time_ms IS NOT NULL AND time_to_first_token_ms IS NOT NULL
            THEN ARRAY[1] ELSE '{}' END AS ttft_counts
FROM %1$s
$sql$;
    outcome_merge text := $sql$
INSERT INTO pgtrail_rollup_llm_outcome (bucket, tenant_id, feature, model_target, event_type,
    calls, compacted)
SELECT bucket, tenant_id, feature, model_target, event_type, sum(calls), %2$s
FROM (%1$s) AS parts
GROUP BY bucket, tenant_id, feature, model_target, event_type
$sql$;
    outcome_raw text := $sql$
SELECT date_trunc('hour', created_at, 'UTC') AS bucket, tenant_id,
       particular_data ->> 'feature' AS feature, model_target, event_type, 1::bigint AS calls
FROM %1$s
$sql$;
BEGIN
    -- SECURITY DEFINER: a writer that may only insert log rows still adds its partial rows.
    EXECUTE format($f$
CREATE FUNCTION pgtrail_rollup_llm_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
BEGIN
    %s;
    %s;
    RETURN NULL;
END;
$fn$;
$f$, format(llm_partial, 'pgtrail_new_rows'),
     format(outcome_merge, format(outcome_raw, 'pgtrail_new_rows'), 'false'));

    -- Merges every hour that has partial rows into one row per key; returns the rows written.
    -- One statement per table: the rows it deletes are the rows it merges (one snapshot);
    -- partial rows committed meanwhile stay for the next run.
    EXECUTE format($f$
CREATE FUNCTION pgtrail_rollup_compact()
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    written bigint;
    more    bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgtrail_rollup'));
    WITH gone AS (
        DELETE FROM pgtrail_rollup_llm AS r
        WHERE r.bucket IN (SELECT f.bucket FROM pgtrail_rollup_llm AS f WHERE NOT f.compacted)
        RETURNING r.*
    ) %s;
    GET DIAGNOSTICS written = ROW_COUNT;
    WITH gone AS (
        DELETE FROM pgtrail_rollup_llm_outcome AS r
        WHERE r.bucket IN (SELECT f.bucket FROM pgtrail_rollup_llm_outcome AS f
                           WHERE NOT f.compacted)
        RETURNING r.*
    ) %s;
    GET DIAGNOSTICS more = ROW_COUNT;
    RETURN written + more;
END;
$fn$;
$f$, format(llm_merge, 'SELECT * FROM gone', 'true'),
     format(outcome_merge, 'SELECT * FROM gone', 'true'));

    -- Recomputes the hours [p_from, p_to) touches from raw rows; returns the rows written.
    -- Delete and recompute are one statement per table, so they see the same raw rows.
    EXECUTE format($f$
CREATE FUNCTION pgtrail_rollup_rebuild(p_from timestamptz, p_to timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    lo      timestamptz := date_trunc('hour', p_from, 'UTC');
    hi      timestamptz := date_trunc('hour', p_to + interval '1 hour' - interval '1 microsecond',
                                      'UTC');
    written bigint;
    more    bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgtrail_rollup'));
    WITH gone AS (
        DELETE FROM pgtrail_rollup_llm WHERE bucket >= lo AND bucket < hi RETURNING 1
    ) %s;
    GET DIAGNOSTICS written = ROW_COUNT;
    WITH gone AS (
        DELETE FROM pgtrail_rollup_llm_outcome WHERE bucket >= lo AND bucket < hi RETURNING 1
    ) %s;
    GET DIAGNOSTICS more = ROW_COUNT;
    RETURN written + more;
END;
$fn$;
$f$, format(llm_merge, format(llm_raw, 'logs_llm_execution WHERE created_at >= lo AND created_at < hi'),
            'true'),
     format(outcome_merge,
            format(outcome_raw, 'logs_llm_execution WHERE created_at >= lo AND created_at < hi'),
            'true'));
END;
$do$;

CREATE TRIGGER pgtrail_rollup_llm
    AFTER INSERT ON logs_llm_execution
    REFERENCING NEW TABLE AS pgtrail_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrail_rollup_llm_insert();

-- Deletes the rollup rows of the hours before p_before (`pgtrail retention --keep-rollups`).
CREATE FUNCTION pgtrail_rollup_prune(p_before timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    deleted bigint;
    more    bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgtrail_rollup'));
    DELETE FROM pgtrail_rollup_llm WHERE bucket < p_before;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    DELETE FROM pgtrail_rollup_llm_outcome WHERE bucket < p_before;
    GET DIAGNOSTICS more = ROW_COUNT;
    RETURN deleted + more;
END;
$fn$;

-- Records that raw calls before p_before are gone (`pgtrail retention --keep`).
CREATE FUNCTION pgtrail_rollup_raw_gone(p_before timestamptz)
RETURNS timestamptz
LANGUAGE sql
SET search_path FROM CURRENT
BEGIN ATOMIC
    UPDATE pgtrail_rollup_horizon
    SET raw_from = greatest(raw_from, date_trunc('hour', p_before, 'UTC'))
    RETURNING raw_from;
END;

REVOKE EXECUTE ON FUNCTION pgtrail_rollup_raw_gone(timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrail_rollup_llm_insert() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrail_rollup_compact() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrail_rollup_rebuild(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrail_rollup_prune(timestamptz) FROM PUBLIC;

-- Tenant isolation as on the log tables (0003, 0004): a tenant role, a pooled application
-- login with pgtrail.tenant set, and the read sandbox see their tenant's buckets only. Only
-- the owner (through the trigger and the functions above) writes them.
DO $do$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pgtrail_rollup_llm', 'pgtrail_rollup_llm_outcome'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format('CREATE POLICY pgtrail_tenant_read ON %I FOR SELECT '
                       'USING (tenant_id = ANY ((SELECT pgtrail_visible_tenants())::text[]))', t);
        EXECUTE format('CREATE POLICY pgtrail_sandbox_read ON %I FOR SELECT TO PUBLIC USING '
                       '((SELECT pgtrail_sandbox_all()) '
                       'OR tenant_id = (SELECT pgtrail_sandbox_tenant()))', t);
    END LOOP;
END;
$do$;

-- pgtrail_setup_roles() (`pgtrail tenant setup`) also grants the readers the rollups.
ALTER FUNCTION pgtrail_setup_roles() RENAME TO pgtrail_setup_log_roles;
CREATE FUNCTION pgtrail_setup_roles()
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    grp text;
BEGIN
    RETURN QUERY SELECT * FROM pgtrail_setup_log_roles();
    FOREACH grp IN ARRAY ARRAY['pgtrail_app', 'pgtrail_reader'] LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = grp) THEN
            EXECUTE format('GRANT SELECT ON pgtrail_rollup_llm, pgtrail_rollup_llm_outcome TO %I',
                           grp);
        END IF;
    END LOOP;
END;
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail_setup_log_roles() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgtrail_setup_roles() FROM PUBLIC;
SELECT count(*) FROM pgtrail_setup_roles();

-- The calls already stored.
SELECT pgtrail_rollup_rebuild('-infinity', 'infinity');
