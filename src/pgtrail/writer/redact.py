"""Redaction of secrets and personal data in text and JSON, plus user-id pseudonymisation.

Redaction is off by default; the caller decides whether to apply a :class:`Redactor`. Matches
are replaced by typed placeholders: ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[API_KEY]`` and
``[JWT]``, and in JSON the values of secret-looking keys become ``[SECRET]``.

This module is the one place that decides what a value looks like once it is safe to store.
Every path that stores what a caller or a span sent goes through a :class:`Redactor`: the
writer's rows (and so the spool, which holds prepared rows), the state of open executions in
Redis (:class:`pgtrail.correlation.RedisState`) and the spans held in Redis while their trace
assembles (:func:`pgtrail.otlp.redaction.redact_span`). Identifiers are not redacted: a user,
tenant or session id masked to ``[EMAIL]`` would merge different people into one. A user id
is pseudonymised instead, from its raw value, by :func:`hash_user_id`.

Deliberate limits, chosen to keep ordinary numbers (years, prices, dates, ids, token counts)
intact:

* Phone numbers are found in international form (``+34 612 345 678``, ``0044 20 7946 0958``,
  8 to 15 digits after the prefix) and in North American form with an area code
  (``(415) 555-0132``, ``415-555-0132``, ``415.555.0132``). National formats without a prefix
  such as ``612 345 678`` are not recognised: they cannot be told apart from lists of numbers.
* Card numbers are 13 to 19 digits, in one run or in three or more groups of at least three
  digits separated by single spaces or dashes (``4111 1111 1111 1111``, ``3782 822463 10005``),
  starting with 2 to 6 (every major network) and passing the Luhn check; a random 16-digit id
  that fails the check is kept.
* API keys are recognised by their vendor prefix; ``Bearer`` tokens need 16 characters and a
  digit, so the word in prose is left alone.
* A digit run right after a dot is a decimal fraction (``0.4242424242424242``) and is kept;
  so are numbers stored as JSON numbers rather than text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from typing import Any

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
CARD = "[CARD]"
API_KEY = "[API_KEY]"
JWT = "[JWT]"
SECRET = "[SECRET]"  # noqa: S105 - the placeholder, not a credential

_FLAGS = re.VERBOSE | re.ASCII | re.DOTALL

# Speed. The regex engine scans quickly for a pattern that opens with a literal; any other
# opening is tried at every position, which costs tens of microseconds per 2 KB. So every pattern
# opens with its literal (the boundary check is a fixed-width lookbehind placed after it, as in
# "sk-(?<![\w-].{3})"), and the two families that cannot (tokens, digit runs) run only on short
# windows located with bytes.find on a one-byte-per-character "shape" of the text.

# Tokens: JWTs, bearer tokens and vendor API keys.
_TOKENS = re.compile(
    r"""
      eyJ(?<![\w-].{3}) [\w-]+ \. eyJ [\w-]+ \. [\w-]*
    | Bearer(?<![\w-].{6}) \s+ (?=[A-Za-z_.~+/-]*\d) [\w.~+/-]{16,} =*
    | bearer(?<![\w-].{6}) \s+ (?=[A-Za-z_.~+/-]*\d) [\w.~+/-]{16,} =*
    | sk-(?<![\w-].{3}) (?=[A-Za-z_-]*\d) [\w-]{20,}          # OpenAI, Anthropic (sk-ant-)
    | sk_(?<![\w-].{3}) (?:live|test)_ [A-Za-z0-9]{10,}        # Stripe secret key
    | rk_(?<![\w-].{3}) (?:live|test)_ [A-Za-z0-9]{10,}        # Stripe restricted key
    | AKIA(?<![\w-].{4}) [0-9A-Z]{16} (?![0-9A-Za-z])          # AWS access key id
    | ASIA(?<![\w-].{4}) [0-9A-Z]{16} (?![0-9A-Za-z])          # AWS temporary key id
    | AIza(?<![\w-].{4}) [\w-]{35}                             # Google
    | gh(?<![\w-].{2}) [pousr]_ [A-Za-z0-9]{30,}               # GitHub classic
    | github_pat_(?<![\w-].{11}) \w{22,}                       # GitHub fine-grained
    | xox(?<![\w-].{3}) [baprs]- [A-Za-z0-9-]{10,}             # Slack
    """,
    _FLAGS,
)
# Every token above is a run of at least 15 of these characters ("xoxb-" + 10), Bearer's
# scheme aside.
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~+/="
_TOKEN_SHAPE = bytes(ord("w") if i in _TOKEN_CHARS else ord(" ") for i in range(256))
_TOKEN_RUN = b"w" * 15

# The domain of an email; the local part (ASCII letters, digits, "_.%+-" and any non-ASCII letter)
# is found by walking back from the "@".
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])", _FLAGS)
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.%+-")

# International phones: "+" or "00", a country code and groups; the digit count is checked after.
_INTL_PLUS = re.compile(r"\+(?<!\w.) [1-9] \d*+ (?:[\ .-]?(?:\(\d++\)|\d++))*+ (?![\w-])", _FLAGS)
_INTL_00 = re.compile(
    r"00(?<![\w.+-].{2}) [1-9] \d*+ (?:[\ .-]?(?:\(\d++\)|\d++))*+ (?![\w-])", _FLAGS
)
_US_PAREN = re.compile(r"\((?<![\w+-].) \d{3} \) \ ? \d{3} [-.\ ] \d{4} (?![\w-]|\.\d)", _FLAGS)
# North American phones with dashes or dots (group 1 is their separator), and card candidates:
# 13 to 19 digits in one run, or three or more groups of at least three digits separated by
# single spaces or dashes (4-4-4-4, 4-6-5, ...); the Luhn check comes after.
_DIGITS = re.compile(
    r"""
    [0-9](?<![\w.+-].)
    (?: \d{2} ([-.]) \d{3} \1 \d{4} (?![\w-]|\.\d)
      | (?<=[2-6]) (?: \d{12,18}+ | \d{2,}+ (?:[\ -]\d{3,}+){2,}+ ) (?![\w-])
    )
    """,
    _FLAGS,
)
# Shape: "9" for a digit, "_" for a separator, "x" for anything else. Each match of _DIGITS
# holds "99_999" or 13 digits in a row.
_DIGIT_SHAPE = bytes(
    ord("9") if 48 <= i <= 57 else ord("_") if i in b" -." else ord("x") for i in range(256)
)
_DIGIT_HINTS = (b"99_999", b"9" * 13)

# Past this many candidate windows one pass over the whole text is cheaper.
_MAX_WINDOWS = 8

_CARD_SEPARATOR = re.compile("[ -]")
_LUHN_DOUBLED = {str(d): 2 * d if d < 5 else 2 * d - 9 for d in range(10)}

_SECRET_WORDS = frozenset({"password", "passwd", "secret", "token", "apikey", "authorization"})
_SECRET_PAIRS = frozenset({"api_key", "private_key", "secret_key", "access_key"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def _shape(text: str, table: bytes) -> bytes:
    # Latin-1 with "?" for the rest keeps one byte per character, so offsets carry over.
    return text.encode("latin-1", "replace").translate(table)


def _luhn_ok(digits: str) -> bool:
    total = sum(map(int, digits[-1::-2])) + sum(map(_LUHN_DOUBLED.__getitem__, digits[-2::-2]))
    return total % 10 == 0


def _token(match: re.Match[str]) -> str:
    text = match.group()
    if text.startswith("eyJ"):
        return JWT
    if text[:6] in ("Bearer", "bearer"):
        token = text[6:].lstrip()
        return text[: len(text) - len(token)] + API_KEY
    return API_KEY


def _intl(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(map(str.isdigit, text)) - (2 if text[0] == "0" else 0)
    return PHONE if 8 <= digits <= 15 else text


def _digits(match: re.Match[str]) -> str:
    text = match.group()
    if match.group(1) is not None:
        return PHONE
    # The longest leading run of groups that is a valid card number; what follows (an expiry
    # year, a CVV) is kept.
    best = 0
    digits = ""
    offset = 0
    for group in _CARD_SEPARATOR.split(text):
        digits += group
        offset += len(group)
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            best = offset
        offset += 1
    return CARD + text[best:] if best else text


def _emails(text: str) -> str:
    parts: list[str] = []
    done = 0
    for match in _EMAIL_DOMAIN.finditer(text):
        start = match.start()
        while start > done and (
            text[start - 1] in _EMAIL_LOCAL
            or (text[start - 1] >= "\x80" and text[start - 1].isalnum())  # ünï@example.com
        ):
            start -= 1
        if start == match.start():
            continue
        parts.append(text[done:start])
        parts.append(EMAIL)
        done = match.end()
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _tokens(text: str) -> str:
    shape = _shape(text, _TOKEN_SHAPE)
    runs = shape.count(_TOKEN_RUN)
    if runs == 0:
        return text
    if runs > _MAX_WINDOWS:
        return _TOKENS.sub(_token, text)
    parts: list[str] = []
    done = 0
    start = shape.find(_TOKEN_RUN)
    while start >= 0:
        end = shape.find(b" ", start)
        end = len(text) if end < 0 else end
        head = text[max(done, start - 16) : start]
        scheme = head.rstrip()
        if scheme[-6:] in ("Bearer", "bearer") and len(scheme) < len(head):
            start -= len(head) - len(scheme) + 6  # keep "Bearer <token>" in one window
        # The characters around a run are not token characters, so the patterns' boundary
        # checks give the same answer on the window as on the whole text.
        window = text[start:end]
        clean = _TOKENS.sub(_token, window)
        if clean != window:
            parts += (text[done:start], clean)
            done = end
        start = shape.find(_TOKEN_RUN, end)
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _digit_runs(text: str) -> str:
    shape = _shape(text, _DIGIT_SHAPE)
    hits = [shape.find(hint) for hint in _DIGIT_HINTS]
    if max(hits) < 0:
        return text
    if shape.count(_DIGIT_HINTS[0]) > _MAX_WINDOWS:
        return _DIGITS.sub(_digits, text)
    parts: list[str] = []
    done = 0
    while max(hits) >= 0:
        hit = min(h for h in hits if h >= 0)
        # The window is the run of digits and separators around the hit plus the character on
        # each side, which the patterns read for their boundary checks but never change.
        start = max(shape.rfind(b"x", 0, hit), 0)
        end = shape.find(b"x", hit)
        end = len(text) if end < 0 else end + 1
        # Cheap filter: a phone or card has two separators between digits or 13 digits in a row.
        inner = shape.find(b"9_9", start, end)
        if (inner >= 0 and shape.find(b"9_9", inner + 2, end) >= 0) or shape.find(
            _DIGIT_HINTS[1], start, end
        ) >= 0:
            window = text[start:end]
            clean = _DIGITS.sub(_digits, window)
            if clean != window:
                # The left boundary character may be out already, as the previous window's right.
                parts += (text[done:start], clean[max(done - start, 0) :])
                done = end
        hits = [
            h if h < 0 or h >= end else shape.find(hint, end)
            for h, hint in zip(hits, _DIGIT_HINTS, strict=True)
        ]
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _redact(text: str) -> str:
    if len(text) < 6:  # "a@b.co", the shortest thing redacted
        return text
    if "@" in text:
        text = _emails(text)
    text = _tokens(text)
    if "+" in text:
        text = _INTL_PLUS.sub(_intl, text)
    if "00" in text:
        text = _INTL_00.sub(_intl, text)
    if "(" in text:
        text = _US_PAREN.sub(PHONE, text)
    return _digit_runs(text)


def _redact_free(text: str) -> str:
    """``text`` redacted; JSON text (tool arguments, bodies sent as text) as JSON."""
    if text[:1] in ("{", "[") and len(text) >= 6:
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            return _redact(text)
        if isinstance(parsed, dict | list):
            # Parsed, the values of secret-looking keys are found, and escapes such as
            # "\u0040" no longer hide an address. Unchanged text keeps its own formatting.
            redacted = _REDACTOR.redact_json(parsed)
            if redacted == parsed:
                return text
            try:
                return json.dumps(redacted, ensure_ascii=False)
            except (ValueError, RecursionError):
                return _redact(text)
    return _redact(text)


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a dict key names a secret (``password``, ``apiKey``, ``X-Auth-Token``, ...).

    The key is split into lower-case words (on punctuation and camelCase); it is a secret when
    its last word is password, passwd, secret, token, apikey or authorization, or its last two
    are api_key, private_key, secret_key or access_key. ``max_tokens`` and ``token_count`` are
    therefore not secrets.
    """
    words = _SEPARATORS.split(_CAMEL.sub("_", key).lower())
    words = [word for word in words if word]
    if not words:
        return False
    return words[-1] in _SECRET_WORDS or "_".join(words[-2:]) in _SECRET_PAIRS


