"""Settings: constructor arguments first, then ``PGTRAIL_*`` environment variables.

No configuration file is needed. Every environment variable is declared once here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pgtrail.errors import ConfigurationError

ENV_DSN = "PGTRAIL_DSN"
"""libpq connection string or URL of the PostgreSQL that holds the logs."""
ENV_REDIS_URL = "PGTRAIL_REDIS_URL"
"""Redis URL for cross-process correlation; ``off`` runs in single-process mode."""
ENV_REDIS_PREFIX = "PGTRAIL_REDIS_PREFIX"
"""Prefix of every Redis key pgtrail writes (default ``pgtrail:``)."""
ENV_SCHEMA = "PGTRAIL_SCHEMA"
"""PostgreSQL schema holding the pgtrail tables (default ``public``)."""
ENV_SPOOL_DIR = "PGTRAIL_SPOOL_DIR"
"""Folder of the on-disk spool used while PostgreSQL is unreachable."""
ENV_REDACT = "PGTRAIL_REDACT"
"""``1`` turns redaction of secrets and PII on, on every path (PostgreSQL, spool, Redis)."""
ENV_HMAC_KEY = "PGTRAIL_USER_HMAC_KEY"
"""Key used to HMAC-hash the raw ``user_id`` before it is written (unset: stored as given;
redaction never masks ids)."""
ENV_STRICT = "PGTRAIL_STRICT"
"""``1`` makes ``log_*`` helpers raise on bad input instead of sanitising it."""
ENV_QUERIES_PATH = "PGTRAIL_QUERIES_PATH"
"""Extra folders of saved reports, separated by ``os.pathsep``."""
ENV_OTLP_USER_ATTRIBUTES = "PGTRAIL_OTLP_USER_ATTRIBUTES"
"""Span attributes naming the user, comma-separated (default: the conventional names)."""
ENV_OTLP_TENANT_ATTRIBUTES = "PGTRAIL_OTLP_TENANT_ATTRIBUTES"
"""Span attributes naming the tenant, comma-separated (default ``tenant.id``)."""
ENV_OTLP_SESSION_ATTRIBUTES = "PGTRAIL_OTLP_SESSION_ATTRIBUTES"
"""Span attributes naming the session, comma-separated (default: the conventional names)."""
ENV_OTLP_TOKEN = "PGTRAIL_OTLP_TOKEN"  # noqa: S105  (the variable's name, not a secret)
"""Bearer token ``pgtrail otlp serve`` requires of every request (unset: none)."""
ENV_SAMPLE_RATES = "PGTRAIL_SAMPLE_RATES"
"""Share of executions stored with bodies, per workflow: ``001 Main=0.1,*=1`` (``*``: others)."""
ENV_SAMPLE_KEEP_COST = "PGTRAIL_SAMPLE_KEEP_COST_USD"
"""A model call costing more than this (USD) keeps its sampled-out execution whole."""

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TRUE = {"1", "true", "yes", "on"}

PositiveInt = Annotated[int, Field(gt=0)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


def default_spool_dir() -> Path:
    """Where batches wait while PostgreSQL is unreachable, unless configured."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "pgtrail" / "spool"


class Settings(BaseModel):
    """Everything pgtrail needs to know about its surroundings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn: str = ""
    redis_url: str | None = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "pgtrail:"
    db_schema: str = "public"
    spool_dir: Path = Field(default_factory=default_spool_dir)
    redact: bool = False
    user_hmac_key: str | None = None
    strict: bool = False
    batch_size: PositiveInt = 5000
    flush_interval_s: float = Field(default=0.5, gt=0)
    queue_size: PositiveInt = 200_000
    max_field_chars: PositiveInt = 1_000_000
    statement_timeout_ms: PositiveInt = 30_000
    sample_rates: dict[str, Rate] = Field(default_factory=dict)
    default_sample_rate: Rate = 1.0
    sample_keep_cost_usd: float | None = Field(default=None, ge=0)
    sample_hold_records: PositiveInt = 1000
    sample_hold_s: float = Field(default=300.0, gt=0)
    sample_hold_total: PositiveInt = 20_000

    @field_validator("db_schema")
    @classmethod
    def _schema_is_plain(cls, value: str) -> str:
        if not _SCHEMA_NAME.match(value):
            raise ValueError(
                f"schema name {value!r} must be lower-case letters, digits and underscores"
            )
        return value

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Builds settings from ``PGTRAIL_*`` variables; explicit arguments win."""
        env = os.environ
        values: dict[str, object] = {}
        if ENV_DSN in env:
            values["dsn"] = env[ENV_DSN]
        if ENV_REDIS_URL in env:
            url = env[ENV_REDIS_URL].strip()
            values["redis_url"] = None if url.lower() in {"", "off", "none"} else url
        if ENV_REDIS_PREFIX in env:
            values["redis_prefix"] = env[ENV_REDIS_PREFIX]
        if ENV_SCHEMA in env:
            values["db_schema"] = env[ENV_SCHEMA]
        if ENV_SPOOL_DIR in env:
            values["spool_dir"] = Path(env[ENV_SPOOL_DIR])
        if ENV_REDACT in env:
            values["redact"] = env[ENV_REDACT].strip().lower() in _TRUE
        if ENV_HMAC_KEY in env:
            values["user_hmac_key"] = env[ENV_HMAC_KEY] or None
        if ENV_STRICT in env:
            values["strict"] = env[ENV_STRICT].strip().lower() in _TRUE
        if ENV_SAMPLE_RATES in env:
            rates, default = parse_sample_rates(env[ENV_SAMPLE_RATES])
            values["sample_rates"] = rates
            if default is not None:
                values["default_sample_rate"] = default
        if env.get(ENV_SAMPLE_KEEP_COST, "").strip():
            values["sample_keep_cost_usd"] = env[ENV_SAMPLE_KEEP_COST].strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigurationError(f"invalid pgtrail settings: {exc}") from exc


def extra_query_dirs() -> list[Path]:
    """User report folders named by ``PGTRAIL_QUERIES_PATH``."""
    raw = os.environ.get(ENV_QUERIES_PATH, "")
    return [Path(part) for part in raw.split(os.pathsep) if part.strip()]


def parse_sample_rates(text: str) -> tuple[dict[str, float], float | None]:
    """Parses ``"001 Main=0.1,*=1"`` into per-workflow rates and the default (``*``).

    Raises:
        ConfigurationError: an entry is not ``workflow=rate`` with a rate from 0 to 1.
    """
    rates: dict[str, float] = {}
    default: float | None = None
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, value = entry.rpartition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigurationError(
                f"sample rate {entry!r} must read workflow=rate, e.g. '001 Main=0.1' or '*=1'"
            )
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise ConfigurationError(
                f"sample rate of {name!r} is {value.strip()!r}; give a number from 0 to 1"
            )
        if name == "*":
            default = rate
        else:
            rates[name] = rate
    return rates, default
