-- Statements of the web UI (``pgtrail ui``). Each runs in the read sandbox, bound to the
-- UI's tenant when it has one; values are bound by the driver. Model-call figures read whole
-- UTC hours from pgtrail_rollup_llm and the partial hours at both ends of the window from
-- raw rows, as the saved reports do, so the pages stay exact and fast at scale.

-- name: ui_cost_by_day
-- LLM cost and calls per UTC day and one dimension (agent, model or tenant) in a window.
WITH hours AS (
    SELECT date_trunc('hour', %(since)s::timestamptz + interval '1 hour'
                              - interval '1 microsecond', 'UTC')  AS lo,
           date_trunc('hour', %(until)s::timestamptz, 'UTC')     AS hi
),
calls AS (
    SELECT bucket AS at, agent_type, model_target, tenant_id, calls, total_cost
    FROM pgtrail_rollup_llm
    WHERE bucket >= (SELECT lo FROM hours) AND bucket < (SELECT hi FROM hours)
    UNION ALL
    SELECT created_at, agent_type, model_target, tenant_id, 1, total_cost
    FROM logs_llm_execution
    WHERE created_at >= %(since)s::timestamptz
      AND created_at <  least(%(until)s::timestamptz, (SELECT lo FROM hours))
    UNION ALL
    SELECT created_at, agent_type, model_target, tenant_id, 1, total_cost
    FROM logs_llm_execution
    WHERE created_at >= greatest(%(since)s::timestamptz, (SELECT lo FROM hours),
                                 (SELECT hi FROM hours))
      AND created_at <  %(until)s::timestamptz
)
SELECT (at AT TIME ZONE 'UTC')::date                    AS day,
       CASE %(by)s::text WHEN 'agent' THEN agent_type
                         WHEN 'model' THEN model_target
                         ELSE tenant_id END             AS key,
       sum(calls)::bigint                               AS calls,
       coalesce(sum(total_cost), 0)                     AS cost
FROM calls
GROUP BY 1, 2
ORDER BY 1, 4 DESC, 2 NULLS LAST;

-- name: ui_calls_by_day
-- Calls, failed calls, cost and p50/p95 latency (valid calls) per UTC day, for every agent
-- or one (agent NULL for all).
WITH hours AS (
    SELECT date_trunc('hour', %(since)s::timestamptz + interval '1 hour'
                              - interval '1 microsecond', 'UTC')  AS lo,
           date_trunc('hour', %(until)s::timestamptz, 'UTC')     AS hi
),
raw AS (
    SELECT created_at, event_type, total_cost, processing_time_ms
    FROM logs_llm_execution
    WHERE created_at >= %(since)s::timestamptz
      AND created_at <  least(%(until)s::timestamptz, (SELECT lo FROM hours))
      AND (%(agent)s::text IS NULL OR agent_type = %(agent)s::text)
    UNION ALL
    SELECT created_at, event_type, total_cost, processing_time_ms
    FROM logs_llm_execution
    WHERE created_at >= greatest(%(since)s::timestamptz, (SELECT lo FROM hours),
                                 (SELECT hi FROM hours))
      AND created_at <  %(until)s::timestamptz
      AND (%(agent)s::text IS NULL OR agent_type = %(agent)s::text)
),
parts AS (
    SELECT (bucket AT TIME ZONE 'UTC')::date AS day, event_type, calls, total_cost,
           latency_buckets, latency_counts
    FROM pgtrail_rollup_llm
    WHERE bucket >= (SELECT lo FROM hours) AND bucket < (SELECT hi FROM hours)
      AND (%(agent)s::text IS NULL OR agent_type = %(agent)s::text)
    UNION ALL
    SELECT (created_at AT TIME ZONE 'UTC')::date, event_type, 1, total_cost,
           CASE WHEN processing_time_ms IS NOT NULL
                THEN ARRAY[greatest(processing_time_ms, 0)] ELSE '{}' END,
           CASE WHEN processing_time_ms IS NOT NULL THEN ARRAY[1] ELSE '{}' END
    FROM raw
),
days AS (
    SELECT day,
           sum(calls)::bigint                                                   AS calls,
           coalesce(sum(calls) FILTER (WHERE event_type <> 'llm_valid_execution'), 0)::bigint
                                                                                AS failed,
           coalesce(sum(total_cost), 0)                                         AS cost
    FROM parts
    GROUP BY day
),
latency AS (
    SELECT day, array_agg(cell) AS cells, array_agg(n) AS counts
    FROM (
        SELECT p.day, h.cell, sum(h.n)::bigint AS n
        FROM parts AS p
        CROSS JOIN LATERAL unnest(p.latency_buckets, p.latency_counts) AS h (cell, n)
        WHERE p.event_type = 'llm_valid_execution'
        GROUP BY 1, 2
    ) AS merged
    GROUP BY day
)
SELECT d.day, d.calls, d.failed, d.cost,
       round(pgtrail_hist_percentile(l.cells, l.counts, 0.50)::numeric, 1) AS p50_ms,
       round(pgtrail_hist_percentile(l.cells, l.counts, 0.95)::numeric, 1) AS p95_ms
FROM days AS d
LEFT JOIN latency AS l ON l.day = d.day
ORDER BY d.day;

-- name: ui_top_workflows
-- The workflows that cost the most in a window: executions, failed ones, LLM cost.
WITH cost AS (
    SELECT execution_id, sum(total_cost) AS cost
    FROM logs_llm_execution
    WHERE created_at >= %(since)s::timestamptz AND created_at < %(until)s::timestamptz
    GROUP BY execution_id
)
SELECT e.workflow,
       count(*)                                        AS executions,
       count(*) FILTER (WHERE e.status = 'error')      AS failed,
       coalesce(sum(c.cost), 0)                        AS cost
