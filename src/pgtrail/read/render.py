"""Output for people and for programs: rich tables, CSV, JSON, Markdown, the execution tree
and the journey timeline.

The machine formats (CSV, JSON) are plain text written straight to the stream: no markup, no
wrapping, the same bytes whether or not the output is a terminal. Values are written the same
way everywhere: decimals as exact numbers (never through a float), datetimes in ISO 8601 with
their offset, UUIDs as text, JSON columns as JSON, intervals as seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from pgtrail.read.journey import Journey, JourneyExecution, Session
from pgtrail.read.trace import (
    Event,
    ProcessNode,
    Trace,
    TracedAgentEvent,
    TracedJourneyEvent,
    TracedLlmCall,
)

TABLE_FORMATS = ("table", "csv", "json", "md")
"""Output formats of ``pgtrail report run`` and ``pgtrail sql``."""

_TABLE_CELL_CHARS = 300


# --------------------------------------------------------------------------- values


def decimal_text(value: Decimal) -> str:
    """A finite decimal as plain digits: no exponent, no trailing zeros after the point."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready Python: dicts, lists, str, int, Decimal, bool or None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return Decimal(str(value.total_seconds()))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """JSON text of ``value``; decimals are written as exact numbers, non-finite ones as null."""
    out: list[str] = []
    _encode(jsonable(value), out, indent, 0)
    return "".join(out)


def _encode(value: Any, out: list[str], indent: int | None, level: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, Decimal):
        out.append(decimal_text(value))
    elif isinstance(value, float):
        out.append(repr(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, dict):
        _encode_items(
            [(json.dumps(k, ensure_ascii=False) + ": ", v) for k, v in value.items()],
            "{}",
            out,
            indent,
            level,
        )
    else:
        _encode_items([("", v) for v in value], "[]", out, indent, level)


def _encode_items(
    items: list[tuple[str, Any]], brackets: str, out: list[str], indent: int | None, level: int
) -> None:
    if not items:
        out.append(brackets)
        return
    out.append(brackets[0])
    inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
    for position, (prefix, item) in enumerate(items):
        if position:
            out.append("," if indent is not None else ", ")
        out.append(inner + prefix if indent is not None else prefix)
        _encode(item, out, indent, level + 1)
    if indent is not None:
        out.append("\n" + " " * (indent * level))
    out.append(brackets[1])


def plain_text(value: Any) -> str:
    """One value as text for CSV and Markdown: exact, unabridged, in the JSON conventions."""
    value = jsonable(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, dict | list):
        return json_text(value, indent=None)
    return str(value)


def display_text(value: Any) -> str:
    """One value as a person reads it in a table: UTC times to the second, long text cut."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, dt.timedelta):
        return str(value)
    text = plain_text(value)
    if len(text) > _TABLE_CELL_CHARS:
        return text[: _TABLE_CELL_CHARS - 1] + "…"
    return text


def format_cost(value: Decimal | None) -> str:
    """USD with enough decimals to tell small costs apart: $0.06123, $1.20, $0.000012."""
    if value is None:
        return "-"
    rounded = round(value, 6)
    text = decimal_text(rounded)
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def format_ms(value: int | float | None) -> str:
    """A duration in milliseconds as a person reads it: 812 ms, 25.9 s, 3 min 12 s, 1 h 02 min."""
    if value is None:
        return "-"
    ms = float(value)
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def unique_names(columns: Sequence[str]) -> list[str]:
    """Column names made unique (``count``, ``count_2``...) for keyed formats."""
    used: set[str] = set()
    names: list[str] = []
    for column in columns:
        name, count = column, 1
        while name in used:
            count += 1
            name = f"{column}_{count}"
        used.add(name)
        names.append(name)
    return names


# --------------------------------------------------------------------------- row formats


