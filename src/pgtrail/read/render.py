"""Output for people and for programs: rich tables, CSV, JSON, Markdown, the execution tree
and the journey timeline.

The machine formats (CSV, JSON) are plain text written straight to the stream: no markup, no
wrapping, the same bytes whether or not the output is a terminal. Values are written the same
way everywhere: decimals as exact numbers (never through a float), datetimes in ISO 8601 with
their offset, UUIDs as text, JSON columns as JSON, intervals as seconds.

The execution tree is written line by line from a view of the trace (see
:mod:`pgtrail.read.trace_view`), with its guides drawn here and styles turned into ANSI
codes only for a terminal: laying a big tree out with rich took seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring
from typing import IO, Any, NamedTuple

from rich.console import COLOR_SYSTEMS
from rich.style import Style
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
from pgtrail.read.trace_view import (
    ShownProcess,
    Totals,
    TraceLimits,
    TraceView,
    subtree_totals,
    view_trace,
)

TABLE_FORMATS = ("table", "csv", "json", "md")
"""Output formats of ``pgtrail report run`` and ``pgtrail sql``."""

_TABLE_CELL_CHARS = 300
_INDENT_LEVELS = 64


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
    """JSON text of ``value``; decimals are written as exact numbers, non-finite ones as null.

    Containers are walked with a stack, not by recursion, so a value nested thousands deep
    (the tree of a deep execution) is written like any other; indentation stops growing
    past 64 levels, so the text stays proportional to the value.

    Args:
        value: dicts, lists and anything :func:`jsonable` converts.
        indent: spaces per level, or None for one line.
    """
    out: list[str] = []
    levels = range(_INDENT_LEVELS + 1)
    margins = ["" if indent is None else "\n" + " " * (indent * level) for level in levels]
    separator = ", " if indent is None else ","
    # Each frame: the rest of a container's items, whether it is a mapping, its closing
    # bracket, whether an item was written yet.
    stack: list[tuple[Iterator[Any], bool, str, bool]] = []
    frame = _open(value, out)
    if frame is not None:
        stack.append(frame)
    while stack:
        items, keyed, closing, written = stack[-1]
        entry: Any = next(items, _END)
        if entry is _END:
            stack.pop()
            margin = margins[min(len(stack), _INDENT_LEVELS)] if written else ""
            out.append(margin + closing)
            continue
        if written:
            out.append(separator)
        else:
            stack[-1] = (items, keyed, closing, True)
        out.append(margins[min(len(stack), _INDENT_LEVELS)])
        if keyed:
            key, entry = entry
            out.append(encode_basestring(key if type(key) is str else str(key)) + ": ")
        frame = _open(entry, out)
        if frame is not None:
            stack.append(frame)
    return "".join(out)


_END = object()


def _open(value: Any, out: list[str]) -> tuple[Iterator[Any], bool, str, bool] | None:
    """Writes a scalar, or the opening bracket of a container and returns its frame."""
    kind = type(value)
    if kind is str:
        out.append(encode_basestring(value))
        return None
    if kind is dict or isinstance(value, Mapping):
        out.append("{")
        return iter(value.items()), True, "}", False
    if kind is list or isinstance(value, list | tuple | set | frozenset):
        out.append("[")
        return iter(value), False, "]", False
    value = jsonable(value)
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
    else:
        out.append(encode_basestring(str(value)))
    return None


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


class Part(NamedTuple):
    """A piece of a line and its rich style ("" for none)."""

    text: str
    style: str = ""


_DOT = Part(" · ", "dim")


def _parts(*pieces: Part | str | list[Part] | None) -> list[Part]:
    """Non-empty pieces separated by a dim dot."""
    line: list[Part] = []
    for piece in pieces:
        if not piece:
            continue
        if line:
            line.append(_DOT)
        if isinstance(piece, str):
            line.append(Part(piece))
        elif isinstance(piece, Part):
            line.append(piece)
        else:
            line.extend(piece)
    return line


def _status_part(status: str | None) -> Part | None:
    return None if status is None else Part(status, _STATUS_STYLES.get(status, ""))


def _llm_parts(call: TracedLlmCall) -> list[Part]:
    outcome = "ok" if call.outcome == "llm_valid_execution" else call.outcome.removeprefix("llm_")
    model = call.model or "unknown model"
    who = f"{model} ({call.agent_type})" if call.agent_type else model
    return _parts(
        [Part("LLM ", "bold cyan"), Part(who)],
        call.prompt_version and f"prompt {call.prompt_version}",
        _tokens(call),
        format_cost(call.cost) if call.cost is not None else "cost unknown",
        format_ms(call.latency_ms) if call.latency_ms is not None else None,
        Part(outcome, "green" if outcome == "ok" else "bold red"),
        call.error and Part(_short(call.error), "red"),
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
    if event.event_type == "score" and "name" in data:  # as pgtrail.log_score stores one
        return _score_detail(data)
    return key_fields(data, skip=("event_duration_ms",))


def _score_detail(data: Mapping[str, Any]) -> str:
    """``helpfulness = 0.4 (poor) by model: "too vague"``."""
    label = data.get("label")
    value = data.get("value")
    text = f"{_short(data['name'])} = {_short(value)}"
    if label is not None and plain_text(label) != plain_text(value):
        text += f" ({_short(label)})"
    if data.get("source"):
        text += f" by {_short(data['source'])}"
    if data.get("comment"):
        text += f': "{_short(data["comment"])}"'
    return text


def _agent_parts(event: TracedAgentEvent) -> list[Part]:
    who = f" ({event.agent_type})" if event.agent_type else ""
    return _parts(
        [Part("agent ", "bold magenta"), Part(f"{event.event_type}{who}")],
        _agent_detail(event),
        format_ms(event.duration_ms) if event.duration_ms is not None else None,
    )


def _journey_parts(event: TracedJourneyEvent) -> list[Part]:
    return _parts([Part("journey ", "bold green"), Part(event.event_type)], key_fields(event.data))


def event_parts(event: Event) -> list[Part]:
    """One event as the styled pieces of one line, prefixed by its UTC time of day.

    Args:
        event: an LLM call, agent event or journey event of a trace.
    """
    if isinstance(event, TracedLlmCall):
        body = _llm_parts(event)
    elif isinstance(event, TracedAgentEvent):
        body = _agent_parts(event)
    else:
        body = _journey_parts(event)
    stamp = event.created_at.astimezone(dt.UTC).strftime("%H:%M:%S")
    return [Part(stamp + " ", "dim"), *body]


def event_line(event: Event) -> Text:
    """One event on one line, prefixed by its UTC time of day.

    Args:
        event: an LLM call, agent event or journey event of a trace.
    """
    return Text.assemble(*event_parts(event))


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"


def _cost_part(cost: Decimal, calls: int, unpriced: int, *, label: str = "") -> str | None:
    if not calls:
        return None
    text = f"{format_cost(cost)}{label} ({_plural(calls, 'LLM call')}"
    if unpriced:
        text += f", {unpriced:,} unpriced"
    return text + ")"


def _process_parts(node: ProcessNode) -> list[Part]:
    name = [Part(node.name, "bold" if node.recorded else "italic")]
    if not node.recorded:
        name.append(Part(" (not in the execution row)", "dim"))
    own = ""
    if node.children and node.llm_calls and node.llm_calls != node.subtree_llm_calls:
        own = f"own {format_cost(node.cost)}"
    return _parts(
        name,
        format_ms(node.duration_ms) if node.duration_ms is not None else None,
        _status_part(node.status),
        _cost_part(
            node.subtree_cost,
            node.subtree_llm_calls,
            node.unpriced_calls,
            label=" subtree" if node.children else "",
        ),
        own,
        node.error and Part(_short(node.error), "red"),
    )


def _totals_text(totals: Totals, *, with_processes: bool) -> str:
    pieces: list[str] = []
    if with_processes:
        failed = f" ({totals.failed_processes:,} failed)" if totals.failed_processes else ""
        pieces.append(_plural(totals.processes, "process") + failed)
    if totals.llm_calls:
        calls = _plural(totals.llm_calls, "LLM call")
        if totals.failed_llm_calls:
            calls += f" ({totals.failed_llm_calls:,} failed)"
        cost = format_cost(totals.cost)
        if totals.unpriced_llm_calls:
            cost += f" + {totals.unpriced_llm_calls:,} unpriced"
        pieces.append(f"{calls}, {cost}")
    others = totals.events - totals.llm_calls
    if others:
        pieces.append(_plural(others, "other event"))
    return ", ".join(pieces)


def _see(node: ProcessNode, option: str = "") -> str:
    """How to see what is hidden under ``node``: open it, with a wider limit if needed."""
    if node.span_id is None:
        return f" — see them with {option.strip() or '--all'}"
    return f" — see them with --process {node.span_id}{option}"


def _hidden_children_parts(view: TraceView, shown: ShownProcess) -> list[Part]:
    hidden = shown.hidden_children
    assert hidden is not None
    node = shown.node
    kids = len(node.children)
    more = "" if hidden.count == kids else " more"
    what = f"… {hidden.count:,}{more} child process{'' if hidden.count == 1 else 'es'} hidden"
    if hidden.cut == "depth":
        why, see = f"deeper than --depth {view.limits.depth}", _see(node)
    elif hidden.cut == "breadth":
        why, see = f"past --breadth {view.limits.breadth}", _see(node, f" --breadth {kids}")
    else:
        why, see = f"past --limit {view.limits.lines}", _see(node)
    detail = _totals_text(hidden.totals, with_processes=True)
    failed = hidden.totals.first_failed_span_id
    first = f"; first failed: {failed}" if failed else ""
    return [Part(f"{what} ({why}): {detail}{first}{see}", "dim")]


def _hidden_events_parts(view: TraceView, shown: ShownProcess) -> list[Part]:
    hidden = shown.hidden_events
    assert hidden is not None
    count = len(shown.node.events)
    more = "" if hidden.count == count else " more"
    what = f"… {hidden.count:,}{more} event{'' if hidden.count == 1 else 's'} hidden"
    if hidden.cut == "events":
        why, see = f"past --events {view.limits.events}", _see(shown.node, f" --events {count}")
    else:
        why, see = f"past --limit {view.limits.lines}", _see(shown.node)
    detail = _totals_text(hidden.totals, with_processes=False)
    return [Part(f"{what} ({why}): {detail}{see}", "dim")]


def _folded_parts(view: TraceView, shown: ShownProcess) -> list[Part]:
    """The suffix of a process that shows none of what it holds."""
    children, events = shown.hidden_children, shown.hidden_events
    below = subtree_totals(shown.node.children) if children is not None else None
    pieces = []
    if below is not None and below.processes:
        failed = f" ({below.failed_processes:,} failed)" if below.failed_processes else ""
        pieces.append(f"{_plural(below.processes, 'process')} below{failed}")
    count = (below.events if below is not None else 0) + (events.count if events else 0)
    if count:
        pieces.append(_plural(count, "event"))
    cuts = {h.cut for h in (children, events) if h is not None}
    if "lines" in cuts:
        why = f"past --limit {view.limits.lines}"
    elif "depth" in cuts:
        why = f"deeper than --depth {view.limits.depth}"
    else:
        why = "--events 0"
    see = f"; open with --process {shown.node.span_id}" if shown.node.span_id else ""
    return [_DOT, Part(f"▸ {', '.join(pieces)} not shown ({why}{see})", "dim")]


def _trace_head(view: TraceView) -> list[list[Part]]:
    trace = view.trace
    root = trace.root
    head = [Part("execution ", "dim"), Part(str(trace.execution_id), "bold")]
    if not trace.finished:
        head.append(Part("  still open: no execution row written yet", "bold yellow"))
    who = _parts(
        trace.user_id and f"user {trace.user_id}",
        trace.session_id and f"session {trace.session_id}",
        trace.tenant_id and f"tenant {trace.tenant_id}",
        display_text(trace.started_at) if trace.started_at else None,
        f"parent {trace.parent_execution_id}" if trace.parent_execution_id else None,
    )
    duration = trace.duration_ms if trace.finished else root.duration_ms
    total = _parts(
        Part(root.name, "bold"),
        format_ms(duration) if duration is not None else None,
        _status_part(trace.status),
        _cost_part(trace.total_cost, trace.llm_calls, root.unpriced_calls, label=" total")
        or "no LLM calls",
        trace.error and Part(_short(trace.error), "red"),
    )
    lines = [head, who, total] if who else [head, total]
    if view.root.node is not root:
        path = " › ".join(n.name for n in view.path)
        lines.append([Part("showing process ", "dim"), Part(str(view.limits.process), "bold")])
        lines.append([Part(f"under {path}", "dim")])
        lines.append(_process_parts(view.root.node))
    return lines


def _trace_foot(view: TraceView) -> list[Part]:
    total_processes = view.shown_processes + view.hidden_processes
    total_events = view.shown_events + view.hidden_events
    return [
        Part(
            f"shown: {view.shown_processes:,} of {_plural(total_processes, 'process')} and "
            f"{view.shown_events:,} of {_plural(total_events, 'event')}; "
            "--all shows everything",
            "bold",
        )
    ]


_GUIDE_FORK, _GUIDE_LAST, _GUIDE_PASS, _GUIDE_SPACE = "├── ", "└── ", "│   ", "    "


def trace_lines(view: TraceView) -> Iterator[list[Part]]:
    """The view as lines of styled pieces: a head, the tree with its guides (events of each
    process first, then its children, then what a limit hid), and a foot when something
    is hidden. Depth first without recursion, so a tree of any depth is written.

    Args:
        view: what to show (see :func:`pgtrail.read.trace_view.view_trace`).
    """
    yield from _trace_head(view)
    # Each entry: what to write, the guides above it, and whether it is the last sibling.
    stack: list[tuple[ShownProcess | list[Part], str, bool]] = []
    _push_contents(stack, view, view.root, "")
    while stack:
        item, guides, last = stack.pop()
        branch = guides + (_GUIDE_LAST if last else _GUIDE_FORK)
        if isinstance(item, list):
            yield [Part(branch, "dim"), *item]
            continue
        line = [Part(branch, "dim"), *_process_parts(item.node)]
        if item.folded:
            line.extend(_folded_parts(view, item))
            yield line
            continue
        yield line
        _push_contents(stack, view, item, guides + (_GUIDE_SPACE if last else _GUIDE_PASS))
    if not view.complete:
        yield _trace_foot(view)


def _push_contents(
    stack: list[tuple[ShownProcess | list[Part], str, bool]],
    view: TraceView,
    shown: ShownProcess,
    guides: str,
) -> None:
    """Pushes a process's lines (events, hidden events, children, hidden children)."""
    items: list[ShownProcess | list[Part]] = [event_parts(e) for e in shown.events]
    if shown.hidden_events is not None:
        items.append(_hidden_events_parts(view, shown))
    items.extend(shown.children)
    if shown.hidden_children is not None:
        items.append(_hidden_children_parts(view, shown))
    for position in range(len(items) - 1, -1, -1):
        stack.append((items[position], guides, position == len(items) - 1))


