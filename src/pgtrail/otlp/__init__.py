"""OpenTelemetry in: OTLP/HTTP spans mapped onto the four pgtrail log tables."""