FROM logs_execution AS e
LEFT JOIN cost AS c ON c.execution_id = e.execution_id
WHERE e.created_at >= %(since)s::timestamptz AND e.created_at < %(until)s::timestamptz
  AND e.event_type <> 'execution_joined'
GROUP BY e.workflow
ORDER BY cost DESC, executions DESC, e.workflow NULLS LAST
LIMIT %(limit)s::int;

-- name: ui_top_users
-- The users whose model calls cost the most in a window.
SELECT user_id,
       count(DISTINCT execution_id)   AS executions,
       count(*)                       AS calls,
       coalesce(sum(total_cost), 0)   AS cost
FROM logs_llm_execution
WHERE created_at >= %(since)s::timestamptz AND created_at < %(until)s::timestamptz
  AND user_id IS NOT NULL
GROUP BY user_id
ORDER BY cost DESC, calls DESC, user_id
LIMIT %(limit)s::int;

-- name: ui_executions_by_time
-- One page of executions, newest first, after a keyset cursor (created_at, execution_id);
-- each filter is NULL when not given.
SELECT execution_id, created_at, workflow, status, tenant_id, user_id, session_id,
       duration_ms
FROM logs_execution
WHERE event_type <> 'execution_joined'
  AND created_at >= %(since)s::timestamptz AND created_at < %(until)s::timestamptz
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(user)s::text IS NULL OR user_id = %(user)s::text)
  AND (%(session)s::text IS NULL OR session_id = %(session)s::text)
  AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after_at)s::timestamptz IS NULL
       OR (created_at, execution_id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, execution_id DESC
LIMIT %(limit)s::int;

-- name: ui_executions_by_duration
-- One page of executions, longest first (no duration last), after a keyset cursor
-- (duration_ms, execution_id); each filter is NULL when not given.
SELECT execution_id, created_at, workflow, status, tenant_id, user_id, session_id,
       duration_ms
FROM logs_execution
WHERE event_type <> 'execution_joined'
  AND created_at >= %(since)s::timestamptz AND created_at < %(until)s::timestamptz
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(user)s::text IS NULL OR user_id = %(user)s::text)
  AND (%(session)s::text IS NULL OR session_id = %(session)s::text)
  AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after_value)s::bigint IS NULL
       OR (coalesce(duration_ms, -1), execution_id)
          < (%(after_value)s::bigint, %(after_id)s::uuid))
ORDER BY coalesce(duration_ms, -1) DESC, execution_id DESC
LIMIT %(limit)s::int;

-- name: ui_llm_call_bodies
-- The prompt body (by hash) and payload of the model calls of one execution, in the order
-- of trace_llm_calls, each cut to a number of characters.
SELECT c.created_at, c.span_id, c.prompt_hash,
       left(p.body, %(chars)s::int)                 AS prompt_body,
       p.body_chars                                 AS prompt_chars,
       left(c.payload::text, %(chars)s::int)        AS payload,
       length(c.payload::text)                      AS payload_chars
FROM logs_llm_execution AS c
LEFT JOIN pgtrail_prompt AS p ON p.prompt_hash = c.prompt_hash
WHERE c.execution_id = %(id)s::uuid
ORDER BY c.created_at, c.event_id;

-- name: ui_session_executions
-- The executions of one session, in order (joined processes left out).
SELECT execution_id, created_at, workflow, status, error, tenant_id, user_id, duration_ms
FROM logs_execution
WHERE session_id = %(session)s::text AND event_type <> 'execution_joined'
ORDER BY created_at, event_id
LIMIT %(limit)s::int;

-- name: ui_session_events
-- The journey events of one session, in order.
SELECT created_at, execution_id, event_type, particular_data
FROM logs_user_journey
WHERE session_id = %(session)s::text
ORDER BY created_at, event_id
LIMIT %(limit)s::int;

-- name: ui_agent_event_types
-- How many events of each type an agent logged in a window.
SELECT event_type, count(*) AS events
FROM logs_agent_execution
WHERE agent_type = %(agent)s::text
  AND created_at >= %(since)s::timestamptz AND created_at < %(until)s::timestamptz
GROUP BY event_type
ORDER BY events DESC, event_type;

-- name: ui_agent_recent_events
-- An agent's latest events in a window, newest first.
SELECT created_at, execution_id, event_type, particular_data
FROM logs_agent_execution
WHERE agent_type = %(agent)s::text
  AND created_at >= %(since)s::timestamptz AND created_at < %(until)s::timestamptz
ORDER BY created_at DESC, event_id DESC
LIMIT %(limit)s::int;

-- name: ui_llm_totals
-- LLM calls, failures and cost per execution, for the executions of one page. The ids are
-- joined as a set (IN (SELECT unnest(...))): inside the sandbox, = ANY of the bound array
-- is planned without the execution_id index and scans every partition.
SELECT execution_id,
       count(*)                                                    AS calls,
       count(*) FILTER (WHERE event_type <> 'llm_valid_execution') AS failed,
       coalesce(sum(total_cost), 0)                                AS cost
FROM logs_llm_execution
WHERE execution_id IN (SELECT unnest(%(ids)s::uuid[]))
GROUP BY execution_id;

-- name: ui_prompt
-- One prompt body by its hash, whole, with the model calls that used it.
SELECT p.prompt_hash, p.body, p.body_chars, u.calls, u.first_used, u.last_used
FROM pgtrail_prompt AS p
CROSS JOIN LATERAL (
    SELECT count(*) AS calls, min(c.created_at) AS first_used, max(c.created_at) AS last_used
    FROM logs_llm_execution AS c
    WHERE c.prompt_hash = p.prompt_hash
) AS u
WHERE p.prompt_hash = %(hash)s::text;
