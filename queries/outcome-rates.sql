-- name: outcome-rates
-- description: LLM call outcomes by feature and model: counts and rates (in %)
--   of errors, timeouts, rate limits and invalid output. The feature is the execution's
--   context.feature, which the writer copies into each call's particular_data.
-- rollups: whole UTC hours from pgtrail_rollup_llm_outcome, the partial hours at both ends
--   of the window from logs_llm_execution; exact, and history older than raw retention stays.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: min_calls int = 1         -- hide groups with fewer calls

WITH hours AS (
    -- The whole UTC hours inside the window: read from the rollup.
    SELECT
        date_trunc('hour', :'since'::timestamptz + interval '1 hour' - interval '1 microsecond',
                   'UTC')                                         AS lo,
        date_trunc('hour', :'until'::timestamptz, 'UTC')          AS hi
),
calls AS (
    SELECT feature, model_target, event_type, calls
    FROM pgtrail_rollup_llm_outcome
    WHERE bucket >= (SELECT lo FROM hours)
      AND bucket <  (SELECT hi FROM hours)
    UNION ALL
    -- The partial hours at both ends: raw rows.
    SELECT particular_data ->> 'feature', model_target, event_type, 1
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  least(:'until'::timestamptz, (SELECT lo FROM hours))
    UNION ALL
    SELECT particular_data ->> 'feature', model_target, event_type, 1
    FROM logs_llm_execution
    WHERE created_at >= greatest(:'since'::timestamptz, (SELECT lo FROM hours),
                                 (SELECT hi FROM hours))
      AND created_at <  :'until'::timestamptz
)
SELECT
    feature,
    model_target,
    calls,
    valid,
    errors,
    timeouts,
    rate_limited,
    invalid_output,
    round(100.0 * errors / calls, 2)           AS error_pct,
    round(100.0 * timeouts / calls, 2)         AS timeout_pct,
    round(100.0 * rate_limited / calls, 2)     AS rate_limited_pct,
    round(100.0 * invalid_output / calls, 2)   AS invalid_output_pct,
    round(100.0 * (calls - valid) / calls, 2)  AS failure_pct
FROM (
    SELECT
        feature,
        model_target,
        sum(calls)::bigint                                                             AS calls,
        coalesce(sum(calls) FILTER (WHERE event_type = 'llm_valid_execution'), 0)::bigint AS valid,
        coalesce(sum(calls) FILTER (WHERE event_type = 'llm_error'), 0)::bigint        AS errors,
        coalesce(sum(calls) FILTER (WHERE event_type = 'llm_timeout'), 0)::bigint      AS timeouts,
        coalesce(sum(calls) FILTER (WHERE event_type = 'llm_rate_limited'), 0)::bigint AS rate_limited,
        coalesce(sum(calls) FILTER (WHERE event_type = 'llm_invalid_output'), 0)::bigint
                                                                                       AS invalid_output
    FROM calls
    GROUP BY 1, 2
    HAVING sum(calls) >= :'min_calls'::int
) AS outcomes
ORDER BY failure_pct DESC, feature NULLS LAST, model_target NULLS LAST;
