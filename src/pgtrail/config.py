"""Settings: constructor arguments first, then ``PGTRAIL_*`` environment variables.

No configuration file is needed. Every environment variable pgtrail reads is declared once
here, in :data:`ENV_VARS`, with the :class:`Settings` fields it sets and what it means.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pgtrail.errors import ConfigurationError

# The names of the variables; ENV_VARS below says what each means and which setting it gives.
ENV_DSN = "PGTRAIL_DSN"
ENV_REDIS_URL = "PGTRAIL_REDIS_URL"
ENV_REDIS_PREFIX = "PGTRAIL_REDIS_PREFIX"
ENV_SCHEMA = "PGTRAIL_SCHEMA"
ENV_SPOOL_DIR = "PGTRAIL_SPOOL_DIR"
ENV_REDACT = "PGTRAIL_REDACT"
ENV_HMAC_KEY = "PGTRAIL_USER_HMAC_KEY"
ENV_STRICT = "PGTRAIL_STRICT"
ENV_QUERIES_PATH = "PGTRAIL_QUERIES_PATH"
ENV_OTLP_USER_ATTRIBUTES = "PGTRAIL_OTLP_USER_ATTRIBUTES"
ENV_OTLP_TENANT_ATTRIBUTES = "PGTRAIL_OTLP_TENANT_ATTRIBUTES"
ENV_OTLP_SESSION_ATTRIBUTES = "PGTRAIL_OTLP_SESSION_ATTRIBUTES"
ENV_OTLP_TOKEN = "PGTRAIL_OTLP_TOKEN"  # noqa: S105  (the variable's name, not a secret)
ENV_SAMPLE_RATES = "PGTRAIL_SAMPLE_RATES"
ENV_SAMPLE_KEEP_COST = "PGTRAIL_SAMPLE_KEEP_COST_USD"

DEFAULT_OTLP_USER_ATTRIBUTES = ("user.id", "enduser.id", "langfuse.user.id")
"""Span (then resource) attributes naming the user, tried in order."""
DEFAULT_OTLP_TENANT_ATTRIBUTES = ("tenant.id",)
"""Span (then resource) attributes naming the tenant, tried in order."""
DEFAULT_OTLP_SESSION_ATTRIBUTES = ("gen_ai.conversation.id", "session.id", "langfuse.session.id")
"""Span (then resource) attributes naming the session, tried in order."""

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
    otlp_user_attributes: tuple[str, ...] = DEFAULT_OTLP_USER_ATTRIBUTES
    """OTLP span (then resource) attributes naming the user, tried in order."""
    otlp_tenant_attributes: tuple[str, ...] = DEFAULT_OTLP_TENANT_ATTRIBUTES
    """OTLP span (then resource) attributes naming the tenant, tried in order."""
    otlp_session_attributes: tuple[str, ...] = DEFAULT_OTLP_SESSION_ATTRIBUTES
    """OTLP span (then resource) attributes naming the session, tried in order."""

    @field_validator("db_schema")
    @classmethod
    def _schema_is_plain(cls, value: str) -> str:
        if not _SCHEMA_NAME.match(value):
            raise ValueError(
                f"schema name {value!r} must be lower-case letters, digits and underscores"
            )
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Builds settings from ``PGTRAIL_*`` variables (see :data:`ENV_VARS`).

        Args:
            environ: The environment to read; by default the process's.
            **overrides: Settings fields given explicitly; they win over the environment
                (None gives no value).

        Raises:
            ConfigurationError: A variable or an override holds an invalid value.
        """
        values = env_values(environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigurationError(f"invalid pgtrail settings: {exc}") from exc


EnvReader = Callable[[str], dict[str, object]]
"""Turns a variable's text into the values of the Settings fields it sets (maybe none)."""


@dataclass(frozen=True)
class EnvVar:
    """One environment variable pgtrail reads.

    Attributes:
        name: The variable's name.
        settings: The :class:`Settings` fields it sets; empty for a variable read
            elsewhere (``doc`` says where).
        doc: What it means, in one line.
        read: Its text turned into those fields' values; None when ``settings`` is empty.
    """

    name: str
    settings: tuple[str, ...]
    doc: str
    read: EnvReader | None = None


def _setting(name: str, setting: str, doc: str, convert: Callable[[str], object] = str) -> EnvVar:
    """A variable that sets one field to its text, converted."""
    return EnvVar(name, (setting,), doc, lambda raw: {setting: convert(raw)})


def _flag(raw: str) -> bool:
    return raw.strip().lower() in _TRUE


def _redis_url(raw: str) -> str | None:
    url = raw.strip()
    return None if url.lower() in {"", "off", "none"} else url


def _attribute_list(raw: str) -> tuple[str, ...]:
    """Comma-separated attribute names; an empty list turns the lookup off."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _sample_rates(raw: str) -> dict[str, object]:
    rates, default = parse_sample_rates(raw)
    values: dict[str, object] = {"sample_rates": rates}
    if default is not None:
        values["default_sample_rate"] = default
    return values


def _keep_cost(raw: str) -> dict[str, object]:
    return {"sample_keep_cost_usd": raw.strip()} if raw.strip() else {}


ENV_VARS: tuple[EnvVar, ...] = (
    _setting(
        ENV_DSN, "dsn", "libpq connection string or URL of the PostgreSQL that holds the logs."
    ),
    _setting(
        ENV_REDIS_URL,
        "redis_url",
        "Redis URL for cross-process correlation; ``off`` runs in single-process mode.",
        _redis_url,
    ),
    _setting(
        ENV_REDIS_PREFIX,
        "redis_prefix",
        "Prefix of every Redis key pgtrail writes (default ``pgtrail:``).",
    ),
    _setting(
        ENV_SCHEMA,
        "db_schema",
        "PostgreSQL schema holding the pgtrail tables (default ``public``).",
    ),
    _setting(
        ENV_SPOOL_DIR,
        "spool_dir",
        "Folder of the on-disk spool used while PostgreSQL is unreachable.",
        Path,
    ),
    _setting(
        ENV_REDACT,
        "redact",
        "``1`` turns redaction of secrets and PII on, on every path (PostgreSQL, spool, Redis).",
        _flag,
    ),
    _setting(
        ENV_HMAC_KEY,
        "user_hmac_key",
        "Key used to HMAC-hash the raw ``user_id`` before it is written (unset or empty: "
        "stored as given; redaction never masks ids).",
        lambda raw: raw or None,
    ),
    _setting(
        ENV_STRICT,
        "strict",
        "``1`` makes ``log_*`` helpers raise on bad input instead of sanitising it.",
        _flag,
    ),
    EnvVar(
        ENV_QUERIES_PATH,
        (),
        "Extra folders of saved reports, separated by ``os.pathsep`` (read by "
        ":func:`extra_query_dirs`).",
    ),
    _setting(
        ENV_OTLP_USER_ATTRIBUTES,
        "otlp_user_attributes",
        "Span attributes naming the user, comma-separated (default: the conventional names).",
        _attribute_list,
    ),
    _setting(
        ENV_OTLP_TENANT_ATTRIBUTES,
        "otlp_tenant_attributes",
        "Span attributes naming the tenant, comma-separated (default ``tenant.id``).",
        _attribute_list,
    ),
    _setting(
        ENV_OTLP_SESSION_ATTRIBUTES,
        "otlp_session_attributes",
        "Span attributes naming the session, comma-separated (default: the conventional names).",
        _attribute_list,
    ),
    EnvVar(
        ENV_OTLP_TOKEN,
        (),
        "Bearer token ``pgtrail otlp serve`` requires of every request (unset: none; read as "
        "the default of its ``--token`` option).",
    ),
    EnvVar(
        ENV_SAMPLE_RATES,
        ("sample_rates", "default_sample_rate"),
        "Share of executions stored with bodies, per workflow: ``001 Main=0.1,*=1`` "
        "(``*``: others).",
        _sample_rates,
    ),
    EnvVar(
        ENV_SAMPLE_KEEP_COST,
        ("sample_keep_cost_usd",),
        "A model call costing more than this (USD) keeps its sampled-out execution whole "
        "(blank: no such limit).",
        _keep_cost,
    ),
)
"""Every environment variable pgtrail reads, the settings it gives, and what it means."""


def env_values(
    environ: Mapping[str, str] | None = None, *, names: Collection[str] | None = None
) -> dict[str, object]:
    """The :class:`Settings` values the environment's variables give, by field name.

    Args:
        environ: The environment to read; by default the process's.
        names: Read only these variables (by default every one of :data:`ENV_VARS`).

    Returns:
        Field values, not yet validated; a variable that is not set gives none.

    Raises:
        ConfigurationError: ``PGTRAIL_SAMPLE_RATES`` is malformed.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for var in ENV_VARS:
        if var.read is None or var.name not in env:
            continue
        if names is None or var.name in names:
            values.update(var.read(env[var.name]))
    return values


def extra_query_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """User report folders named by ``PGTRAIL_QUERIES_PATH``.

    Args:
        environ: The environment to read; by default the process's.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_QUERIES_PATH, "")
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