def rows_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """RFC 4180 CSV with a header line (``\\n`` line ends, as ``psql --csv`` writes)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([plain_text(v) for v in row])
    return buffer.getvalue()


def rows_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A JSON array with one object per row, keyed by column name."""
    names = unique_names(columns)
    return json_text([dict(zip(names, row, strict=True)) for row in rows]) + "\n"


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def rows_markdown(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; numeric columns are right-aligned."""
    numeric = [_is_numeric_column(rows, i) for i in range(len(columns))]
    lines = [
        "| " + " | ".join(_markdown_cell(c) for c in columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_markdown_cell(plain_text(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _column_values(rows: Sequence[Sequence[Any]], index: int) -> list[Any]:
    return [row[index] for row in rows if row[index] is not None]


def _is_numeric_column(rows: Sequence[Sequence[Any]], index: int) -> bool:
    values = _column_values(rows, index)
    return bool(values) and all(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in values
    )


def rows_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
) -> Table:
    """A rich table: numbers right-aligned, ids and times kept on one line, text folded."""
    table = Table(title=title, header_style="bold", show_lines=False, title_justify="left")
    for index, column in enumerate(columns):
        values = _column_values(rows, index)
        if _is_numeric_column(rows, index):
            table.add_column(column, justify="right", no_wrap=True)
        elif values and all(isinstance(v, uuid.UUID | dt.datetime | dt.date) for v in values):
            table.add_column(column, no_wrap=True, min_width=max(len(display_text(values[0])), 4))
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(display_text(v)) for v in row))
    return table


def render_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str | Table:
    """The rows in ``fmt`` (one of :data:`TABLE_FORMATS`): text, or a rich table to print."""
    if fmt == "csv":
        return rows_csv(columns, rows)
    if fmt == "json":
        return rows_json(columns, rows)
    if fmt == "md":
        return rows_markdown(columns, rows)
    if fmt == "table":
        return rows_table(columns, rows)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(TABLE_FORMATS)}")


# --------------------------------------------------------------------------- trees

_STATUS_STYLES = {
    "success": "green",
    "error": "bold red",
    "abandoned": "yellow",
    "running": "cyan",
}
_KEY_FIELDS = 4
_FIELD_CHARS = 60


def _status(status: str | None) -> Text:
    if status is None:
        return Text("")
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def _sep() -> Text:
    return Text(" · ", style="dim")


def _join(*parts: Text | str | None) -> Text:
    """Non-empty parts separated by a dim dot."""
    text = Text()
    for part in parts:
        if part is None or (isinstance(part, str | Text) and not str(part)):
            continue
        if text:
            text.append_text(_sep())
        text.append_text(part if isinstance(part, Text) else Text(part))
    return text


def _short(value: Any) -> str:
    text = plain_text(value)
    return text if len(text) <= _FIELD_CHARS else text[: _FIELD_CHARS - 1] + "…"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, f"{name}."))
        else:
            items.append((name, value))
    return items


def key_fields(data: Mapping[str, Any], *, skip: Sequence[str] = ()) -> str:
    """The first few leaf fields of a payload as ``a.b=value`` pairs."""
    pairs = [(k, v) for k, v in _flatten(data) if k not in skip]
    shown = [f"{k}={_short(v)}" for k, v in pairs[:_KEY_FIELDS]]
    if len(pairs) > _KEY_FIELDS:
        shown.append(f"+{len(pairs) - _KEY_FIELDS} more")
    return " ".join(shown)


def _tokens(call: TracedLlmCall) -> str:
    if call.input_tokens is None and call.output_tokens is None:
        return ""
    text = f"{call.input_tokens or 0:,} in / {call.output_tokens or 0:,} out tok"
    if call.cached_input_tokens:
        text += f" ({call.cached_input_tokens:,} cached)"
    return text


def _llm_line(call: TracedLlmCall) -> Text:
    outcome = "ok" if call.outcome == "llm_valid_execution" else call.outcome.removeprefix("llm_")
    model = call.model or "unknown model"
    who = f"{model} ({call.agent_type})" if call.agent_type else model
    return _join(
        Text.assemble(("LLM ", "bold cyan"), who),
        call.prompt_version and f"prompt {call.prompt_version}",
        _tokens(call),
        format_cost(call.cost) if call.cost is not None else "cost unknown",
        format_ms(call.latency_ms) if call.latency_ms is not None else None,
        Text(outcome, style="green" if outcome == "ok" else "bold red"),
        call.error and Text(_short(call.error), style="red"),
    )


def _agent_detail(event: TracedAgentEvent) -> str:
    data = event.data
    if event.event_type == "handoff":
        reason = f" ({_short(data['reason'])})" if data.get("reason") else ""
        return f"{data.get('from_agent', '?')} → {data.get('to_agent', '?')}{reason}"
    if event.event_type == "agent_decision" and isinstance(data.get("agent_decisions"), Mapping):
        return key_fields(data["agent_decisions"])
    if event.event_type == "context_compression" and isinstance(
        data.get("context_management"), Mapping
    ):
        return key_fields(data["context_management"])
    return key_fields(data, skip=("event_duration_ms",))


def _agent_line(event: TracedAgentEvent) -> Text:
    who = f" ({event.agent_type})" if event.agent_type else ""
    return _join(
        Text.assemble(("agent ", "bold magenta"), f"{event.event_type}{who}"),
        _agent_detail(event),
        format_ms(event.duration_ms) if event.duration_ms is not None else None,
    )


def _journey_line(event: TracedJourneyEvent) -> Text:
    return _join(
        Text.assemble(("journey ", "bold green"), event.event_type), key_fields(event.data)
    )


def event_line(event: Event) -> Text:
    """One event on one line, prefixed by its UTC time of day."""
    if isinstance(event, TracedLlmCall):
        body = _llm_line(event)
    elif isinstance(event, TracedAgentEvent):
        body = _agent_line(event)
    else:
        body = _journey_line(event)
    stamp = event.created_at.astimezone(dt.UTC).strftime("%H:%M:%S")
    return Text.assemble((stamp + " ", "dim"), body)


def _cost_part(cost: Decimal, calls: int, unpriced: int, *, label: str = "") -> str | None:
    if not calls:
        return None
    text = f"{format_cost(cost)}{label} ({calls} LLM call{'s' if calls != 1 else ''}"
    if unpriced:
        text += f", {unpriced} unpriced"
    return text + ")"


def _process_label(node: ProcessNode) -> Text:
    name = Text(node.name, style="bold" if node.recorded else "italic")
    if not node.recorded:
        name.append(" (not in the execution row)", style="dim")
    own = ""
    if node.children and node.llm_calls and node.llm_calls != node.subtree_llm_calls:
        own = f"own {format_cost(node.cost)}"
    return _join(
        name,
        format_ms(node.duration_ms) if node.duration_ms is not None else None,
        _status(node.status),
        _cost_part(
            node.subtree_cost,
            node.subtree_llm_calls,
            node.unpriced_calls,
            label=" subtree" if node.children else "",
        ),
        own,
        node.error and Text(_short(node.error), style="red"),
    )


def _add_process(branch: Tree, node: ProcessNode) -> None:
    for event in node.events:
        branch.add(event_line(event))
    for child in node.children:
        _add_process(branch.add(_process_label(child)), child)


def trace_tree(trace: Trace) -> Tree:
    """The execution as a rich tree: processes with duration, status and rolled-up cost,
    and under each the LLM calls, agent events and journey events logged in it."""
    root = trace.root
    head = Text.assemble(("execution ", "dim"), (str(trace.execution_id), "bold"))
    if not trace.finished:
        head.append("  still open: no execution row written yet", style="bold yellow")
    who = _join(
        trace.user_id and f"user {trace.user_id}",
        trace.session_id and f"session {trace.session_id}",
        trace.tenant_id and f"tenant {trace.tenant_id}",
        display_text(trace.started_at) if trace.started_at else None,
        f"parent {trace.parent_execution_id}" if trace.parent_execution_id else None,
    )
    duration = trace.duration_ms if trace.finished else root.duration_ms
    total = _join(
        Text(root.name, style="bold"),
        format_ms(duration) if duration is not None else None,
        _status(trace.status),
        _cost_part(trace.total_cost, trace.llm_calls, root.unpriced_calls, label=" total")
        or "no LLM calls",
        trace.error and Text(_short(trace.error), style="red"),
    )
    label = Text("\n").join([head, who, total]) if who else Text("\n").join([head, total])
    tree = Tree(label)
    _add_process(tree, root)
    return tree


def _execution_line(execution: JourneyExecution) -> Text:
    stamp = execution.created_at.astimezone(dt.UTC).strftime("%H:%M:%S")
    name = execution.workflow or f"execution {execution.execution_id}"
    calls = execution.llm_calls
    return Text.assemble(
        (stamp + " ", "dim"),
        _join(
            Text(name, style="bold"),
            _status(execution.status if execution.finished else "running"),
            format_ms(execution.duration_ms) if execution.duration_ms is not None else None,
            _cost_part(execution.cost, calls, execution.unpriced_llm_calls) or "no LLM calls",
            f"{execution.failed_llm_calls} failed" if execution.failed_llm_calls else None,
            Text(str(execution.execution_id), style="dim"),
            execution.error and Text(_short(execution.error), style="red"),
        ),
    )


def _session_label(session: Session) -> Text:
    name = session.session_id or "(no session)"
    span = (
        f"{session.started_at.astimezone(dt.UTC):%H:%M}–{session.ended_at.astimezone(dt.UTC):%H:%M}"
    )
    count = len(session.executions)
    return _join(
        Text.assemble(("session ", "bold blue"), (name, "bold")),
        Text("continued from an earlier day", style="dim") if session.continued else None,
        span,
        f"{session.turns} turn{'s' if session.turns != 1 else ''}" if session.turns else None,
        f"{count} execution{'s' if count != 1 else ''}",
        format_cost(session.cost) if session.llm_calls else None,
        Text("abandoned", style="yellow") if session.abandoned else None,
    )


def journey_timeline(journey: Journey, *, max_executions: int | None = None) -> Tree:
    """The journey as a rich tree: days, sessions in each day, executions in each session
    (workflow, status, duration, cost, LLM calls) with their journey events and handoffs.

    With ``max_executions``, the timeline stops after that many executions and says how many
    more there are.
    """
    executions = journey.executions
    stored = (
        f" (stored as {journey.stored_user_id})"
        if journey.stored_user_id != journey.user_id
        else ""
    )
    head = Text.assemble(("journey of user ", "dim"), (journey.user_id, "bold"), stored)
    summary = _join(
        f"{journey.since.astimezone(dt.UTC):%Y-%m-%d %H:%M} → "
        f"{journey.until.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"{len(journey.days)} day{'s' if len(journey.days) != 1 else ''}",
        f"{len(journey.session_ids)} session{'s' if len(journey.session_ids) != 1 else ''}",
        f"{len(executions)} execution{'s' if len(executions) != 1 else ''}",
        _cost_part(journey.cost, journey.llm_calls, 0, label=" total") or "no LLM calls",
    )
    tree = Tree(Text("\n").join([head, summary]))
    shown = 0
    for day in journey.days:
        if max_executions is not None and shown >= max_executions:
            more = len(executions) - shown
            tree.add(Text(f"… {more} more execution{'s' if more != 1 else ''}", style="dim"))
            break
        count = len(day.executions)
        branch = tree.add(
            _join(
                Text(f"{day.day:%Y-%m-%d %a}", style="bold underline"),
                f"{len(day.sessions)} session{'s' if len(day.sessions) != 1 else ''}",
                f"{count} execution{'s' if count != 1 else ''}",
                format_cost(day.cost),
            )
        )
        for session in day.sessions:
            twig = branch.add(_session_label(session))
            for execution in session.executions:
                if max_executions is not None and shown >= max_executions:
                    break
                shown += 1
                leaf = twig.add(_execution_line(execution))
                for event in execution.events:
                    leaf.add(event_line(event))
    return tree
