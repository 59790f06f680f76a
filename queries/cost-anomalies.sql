-- name: cost-anomalies
-- description: Executions, and users, whose LLM cost is far above their workflow's robust
--   baseline (a user whose pattern triggers an expensive execution path):
--   cost > median + k * MAD, computed per workflow over the window, once over executions
--   and once over users' total cost. The MAD is floored at 5% of the median so a workflow
--   of near-constant cost does not flag every cent; where most subjects cost nothing (median
--   0) any billed one is flagged. The workflow is the one the writer copies into each
--   call's particular_data.
-- rollups: no: medians and MADs per workflow need each execution's and user's own
--   total cost; reads logs_llm_execution once, hash-aggregated.
-- param: since timestamptz = 7d    -- start of the window (inclusive)
-- param: until timestamptz = now   -- end of the window (exclusive)
-- param: k numeric = 5             -- how many MADs above the median is anomalous
-- param: min_count int = 20        -- a workflow needs this many executions (users) for a baseline
-- param: limit int = 50            -- at most this many rows per level

WITH per_user AS (
    -- One pass over the window's calls: per workflow, execution and user.
    SELECT
        coalesce(particular_data ->> 'workflow', '(none)')  AS workflow,
        execution_id,
        user_id,
        sum(coalesce(total_cost, 0))                        AS cost
    FROM logs_llm_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
    GROUP BY 1, execution_id, user_id
),
subjects AS (
    SELECT
        'execution'           AS level,
        workflow,
        execution_id::text    AS subject,
        min(user_id)          AS user_id,
        1::bigint             AS executions,
        sum(cost)             AS cost
    FROM per_user
    GROUP BY workflow, execution_id
    UNION ALL
    SELECT
        'user',
        workflow,
        user_id,
        user_id,
        count(*),
        sum(cost)
    FROM per_user
    WHERE user_id IS NOT NULL
    GROUP BY workflow, user_id
),
populations AS (
    -- Each workflow's costs gathered by hash aggregation; the median and the MAD are then
    -- taken over that array, instead of sorting every subject by workflow twice.
    SELECT
        level,
        workflow,
        count(*)                   AS population,
        array_agg(cost::float8)    AS costs
    FROM subjects
    GROUP BY level, workflow
    HAVING count(*) >= :'min_count'::int
),
baselines AS MATERIALIZED (
    -- Materialized: inlined, the percentiles would be recomputed for every subject joined.
    SELECT
        p.level,
        p.workflow,
        p.population,
        m.median,
        d.mad
    FROM populations AS p
    CROSS JOIN LATERAL (
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY c) AS median
        FROM unnest(p.costs) AS c
    ) AS m
    CROSS JOIN LATERAL (
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(c - m.median)) AS mad
        FROM unnest(p.costs) AS c
    ) AS d
),
flagged AS (
    SELECT
        s.level,
        s.workflow,
        s.subject,
        s.user_id,
        s.executions,
        s.cost,
        b.population,
        b.median,
        b.mad,
        b.median + :'k'::numeric * greatest(b.mad, 0.05 * b.median) AS threshold
    FROM subjects AS s
    JOIN baselines AS b USING (level, workflow)
),
ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY level
            ORDER BY cost / nullif(threshold, 0) DESC NULLS FIRST, cost DESC, subject
        ) AS rank
    FROM flagged
    WHERE cost > threshold
)
SELECT
    level,
    workflow,
    subject,
    user_id,
    executions,
    round(cost, 6)                                      AS cost,
    population                                          AS workflow_population,
    round(median::numeric, 6)                           AS workflow_median,
    round(mad::numeric, 6)                              AS workflow_mad,
    round(threshold::numeric, 6)                        AS threshold,
    round((cost / nullif(median, 0))::numeric, 1)       AS times_median
FROM ranked
WHERE rank <= :'limit'::int
ORDER BY level, rank;
