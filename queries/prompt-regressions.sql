-- name: prompt-regressions
-- description: LLM latency by prompt version: p50 and p95 of valid calls per
--   agent type, model and prompt_version, each version compared with the previous version
--   (by first use in the window) of the same agent and model. A p50 increase above the
--   threshold is flagged when both versions have enough calls.
-- rollups: exact percentile_cont over logs_llm_execution while the window's raw rows
--   exist; for the hours raw retention dropped (before pgtrail_rollup_horizon), whole UTC
--   hours from the histograms of pgtrail_rollup_llm: exact for versions of up to 1,000
--   calls, within 0.5% past that.
-- param: since timestamptz = 30d          -- start of the window (inclusive)
-- param: until timestamptz = now          -- end of the window (exclusive)
-- param: max_increase_pct numeric = 20    -- flag a p50 increase above this many percent
-- param: min_calls int = 20               -- both versions need this many calls to be flagged
-- param: only_flagged bool = false        -- show flagged versions only

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
    -- Each version's latencies gathered by hash aggregation, its percentiles taken below:
    -- percentile_cont in this GROUP BY would sort every call by group first (slow at 1M).
    SELECT
        agent_type,
        model_target,
        coalesce(prompt_version, '(none)')  AS prompt_version,
        count(*)                            AS calls,
        min(created_at)                     AS first_seen,
        max(created_at)                     AS last_seen,
        array_agg(processing_time_ms)       AS times
    FROM logs_llm_execution
    WHERE (SELECT exact FROM hours)
      AND created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND event_type = 'llm_valid_execution'
      AND processing_time_ms IS NOT NULL
    GROUP BY agent_type, model_target, coalesce(prompt_version, '(none)')
),
raw AS (
    -- The partial hours at both ends: raw rows, each a histogram of one call.
    SELECT agent_type, model_target, prompt_version, created_at, processing_time_ms
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  least(:'until'::timestamptz, (SELECT lo FROM hours))
      AND event_type = 'llm_valid_execution'
      AND processing_time_ms IS NOT NULL
    UNION ALL
    SELECT agent_type, model_target, prompt_version, created_at, processing_time_ms
    FROM logs_llm_execution
    WHERE created_at >= greatest(:'since'::timestamptz, (SELECT lo FROM hours),
                                 (SELECT hi FROM hours))
      AND created_at <  :'until'::timestamptz
      AND event_type = 'llm_valid_execution'
      AND processing_time_ms IS NOT NULL
),
parts AS (
    SELECT agent_type, model_target, coalesce(prompt_version, '(none)') AS prompt_version,
           latency_calls AS calls, first_at, last_at, latency_buckets, latency_counts
    FROM pgtrail_rollup_llm
    WHERE bucket >= (SELECT lo FROM hours)
      AND bucket <  (SELECT hi FROM hours)
      AND event_type = 'llm_valid_execution'
      AND latency_calls > 0
    UNION ALL
    SELECT agent_type, model_target, coalesce(prompt_version, '(none)'), 1, created_at,
           created_at, ARRAY[greatest(processing_time_ms, 0)], ARRAY[1]
    FROM raw
),
latencies AS (
    -- Keys as (is null, value) pairs, so the joins below hash instead of comparing each
    -- pair of rows with IS NOT DISTINCT FROM.
    SELECT agent_type IS NULL AS no_agent, coalesce(agent_type, '') AS agent,
           model_target IS NULL AS no_model, coalesce(model_target, '') AS model,
           prompt_version,
           min(agent_type) AS agent_type, min(model_target) AS model_target,
           sum(calls)::bigint AS calls, min(first_at) AS first_seen, max(last_at) AS last_seen
    FROM parts
    GROUP BY 1, 2, 3, 4, 5
),
cells AS (
    -- Every version's histograms merged: calls per latency value. A version of more than
    -- 1,000 calls reads its exact latencies as 1% buckets: within 0.5% of the exact
    -- percentile, and a few hundred values to sort instead of thousands.
    SELECT g.no_agent, g.agent, g.no_model, g.model, g.prompt_version,
           pgtrail_latency_value(CASE WHEN g.calls > 1000 AND h.cell >= 0
                                      THEN pgtrail_latency_bucket(h.cell)
                                      ELSE h.cell END) AS v,
           sum(h.n) AS n
    FROM parts AS p
    CROSS JOIN LATERAL unnest(p.latency_buckets, p.latency_counts) AS h (cell, n)
    JOIN latencies AS g
      ON g.no_agent = (p.agent_type IS NULL) AND g.agent = coalesce(p.agent_type, '')
     AND g.no_model = (p.model_target IS NULL) AND g.model = coalesce(p.model_target, '')
     AND g.prompt_version = p.prompt_version
    GROUP BY 1, 2, 3, 4, 5, 6
),
ranked AS (
    SELECT
        *,
        sum(n) OVER (PARTITION BY no_agent, agent, no_model, model, prompt_version
                     ORDER BY v)                                                   AS upto,
        sum(n) OVER (PARTITION BY no_agent, agent, no_model, model, prompt_version)  AS total
    FROM cells
),
quantiles AS (
    -- percentile_cont: the values at the two ranks around fraction * (n - 1), interpolated.
    SELECT
        r.no_agent, r.agent, r.no_model, r.model, r.prompt_version, q.fraction,
        min(r.v) FILTER (WHERE r.upto > floor(q.fraction * (r.total - 1)))  AS lo,
        min(r.v) FILTER (WHERE r.upto > ceil(q.fraction * (r.total - 1)))   AS hi,
        max(q.fraction * (r.total - 1))                                     AS pos
    FROM ranked AS r
    CROSS JOIN (VALUES (0.50::float8), (0.95::float8)) AS q (fraction)
    GROUP BY 1, 2, 3, 4, 5, 6
),
percentiles AS (
    SELECT
        no_agent, agent, no_model, model, prompt_version,
        max(value) FILTER (WHERE fraction = 0.50)  AS p50,
        max(value) FILTER (WHERE fraction = 0.95)  AS p95
    FROM quantiles
    CROSS JOIN LATERAL (SELECT lo + (pos - floor(pos)) * (hi - lo) AS value) AS interpolated
    GROUP BY 1, 2, 3, 4, 5
),
versions AS (
    SELECT
        g.agent_type,
        g.model_target,
        g.prompt_version,
        g.calls,
        g.first_seen,
        g.last_seen,
        q.p50,
        q.p95
    FROM exact AS g
    CROSS JOIN LATERAL (
        SELECT
            percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)  AS p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)  AS p95
        FROM unnest(g.times) AS ms
    ) AS q
    UNION ALL
    SELECT
        g.agent_type,
        g.model_target,
        g.prompt_version,
        g.calls,
        g.first_seen,
        g.last_seen,
        p.p50,
        p.p95
    FROM latencies AS g
    JOIN percentiles AS p USING (no_agent, agent, no_model, model, prompt_version)
    WHERE NOT (SELECT exact FROM hours)
),
compared AS (
    SELECT
        v.*,
        lag(prompt_version) OVER w  AS previous_version,
        lag(calls) OVER w           AS previous_calls,
        lag(p50) OVER w             AS previous_p50,
        lag(p95) OVER w             AS previous_p95
    FROM versions AS v
    WINDOW w AS (PARTITION BY agent_type, model_target ORDER BY first_seen, prompt_version)
),
judged AS (
    SELECT
        *,
        100 * (p50 - previous_p50) / nullif(previous_p50, 0) AS p50_change,
        100 * (p95 - previous_p95) / nullif(previous_p95, 0) AS p95_change
    FROM compared
)
SELECT
    agent_type,
    model_target,
    prompt_version,
    previous_version,
    calls,
    first_seen,
    last_seen,
    round(p50::numeric, 1)            AS p50_ms,
    round(previous_p50::numeric, 1)   AS previous_p50_ms,
    round(p50_change::numeric, 1)     AS p50_change_pct,
    round(p95::numeric, 1)            AS p95_ms,
    round(previous_p95::numeric, 1)   AS previous_p95_ms,
    round(p95_change::numeric, 1)     AS p95_change_pct,
    coalesce(calls >= :'min_calls'::int
             AND previous_calls >= :'min_calls'::int
             AND p50_change > :'max_increase_pct'::numeric, false) AS flagged
FROM judged
WHERE NOT :'only_flagged'::boolean
   OR coalesce(calls >= :'min_calls'::int
               AND previous_calls >= :'min_calls'::int
               AND p50_change > :'max_increase_pct'::numeric, false)
ORDER BY agent_type NULLS LAST, model_target NULLS LAST, first_seen, prompt_version;
