"""Identifiers: time-ordered UUIDv7 event ids and W3C-compatible span ids."""

from __future__ import annotations

import os
import random
import time
import uuid

_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum member lookup per id costs 1 µs

# Our own generator, seeded from os.urandom: an application that seeds the global one (a
# simulation, a test) must not make two processes draw the same ids.
_rng = random.Random()  # noqa: S311  (unique, not secret: ids need no more)

if hasattr(os, "register_at_fork"):
    # A forked child must not continue the parent's sequence: the ids would collide.
    os.register_at_fork(after_in_child=_rng.seed)


def _uuid7_int(unix_ms: int) -> int:
    """A UUIDv7 (RFC 9562) as an integer: 48-bit millisecond time, version, 74 random bits."""
    rand = _rng.getrandbits(74)
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62
    return value | rand & 0x3FFF_FFFF_FFFF_FFFF


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7 of ``unix_ms`` (default: now)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    # uuid.UUID(int=...) re-validates what is valid by construction; this is 4x cheaper.
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", _uuid7_int(ms))
    object.__setattr__(made, "is_safe", _SAFE_UNKNOWN)
    return made


def uuid7_hex(unix_ms: int) -> str:
    """A UUIDv7 as 32 hex digits (PostgreSQL reads them as a ``uuid``), for the writer."""
    return f"{_uuid7_int(unix_ms):032x}"


def new_span_id() -> str:
    """16 lower-case hex characters, the W3C trace-context span id format (never all zero)."""
    return f"{_rng.getrandbits(64) or 1:016x}"


def execution_event_id(execution_id: uuid.UUID) -> uuid.UUID:
    """The one event id an execution's final row can have, so a second writer is a no-op."""
    return uuid.uuid5(execution_id, "pgtrail.execution")
