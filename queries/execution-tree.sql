-- name: execution-tree
-- description: One execution's processes in start order (processes_executed),
--   indented by nesting level, with duration, status, the LLM calls and cost made in each
--   process and the cost rolled up over its subtree (parent_span_id). Calls outside every
--   known process are summed in a last row.
-- param: execution_id uuid   -- the execution (correlation id)

-- Subtree sums walk up from each process to its ancestors (at most 64 levels) through a
-- one-row map of parents, never a join of the recursion with the steps: the planner then
-- estimates the work for what it is, so a 10,000-process execution stays well under JIT
-- compilation's cost threshold (compiling the old plan took seconds) whatever the number
-- of partitions.
WITH RECURSIVE steps AS (
    SELECT
        step_index,
        coalesce(nesting_level, 0) AS nesting_level,
        span_id,
        parent_span_id,
        btrim(name)                AS name,
        started_at,
        duration_ms,
        status,
        error
    FROM logs_execution_step
    WHERE execution_id = :'execution_id'::uuid
),
own AS (
    SELECT
        span_id,
        sum(llm_call)               AS llm_calls,
        coalesce(sum(llm_cost), 0)  AS llm_cost,
        sum(agent_event)            AS agent_events
    FROM (
        SELECT span_id, 1 AS llm_call, total_cost AS llm_cost, 0 AS agent_event
        FROM logs_llm_execution
        WHERE execution_id = :'execution_id'::uuid
        UNION ALL
        SELECT span_id, 0, NULL, 1
        FROM logs_agent_execution
        WHERE execution_id = :'execution_id'::uuid
    ) AS logged
    GROUP BY span_id
),
parents AS (
    SELECT jsonb_object_agg(span_id, parent_span_id) AS of_span
    FROM steps
    WHERE span_id IS NOT NULL
),
up (span_id, ancestor, distance) AS (
    SELECT span.key, span.key, 0
    FROM parents AS p
    CROSS JOIN LATERAL jsonb_object_keys(p.of_span) AS span (key)
    UNION ALL
    SELECT u.span_id, p.of_span ->> u.ancestor, u.distance + 1
    FROM up AS u
    CROSS JOIN parents AS p
    WHERE u.distance < 64 AND p.of_span ->> u.ancestor IS NOT NULL
),
rolled AS (
    SELECT
        u.ancestor          AS span_id,
        sum(o.llm_calls)    AS subtree_calls,
        sum(o.llm_cost)     AS subtree_cost
    FROM up AS u
    JOIN own AS o ON o.span_id = u.span_id AND o.llm_calls > 0
    GROUP BY u.ancestor
)
SELECT
    s.step_index,
    s.nesting_level,
    repeat('  ', s.nesting_level) || s.name  AS process,
    s.span_id,
    s.parent_span_id,
    s.started_at,
    s.duration_ms,
    s.status,
    coalesce(o.llm_calls, 0)                 AS llm_calls,
    coalesce(o.llm_cost, 0)                  AS llm_cost,
    coalesce(r.subtree_calls, 0)             AS subtree_calls,
    coalesce(r.subtree_cost, 0)              AS subtree_cost,
    coalesce(o.agent_events, 0)              AS agent_events,
    s.error
FROM steps AS s
LEFT JOIN own AS o ON o.span_id = s.span_id
LEFT JOIN rolled AS r ON r.span_id = s.span_id
UNION ALL
SELECT
    NULL,
    NULL,
    '(outside any process)',
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    sum(o.llm_calls),
    sum(o.llm_cost),
    sum(o.llm_calls),
    sum(o.llm_cost),
    NULL,
    NULL
FROM own AS o
WHERE o.llm_calls > 0
  AND (o.span_id IS NULL
       OR o.span_id NOT IN (SELECT span_id FROM steps WHERE span_id IS NOT NULL))
HAVING count(*) > 0
ORDER BY step_index NULLS LAST;
