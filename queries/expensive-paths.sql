-- name: expensive-paths
-- description: Process paths ranked by LLM cost (seed 000): the names of each execution's
--   processes in start order (from processes_executed), grouped by workflow and path, with
--   total and average LLM cost per execution. Executions are those started in the window;
--   their calls are expected within a day of the start.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: min_executions int = 1    -- hide paths taken fewer times
-- param: limit int = 20            -- at most this many paths

WITH executions AS (
    SELECT
        e.execution_id,
        e.workflow,
        e.duration_ms,
        (
            SELECT string_agg(btrim(step.value ->> 'name'), ' > ' ORDER BY step.ordinality)
            FROM jsonb_array_elements(e.processes_executed) WITH ORDINALITY AS step (value, ordinality)
        ) AS path
    FROM logs_execution AS e
    WHERE e.created_at >= :'since'::timestamptz
      AND e.created_at <  :'until'::timestamptz
),
costs AS (
    SELECT execution_id, count(*) AS llm_calls, coalesce(sum(total_cost), 0) AS cost
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz + interval '1 day'
    GROUP BY execution_id
),
paths AS (
    SELECT
        x.workflow,
        coalesce(x.path, '')                  AS path,
        count(*)                              AS executions,
        coalesce(sum(c.llm_calls), 0)         AS llm_calls,
        coalesce(sum(c.cost), 0)              AS total_cost,
        avg(coalesce(c.cost, 0))              AS avg_cost,
        avg(x.duration_ms)                    AS avg_duration_ms
    FROM executions AS x
    LEFT JOIN costs AS c USING (execution_id)
    GROUP BY x.workflow, coalesce(x.path, '')
    HAVING count(*) >= :'min_executions'::int
)
SELECT
    rank() OVER (ORDER BY total_cost DESC)                        AS rank_total,
    rank() OVER (ORDER BY avg_cost DESC)                          AS rank_avg,
    workflow,
    path,
    executions,
    llm_calls,
    total_cost,
    round(avg_cost, 6)                                            AS avg_cost,
    round(avg_duration_ms, 0)                                     AS avg_duration_ms,
    round(100 * total_cost / nullif(sum(total_cost) OVER (), 0), 2) AS cost_share_pct
FROM paths
ORDER BY total_cost DESC, workflow, path
LIMIT :'limit'::int;