PROCESS_IDENTIFIERS = frozenset(
    {"span_id", "parent_span_id", "nesting_level", "started_at", "duration_ms", "status"}
)
"""The members of a process record (an element of ``processes_executed``) that pgtrail sets
itself; the others, the process name and its error first, are the caller's text."""


@functools.lru_cache(maxsize=4096)
def _redact_key(key: str) -> str:
    # Dict keys repeat from record to record (field names), so their answers are kept.
    return _redact(key)


def _free_key(key: str, target: dict[Any, Any]) -> str:
    """``key`` redacted, and made distinct when two keys became the same placeholder."""
    clean = _redact_key(key)
    if clean in target:
        # {"ana@example.com": 1, "bob@example.com": 2} keeps both values.
        number = 2
        while f"{clean} #{number}" in target:
            number += 1
        clean = f"{clean} #{number}"
    return clean


class Redactor:
    """Replaces secrets and personal data with typed placeholders.

    Stateless and thread-safe; the patterns are compiled once when the module is imported.
    """

    def redact_text(self, text: str) -> str:
        """Return ``text`` with emails, phones, cards, API keys and JWTs replaced.

        A text that is a JSON object or array is redacted as JSON (see :meth:`redact_json`)
        when that changes it, and then written back as JSON.

        Args:
            text: Any free text.
        """
        return _redact_free(text)

    def redact_json(self, value: Any, keep: frozenset[str] = frozenset()) -> Any:
        """Return a copy of a JSON-like structure with its keys and string values redacted.

        The value of a secret-looking key (see :func:`is_secret_key`) becomes ``[SECRET]``
        unless it is ``None``. Keys are redacted like values; two keys that become the same
        placeholder are told apart with ``" #2"``, ``" #3"``... Tuples become lists; other
        values (numbers included) are kept as they are. Shared and cyclic references are
        preserved without recursion.

        Args:
            value: A string, or dicts, lists and tuples of JSON-like values.
            keep: Keys whose values are identifiers, kept as they are at any depth (and not
                copied).
        """
        if isinstance(value, str):
            return self.redact_text(value)
        if not isinstance(value, dict | list | tuple):
            return value
        copies: dict[int, Any] = {}
        root = self._empty(value, copies)
        pending: list[tuple[Any, Any]] = [(value, root)]
        while pending:
            source, target = pending.pop()
            if isinstance(source, dict):
                for key, item in source.items():
                    if isinstance(key, str):
                        if key in keep:
                            target[key] = item
                            continue
                        secret = item is not None and is_secret_key(key)
                        key = _free_key(key, target)
                        if secret:
                            target[key] = SECRET
                            continue
                    target[key] = self._child(item, copies, pending)
            else:
                target.extend(self._child(item, copies, pending) for item in source)
        return root

    def redact_processes(self, records: list[Any]) -> list[Any]:
        """Process records (``processes_executed``, or their copies in Redis), made safe.

        Args:
            records: Process records as :meth:`pgtrail.correlation.Span.record` makes them.

        Returns:
            Copies in which the members pgtrail sets itself (:data:`PROCESS_IDENTIFIERS`) are
            kept and the rest (the name, the error) is redacted.
        """
        redacted: list[Any] = self.redact_json(records, keep=PROCESS_IDENTIFIERS)
        return redacted

    def _child(self, item: Any, copies: dict[int, Any], pending: list[tuple[Any, Any]]) -> Any:
        if isinstance(item, str):
            return _redact_free(item)
        if not isinstance(item, dict | list | tuple):
            return item
        copy = copies.get(id(item))
        if copy is None:
            copy = self._empty(item, copies)
            pending.append((item, copy))
        return copy

    @staticmethod
    def _empty(item: dict[Any, Any] | list[Any] | tuple[Any, ...], copies: dict[int, Any]) -> Any:
        copy: dict[Any, Any] | list[Any] = {} if isinstance(item, dict) else []
        copies[id(item)] = copy
        return copy


