-- name: decision-drift
-- description: Week-by-week drift of one agent decision field against a baseline of the
--   first weeks that have data. A categorical
--   field shows each value's share per week and its change in percentage points against
--   the baseline share; a numeric field (every value a JSON number) shows the weekly mean
--   and its z-score: the shift of the mean in baseline standard deviations. Weeks after the
--   baseline with enough events and a change beyond the threshold are flagged.
-- rollups: no: the decision field is a parameter (any JSON path), so there is
--   nothing to aggregate ahead; reads one agent's events of one type.
-- param: agent_type text                   -- the agent whose decisions are examined
-- param: field text = agent_decisions,coaching_quality,intensity_level  -- path in particular_data, comma-separated keys
-- param: event_type text = agent_decision  -- agent event type holding the field
-- param: since timestamptz = 8w            -- start of the window (inclusive)
-- param: until timestamptz = now           -- end of the window (exclusive)
-- param: baseline_weeks int = 2            -- the first weeks with data form the baseline
-- param: max_change_pp numeric = 10        -- categorical: flag a share moved more than this
-- param: max_z numeric = 1                 -- numeric: flag a mean beyond this many baseline SDs
-- param: min_events int = 20               -- weeks with fewer events are never flagged
-- param: only_flagged bool = false         -- show flagged rows only
-- param: tz text = UTC                     -- time zone whose weeks (Monday to Sunday) are used

WITH events AS (
    SELECT
        date_trunc('week', created_at AT TIME ZONE :'tz')::date            AS week,
        nullif(particular_data #> string_to_array(:'field', ','), 'null')  AS v
    FROM logs_agent_execution
    WHERE created_at >= :'since'::timestamptz
      AND created_at <  :'until'::timestamptz
      AND agent_type = :'agent_type'
      AND event_type = :'event_type'
),
field_kind AS (
    SELECT
        CASE
            WHEN count(v) > 0 AND bool_and(jsonb_typeof(v) = 'number') THEN 'numeric'
            ELSE 'category'
        END AS kind
    FROM events
),
weeks AS (
    SELECT week, count(*) AS week_events, row_number() OVER (ORDER BY week) AS week_no
    FROM events
    GROUP BY week
),
category_counts AS (
    SELECT week, coalesce(v #>> '{}', '(missing)') AS value, count(*) AS n
    FROM events
    GROUP BY 1, 2
),
category_grid AS (
    SELECT
        w.week,
        w.week_no,
        w.week_events,
        c.value,
        coalesce(cc.n, 0)                          AS n,
        100.0 * coalesce(cc.n, 0) / w.week_events  AS share
    FROM weeks AS w
    CROSS JOIN (SELECT DISTINCT value FROM category_counts) AS c
    LEFT JOIN category_counts AS cc ON cc.week = w.week AND cc.value = c.value
),
category_baseline AS (
    SELECT value, 100.0 * sum(n) / sum(week_events) AS base_share
    FROM category_grid
    WHERE week_no <= :'baseline_weeks'::int
    GROUP BY value
),
numbers AS (
    SELECT e.week, w.week_no, (e.v #>> '{}')::numeric AS x
    FROM events AS e
    JOIN weeks AS w USING (week)
    WHERE jsonb_typeof(e.v) = 'number'
),
numeric_baseline AS (
    SELECT avg(x) AS base_mean, stddev_samp(x) AS base_sd
    FROM numbers
    WHERE week_no <= :'baseline_weeks'::int
),
numeric_weeks AS (
    SELECT week, week_no, count(*) AS n, avg(x) AS mean
    FROM numbers
    GROUP BY week, week_no
),
drift AS (
    SELECT
        g.week,
        g.week_no <= :'baseline_weeks'::int   AS is_baseline,
        'category'                            AS kind,
        g.value,
        g.n                                   AS events,
        g.week_events,
        round(g.share, 2)                     AS share_pct,
        round(b.base_share, 2)                AS baseline_share_pct,
        round(g.share - b.base_share, 2)      AS change_pp,
        NULL::numeric                         AS mean,
        NULL::numeric                         AS baseline_mean,
        NULL::numeric                         AS z_score,
        g.week_no > :'baseline_weeks'::int
            AND g.week_events >= :'min_events'::int
            AND abs(g.share - b.base_share) > :'max_change_pp'::numeric AS flagged
    FROM category_grid AS g
    JOIN category_baseline AS b USING (value)
    CROSS JOIN field_kind AS k
    WHERE k.kind = 'category'
    UNION ALL
    SELECT
        nw.week,
        nw.week_no <= :'baseline_weeks'::int,
        'numeric',
        'mean',
        nw.n,
        w.week_events,
        NULL,
        NULL,
        NULL,
        round(nw.mean, 3),
        round(nb.base_mean, 3),
        round((nw.mean - nb.base_mean) / nullif(nb.base_sd, 0), 2),
        nw.week_no > :'baseline_weeks'::int
            AND nw.n >= :'min_events'::int
            AND coalesce(abs(nw.mean - nb.base_mean) / nullif(nb.base_sd, 0)
                             > :'max_z'::numeric,
                         nw.mean <> nb.base_mean)
    FROM numeric_weeks AS nw
    JOIN weeks AS w USING (week)
    CROSS JOIN numeric_baseline AS nb
    CROSS JOIN field_kind AS k
    WHERE k.kind = 'numeric'
)
SELECT *
FROM drift
WHERE NOT :'only_flagged'::boolean OR flagged
ORDER BY week, value;
