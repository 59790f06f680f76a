-- name: cost-by-tenant-day
-- description: LLM cost, calls, users and tokens per tenant per calendar day.
-- rollups: no: distinct users per day need the users, and days in tz need
--   more than UTC hours; reads logs_llm_execution once, hash-aggregated.
-- param: since timestamptz = 30d   -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: tz text = UTC             -- time zone whose calendar days are used

WITH per_user AS (
    -- One row per day, tenant and user, so distinct users become a plain count below; two
    -- hash aggregations instead of the sorts that count(DISTINCT user_id) needs.
    SELECT
        (created_at AT TIME ZONE :'tz')::date  AS day,
        tenant_id,
        user_id,
        count(*)                               AS calls,
        sum(input_tokens)                      AS input_tokens,
        sum(output_tokens)                     AS output_tokens,
        sum(total_cost)                        AS total_cost
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
    GROUP BY 1, tenant_id, user_id
)
SELECT
    day,
    tenant_id,
    sum(calls)::bigint                        AS calls,
    count(user_id)                            AS users,
    coalesce(sum(input_tokens), 0)::bigint    AS input_tokens,
    coalesce(sum(output_tokens), 0)::bigint   AS output_tokens,
    coalesce(sum(total_cost), 0)              AS total_cost
FROM per_user
GROUP BY day, tenant_id
ORDER BY day, total_cost DESC, tenant_id;
