-- pgtrail 0007: the notices `pgtrail check --webhook` sent, so a breach is posted once.
--
-- One row per breach posted to a webhook. A breach is the same breach when its rule, kind
-- and subject (tenant, user, model, execution...) are; it is posted again only once a
-- window of its rule has passed since the last notice (the same day for a daily budget,
-- the same run for a runaway execution). Cron runs of `pgtrail check` read and write this
-- table under an advisory lock per breach, so two runs at once post a breach once.
--
-- The webhook's URL is not stored (a Slack URL is a secret): target_key is its SHA-256.
-- Subjects and bodies name tenants and users: only the owner of the tables reads or writes
-- it. No tenant, reader or sandbox role is granted anything on it, and row-level security
-- is on with no policy, so a role granted access by mistake still reads no row.

CREATE TABLE pgtrail_alert_notice (
    notice_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    breach_key   text        NOT NULL,   -- SHA-256 of rule, kind and subject
    target_key   text        NOT NULL,   -- SHA-256 of the webhook URL
    rule         text        NOT NULL,
    kind         text        NOT NULL,
    subject      jsonb       NOT NULL DEFAULT '{}',
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    notified_at  timestamptz NOT NULL,   -- the evaluation time of the run that posted it
    attempts     int         NOT NULL,   -- posts it took (retries included)
    body         jsonb       NOT NULL
);

CREATE INDEX pgtrail_alert_notice_last
    ON pgtrail_alert_notice (breach_key, target_key, notified_at DESC);

REVOKE ALL ON pgtrail_alert_notice FROM PUBLIC;
ALTER TABLE pgtrail_alert_notice ENABLE ROW LEVEL SECURITY;
