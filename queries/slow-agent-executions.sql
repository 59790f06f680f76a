-- name: slow-agent-executions
-- description: Agent events that took longer than a threshold, newest first.
--   The duration is particular_data.event_duration_ms; events without a numeric one are skipped.
-- rollups: no: it lists single agent events; reads the window's events.
-- param: since timestamptz = 7d        -- start of the window (inclusive)
-- param: until timestamptz = now       -- end of the window (exclusive)
-- param: min_duration_ms int = 20000   -- report events slower than this
-- param: limit int = 100               -- at most this many rows

SELECT
    created_at,
    execution_id,
    agent_type,
    event_type,
    duration_ms,
    user_id,
    session_id
FROM (
    SELECT
        created_at,
        event_id,
        execution_id,
        agent_type,
        event_type,
        user_id,
        session_id,
        CASE
            WHEN jsonb_typeof(particular_data -> 'event_duration_ms') = 'number'
            THEN (particular_data ->> 'event_duration_ms')::numeric
        END AS duration_ms
    FROM logs_agent_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
) AS timed
WHERE duration_ms > :'min_duration_ms'::int
ORDER BY created_at DESC, event_id
LIMIT :'limit'::int;
