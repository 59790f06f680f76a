-- Statements of pgtrail.ops.webhooks: the notices `pgtrail check --webhook` sent.
-- Each block is loaded by pgtrail.statements; the name says which module runs it.

-- name: webhooks_lock_breach
-- Serialises the runs that might post the same breach to the same webhook, until commit.
SELECT pg_advisory_xact_lock(hashtextextended(%(breach_key)s || ':' || %(target_key)s, 0));

-- name: webhooks_last_notice
-- The latest notice of a breach to a webhook sent since the start of the breach's window.
SELECT notified_at
FROM pgtrail_alert_notice
WHERE breach_key = %(breach_key)s
  AND target_key = %(target_key)s
  AND notified_at >= %(since)s
ORDER BY notified_at DESC
LIMIT 1;

-- name: webhooks_record_notice
-- Records a breach posted to a webhook.
INSERT INTO pgtrail_alert_notice (breach_key, target_key, rule, kind, subject, window_start,
                                  window_end, notified_at, attempts, body)
VALUES (%(breach_key)s, %(target_key)s, %(rule)s, %(kind)s, %(subject)s, %(window_start)s,
        %(window_end)s, %(notified_at)s, %(attempts)s, %(body)s);
