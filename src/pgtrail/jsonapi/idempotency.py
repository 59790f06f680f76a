"""Retries recognised: the ``Idempotency-Key`` header, its first use, and the ids made from
what a request says.

Every row of a log table is keyed by ``(event_id, created_at)`` and the writer stores a row
whose key is already there as a no-op (``ON CONFLICT DO NOTHING``), so a retry stores
nothing twice when it makes the same ids and times as the first attempt. They come from:

- the client's own ids: an execution's ``execution_id`` (its row's event id derives from
  it), a process's ``id`` (its span id derives from the execution and that id) and an
  event's ``event_id``, with their times; a time left out is taken from a UUIDv7 id (the
  time it holds), else from the request's default;
- an ``Idempotency-Key`` header: everything the client left out is derived from the key
  and the item's place in the body, and the default time is the time the key was first
  used. The first use is remembered in Redis for :data:`pgtrail.shared_state.TTL_S` with a
  SHA-256 of the body, and once the request succeeded, its answer: a retry then gets that
  answer again without being handled twice. A key sent again with another body is refused,
  as the IETF Idempotency-Key draft asks.

Redis holds one string per key, ``{prefix}json:idem:{namespace}:{digest}``: JSON with the
first use's time, the body's digest and the answer (ids, counts and the reasons events
were refused: never their content). The digest covers the route, the
execution named in the path and the key; the namespace is the target database's
(:func:`pgtrail.shared_state.database_namespace`), so receivers writing elsewhere never
share keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgtrail import shared_state
from pgtrail.errors import PgtrailError
from pgtrail.shared_state import TTL_S, RedisState

if TYPE_CHECKING:
    import redis

HEADER = "idempotency-key"
"""The request header (lower case, as the receiver passes headers)."""
MAX_KEY_CHARS = 255
"""Longest key accepted."""
_V7_PAST = dt.timedelta(days=3650)
_V7_FUTURE = dt.timedelta(days=1)


class InvalidKeyError(PgtrailError):
    """The ``Idempotency-Key`` header is not a usable key."""


class KeyReusedError(PgtrailError):
    """The key was used before with another body."""


class KeyStoreUnavailableError(PgtrailError):
    """Redis, where first uses are remembered, cannot be reached."""


@dataclass(frozen=True)
class FirstUse:
    """What the store knows of a key."""

    at: dt.datetime
    """When it was first used: the default time of its request's records."""
    status: int | None = None
    """The status its request was answered with, once it succeeded; else None."""
    answer: bytes | None = None
    """That answer's body, once it succeeded; else None."""


