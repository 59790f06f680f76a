-- name: cost-by-tenant-day
-- description: LLM cost, calls, users and tokens per tenant per calendar day (seed 002).
-- param: since timestamptz = 30d   -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: tz text = UTC             -- time zone whose calendar days are used

SELECT
    (created_at AT TIME ZONE :'tz')::date  AS day,
    tenant_id,
    count(*)                               AS calls,
    count(DISTINCT user_id)                AS users,
    coalesce(sum(input_tokens), 0)         AS input_tokens,
    coalesce(sum(output_tokens), 0)        AS output_tokens,
    coalesce(sum(total_cost), 0)           AS total_cost
FROM logs_llm_execution
WHERE created_at >= :'since'::timestamptz
  AND created_at <  :'until'::timestamptz
GROUP BY day, tenant_id
ORDER BY day, total_cost DESC, tenant_id;
