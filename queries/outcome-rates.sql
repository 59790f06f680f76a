-- name: outcome-rates
-- description: LLM call outcomes by feature and model: counts and rates (in %)
--   of errors, timeouts, rate limits and invalid output. The feature is the execution's
--   context.feature, which the writer copies into each call's particular_data.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: min_calls int = 1         -- hide groups with fewer calls

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
        particular_data ->> 'feature'                                    AS feature,
        model_target,
        count(*)                                                         AS calls,
        count(*) FILTER (WHERE event_type = 'llm_valid_execution')       AS valid,
        count(*) FILTER (WHERE event_type = 'llm_error')                 AS errors,
        count(*) FILTER (WHERE event_type = 'llm_timeout')               AS timeouts,
        count(*) FILTER (WHERE event_type = 'llm_rate_limited')          AS rate_limited,
        count(*) FILTER (WHERE event_type = 'llm_invalid_output')        AS invalid_output
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
    GROUP BY 1, 2
    HAVING count(*) >= :'min_calls'::int
) AS outcomes
ORDER BY failure_pct DESC, feature NULLS LAST, model_target NULLS LAST;
