"""The exceptions pgtrail raises. Every one of them derives from :class:`PgtrailError`."""

from __future__ import annotations


class PgtrailError(Exception):
    """Root of every error pgtrail raises on purpose."""


class ConfigurationError(PgtrailError):
    """A setting is missing or malformed."""


class DatabaseUnavailableError(PgtrailError):
    """PostgreSQL cannot be reached; the message carries the masked DSN and what to check."""


class MigrationError(PgtrailError):
    """The schema files or the migration ledger are inconsistent."""


class ValidationError(PgtrailError):
    """A record given to a ``log_*`` helper was rejected (strict mode only raises it)."""


class NoActiveExecutionError(PgtrailError):
    """A ``log_*`` helper was called where no execution is open."""


class ReportError(PgtrailError):
    """A saved report is malformed, unknown, or was given a bad parameter."""
