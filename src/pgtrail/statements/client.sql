-- Statements of the client (pgtrail.trail and the modules beside it).
-- Each block is loaded by pgtrail.statements; the name says which module runs it.

-- name: executions_stored_identity
-- The tenant, user, session, workflow and root span of a finished execution, for a late
-- join or score: the root's row first, looked for in one created_at window (which prunes
-- the day partitions).
SELECT tenant_id, user_id, session_id, workflow, span_id
FROM logs_execution
WHERE execution_id = %(id)s AND created_at >= %(since)s AND created_at < %(until)s
ORDER BY (event_type = 'execution_finalized') DESC, created_at
LIMIT 1;
