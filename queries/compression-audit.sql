-- name: compression-audit
-- description: Significant moments that were compressed anyway: agent
--   context_compression events whose user input had significant_moment_detected = true
--   yet a compression_score above the threshold or a compression_priority other than
--   preserve_full. One row per agent type and day that has any, with example executions.
-- rollups: no: it reads the JSON of each context_compression event (score,
--   priority, example executions); the window's events are few next to the model calls.
-- param: since timestamptz = 7d        -- start of the window (inclusive)
-- param: until timestamptz = now       -- end of the window (exclusive)
-- param: max_score numeric = 0.5       -- a significant moment compressed harder than this is flagged
-- param: examples int = 3              -- example execution ids per row
-- param: tz text = UTC                 -- time zone whose calendar days are used

WITH moments AS (
    SELECT
        (created_at AT TIME ZONE :'tz')::date                                AS day,
        agent_type,
        created_at,
        event_id,
        execution_id,
        particular_data #>> '{context_management,user_input,compression_priority}' AS priority,
        CASE
            WHEN jsonb_typeof(particular_data #> '{context_management,user_input,compression_score}')
                 = 'number'
            THEN (particular_data #>> '{context_management,user_input,compression_score}')::numeric
        END                                                                  AS score
    FROM logs_agent_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND event_type = 'context_compression'
      AND particular_data #>> '{context_management,user_input,significant_moment_detected}' = 'true'
),
judged AS (
    SELECT
        *,
        coalesce(score > :'max_score'::numeric, false)
            OR coalesce(priority <> 'preserve_full', false) AS over_compressed
    FROM moments
)
SELECT
    day,
    agent_type,
    count(*)                                                          AS significant_moments,
    count(*) FILTER (WHERE over_compressed)                           AS over_compressed,
    round(100.0 * count(*) FILTER (WHERE over_compressed) / count(*), 1) AS over_compressed_pct,
    round(avg(score) FILTER (WHERE over_compressed), 3)               AS avg_score,
    max(score) FILTER (WHERE over_compressed)                         AS max_score,
    string_agg(DISTINCT priority, ', ' ORDER BY priority)
        FILTER (WHERE over_compressed AND priority <> 'preserve_full') AS priorities,
    array_to_string(
        (array_agg(execution_id::text ORDER BY score DESC NULLS LAST, created_at, event_id)
            FILTER (WHERE over_compressed))[1:(:'examples'::int)],
        ' ')                                                          AS example_executions
FROM judged
GROUP BY day, agent_type
HAVING count(*) FILTER (WHERE over_compressed) > 0
ORDER BY day, over_compressed DESC, agent_type NULLS LAST;
