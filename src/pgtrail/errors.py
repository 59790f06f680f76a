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


class ReportFileError(ReportError):
    """A malformed report file or refused statement; the message starts with ``file:line:``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


class RecordError(PgtrailError):
    """One record cannot be stored; the message says which field and why."""


class AssemblyUnavailableError(PgtrailError):
    """Redis, which holds traces while they assemble, cannot be reached; try again later."""


class JournalUnavailableError(AssemblyUnavailableError):
    """The OTLP receiver's span journal in PostgreSQL cannot be written; try again later.

    A kind of :class:`AssemblyUnavailableError`: either way the receiver cannot promise to
    store the spans, so the sender is asked to retry.
    """


class OtlpDecodeError(PgtrailError):
    """The request body is not a valid OTLP trace export request; the message says why."""


class ReceiverBusyError(PgtrailError):
    """The OTLP receiver takes no more exports right now; the message says why.

    Args:
        message: Why (too many exports in progress, the writer's queue full).
        retry_after_s: Seconds the sender is asked to wait before trying again.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkUnavailableError(PgtrailError):
    """PostgreSQL could not be reached, or the connection broke mid-batch."""


class NotFoundError(PgtrailError):
    """Nothing is logged under the id that was asked for."""


class TenancyError(PgtrailError):
    """A tenant scope or grant cannot be applied; the message says what to run."""


class SpoolDamagedError(PgtrailError):
    """A spooled file that cannot be read back as a batch."""


class DemoDataExistsError(PgtrailError):
    """The target database already holds log rows where the demo would write."""


class SandboxError(PgtrailError):
    """The sandbox is not installed or not safe here; the message says what to run."""


class RetentionError(PgtrailError):
    """Retention cannot run as asked; the message says why and what to do."""


class RollupError(PgtrailError):
    """A rollup refresh or rebuild cannot run as asked; the message says why and what to do."""


class EvaluationError(PgtrailError):
    """The rules could not be evaluated (database unreachable, timeout, missing tables)."""


class WebhookError(PgtrailError):
    """A breach could not be posted to the webhook (unreachable, or refused after retries)."""
