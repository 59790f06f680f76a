-- name: cost-by-agent
-- description: LLM cost, calls, tokens and average latency per agent type.
--   Cost counts every call, failed ones included (providers bill many failures);
--   the average latency is over valid calls.
-- rollups: whole UTC hours from pgtrail_rollup_llm, the partial hours at both ends of the
--   window from logs_llm_execution; exact, and history older than raw retention stays.
-- param: since timestamptz = 7d   -- start of the window (inclusive)
-- param: until timestamptz = now  -- end of the window (exclusive)

WITH hours AS (
    -- The whole UTC hours inside the window: read from the rollup.
    SELECT
        date_trunc('hour', :'since'::timestamptz + interval '1 hour' - interval '1 microsecond',
                   'UTC')                                         AS lo,
        date_trunc('hour', :'until'::timestamptz, 'UTC')          AS hi
),
calls AS (
    SELECT agent_type, event_type, calls, total_cost, latency_calls, latency_sum,
           input_tokens, output_tokens
    FROM pgtrail_rollup_llm
    WHERE bucket >= (SELECT lo FROM hours)
      AND bucket <  (SELECT hi FROM hours)
    UNION ALL
    -- The partial hours at both ends: raw rows.
    SELECT agent_type, event_type, 1, total_cost, (processing_time_ms IS NOT NULL)::int,
           processing_time_ms, input_tokens, output_tokens
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  least(:'until'::timestamptz, (SELECT lo FROM hours))
    UNION ALL
    SELECT agent_type, event_type, 1, total_cost, (processing_time_ms IS NOT NULL)::int,
           processing_time_ms, input_tokens, output_tokens
    FROM logs_llm_execution
    WHERE created_at >= greatest(:'since'::timestamptz, (SELECT lo FROM hours),
                                 (SELECT hi FROM hours))
      AND created_at <  :'until'::timestamptz
)
SELECT
    agent_type,
    sum(calls)::bigint                                                  AS calls,
    coalesce(sum(calls) FILTER (WHERE event_type <> 'llm_valid_execution'), 0)::bigint
                                                                        AS failed_calls,
    coalesce(sum(total_cost), 0)                                        AS total_cost,
    round(coalesce(sum(total_cost), 0) / sum(calls), 6)                 AS cost_per_call,
    round(sum(latency_sum) FILTER (WHERE event_type = 'llm_valid_execution')
          / nullif(sum(latency_calls) FILTER (WHERE event_type = 'llm_valid_execution'), 0), 1)
                                                                        AS avg_latency_ms,
    coalesce(sum(input_tokens), 0)::bigint                              AS input_tokens,
    coalesce(sum(output_tokens), 0)::bigint                             AS output_tokens
FROM calls
GROUP BY agent_type
ORDER BY total_cost DESC, agent_type NULLS LAST;
