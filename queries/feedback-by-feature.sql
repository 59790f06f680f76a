-- name: feedback-by-feature
-- description: Feedback per feature and prompt version: scores of every kind by name,
--   and feedback journey events (thumbs_down...) by type, each with how many were given,
--   on how many executions, the mean of the numeric ones, how many are under a threshold,
--   and the most frequent label of the boolean and categorical ones. The feature is the
--   scored execution's (its context), the prompt version that of its model call in the
--   scored process, else of its latest call, else its context's.
-- rollups: no: feedback is sparse and arrives late; reads score and feedback events.
-- param: since timestamptz = 30d                               -- start of the window (inclusive)
-- param: until timestamptz = now                               -- end of the window (exclusive)
-- param: events text = thumbs_down,thumbs_up,draft_edited      -- journey event types that are feedback, comma-separated
-- param: threshold numeric = 0.5                               -- count the numeric scores under this value
-- param: min_count int = 1                                     -- hide groups with less feedback

WITH feedback AS (
    SELECT
        s.execution_id,
        s.span_id,
        'score'                                                AS kind,
        s.particular_data ->> 'name'                           AS name,
        CASE WHEN jsonb_typeof(s.particular_data -> 'score') = 'number'
             THEN (s.particular_data ->> 'score')::numeric END  AS value,
        s.particular_data ->> 'label'                          AS label
    FROM logs_agent_execution AS s
    WHERE s.created_at >= :'since'::timestamptz
      AND s.created_at <  :'until'::timestamptz
      AND s.event_type = 'score'
      AND s.particular_data ->> 'name' IS NOT NULL
    UNION ALL
    SELECT
        j.execution_id,
        j.span_id,
        'journey',
        j.event_type,
        NULL::numeric,
        NULL::text
    FROM logs_user_journey AS j
    WHERE j.created_at >= :'since'::timestamptz
      AND j.created_at <  :'until'::timestamptz
      AND j.event_type = ANY (string_to_array(:'events', ','))
),
attributed AS (
    SELECT
        f.*,
        ex.context ->> 'feature'                                    AS feature,
        coalesce(call.prompt_version, ex.context ->> 'prompt_version') AS prompt_version
    FROM feedback AS f
    LEFT JOIN LATERAL (
        SELECT e.context
        FROM logs_execution AS e
        WHERE e.execution_id = f.execution_id
          AND e.event_type <> 'execution_joined'   -- a join's own row has no context
        ORDER BY e.finalized_at DESC NULLS LAST, e.created_at DESC, e.event_id DESC
        LIMIT 1
    ) AS ex ON true
    LEFT JOIN LATERAL (
        SELECT l.prompt_version
        FROM logs_llm_execution AS l
        WHERE l.execution_id = f.execution_id
        ORDER BY (l.span_id IS NOT DISTINCT FROM f.span_id) DESC, l.created_at DESC,
                 l.event_id DESC
        LIMIT 1
    ) AS call ON true
)
SELECT
    feature,
    prompt_version,
    kind,
    name,
    count(*)                                                AS feedback,
    count(DISTINCT execution_id)                            AS executions,
    round(avg(value), 4)                                    AS mean_score,
    count(*) FILTER (WHERE value < :'threshold'::numeric)   AS under_threshold,
    mode() WITHIN GROUP (ORDER BY label)                    AS top_label
FROM attributed
GROUP BY feature, prompt_version, kind, name
HAVING count(*) >= :'min_count'::int
ORDER BY feature NULLS LAST, prompt_version NULLS LAST, kind, name;
