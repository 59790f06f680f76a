"""Evaluations sent as OpenTelemetry become pgtrail scores.

Two shapes arrive as scores of the span that carries them, stored as agent events of type
``score`` with the ``particular_data`` of :func:`pgtrail.log_score` (see
:mod:`pgtrail.scores`), so reports, ``pgtrail check`` rules, traces and journeys treat them
as any other score:

- the OpenTelemetry GenAI ``gen_ai.evaluation.result`` event, on the span it evaluates
  (``gen_ai.evaluation.name``, ``gen_ai.evaluation.score.value``,
  ``gen_ai.evaluation.score.label``, ``gen_ai.evaluation.explanation``,
  ``gen_ai.response.id``);
- OpenInference / Phoenix evaluation annotations on a span (``evaluation.name``,
  ``evaluation.score``, ``evaluation.label``, ``evaluation.explanation``), as Phoenix's
  evaluator spans carry them.

A numeric score keeps its label beside it. A result with a name but neither a score nor a
label (an explanation alone) cannot be a score: it is kept as an ``evaluation`` agent event,
as given. Nothing here raises: what cannot be read stays among the span's attributes.
"""

from __future__ import annotations

from typing import Any

from pgtrail.errors import ValidationError
from pgtrail.otlp.attributes import (
    Attrs,
    as_name,
    as_number,
    nanos_to_datetime,
    prune,
    span_events,
)
from pgtrail.otlp.draft import Draft
from pgtrail.scores import SCORE_EVENT, ScoreRequest, score_data
from pgtrail.tables import AGENT

__all__ = ["EVALUATION_EVENT", "add_scores"]

EVALUATION_EVENT = "gen_ai.evaluation.result"
"""The OpenTelemetry GenAI event of one evaluation result."""

_SOURCE = "evaluator"
"""``source`` of a score that came as OpenTelemetry: an evaluator, human or model alike."""

_GENAI = (
    "gen_ai.evaluation.name",
    "gen_ai.evaluation.score.value",
    "gen_ai.evaluation.score.label",
    "gen_ai.evaluation.explanation",
)
_OPENINFERENCE = (
    "evaluation.name",
    "evaluation.score",
    "evaluation.label",
    "evaluation.explanation",
)


def _result(attrs: Attrs, keys: tuple[str, str, str, str]) -> dict[str, Any]:
    name_key, score_key, label_key, explanation_key = keys
    return {
        "name": attrs.name(name_key),
        "score": attrs.first((score_key,), as_number),
        "label": attrs.name(label_key),
        "explanation": attrs.text(explanation_key),
    }


def _score_args(agent: str | None, result: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The agent record of one result: a score when it can be one, else an evaluation."""
    name, score, label = result["name"], result["score"], result["label"]
    if name is not None and (score is not None or label is not None):
        request = ScoreRequest(
            name,
            score if score is not None else label,
            comment=result["explanation"],
            source=_SOURCE,
            data=extra or None,
        )
        try:
            data = score_data(request, "otlp")
        except ValidationError:
            pass  # e.g. a label of spaces only: kept as an evaluation below
        else:
            if label is not None and score is not None:
                data["label"] = label
            return {"agent_type": agent, "event_type": SCORE_EVENT, "data": data}
    return {"agent_type": agent, "event_type": "evaluation", "data": prune({**result, **extra})}


def add_scores(draft: Draft) -> None:
    """Adds one score (or evaluation) record per evaluation the span carries.

    Args:
        draft: Any span; most carry no evaluation.
    """
    agent = draft.agent or as_name(draft.attrs.raw.get("gen_ai.agent.name"))
    for event in span_events(draft.span):
        if event.name != EVALUATION_EVENT:
            continue
        attrs = Attrs(event.attributes)
        result = _result(attrs, _GENAI)
        extra = prune({"response_id": attrs.name("gen_ai.response.id"), "attributes": attrs.rest()})
        at = nanos_to_datetime(event.time_unix_nano) or draft.created_at
        draft.add(AGENT, _score_args(agent, result, extra), main=False, at=at)
    if "evaluation.name" in draft.attrs.raw:
        result = _result(draft.attrs, _OPENINFERENCE)
        if result["name"] is not None:
            draft.add(AGENT, _score_args(agent, result, {}), main=False)
