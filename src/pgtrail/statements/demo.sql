-- Statements of pgtrail.demo: the demo loader.
-- Each block is loaded by pgtrail.statements; the name says which module runs it.

-- name: demo_executions_in_window
-- How many execution rows fall in [first, last).
SELECT count(*) FROM logs_execution WHERE created_at >= %s AND created_at < %s;
