-- Statements of pgtrail.read: the read sandbox, traces, journeys and alert rules.
-- Each block is loaded by pgtrail.statements; the name says which module runs it. The
-- trace_ and journey_ reads run through the sandbox, where %(name)s placeholders become
-- casts of one jsonb parameter.

-- name: sandbox_probe
-- What the connected role and the sandbox function allow: one row, columns in the order
-- the sandbox module reads them.
WITH fn AS (
    SELECT to_regprocedure(%(fn)s) AS oid
), reader AS (
    SELECT r.* FROM pg_catalog.pg_roles AS r WHERE r.rolname = %(reader)s
)
SELECT current_user::text,
       to_regclass('logs_llm_execution') IS NOT NULL,
       coalesce(row_security_active(to_regclass('logs_llm_execution')), false),
       fn.oid IS NOT NULL,
       coalesce((
           SELECT p.proowner = reader.oid AND p.prosecdef
                  AND NOT reader.rolsuper AND NOT reader.rolbypassrls
                  AND NOT pg_has_role(reader.oid, c.relowner, 'MEMBER')
           FROM pg_catalog.pg_proc AS p, reader, pg_catalog.pg_class AS c
           WHERE p.oid = fn.oid AND c.oid = to_regclass('logs_llm_execution')
       ), false),
       fn.oid IS NOT NULL AND has_function_privilege(fn.oid, 'EXECUTE'),
       coalesce(has_function_privilege(
           to_regprocedure('pgtrail_sandbox_bind_all()'), 'EXECUTE'), false),
       coalesce(has_function_privilege(
           to_regprocedure('pgtrail_sandbox_bind(text)'), 'EXECUTE'), false)
FROM fn;

-- name: sandbox_read_only
-- Makes the transaction one read-only snapshot.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: sandbox_jit_off
-- No JIT for this transaction: compiling a report's plan costs more than running it.
SET LOCAL jit = off;

-- name: sandbox_work_mem
-- Raises work_mem to 64MB for this transaction, never below the server's own.
SELECT set_config('work_mem', '64MB', true)
WHERE pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('64MB');

-- name: sandbox_column_types
-- The SQL type of each result column (type oids, type modifiers); NULL for a pseudo-type.
SELECT CASE WHEN t.typtype <> 'p' THEN format_type(t.oid, m.mod) END
FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS m (oid, mod, n)
JOIN pg_catalog.pg_type AS t ON t.oid = m.oid ORDER BY m.n;

-- name: sandbox_bind_tenant
-- A token binding this backend and transaction to one tenant.
SELECT pgtrail_sandbox_bind(%s);

