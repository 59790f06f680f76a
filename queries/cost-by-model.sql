-- name: cost-by-model
-- description: LLM cost and tokens per provider and model, with each model's share of the cost.
-- rollups: whole UTC hours from pgtrail_rollup_llm, the partial hours at both ends of the
--   window from logs_llm_execution; exact, and history older than raw retention stays.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)

WITH hours AS (
    -- The whole UTC hours inside the window: read from the rollup.
    SELECT
        date_trunc('hour', :'since'::timestamptz + interval '1 hour' - interval '1 microsecond',
                   'UTC')                                         AS lo,
        date_trunc('hour', :'until'::timestamptz, 'UTC')          AS hi
),
calls AS (
    SELECT provider, model_target, event_type, calls, input_tokens, cached_input_tokens,
           output_tokens, reasoning_tokens, total_cost
    FROM pgtrail_rollup_llm
    WHERE bucket >= (SELECT lo FROM hours)
      AND bucket <  (SELECT hi FROM hours)
    UNION ALL
    -- The partial hours at both ends: raw rows.
    SELECT provider, model_target, event_type, 1, input_tokens, cached_input_tokens,
           output_tokens, reasoning_tokens, total_cost
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  least(:'until'::timestamptz, (SELECT lo FROM hours))
    UNION ALL
    SELECT provider, model_target, event_type, 1, input_tokens, cached_input_tokens,
           output_tokens, reasoning_tokens, total_cost
    FROM logs_llm_execution
    WHERE created_at >= greatest(:'since'::timestamptz, (SELECT lo FROM hours),
                                 (SELECT hi FROM hours))
      AND created_at <  :'until'::timestamptz
)
SELECT
    provider,
    model_target,
    sum(calls)::bigint                                                AS calls,
    coalesce(sum(calls) FILTER (WHERE event_type <> 'llm_valid_execution'), 0)::bigint
                                                                      AS failed_calls,
    coalesce(sum(input_tokens), 0)::bigint                            AS input_tokens,
    coalesce(sum(cached_input_tokens), 0)::bigint                     AS cached_input_tokens,
    coalesce(sum(output_tokens), 0)::bigint                           AS output_tokens,
    coalesce(sum(reasoning_tokens), 0)::bigint                        AS reasoning_tokens,
    coalesce(sum(total_cost), 0)                                      AS total_cost,
    round(coalesce(sum(total_cost), 0) / sum(calls), 6)               AS cost_per_call,
    round(100 * coalesce(sum(total_cost), 0)
          / nullif(sum(sum(total_cost)) OVER (), 0), 2)               AS cost_share_pct
FROM calls
GROUP BY provider, model_target
ORDER BY total_cost DESC, provider NULLS LAST, model_target NULLS LAST;
