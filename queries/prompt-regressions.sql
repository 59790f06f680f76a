-- name: prompt-regressions
-- description: LLM latency by prompt version: p50 and p95 of valid calls per
--   agent type, model and prompt_version, each version compared with the previous version
--   (by first use in the window) of the same agent and model. A p50 increase above the
--   threshold is flagged when both versions have enough calls.
-- param: since timestamptz = 30d          -- start of the window (inclusive)
-- param: until timestamptz = now          -- end of the window (exclusive)
-- param: max_increase_pct numeric = 20    -- flag a p50 increase above this many percent
-- param: min_calls int = 20               -- both versions need this many calls to be flagged
-- param: only_flagged bool = false        -- show flagged versions only

WITH latencies AS (
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
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND event_type = 'llm_valid_execution'
      AND processing_time_ms IS NOT NULL
    GROUP BY agent_type, model_target, coalesce(prompt_version, '(none)')
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
    FROM latencies AS g
    CROSS JOIN LATERAL (
        SELECT
            percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)  AS p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)  AS p95
        FROM unnest(g.times) AS ms
    ) AS q
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
