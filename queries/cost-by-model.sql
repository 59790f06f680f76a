-- name: cost-by-model
-- description: LLM cost and tokens per provider and model, with each model's share of the cost.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)

SELECT
    provider,
    model_target,
    count(*)                                                          AS calls,
    count(*) FILTER (WHERE event_type <> 'llm_valid_execution')       AS failed_calls,
    coalesce(sum(input_tokens), 0)                                    AS input_tokens,
    coalesce(sum(cached_input_tokens), 0)                             AS cached_input_tokens,
    coalesce(sum(output_tokens), 0)                                   AS output_tokens,
    coalesce(sum(reasoning_tokens), 0)                                AS reasoning_tokens,
    coalesce(sum(total_cost), 0)                                      AS total_cost,
    round(coalesce(sum(total_cost), 0) / count(*), 6)                 AS cost_per_call,
    round(100 * coalesce(sum(total_cost), 0)
          / nullif(sum(sum(total_cost)) OVER (), 0), 2)               AS cost_share_pct
FROM logs_llm_execution
WHERE created_at >= :'since'::timestamptz
  AND created_at <  :'until'::timestamptz
GROUP BY provider, model_target
ORDER BY total_cost DESC, provider NULLS LAST, model_target NULLS LAST;
