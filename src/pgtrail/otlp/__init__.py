"""OpenTelemetry in: OTLP/HTTP and OTLP/gRPC spans mapped onto the four pgtrail log tables."""

DEFAULT_HOST = "127.0.0.1"
"""The receiver listens on loopback unless told otherwise."""
DEFAULT_PORT = 4318
"""The OTLP/HTTP port."""
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body accepted (before and after decompression)."""
DEFAULT_GRPC_PORT = 4317
"""The OTLP/gRPC port."""
UNAVAILABLE_RETRY_AFTER_S = 5
"""Seconds a client is asked to wait while Redis or the span journal is unreachable."""
BUSY_RETRY_AFTER_S = 1
"""Seconds a client is asked to wait while the receiver is busy."""
