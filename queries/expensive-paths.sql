-- name: expensive-paths
-- description: Process paths ranked by LLM cost: the names of each execution's
--   processes in start order (from processes_executed), grouped by workflow and path, with
--   total and average LLM cost per execution. Executions are those started in the window;
--   their calls are expected within a day of the start.
-- rollups: no: paths are per execution (processes_executed); the distinct lists
--   of process names are turned into paths once each.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: min_executions int = 1    -- hide paths taken fewer times
-- param: limit int = 20            -- at most this many paths

WITH costs AS (
    SELECT execution_id, count(*) AS llm_calls, coalesce(sum(total_cost), 0) AS cost
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz + interval '1 day'
    GROUP BY execution_id
),
by_names AS (
    -- Grouped by the raw list of process names first: the few distinct lists are then
    -- turned into paths once each instead of once per execution.
    SELECT
        e.workflow,
        jsonb_path_query_array(e.processes_executed, '$[*].name')  AS names,
        count(*)                                                   AS executions,
        coalesce(sum(c.llm_calls), 0)                              AS llm_calls,
        coalesce(sum(c.cost), 0)                                   AS total_cost,
        sum(e.duration_ms)                                         AS duration_sum,
        count(e.duration_ms)                                       AS durations
    FROM logs_execution AS e
    LEFT JOIN costs AS c USING (execution_id)
    WHERE e.created_at >= :'since'::timestamptz
      AND e.created_at <  :'until'::timestamptz
      AND e.event_type <> 'execution_joined'   -- a join's own row is not an execution
    GROUP BY e.workflow, names
),
paths AS (
    SELECT
        workflow,
        coalesce(
            (SELECT string_agg(btrim(name.value #>> '{}'), ' > ' ORDER BY name.ordinality)
             FROM jsonb_array_elements(names) WITH ORDINALITY AS name (value, ordinality)),
            '')                                               AS path,
        sum(executions)::bigint                               AS executions,
        sum(llm_calls)                                        AS llm_calls,
        sum(total_cost)                                       AS total_cost,
        sum(total_cost) / sum(executions)                     AS avg_cost,
        sum(duration_sum) / nullif(sum(durations), 0)         AS avg_duration_ms
    FROM by_names
    GROUP BY 1, 2
    HAVING sum(executions) >= :'min_executions'::int
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
