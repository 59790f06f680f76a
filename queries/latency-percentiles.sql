-- name: latency-percentiles
-- description: LLM latency percentiles (p50, p95, p99, max) and time-to-first-token p50 per
--   model and agent type. Valid calls only unless include_failed is true.
-- rollups: exact percentile_cont over logs_llm_execution while the window's raw rows
--   exist; for the hours raw retention dropped (before pgtrail_rollup_horizon), whole UTC
--   hours from the histograms of pgtrail_rollup_llm: exact for groups of up to 1,000 calls,
--   within 0.5% past that.
-- param: since timestamptz = 7d         -- start of the window (inclusive)
-- param: until timestamptz = now        -- end of the window (exclusive)
-- param: include_failed bool = false    -- also count failed calls (timeouts weigh heavily)
-- param: min_calls int = 1              -- hide groups with fewer calls

WITH hours AS (
    -- Whole UTC hours before raw retention's horizon come from the rollup; when the window
    -- starts after it (the usual case), everything is read exactly from raw rows.
    SELECT
        date_trunc('hour', :'since'::timestamptz + interval '1 hour' - interval '1 microsecond',
                   'UTC')                                                   AS lo,
        least(date_trunc('hour', :'until'::timestamptz, 'UTC'), h.raw_from)  AS hi,
        :'since'::timestamptz >= h.raw_from                                  AS exact
    FROM pgtrail_rollup_horizon AS h
),
exact AS (
    SELECT
        model_target,
        agent_type,
        count(*)                                                                    AS calls,
        round((percentile_cont(0.50) WITHIN GROUP (ORDER BY processing_time_ms))::numeric, 1)
                                                                                    AS p50_ms,
        round((percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms))::numeric, 1)
                                                                                    AS p95_ms,
        round((percentile_cont(0.99) WITHIN GROUP (ORDER BY processing_time_ms))::numeric, 1)
                                                                                    AS p99_ms,
        max(processing_time_ms)                                                     AS max_ms,
        round((percentile_cont(0.50) WITHIN GROUP (ORDER BY time_to_first_token_ms))::numeric, 1)
                                                                                    AS ttft_p50_ms
    FROM logs_llm_execution
    WHERE (SELECT exact FROM hours)
      AND created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND processing_time_ms IS NOT NULL
      AND (:'include_failed'::boolean OR event_type = 'llm_valid_execution')
    GROUP BY model_target, agent_type
    HAVING count(*) >= :'min_calls'::int
),
raw AS (
    -- The partial hours at both ends: raw rows, each a histogram of one call.
    SELECT model_target, agent_type, processing_time_ms, time_to_first_token_ms
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  least(:'until'::timestamptz, (SELECT lo FROM hours))
      AND processing_time_ms IS NOT NULL
      AND (:'include_failed'::boolean OR event_type = 'llm_valid_execution')
    UNION ALL
    SELECT model_target, agent_type, processing_time_ms, time_to_first_token_ms
    FROM logs_llm_execution
    WHERE created_at >= greatest(:'since'::timestamptz, (SELECT lo FROM hours),
                                 (SELECT hi FROM hours))
      AND created_at <  :'until'::timestamptz
      AND processing_time_ms IS NOT NULL
      AND (:'include_failed'::boolean OR event_type = 'llm_valid_execution')
),
parts AS (
    SELECT model_target, agent_type, latency_calls AS calls, latency_max AS max_ms,
           latency_buckets, latency_counts, ttft_buckets, ttft_counts
    FROM pgtrail_rollup_llm
    WHERE bucket >= (SELECT lo FROM hours)
      AND bucket <  (SELECT hi FROM hours)
      AND latency_calls > 0
      AND (:'include_failed'::boolean OR event_type = 'llm_valid_execution')
    UNION ALL
    SELECT model_target, agent_type, 1, processing_time_ms,
           ARRAY[greatest(processing_time_ms, 0)], ARRAY[1],
           CASE WHEN time_to_first_token_ms IS NOT NULL
                THEN ARRAY[greatest(time_to_first_token_ms, 0)] ELSE '{}' END,
           CASE WHEN time_to_first_token_ms IS NOT NULL THEN ARRAY[1] ELSE '{}' END
    FROM raw
),
groups AS (
    -- Keys as (is null, value) pairs, so the joins below hash instead of comparing each
    -- pair of rows with IS NOT DISTINCT FROM.
    SELECT model_target IS NULL AS no_model, coalesce(model_target, '') AS model,
           agent_type IS NULL AS no_agent, coalesce(agent_type, '') AS agent,
           min(model_target) AS model_target, min(agent_type) AS agent_type,
           sum(calls)::bigint AS calls, max(max_ms) AS max_ms
    FROM parts
    GROUP BY 1, 2, 3, 4
    HAVING sum(calls) >= :'min_calls'::int
),
cells AS (
    -- Every group's histograms merged: calls per latency value. A group of more than 1,000
    -- calls reads its exact latencies as 1% buckets: within 0.5% of the exact percentile,
    -- and a few hundred values to sort instead of thousands.
    SELECT g.no_model, g.model, g.no_agent, g.agent, h.metric,
           pgtrail_latency_value(CASE WHEN g.calls > 1000 AND h.cell >= 0
                                      THEN pgtrail_latency_bucket(h.cell)
                                      ELSE h.cell END) AS v,
           sum(h.n) AS n
    FROM parts AS p
    CROSS JOIN LATERAL (
        SELECT 'latency' AS metric, l.cell, l.n
        FROM unnest(p.latency_buckets, p.latency_counts) AS l (cell, n)
        UNION ALL
        SELECT 'ttft', t.cell, t.n
        FROM unnest(p.ttft_buckets, p.ttft_counts) AS t (cell, n)
    ) AS h
    JOIN groups AS g
      ON g.no_model = (p.model_target IS NULL) AND g.model = coalesce(p.model_target, '')
     AND g.no_agent = (p.agent_type IS NULL) AND g.agent = coalesce(p.agent_type, '')
    GROUP BY 1, 2, 3, 4, 5, 6
),
ranked AS (
    SELECT
        *,
        sum(n) OVER (PARTITION BY no_model, model, no_agent, agent, metric ORDER BY v)  AS upto,
        sum(n) OVER (PARTITION BY no_model, model, no_agent, agent, metric)             AS total
    FROM cells
),
quantiles AS (
    -- percentile_cont: the values at the two ranks around fraction * (n - 1), interpolated.
    SELECT
        r.no_model, r.model, r.no_agent, r.agent, r.metric, q.fraction,
        min(r.v) FILTER (WHERE r.upto > floor(q.fraction * (r.total - 1)))  AS lo,
        min(r.v) FILTER (WHERE r.upto > ceil(q.fraction * (r.total - 1)))   AS hi,
        max(q.fraction * (r.total - 1))                                     AS pos
    FROM ranked AS r
    CROSS JOIN (VALUES (0.50::float8), (0.95::float8), (0.99::float8)) AS q (fraction)
    GROUP BY 1, 2, 3, 4, 5, 6
),
percentiles AS (
    SELECT
        no_model, model, no_agent, agent,
        max(value) FILTER (WHERE metric = 'latency' AND fraction = 0.50)  AS p50,
        max(value) FILTER (WHERE metric = 'latency' AND fraction = 0.95)  AS p95,
        max(value) FILTER (WHERE metric = 'latency' AND fraction = 0.99)  AS p99,
        max(value) FILTER (WHERE metric = 'ttft' AND fraction = 0.50)     AS ttft_p50
    FROM quantiles
    CROSS JOIN LATERAL (SELECT lo + (pos - floor(pos)) * (hi - lo) AS value) AS interpolated
    GROUP BY 1, 2, 3, 4
),
estimated AS (
    SELECT
        g.model_target,
        g.agent_type,
        g.calls,
        round(p.p50::numeric, 1)       AS p50_ms,
        round(p.p95::numeric, 1)       AS p95_ms,
        round(p.p99::numeric, 1)       AS p99_ms,
        g.max_ms,
        round(p.ttft_p50::numeric, 1)  AS ttft_p50_ms
    FROM groups AS g
    JOIN percentiles AS p USING (no_model, model, no_agent, agent)
    WHERE NOT (SELECT exact FROM hours)
)
SELECT * FROM exact
UNION ALL
SELECT * FROM estimated
ORDER BY p95_ms DESC, model_target NULLS LAST, agent_type NULLS LAST;
