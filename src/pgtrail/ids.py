"""Identifiers: time-ordered UUIDv7 event ids and W3C-compatible span ids."""

from __future__ import annotations

import itertools
import os
import random
import time
import uuid

_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum member lookup per id costs 1 µs

# Our own generator, seeded from os.urandom: an application that seeds the global one (a
# simulation, a test) must not make two processes draw the same ids.
_rng = random.Random()  # noqa: S311  (unique, not secret: ids need no more)

_MS_MASK = 0xFFFF_FFFF_FFFF
_RAND_B_MASK = 0x3FFF_FFFF_FFFF_FFFF


class _Sequence:
    """The random part of UUIDv7s: fixed bits and a counter, both drawn at random.

    RFC 9562's monotonic random method: each id adds one to the previous id's 62 low bits,
    so ids of one process are ordered within a millisecond, and cheap to make. The counter
    is an ``itertools.count``: taking a number from it is atomic, whichever thread asks.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.fixed = 0x7 << 76 | _rng.getrandbits(12) << 64 | 0b10 << 62
        self.counter = itertools.count(_rng.getrandbits(62))


_sequence = _Sequence()


def _reseed_after_fork() -> None:
    _rng.seed()
    _sequence.reseed()


if hasattr(os, "register_at_fork"):
    # A forked child must not continue the parent's sequence: the ids would collide.
    os.register_at_fork(after_in_child=_reseed_after_fork)


def _uuid7_int(unix_ms: int) -> int:
    """A UUIDv7 (RFC 9562) as an integer: 48-bit millisecond time, version, 74 random bits."""
    sequence = _sequence
    return (unix_ms & _MS_MASK) << 80 | sequence.fixed | next(sequence.counter) & _RAND_B_MASK


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


def uuid_or_none(raw: object) -> uuid.UUID | None:
    """``raw`` read as a UUID (any of its text forms); None when empty or not a UUID.

    Args:
        raw: A value read back from Redis, a header or a caller.
    """
    if not raw:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None
