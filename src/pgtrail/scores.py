"""Scores and feedback: what a score is, and the agent event it is stored as.

A score is a named verdict on an execution (or one of its processes): numeric (``0.82``),
boolean (``True``, a thumbs up) or categorical (``"off_topic"``), given by a human, a model, a
rule or anyone else (``source``), during the execution or any time later. It is stored as an
agent event of type ``score`` in ``logs_agent_execution``, so it is partitioned, retained,
tenant-scoped and traced like every other event of its execution, and shows in
``pgtrail trace`` under its process; its ``particular_data`` holds:

- ``name``: what was scored (``helpfulness``);
- ``value``: the value as given (a number, ``true``/``false`` or a text);
- ``value_type``: ``numeric``, ``boolean`` or ``categorical``;
- ``score``: the value as a number for averages (a boolean is 1 or 0; absent for a category);
- ``label``: the text of a category or boolean (``"true"``/``"false"``), absent for a number;
- ``source``, ``comment`` and ``data`` when given; ``attached`` says how a score given by
  execution id found its execution (``current``, ``redis``, ``database``, ``given`` or
  ``unknown``).
"""

from __future__ import annotations

import decimal
import math
import uuid
from dataclasses import dataclass
from typing import Any

from pgtrail.errors import ValidationError
from pgtrail.writer.sanitize import safe_repr

SCORE_EVENT = "score"
"""``event_type`` of a score in ``logs_agent_execution``."""

MAX_NAME_CHARS = 200
"""The longest score name (names are grouped on in reports)."""

VALUE_TYPES = ("numeric", "boolean", "categorical")


@dataclass(frozen=True)
class ScoreRequest:
    """One score as a caller gives it to :func:`pgtrail.log_score` or :meth:`Trail.log_score`.

    Attributes:
        name: What is scored, e.g. ``"helpfulness"``.
        value: A finite number, a boolean or a text (a category).
        comment: A free-text explanation, or None.
        source: Who scored: ``"human"``, ``"model"``, ``"rule"``... or None.
        data: More facts about the score (the evaluator's model, a rubric), or None.
        execution_id: The execution scored when it is not the current one (a UUID or its
            text), or None for the current execution.
        span_id: The process scored, when it is not the current one (or the root), or None.
        agent_type: The agent whose work is scored, or None.
        tenant_id: The tenant to store the score under when its execution is unknown.
        user_id: The user, on the same terms as ``tenant_id``.
        session_id: The session, on the same terms as ``tenant_id``.
        lookup_timeout_s: Longest wait for the stored row of a finished execution.
    """

    name: object
    value: object
    comment: object = None
    source: object = None
    data: object = None
    execution_id: object = None
    span_id: object = None
    agent_type: object = None
    tenant_id: object = None
    user_id: object = None
    session_id: object = None
    lookup_timeout_s: object = 1.0


@dataclass(frozen=True)
class ScoreValue:
    """A score's value, typed: what is stored in ``value``, ``score`` and ``label``."""

    value: float | bool | str
    value_type: str
    score: float | None
    label: str | None


def score_value(value: object) -> ScoreValue:
    """The typed value of a score.

    Args:
        value: A bool, an int, a float or a Decimal (finite), or a non-empty str.

    Raises:
        ValidationError: any other value, NaN or an infinity, an empty text.
    """
    if isinstance(value, bool):
        return ScoreValue(value, "boolean", 1.0 if value else 0.0, "true" if value else "false")
    if isinstance(value, int | float | decimal.Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValidationError(f"score value {value!r} is not a finite number")
        if isinstance(value, int) and abs(value) < 2**53:
            return ScoreValue(value, "numeric", number, None)
        return ScoreValue(number, "numeric", number, None)
    if isinstance(value, str):
        if not value.strip():
            raise ValidationError("score value: an empty text is not a category")
        return ScoreValue(value, "categorical", None, value)
    raise ValidationError(
        f"score value: expected a number, a bool or a str, got {type(value).__qualname__}"
    )


def score_name(name: object) -> str:
    """A score's name as stored.

    Args:
        name: A non-empty str of at most :data:`MAX_NAME_CHARS` characters.

    Raises:
        ValidationError: anything else.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("score name: give a non-empty str, e.g. 'helpfulness'")
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError(f"score name: longer than {MAX_NAME_CHARS} characters")
    return name


def _optional_text(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(f"score {field}: expected a str, got {type(value).__qualname__}")


def score_data(request: ScoreRequest, attached: str) -> dict[str, Any]:
    """The ``particular_data`` of a score event.

    Args:
        request: The score as given.
        attached: How its execution was found (see the module's documentation).

    Raises:
        ValidationError: a bad name or value, a ``comment`` or ``source`` that is not text,
            or ``data`` that is not a dict.
    """
    typed = score_value(request.value)
    data: dict[str, Any] = {
        "name": score_name(request.name),
        "value": typed.value,
        "value_type": typed.value_type,
    }
    if typed.score is not None:
        data["score"] = typed.score
    if typed.label is not None:
        data["label"] = typed.label
    source = _optional_text(request.source, "source")
    if source is not None:
        data["source"] = source
    comment = _optional_text(request.comment, "comment")
    if comment is not None:
        data["comment"] = comment
    if request.data is not None:
        if not isinstance(request.data, dict):
            raise ValidationError(
                f"score data: expected a dict, got {type(request.data).__qualname__}"
            )
        data["data"] = request.data
    data["attached"] = attached
    return data


def target_execution(value: object) -> uuid.UUID | None:
    """The execution a score names: None for the current one.

    Args:
        value: None, a UUID or its text.

    Raises:
        ValidationError: a value that names no execution (the score would be misplaced).
    """
    if value is None or isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationError(f"score execution_id: not a UUID: {safe_repr(value)[:100]}")