-- name: sandbox_bind_all
-- A token binding this backend and transaction to every tenant (the owner's reads).
SELECT pgtrail_sandbox_bind_all();

-- name: trace_execution
-- The rows of one execution: the root's first, then those of joined processes.
SELECT workflow, status, error, tenant_id, user_id, session_id, span_id, parent_execution_id,
       created_at, finalized_at, duration_ms, processes_executed, context
FROM logs_execution
WHERE execution_id = %(id)s
ORDER BY finalized_at DESC NULLS LAST, created_at DESC
LIMIT 100;

-- name: trace_llm_calls
-- The LLM calls of one execution, in order.
SELECT created_at, span_id, event_type, agent_type, provider, model_target, prompt_version,
       input_tokens, output_tokens, cached_input_tokens, reasoning_tokens,
       processing_time_ms, time_to_first_token_ms, total_cost, error,
       tenant_id, user_id, session_id
FROM logs_llm_execution
WHERE execution_id = %(id)s
ORDER BY created_at, event_id;

-- name: trace_agent_events
-- The agent events of one execution, in order.
SELECT created_at, span_id, event_type, agent_type, particular_data,
       tenant_id, user_id, session_id
FROM logs_agent_execution
WHERE execution_id = %(id)s
ORDER BY created_at, event_id;

-- name: trace_journey_events
-- The user-journey events of one execution, in order.
SELECT created_at, span_id, event_type, particular_data, tenant_id, user_id, session_id
FROM logs_user_journey
WHERE execution_id = %(id)s
ORDER BY created_at, event_id;

-- name: journey_executions
-- A user's executions in a time window (joined processes left out).
SELECT execution_id, created_at, workflow, status, error, session_id, duration_ms
FROM logs_execution
WHERE user_id = %(user)s AND created_at >= %(since)s AND created_at < %(until)s
  AND event_type <> 'execution_joined'
ORDER BY created_at, event_id;

-- name: journey_executions_by_id
-- Executions by id, for journey events whose execution started outside the window.
-- `IN (SELECT unnest(ids))`, here and below: read through the sandbox, the ids arrive as an
-- array built from its jsonb parameter, and `= ANY` of that scanned every partition (2.3 s
-- against 25 ms at 200,000 calls).
SELECT execution_id, created_at, workflow, status, error, session_id, duration_ms
FROM logs_execution
WHERE execution_id IN (SELECT unnest(%(ids)s::uuid[])) AND event_type <> 'execution_joined';

-- name: journey_events
-- A user's journey events in a time window.
SELECT created_at, execution_id, session_id, span_id, event_type, particular_data
FROM logs_user_journey
WHERE user_id = %(user)s AND created_at >= %(since)s AND created_at < %(until)s
ORDER BY created_at, event_id;

-- name: journey_llm_totals
-- LLM calls, failures, unpriced calls and cost per execution.
SELECT execution_id,
       count(*)                                                    AS calls,
       count(*) FILTER (WHERE event_type <> 'llm_valid_execution') AS failed,
       count(*) FILTER (WHERE total_cost IS NULL)                  AS unpriced,
       coalesce(sum(total_cost), 0)                                AS cost
FROM logs_llm_execution
WHERE execution_id IN (SELECT unnest(%(ids)s::uuid[]))
GROUP BY execution_id;

-- name: journey_handoffs
-- The agent handoffs of the given executions.
SELECT created_at, execution_id, span_id, event_type, agent_type, particular_data
FROM logs_agent_execution
WHERE execution_id IN (SELECT unnest(%(ids)s::uuid[])) AND event_type = 'handoff'
ORDER BY created_at, event_id;

-- name: journey_scores
-- The scores and feedback of the given executions, however late they were given.
SELECT created_at, execution_id, span_id, event_type, agent_type, particular_data
FROM logs_agent_execution
WHERE execution_id IN (SELECT unnest(%(ids)s::uuid[])) AND event_type = 'score'
ORDER BY created_at, event_id;

-- name: alerts_daily_cost
-- Model spend and calls per tenant in a window (daily_cost rules).
SELECT tenant_id,
       coalesce(sum(total_cost), 0) AS cost,
       count(*) AS calls
FROM logs_llm_execution
WHERE created_at >= %(since)s
  AND created_at <= %(until)s
GROUP BY tenant_id
ORDER BY tenant_id;

-- name: alerts_canary
-- Executions of a workflow started in a window, successful ones only if asked (canary rules).
SELECT count(*) AS runs
FROM logs_execution
WHERE workflow = %(workflow)s
  AND created_at > %(since)s
  AND created_at <= %(until)s
  AND (NOT %(require_success)s OR status = 'success')
  AND event_type <> 'execution_joined';

-- name: alerts_user_cost
-- Model spend and calls per tenant and user in a window, for the users above the smallest
-- budget of the rule (user_cost rules).
SELECT tenant_id,
       user_id,
       coalesce(sum(total_cost), 0) AS cost,
       count(*) AS calls
FROM logs_llm_execution
WHERE created_at > %(since)s
  AND created_at <= %(until)s
  AND user_id IS NOT NULL
GROUP BY tenant_id, user_id
HAVING coalesce(sum(total_cost), 0) > %(floor)s
ORDER BY cost DESC, tenant_id, user_id;

-- name: alerts_execution_cost
-- The cost and number of the model calls written so far by the given executions (runaway
-- rules).
SELECT execution_id,
       coalesce(sum(total_cost), 0) AS cost,
       count(*) AS calls
FROM logs_llm_execution
WHERE execution_id IN (SELECT unnest(%(ids)s::uuid[]))
  AND created_at >= %(since)s
GROUP BY execution_id;

-- name: alerts_finished_executions
-- Which of the given executions have their finished row already (runaway rules).
SELECT execution_id
FROM logs_execution
WHERE execution_id IN (SELECT unnest(%(ids)s::uuid[]))
  AND created_at >= %(since)s
  AND event_type = 'execution_finalized';

-- name: alerts_score_avg
-- Count and mean of one named numeric score in a window, overall, per agent or per prompt
-- version (score_avg rules). The agent is the score's own, else that of the scored
-- execution's model call (in the scored process first, else its latest); the prompt
-- version is that call's.
WITH scored AS (
    SELECT s.execution_id,
           s.span_id,
           s.created_at,
           s.agent_type,
           (s.particular_data ->> 'score')::float8 AS score
    FROM logs_agent_execution AS s
    WHERE s.event_type = 'score'
      AND s.created_at > %(since)s
      AND s.created_at <= %(until)s
      AND s.particular_data ->> 'name' = %(score)s
      AND jsonb_typeof(s.particular_data -> 'score') = 'number'
      AND (%(source)s::text IS NULL OR s.particular_data ->> 'source' = %(source)s::text)
)
SELECT CASE %(by)s::text
           WHEN 'agent' THEN coalesce(s.agent_type, call.agent_type)
           WHEN 'prompt_version' THEN call.prompt_version
       END AS subject,
       count(*) AS scores,
       avg(s.score) AS mean
FROM scored AS s
LEFT JOIN LATERAL (
    SELECT l.agent_type, l.prompt_version
    FROM logs_llm_execution AS l
    WHERE %(by)s::text IS NOT NULL
      AND l.execution_id = s.execution_id
      AND l.created_at <= s.created_at
    ORDER BY (l.span_id IS NOT DISTINCT FROM s.span_id) DESC, l.created_at DESC
    LIMIT 1
) AS call ON true
GROUP BY 1
HAVING count(*) >= %(min_count)s
ORDER BY 1 NULLS FIRST;
