-- name: score-trends
-- description: Numeric scores (booleans count 1 and 0) per score name and week, by the
--   agent, model and prompt version of the scored work: scores, mean, lowest, highest, and
--   how many (and what share) are under a threshold. The scored work is the scored
--   execution's model call in the scored process, else its latest call; the agent is the
--   score's own when it names one. Weeks are of the time the score was given.
-- rollups: no: scores are few beside model calls, and arrive late; reads score events.
-- param: since timestamptz = 8w       -- start of the window (inclusive)
-- param: until timestamptz = now      -- end of the window (exclusive)
-- param: score text = ''              -- one score name; '' shows every name
-- param: threshold numeric = 0.5      -- count and share the scores under this value
-- param: min_count int = 1            -- hide groups with fewer scores
-- param: tz text = UTC                -- time zone whose weeks (Monday to Sunday) are used

WITH scores AS (
    SELECT
        s.execution_id,
        s.span_id,
        s.agent_type,
        date_trunc('week', s.created_at AT TIME ZONE :'tz')::date  AS week,
        s.particular_data ->> 'name'                              AS score_name,
        (s.particular_data ->> 'score')::numeric                  AS value
    FROM logs_agent_execution AS s
    WHERE s.created_at >= :'since'::timestamptz
      AND s.created_at <  :'until'::timestamptz
      AND s.event_type = 'score'
      AND s.particular_data ->> 'name' IS NOT NULL
      AND jsonb_typeof(s.particular_data -> 'score') = 'number'
      AND (:'score' = '' OR s.particular_data ->> 'name' = :'score')
),
attributed AS (
    SELECT
        sc.week,
        sc.score_name,
        coalesce(sc.agent_type, call.agent_type)  AS agent_type,
        call.model_target,
        call.prompt_version,
        sc.value
    FROM scores AS sc
    LEFT JOIN LATERAL (
        -- The scored work: the call in the scored process, else the execution's latest.
        SELECT l.agent_type, l.model_target, l.prompt_version
        FROM logs_llm_execution AS l
        WHERE l.execution_id = sc.execution_id
        ORDER BY (l.span_id IS NOT DISTINCT FROM sc.span_id) DESC, l.created_at DESC,
                 l.event_id DESC
        LIMIT 1
    ) AS call ON true
)
SELECT
    week,
    score_name,
    agent_type,
    model_target,
    prompt_version,
    count(*)                                                         AS scores,
    round(avg(value), 4)                                             AS mean_score,
    min(value)                                                       AS min_score,
    max(value)                                                       AS max_score,
    count(*) FILTER (WHERE value < :'threshold'::numeric)            AS under_threshold,
    round(100.0 * count(*) FILTER (WHERE value < :'threshold'::numeric) / count(*), 2)
                                                                     AS under_threshold_pct
FROM attributed
GROUP BY week, score_name, agent_type, model_target, prompt_version
HAVING count(*) >= :'min_count'::int
ORDER BY score_name, week, agent_type NULLS LAST, model_target NULLS LAST,
         prompt_version NULLS LAST;
