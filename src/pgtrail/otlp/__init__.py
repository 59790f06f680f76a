"""OpenTelemetry in: OTLP/HTTP spans mapped onto the four pgtrail log tables."""

DEFAULT_HOST = "127.0.0.1"
"""The receiver listens on loopback unless told otherwise."""
DEFAULT_PORT = 4318
"""The OTLP/HTTP port."""
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body accepted (before and after decompression)."""
