-- name: latency-percentiles
-- description: LLM latency percentiles (p50, p95, p99, max) and time-to-first-token p50 per
--   model and agent type. Valid calls only unless include_failed is true.
-- param: since timestamptz = 7d         -- start of the window (inclusive)
-- param: until timestamptz = now        -- end of the window (exclusive)
-- param: include_failed bool = false    -- also count failed calls (timeouts weigh heavily)
-- param: min_calls int = 1              -- hide groups with fewer calls

SELECT
    model_target,
    agent_type,
    count(*)                                                                       AS calls,
    round((percentile_cont(0.50) WITHIN GROUP (ORDER BY processing_time_ms))::numeric, 1) AS p50_ms,
    round((percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms))::numeric, 1) AS p95_ms,
    round((percentile_cont(0.99) WITHIN GROUP (ORDER BY processing_time_ms))::numeric, 1) AS p99_ms,
    max(processing_time_ms)                                                        AS max_ms,
    round((percentile_cont(0.50) WITHIN GROUP (ORDER BY time_to_first_token_ms))::numeric, 1)
                                                                                   AS ttft_p50_ms
FROM logs_llm_execution
WHERE created_at >= :'since'::timestamptz
  AND created_at <  :'until'::timestamptz
  AND processing_time_ms IS NOT NULL
  AND (:'include_failed'::boolean OR event_type = 'llm_valid_execution')
GROUP BY model_target, agent_type
HAVING count(*) >= :'min_calls'::int
ORDER BY p95_ms DESC, model_target NULLS LAST, agent_type NULLS LAST;
