"""Identifiers: time-ordered UUIDv7 event ids and W3C-compatible span ids."""

from __future__ import annotations

import os
import random
import time
import uuid

_POOL_BYTES = 4096
_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum member lookup per id costs 1 µs
_entropy = bytearray()


def _random_int80() -> int:
    """80 random bits from a buffer of os.urandom, refilled 4 KiB at a time."""
    global _entropy
    if len(_entropy) < 10:
        _entropy = bytearray(os.urandom(_POOL_BYTES))
    chunk = _entropy[-10:]
    del _entropy[-10:]
    return int.from_bytes(chunk, "big")


# Our own generator, seeded from os.urandom: an application that seeds the global one (a
# simulation, a test) must not make two processes draw the same ids.
_rng = random.Random()  # noqa: S311  (unique, not secret: uuid7 needs no more)


def _forget_entropy() -> None:
    # A forked child must not reuse the parent's buffered bytes or generator state: the ids
    # would collide.
    _entropy.clear()
    _rng.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_entropy)


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = _random_int80()
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    # uuid.UUID(int=...) re-validates what is valid by construction; this is 4x cheaper
    # on the log_* path.
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", _SAFE_UNKNOWN)
    return made


def uuid7_hex(unix_ms: int) -> str:
    """A UUIDv7 as 32 hex digits (PostgreSQL reads them as a ``uuid``), for the writer."""
    rand = _rng.getrandbits(74)
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62
    return f"{value | rand & 0x3FFF_FFFF_FFFF_FFFF:032x}"


def new_span_id() -> str:
    """16 lower-case hex characters, the W3C trace-context span id format."""
    return f"{_random_int80() >> 16:016x}"


def execution_event_id(execution_id: uuid.UUID) -> uuid.UUID:
    """The one event id an execution's final row can have, so a second writer is a no-op."""
    return uuid.uuid5(execution_id, "pgtrail.execution")
