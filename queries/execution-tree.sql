-- name: execution-tree
-- description: One execution's processes in start order (processes_executed),
--   indented by nesting level, with duration, status, the LLM calls and cost made in each
--   process and the cost rolled up over its subtree (parent_span_id). Calls outside every
--   known process are summed in a last row.
-- param: execution_id uuid   -- the execution (correlation id)

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
    SELECT span_id, count(*) AS llm_calls, coalesce(sum(total_cost), 0) AS llm_cost
    FROM logs_llm_execution
    WHERE execution_id = :'execution_id'::uuid
    GROUP BY span_id
),
agent AS (
    SELECT span_id, count(*) AS agent_events
    FROM logs_agent_execution
    WHERE execution_id = :'execution_id'::uuid
    GROUP BY span_id
),
closure (ancestor, descendant, depth) AS (
    SELECT span_id, span_id, 0
    FROM steps
    WHERE span_id IS NOT NULL
    UNION ALL
    SELECT c.ancestor, s.span_id, c.depth + 1
    FROM closure AS c
    JOIN steps AS s ON s.parent_span_id = c.descendant
    WHERE c.depth < 64
),
rolled AS (
    SELECT
        c.ancestor                      AS span_id,
        coalesce(sum(o.llm_calls), 0)   AS subtree_calls,
        coalesce(sum(o.llm_cost), 0)    AS subtree_cost
    FROM closure AS c
    LEFT JOIN own AS o ON o.span_id = c.descendant
    GROUP BY c.ancestor
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
    coalesce(a.agent_events, 0)              AS agent_events,
    s.error
FROM steps AS s
LEFT JOIN own AS o ON o.span_id = s.span_id
LEFT JOIN agent AS a ON a.span_id = s.span_id
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
WHERE o.span_id IS NULL
   OR o.span_id NOT IN (SELECT span_id FROM steps WHERE span_id IS NOT NULL)
HAVING count(*) > 0
ORDER BY step_index NULLS LAST;