_REDACTOR = Redactor()


PSEUDONYM = re.compile(r"^u_[0-9a-f]{32}$")
"""The shape of a :func:`hash_user_id` result."""


class Pseudonym(str):
    """A user id that is already a :func:`hash_user_id` pseudonym, read back from a stored row.

    The writer stores it as it is: hashing it again would make the same person a second
    pseudonym in the rows written after a late join.
    """

    __slots__ = ()


def as_pseudonym(user_id: str | None) -> str | None:
    """``user_id`` as a :class:`Pseudonym` when it has the shape of one, else unchanged.

    Args:
        user_id: A user id read from a stored row, or None.
    """
    if user_id is not None and PSEUDONYM.match(user_id):
        return Pseudonym(user_id)
    return user_id


def hash_user_id(user_id: str, key: str) -> str:
    """Pseudonymise a user id: ``"u_"`` + the first 32 hex digits of HMAC-SHA256(key, user_id).

    Deterministic for a given key, so one user's events stay linked; without the key the id
    cannot be recovered or confirmed by guessing. Give the raw id, never a redacted one:
    every e-mail address redacts to ``[EMAIL]``, which would make all of them one user.

    Args:
        user_id: The user id as the caller gave it.
        key: The HMAC key (``PGTRAIL_USER_HMAC_KEY``).

    Raises:
        ValueError: ``key`` is empty (the result would be a plain, guessable hash).
    """
    if not key:
        raise ValueError("hash_user_id needs a non-empty key")
    digest = hmac.new(
        key.encode("utf-8", "surrogatepass"),
        user_id.encode("utf-8", "surrogatepass"),
        hashlib.sha256,
    )
    return "u_" + digest.hexdigest()[:32]
