-- name: user-journey
-- description: One user's journey events in time order: messages, state
--   transitions and feedback, with the session and execution each belongs to.
-- param: user_id text               -- the user (as stored: HMAC-hashed if the writer hashes ids)
-- param: since timestamptz = 30d    -- start of the window (inclusive)
-- param: until timestamptz = now    -- end of the window (exclusive)

SELECT
    created_at,
    session_id,
    execution_id,
    event_type,
    particular_data
FROM logs_user_journey
WHERE user_id = :'user_id'
  AND created_at >= :'since'::timestamptz
  AND created_at <  :'until'::timestamptz
ORDER BY created_at, event_id;
