-- name: quality-per-dollar
-- description: Quality beside cost, per agent and prompt version: the executions with model
--   calls in the window, their cost per execution, how many were scored with the named
--   score, its mean, and score points per dollar of cost per execution. An execution
--   belongs to the agent and prompt version of its latest model call; its cost is that of
--   all its calls in the window, failed ones included.
-- rollups: no: a score is joined to its execution's own calls; reads raw rows.
-- param: since timestamptz = 30d        -- start of the window (inclusive)
-- param: until timestamptz = now        -- end of the window (exclusive)
-- param: score text = helpfulness       -- the score compared with cost
-- param: min_executions int = 1         -- hide versions with fewer executions

WITH executions AS (
    SELECT
        execution_id,
        (array_agg(agent_type ORDER BY created_at DESC, event_id DESC))[1]      AS agent_type,
        (array_agg(prompt_version ORDER BY created_at DESC, event_id DESC))[1]  AS prompt_version,
        coalesce(sum(total_cost), 0)                                            AS cost
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
    GROUP BY execution_id
),
scores AS (
    SELECT execution_id, (particular_data ->> 'score')::numeric AS value
    FROM logs_agent_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND event_type = 'score'
      AND particular_data ->> 'name' = :'score'
      AND jsonb_typeof(particular_data -> 'score') = 'number'
),
per_execution AS (
    SELECT
        x.agent_type,
        x.prompt_version,
        x.execution_id,
        x.cost,
        count(s.value)  AS scores,
        sum(s.value)    AS score_sum
    FROM executions AS x
    LEFT JOIN scores AS s USING (execution_id)
    GROUP BY x.agent_type, x.prompt_version, x.execution_id, x.cost
),
versions AS (
    SELECT
        agent_type,
        prompt_version,
        count(*)                              AS executions,
        sum(cost)                             AS cost,
        avg(cost)                             AS cost_per_execution,
        count(*) FILTER (WHERE scores > 0)    AS scored_executions,
        sum(scores)                           AS scores,
        sum(score_sum) / nullif(sum(scores), 0)  AS mean_score
    FROM per_execution
    GROUP BY agent_type, prompt_version
)
SELECT
    agent_type,
    prompt_version,
    executions,
    cost,
    round(cost_per_execution, 6)                                 AS cost_per_execution,
    scored_executions,
    scores,
    round(mean_score, 4)                                         AS mean_score,
    round(mean_score / nullif(cost_per_execution, 0), 2)         AS score_per_dollar
FROM versions
WHERE executions >= :'min_executions'::int
ORDER BY agent_type NULLS LAST, prompt_version NULLS LAST;
