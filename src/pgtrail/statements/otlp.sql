-- Statements of pgtrail.otlp: the receiver's span journal (pgtrail_otlp_span).
-- Each block is loaded by pgtrail.statements; the name says which module runs it.

-- name: journal_forget
-- Deletes the journalled spans whose rows are stored: pairs of trace and span ids.
DELETE FROM pgtrail_otlp_span AS j
USING unnest(%(trace_ids)s::text[], %(span_ids)s::text[]) AS done(trace_id, span_id)
WHERE j.trace_id = done.trace_id AND j.span_id = done.span_id;

-- name: journal_take_stranded
-- Takes the traces with a span journalled (or last taken) before the cut-off and taken
-- fewer than the given times, oldest first: every journalled span of each, counted as one
-- more attempt. SKIP LOCKED lets receivers recovering at once share the work, and the new
-- retried_at keeps the next round from taking the same traces again at once.
WITH stranded AS (
    SELECT DISTINCT trace_id FROM (
        SELECT trace_id FROM pgtrail_otlp_span
        WHERE coalesce(retried_at, received_at)
              < clock_timestamp() - make_interval(secs => %(older_than_s)s)
          AND attempts < %(max_attempts)s
        ORDER BY received_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS oldest
)
UPDATE pgtrail_otlp_span AS j
SET attempts = j.attempts + 1, retried_at = clock_timestamp()
FROM stranded
WHERE j.trace_id = stranded.trace_id
RETURNING j.trace_id, j.span_id, j.span;

-- name: journal_release
-- Gives back an attempt to traces a recovery took but found still assembling in Redis.
UPDATE pgtrail_otlp_span SET attempts = greatest(attempts - 1, 0)
WHERE trace_id = ANY(%(trace_ids)s::text[]);

-- name: journal_stuck
-- Spans recovered the given times and still not stored: left for an operator.
SELECT count(*) FROM pgtrail_otlp_span WHERE attempts >= %(max_attempts)s;

-- name: journal_count
-- How many spans are journalled and not yet stored.
SELECT count(*) FROM pgtrail_otlp_span;
