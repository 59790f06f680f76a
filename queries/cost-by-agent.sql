-- name: cost-by-agent
-- description: LLM cost, calls, tokens and average latency per agent type.
--   Cost counts every call, failed ones included (providers bill many failures);
--   the average latency is over valid calls.
-- param: since timestamptz = 7d   -- start of the window (inclusive)
-- param: until timestamptz = now  -- end of the window (exclusive)

SELECT
    agent_type,
    count(*)                                                        AS calls,
    count(*) FILTER (WHERE event_type <> 'llm_valid_execution')     AS failed_calls,
    coalesce(sum(total_cost), 0)                                    AS total_cost,
    round(coalesce(sum(total_cost), 0) / count(*), 6)               AS cost_per_call,
    round(avg(processing_time_ms)
          FILTER (WHERE event_type = 'llm_valid_execution'), 1)     AS avg_latency_ms,
    coalesce(sum(input_tokens), 0)                                  AS input_tokens,
    coalesce(sum(output_tokens), 0)                                 AS output_tokens
FROM logs_llm_execution
WHERE created_at >= :'since'::timestamptz
  AND created_at <  :'until'::timestamptz
GROUP BY agent_type
ORDER BY total_cost DESC, agent_type NULLS LAST;