def parse_key(header: str | None) -> str | None:
    """The key a header value gives, or None without one.

    Args:
        header: The ``Idempotency-Key`` value: a token, or a quoted string as the draft's
            structured field has it.

    Raises:
        InvalidKeyError: The value is empty, too long, or holds control or non-ASCII characters.
    """
    if header is None:
        return None
    key = header.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise InvalidKeyError("Idempotency-Key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKeyError(f"Idempotency-Key is longer than {MAX_KEY_CHARS} characters")
    if not (key.isascii() and key.isprintable()):
        raise InvalidKeyError("Idempotency-Key must be printable ASCII")
    return key


class KeyStore:
    """First uses of idempotency keys, in Redis.

    Args:
        state: The client's Redis state (:attr:`pgtrail.Trail.redis`): its connection, and
            its rule for failures.
        namespace: The target database's namespace
            (:func:`pgtrail.shared_state.database_namespace`).
    """

    def __init__(self, state: RedisState, namespace: str) -> None:
        self._state = state
        self._prefix = f"{state.prefix}json:idem:{namespace}:"

    def first_use(self, scope: str, key: str, fingerprint: str, now: dt.datetime) -> FirstUse:
        """When ``key`` was first used in ``scope`` (``now`` the first time), and the answer
        its request got once it succeeded.

        Args:
            scope: The route and the execution it names, e.g. ``events:<execution id>``.
            key: The client's key.
            fingerprint: A digest of the body; a retry must send the same body.
            now: The time of this request.

        Raises:
            KeyReusedError: The key was first used with another body.
            KeyStoreUnavailableError: Redis cannot be reached (or is off).
        """
        client = self._client()
        name = self._name(scope, key)
        value = json.dumps({"at": now.isoformat(), "body": fingerprint})
        try:
            pipe = client.pipeline(transaction=True)
            pipe.set(name, value, nx=True, ex=TTL_S)
            pipe.get(name)
            _, stored = pipe.execute()
        except shared_state.REDIS_ERRORS as exc:
            self._state.failed(exc)
            raise KeyStoreUnavailableError(f"Redis is unreachable: {exc}") from None
        try:
            first = json.loads(stored)
            at = dt.datetime.fromisoformat(first["at"])
            body = first["body"]
            status, answer = first.get("status"), first.get("answer")
        except (TypeError, ValueError, KeyError, AttributeError):
            # Expired between the two commands, or not ours: this use is the first.
            return FirstUse(now)
        if body != fingerprint:
            raise KeyReusedError(
                "this Idempotency-Key was used with another body; "
                "send a retry with the same body, or a new key for a new request"
            )
        at = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
        if isinstance(status, int) and isinstance(answer, str):
            return FirstUse(at, status, answer.encode())
        return FirstUse(at)

    def remember(
        self, scope: str, key: str, first: FirstUse, fingerprint: str, status: int, answer: bytes
    ) -> None:
        """Keeps a succeeded request's answer for its retries. Best effort, never raises: a
        retry that finds none is handled again, and stores nothing twice all the same.

        Args:
            scope: As given to :meth:`first_use`.
            key: The client's key.
            first: What :meth:`first_use` said for this request.
            fingerprint: The body's digest.
            status: The answer's status.
            answer: The answer's body (JSON).
        """
        client = self._state.client()
        if client is None:
            return
        value = json.dumps(
            {
                "at": first.at.isoformat(),
                "body": fingerprint,
                "status": status,
                "answer": answer.decode(),
            }
        )
        try:
            client.set(self._name(scope, key), value, xx=True, keepttl=True)
        except shared_state.REDIS_ERRORS as exc:
            self._state.failed(exc)

    def release(self, scope: str, key: str) -> None:
        """Forgets a key whose request stored nothing, so a corrected body may use it.

        Best effort, never raises: a key left behind only makes the corrected body's
        retry answer 422 until its TTL (the client then sends a new key).

        Args:
            scope: As given to :meth:`first_use`.
            key: The client's key.
        """
        client = self._state.client()
        if client is None:
            return
        try:
            client.delete(self._name(scope, key))
        except shared_state.REDIS_ERRORS as exc:
            self._state.failed(exc)

    def _client(self) -> redis.Redis:
        client = self._state.client()
        if client is None:
            raise KeyStoreUnavailableError(
                "Redis is off" if not self._state.enabled else "Redis is unreachable"
            )
        return client

    def _name(self, scope: str, key: str) -> str:
        return self._prefix + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


def body_fingerprint(body: bytes) -> str:
    """The digest that says a retry sent the same body.

    Args:
        body: The request body, decompressed.
    """
    return hashlib.sha256(body).hexdigest()


# -- ids ---------------------------------------------------------------------------------------


def hashed_uuid7(at: dt.datetime, digest: bytes) -> uuid.UUID:
    """A UUIDv7 of ``at`` whose random bits come from ``digest``: time-ordered, and the
    same for the same inputs.

    Args:
        at: Its time (milliseconds are kept).
        digest: At least 10 bytes of a hash.
    """
    ms = int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    rand = int.from_bytes(digest[:10], "big")
    value = ms << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64 | 0b10 << 62
    return uuid.UUID(int=value | (rand & 0x3FFF_FFFF_FFFF_FFFF))


def uuid7_time(value: uuid.UUID, now: dt.datetime) -> dt.datetime | None:
    """The time a UUIDv7 holds, or None for another version or an implausible time.

    Args:
        value: The id.
        now: The current time: a time more than ten years before it or a day after it is
            not taken as the id's.
    """
    if value.version != 7:
        return None
    at = dt.datetime.fromtimestamp((value.int >> 80) / 1000, dt.UTC)
    return at if now - _V7_PAST < at < now + _V7_FUTURE else None


def _span_hex(text: str) -> str:
    """16 hex digits of a hash: a W3C-shaped span id (never all zero)."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return digest if digest.strip("0") else "0" * 15 + "1"


def process_span_id(execution_id: uuid.UUID, process_id: str) -> str:
    """The span id of a process the client named: the same in every request and receiver.

    Args:
        execution_id: Its execution.
        process_id: The client's id of the process.
    """
    return _span_hex(f"pgtrail.json:process:{execution_id.hex}:{process_id}")


def root_span_id(execution_id: uuid.UUID) -> str:
    """The span id of an execution's root process, when the JSON API opened it.

    Args:
        execution_id: The execution.
    """
    return _span_hex(f"pgtrail.json:root:{execution_id.hex}")


def joined_row_id(execution_id: uuid.UUID, span_ids: list[str]) -> uuid.UUID:
    """The event id of a join's own execution row that holds these processes.

    Args:
        execution_id: The execution.
        span_ids: The processes the row holds.
    """
    return uuid.uuid5(execution_id, "pgtrail.json.joined:" + ",".join(sorted(span_ids)))


class Derivation:
    """The ids a request leaves to its ``Idempotency-Key``: the same for every retry.

    Args:
        scope: The route and the execution it names.
        key: The client's key.
    """

    def __init__(self, scope: str, key: str) -> None:
        self._seed = f"pgtrail.json:{scope}\0{key}\0"

    def _digest(self, *parts: str) -> bytes:
        return hashlib.sha256((self._seed + "\0".join(parts)).encode()).digest()

    def execution_id(self, at: dt.datetime) -> uuid.UUID:
        """The execution's id: a UUIDv7 of ``at``.

        Args:
            at: The execution's start.
        """
        return hashed_uuid7(at, self._digest("execution"))

    def span_id(self, path: str) -> str:
        """The span id of the process at ``path`` in the body.

        Args:
            path: E.g. ``processes[0].processes[1]``.
        """
        return _span_hex(self._digest("process", path).hex())

    def event_id(self, path: str, at: dt.datetime) -> uuid.UUID:
        """The event id of the event at ``path``: a UUIDv7 of its time.

        Args:
            path: E.g. ``events[3]``.
            at: The event's time.
        """
        return hashed_uuid7(at, self._digest("event", path))
