-- name: session-summary
-- description: Per session: turns (user messages received), executions, LLM calls
--   and cost, duration, and whether it was abandoned: a session_abandoned journey event or
--   a last execution with status abandoned. Newest sessions first.
-- rollups: no: turns, executions, cost and abandonment are per session, as
--   many groups as rows; three hash aggregations joined once.
-- param: since timestamptz = 7d        -- start of the window (inclusive)
-- param: until timestamptz = now       -- end of the window (exclusive)
-- param: only_abandoned bool = false   -- show abandoned sessions only
-- param: limit int = 200               -- at most this many sessions

WITH executions AS (
    SELECT
        session_id,
        min(user_id)                                                AS user_id,
        min(tenant_id)                                              AS tenant_id,
        count(*)                                                    AS executions,
        count(*) FILTER (WHERE status = 'error')                    AS failed_executions,
        min(created_at)                                             AS first_at,
        max(coalesce(finalized_at, created_at))                     AS last_at,
        (array_agg(status ORDER BY created_at DESC, event_id DESC))[1] AS last_status
    FROM logs_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND session_id IS NOT NULL
      AND event_type <> 'execution_joined'   -- a join's own row is not an execution
    GROUP BY session_id
),
journey AS (
    SELECT
        session_id,
        min(user_id)                                                       AS user_id,
        min(tenant_id)                                                     AS tenant_id,
        count(*) FILTER (WHERE event_type = 'user_message_received')       AS turns,
        bool_or(event_type = 'session_abandoned')                          AS abandoned_event,
        min(created_at)                                                    AS first_at,
        max(created_at)                                                    AS last_at
    FROM logs_user_journey
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND session_id IS NOT NULL
    GROUP BY session_id
),
llm AS (
    SELECT session_id, count(*) AS llm_calls, coalesce(sum(total_cost), 0) AS cost
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND session_id IS NOT NULL
    GROUP BY session_id
),
sessions AS (
    SELECT
        session_id,
        coalesce(x.user_id, j.user_id)                                     AS user_id,
        coalesce(x.tenant_id, j.tenant_id)                                 AS tenant_id,
        least(x.first_at, j.first_at)                                      AS started_at,
        greatest(x.last_at, j.last_at)                                     AS ended_at,
        coalesce(j.turns, 0)                                               AS turns,
        coalesce(x.executions, 0)                                          AS executions,
        coalesce(x.failed_executions, 0)                                   AS failed_executions,
        coalesce(l.llm_calls, 0)                                           AS llm_calls,
        coalesce(l.cost, 0)                                                AS cost,
        coalesce(j.abandoned_event, false)
            OR coalesce(x.last_status = 'abandoned', false)                AS abandoned
    FROM executions AS x
    FULL JOIN journey AS j USING (session_id)
    LEFT JOIN llm AS l USING (session_id)
)
SELECT
    session_id,
    user_id,
    tenant_id,
    started_at,
    ended_at,
    round(extract(epoch FROM ended_at - started_at), 1)  AS duration_s,
    turns,
    executions,
    failed_executions,
    llm_calls,
    cost,
    abandoned
FROM sessions
WHERE NOT :'only_abandoned'::boolean OR abandoned
ORDER BY started_at DESC, session_id
LIMIT :'limit'::int;