def write_trace(view: TraceView, stream: IO[str], *, color_system: str | None = None) -> None:
    """Writes the view to ``stream``, one line per process or event, unwrapped.

    Lines are written as they are made, plain, or with ANSI styles for a terminal: a big
    trace costs a few microseconds a line, not rich's layout of a tree.

    Args:
        view: what to show (see :func:`pgtrail.read.trace_view.view_trace`).
        stream: where to write.
        color_system: a rich colour system name (``standard``, ``256``, ``truecolor``) to
            style the lines for, or None for plain text.
    """
    system = COLOR_SYSTEMS.get(color_system) if color_system else None
    styles: dict[str, Style] = {}
    chunk: list[str] = []
    for line in trace_lines(view):
        if system is None:
            chunk.append("".join(part.text for part in line))
        else:
            pieces = []
            for text, style in line:
                if style:
                    parsed = styles.get(style) or styles.setdefault(style, Style.parse(style))
                    text = parsed.render(text, color_system=system)
                pieces.append(text)
            chunk.append("".join(pieces))
        if len(chunk) >= 500:
            stream.write("\n".join(chunk) + "\n")
            chunk.clear()
    if chunk:
        stream.write("\n".join(chunk) + "\n")


def trace_tree(trace: Trace, limits: TraceLimits | None = None) -> Tree:
    """The execution as a rich tree, within ``limits``: processes with duration, status and
    rolled-up cost, under each the LLM calls, agent events and journey events logged in it,
    and what a limit hid. For a page of output; :func:`write_trace` writes big traces fast.

    Args:
        trace: a loaded trace.
        limits: what to show; None for the defaults.
    """
    view = view_trace(trace, limits)
    head = [Text.assemble(*line) for line in _trace_head(view)]
    tree = Tree(Text("\n").join(head))
    stack: list[tuple[Tree, ShownProcess]] = [(tree, view.root)]
    while stack:
        branch, shown = stack.pop()
        for event in shown.events:
            branch.add(event_line(event))
        if shown.hidden_events is not None:
            branch.add(Text.assemble(*_hidden_events_parts(view, shown)))
        for child in shown.children:
            label = _process_parts(child.node)
            if child.folded:
                label.extend(_folded_parts(view, child))
            stack.append((branch.add(Text.assemble(*label)), child))
        if shown.hidden_children is not None:
            branch.add(Text.assemble(*_hidden_children_parts(view, shown)))
    if not view.complete:
        tree.add(Text.assemble(*_trace_foot(view)))
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
    (workflow, status, duration, cost, LLM calls) with their journey events, handoffs and
    scores (given however late).

    Args:
        journey: The user's journey, as :func:`~pgtrail.read.journey.load_journey` reads it.
        max_executions: With a number, the timeline stops after that many executions and
            says how many more there are.
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
