-- name: large-generations
-- description: LLM calls whose input + output tokens reach a threshold, largest first.
-- rollups: no: it lists single calls; reads logs_llm_execution by the window.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: min_tokens int = 8000     -- input + output tokens of one call
-- param: limit int = 100           -- at most this many rows

SELECT
    created_at,
    execution_id,
    agent_type,
    model_target,
    event_type,
    input_tokens,
    output_tokens,
    coalesce(input_tokens, 0) + coalesce(output_tokens, 0)  AS total_tokens,
    total_cost,
    processing_time_ms,
    user_id
FROM logs_llm_execution
WHERE created_at >= :'since'::timestamptz
  AND created_at <  :'until'::timestamptz
  AND coalesce(input_tokens, 0) + coalesce(output_tokens, 0) >= :'min_tokens'::int
ORDER BY total_tokens DESC, created_at DESC, event_id
LIMIT :'limit'::int;
