-- pgtrail 0005: the OTLP receiver's span journal, what makes its acknowledgement durable.
--
-- The receiver commits every span it accepts here before it answers 200 (or gRPC OK), and
-- deletes a span's row once the rows mapped from it are stored (committed, or fsynced into
-- the writer's spool). A row that stays past the recovery delay belongs to a trace the
-- receiver lost (killed after it claimed the trace, or Redis restarted without its data):
-- any receiver writing to this database finalises it again from here. Rows hold spans as
-- the receiver holds them in Redis: redacted first when redaction is on.
--
-- Only the owner of the tables reads or writes it: no tenant, reader or sandbox role is
-- granted anything on it.

CREATE TABLE pgtrail_otlp_span (
    journal_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trace_id     text        NOT NULL,
    span_id      text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts     int         NOT NULL DEFAULT 0,   -- times a recovery took it
    retried_at   timestamptz,                      -- when a recovery last took it
    span         bytea       NOT NULL
);

CREATE INDEX pgtrail_otlp_span_trace ON pgtrail_otlp_span (trace_id, span_id);
CREATE INDEX pgtrail_otlp_span_received ON pgtrail_otlp_span (received_at);

REVOKE ALL ON pgtrail_otlp_span FROM PUBLIC;
