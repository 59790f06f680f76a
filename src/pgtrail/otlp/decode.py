"""OTLP trace requests, protobuf or JSON, decoded into :class:`~pgtrail.otlp.spans.OtlpSpan`.

A body that cannot be decoded at all raises :class:`OtlpDecodeError` with the reason, before
anything is stored. A span that cannot be stored is left out and counted, so the receiver can
answer with the OTLP ``partial_success`` the specification asks for, while the request's other
spans are kept: a span whose trace or span id is absent, all zeros, wrongly sized or (in JSON)
not a hex string, and a protobuf span that does not parse on its own (a string that is not
UTF-8, values nested beyond the parser's limit). When nothing of a request could be decoded,
the request is refused with the first span's reason. A JSON span whose ids read but whose
other fields are malformed (an integer that is not a number, an unknown enum name) refuses
the request, the reason naming the span by trace id and span id. Attribute values nested
deeper than 32 levels are cut there (``"[max depth]"``), as the writer's sanitiser would.

The JSON encoding follows the OTLP specification: trace and span ids are hex strings, 64-bit
integers may be strings, enums may be numbers or names, and field names may be lowerCamelCase
or the protobuf's own snake_case.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pgtrail.errors import OtlpDecodeError
from pgtrail.otlp.spans import OtlpSpan, SpanEvent
from pgtrail.writer.sanitize import MAX_DEPTH

_MAX_DEPTH = 32
# JSON containers nested deeper than this are cut before parsing a body the JSON parser
# refused as too deep; well above where attribute values are cut (_MAX_DEPTH AnyValues).
_JSON_DEPTH = 256
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_MAX_FIELD_NUMBER = 2**29 - 1
_SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass
class Decoded:
    """The spans of one request, and those that were left out, with the first reason."""

    spans: list[OtlpSpan] = field(default_factory=list)
    rejected: int = 0
    reason: str = ""
    malformed: str = ""
    """The first reason a span was left out for breaking the encoding (not merely invalid)."""

    def reject(self, reason: str, *, malformed: bool = False) -> None:
        """Counts one span left out.

        Args:
            reason: Why, naming the span.
            malformed: The span breaks the encoding (its ids are not hex, it does not
                parse), rather than carrying values that cannot be stored.
        """
        self.rejected += 1
        if not self.reason:
            self.reason = reason
        if malformed and not self.malformed:
            self.malformed = reason

    def finish(self) -> Decoded:
        """This request's outcome; raises when nothing of it could be decoded.

        Raises:
            OtlpDecodeError: No span was kept and some were malformed.
        """
        if not self.spans and self.malformed:
            raise OtlpDecodeError(self.malformed)
        return self


@dataclass(frozen=True)
class _LeftOut:
    """A span left out of its request, and why."""

    reason: str
    malformed: bool = False


# -- protobuf --------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> Decoded:
    """Decodes an ``ExportTraceServiceRequest`` in the protobuf binary encoding.

    A request the parser refuses is decoded again piece by piece, so that a span that does
    not parse (a string that is not UTF-8, values nested too deep) is left out alone.

    Args:
        body: The request body, decompressed.

    Raises:
        OtlpDecodeError: The body is not such a request, or none of its spans decodes.
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError, which has no type stubs
        return _decode_protobuf_pieces(body, exc).finish()
    out = Decoded()
    for resource_spans in request.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                _add_pb_span(out, span, resource, scope)
    return out


def _add_pb_span(out: Decoded, span: Any, resource: dict[str, Any], scope: str) -> None:
    """Adds one parsed protobuf ``Span`` to ``out``, or leaves it out with the reason."""
    trace_id = span.trace_id.hex()
    span_id = span.span_id.hex()
    parent = _parent_or_none(span.parent_span_id.hex())
    problem = _id_problem(trace_id, span_id, parent)
    if problem:
        out.reject(f"span {span.name!r}: {problem}")
        return
    out.spans.append(
        OtlpSpan(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent,
            name=span.name,
            kind=int(span.kind),
            start_unix_nano=int(span.start_time_unix_nano),
            end_unix_nano=int(span.end_time_unix_nano),
            status_code=int(span.status.code),
            status_message=span.status.message,
            attributes=_pb_attributes(span.attributes),
            events=tuple(
                SpanEvent(
                    name=event.name,
                    time_unix_nano=int(event.time_unix_nano),
                    attributes=_pb_attributes(event.attributes),
                )
                for event in span.events
            ),
            resource=resource,
            scope=scope,
        )
    )


def _decode_protobuf_pieces(body: bytes, error: Exception) -> Decoded:
    """A request the parser refused, each resource, scope and span parsed on its own.

    Raises:
        OtlpDecodeError: The body is not a protobuf message at all (``error`` says why).
    """
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    out = Decoded()
    try:
        for resource_spans in _submessages(body, 1):
            resource: dict[str, Any] = {}
            broken = ""  # why the spans of this resource, or scope, cannot be kept
            for raw in _submessages(resource_spans, 1):
                try:
                    resource = _pb_attributes(Resource.FromString(raw).attributes)
                except Exception as exc:
                    broken = f"its resource cannot be decoded: {exc}"
            for scope_spans in _submessages(resource_spans, 2):
                scope = ""
                scope_broken = broken
                for raw in _submessages(scope_spans, 1):
                    try:
                        scope = InstrumentationScope.FromString(raw).name
                    except Exception as exc:
                        scope_broken = scope_broken or f"its scope cannot be decoded: {exc}"
                for raw in _submessages(scope_spans, 2):
                    try:
                        if scope_broken:
                            raise ValueError(scope_broken)
                        span = Span.FromString(raw)
                        _add_pb_span(out, span, resource, scope)
                    except Exception as exc:
                        reason = f"{_wire_span_name(raw)} cannot be decoded: {exc}"
                        out.reject(reason, malformed=True)
    except _WireError:
        raise OtlpDecodeError(f"not a protobuf ExportTraceServiceRequest: {error}") from None
    return out


class _WireError(ValueError):
    """Bytes that are not in the protobuf wire format."""


@dataclass(frozen=True)
class _WireField:
    """One field of a protobuf message, as the wire format carries it."""

    number: int
    wire_type: int
    value: bytes  # the payload of a length-delimited field, else empty


def _submessages(message: bytes, number: int) -> Iterator[bytes]:
    """The payloads of the length-delimited fields ``number`` of ``message``."""
    for found in _wire_fields(message):
        if found.number == number and found.wire_type == 2:
            yield found.value


def _wire_fields(message: bytes) -> Iterator[_WireField]:
    """The fields of a protobuf message, read at the wire level (no schema).

    Raises:
        _WireError: ``message`` is not in the wire format.
    """
    position, end = 0, len(message)
    while position < end:
        tag, position = _read_varint(message, position)
        number, wire_type = tag >> 3, tag & 7
        if not 1 <= number <= _MAX_FIELD_NUMBER:
            raise _WireError(f"field number {number}")
        value = b""
        if wire_type == 0:
            _, position = _read_varint(message, position)
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        elif wire_type == 2:
            length, position = _read_varint(message, position)
            value = message[position : position + length]
            position += length
        else:  # groups, long deprecated, and wire types that do not exist
            raise _WireError(f"wire type {wire_type}")
        if position > end:
            raise _WireError("truncated message")
        yield _WireField(number, wire_type, value)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
    value = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            raise _WireError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    raise _WireError("varint longer than 10 bytes")


def _wire_span_name(raw: bytes) -> str:
    """``span <span id> of trace <trace id>``, read from a span's bytes as far as they go."""
    ids = {1: "", 2: ""}
    try:
        for found in _wire_fields(raw):
            if found.number in ids and found.wire_type == 2:
                ids[found.number] = found.value.hex()
    except _WireError:
        pass
    return f"span {ids[2] or '(unreadable)'} of trace {ids[1] or '(unreadable)'}"


def _pb_attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value, 0) for kv in pairs}


def _pb_value(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return MAX_DEPTH
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return getattr(value, kind)


# -- JSON ------------------------------------------------------------------------------------


def decode_json(body: bytes) -> Decoded:
    """Decodes an ``ExportTraceServiceRequest`` in the OTLP JSON encoding.

    Args:
        body: The request body, decompressed.

    Raises:
        OtlpDecodeError: The body is not such a request, a span's fields other than its
            ids are malformed (the reason names it), or none of its spans decodes.
    """
    request = _object(_load_json(body), "request")
    out = Decoded()
    for i, resource_spans in enumerate(_array(request, "resourceSpans", "resource_spans")):
        where = f"resourceSpans[{i}]"
        resource_spans = _object(resource_spans, where)
        resource = _json_attributes(
            _object(_get(resource_spans, "resource") or {}, f"{where}.resource"), where
        )
        scopes = _array(resource_spans, "scopeSpans", "scope_spans")
        if not scopes:  # the name before OTLP 1.0
            scopes = _array(resource_spans, "instrumentationLibrarySpans")
        for j, scope_spans in enumerate(scopes):
            swhere = f"{where}.scopeSpans[{j}]"
            scope_spans = _object(scope_spans, swhere)
            scope_obj = _get(scope_spans, "scope", "instrumentationLibrary") or {}
            scope = _string(_get(_object(scope_obj, f"{swhere}.scope"), "name"), swhere)
            for k, span in enumerate(_array(scope_spans, "spans")):
                decoded = _json_span(span, f"{swhere}.spans[{k}]")
                if isinstance(decoded, _LeftOut):
                    out.reject(decoded.reason, malformed=decoded.malformed)
                    continue
                out.spans.append(OtlpSpan(**decoded, resource=resource, scope=scope))
    return out.finish()


def _load_json(body: bytes) -> Any:
    """The parsed body; one nested beyond the parser's limit is parsed with its depths cut.

    Raises:
        OtlpDecodeError: The body is not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    if "depth" in str(error):
        try:
            return orjson.loads(_cut_deep(body, _JSON_DEPTH))
        except orjson.JSONDecodeError:
            pass
    raise OtlpDecodeError(f"not valid JSON: {error}")


def _cut_deep(body: bytes, limit: int) -> bytes:
    """``body`` with every array or object nested deeper than ``limit`` replaced by null."""
    parts: list[bytes] = []
    depth = 0
    kept_to = 0  # body[:kept_to] is in parts already, or was cut
    cut_from = 0
    for token in _JSON_TOKENS.finditer(body):
        mark = token.group()
        if mark in (b"[", b"{"):
            depth += 1
            if depth == limit + 1:
                cut_from = token.start()
        elif mark in (b"]", b"}"):
            if depth == limit + 1:
                parts += [body[kept_to:cut_from], b"null"]
                kept_to = token.end()
            depth -= 1
    parts.append(body[kept_to:])
    return b"".join(parts)


def _json_span(span: Any, where: str) -> dict[str, Any] | _LeftOut:
    """A JSON span's fields, or why it is left out.

    Raises:
        OtlpDecodeError: Its ids read but another field is malformed (named by its ids).
    """
    if not isinstance(span, dict):
        return _LeftOut(f"{where} must be a JSON object, not {_kind(span)}", malformed=True)
    try:
        trace_id = _hex_id(_get(span, "traceId", "trace_id"), f"{where}.traceId")
        span_id = _hex_id(_get(span, "spanId", "span_id"), f"{where}.spanId")
        parent = _parent_or_none(
            _hex_id(_get(span, "parentSpanId", "parent_span_id"), f"{where}.parentSpanId")
        )
    except OtlpDecodeError as exc:  # a span that cannot even be named is left out alone
        return _LeftOut(str(exc), malformed=True)
    try:
        decoded = _json_span_fields(span, where, trace_id, span_id, parent)
    except OtlpDecodeError as exc:
        named = f"span {span_id or '(none)'} of trace {trace_id or '(none)'}"
        raise OtlpDecodeError(f"{named}: {exc}") from None
    problem = _id_problem(trace_id, span_id, parent)
    return _LeftOut(f"span {decoded['name']!r}: {problem}") if problem else decoded


def _json_span_fields(
    span: dict[str, Any], where: str, trace_id: str, span_id: str, parent: str | None
) -> dict[str, Any]:
    """The :class:`OtlpSpan` fields of a JSON span but its resource and scope."""
    name = _string(_get(span, "name"), f"{where}.name")
    status = _object(_get(span, "status") or {}, f"{where}.status")
    events = []
    for n, event in enumerate(_array(span, "events")):
        ewhere = f"{where}.events[{n}]"
        event = _object(event, ewhere)
        events.append(
            SpanEvent(
                name=_string(_get(event, "name"), f"{ewhere}.name"),
                time_unix_nano=_int64(_get(event, "timeUnixNano", "time_unix_nano"), ewhere),
                attributes=_json_attributes(event, ewhere),
            )
        )
    # Every field is read: a malformed span refuses the request even when its ids alone
    # would only have left it out.
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": _enum(_get(span, "kind"), _SPAN_KINDS, f"{where}.kind"),
        "start_unix_nano": _int64(
            _get(span, "startTimeUnixNano", "start_time_unix_nano"), f"{where}.startTimeUnixNano"
        ),
        "end_unix_nano": _int64(
            _get(span, "endTimeUnixNano", "end_time_unix_nano"), f"{where}.endTimeUnixNano"
        ),
        "status_code": _enum(_get(status, "code"), _STATUS_CODES, f"{where}.status.code"),
        "status_message": _string(_get(status, "message"), f"{where}.status.message"),
        "attributes": _json_attributes(span, where),
        "events": tuple(events),
    }


def _json_attributes(holder: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, pair in enumerate(_array(holder, "attributes")):
        pair = _object(pair, f"{where}.attributes[{i}]")
        key = _string(_get(pair, "key"), f"{where}.attributes[{i}].key")
        out[key] = _json_value(_get(pair, "value"), f"{where}.attributes[{key!r}]", 0)
    return out


def _json_value(value: Any, where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return MAX_DEPTH
    if value is None:
        return None
    value = _object(value, where)
    if not value:
        return None
    if len(value) != 1:
        raise OtlpDecodeError(f"{where}: an AnyValue holds exactly one field, got {list(value)}")
    kind, inner = next(iter(value.items()))
    if kind in ("stringValue", "string_value"):
        return _string(inner, where)
    if kind in ("boolValue", "bool_value"):
        if not isinstance(inner, bool):
            raise OtlpDecodeError(f"{where}: boolValue must be true or false")
        return inner
    if kind in ("intValue", "int_value"):
        return _int64(inner, where, signed=True)
    if kind in ("doubleValue", "double_value"):
        return _double(inner, where)
    if kind in ("bytesValue", "bytes_value"):
        try:
            return base64.b64decode(_string(inner, where), validate=True)
        except binascii.Error:
            raise OtlpDecodeError(f"{where}: bytesValue is not base64") from None
    if kind in ("arrayValue", "array_value"):
        items = _array(_object(inner, where), "values")
        return [_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
    if kind in ("kvlistValue", "kvlist_value"):
        result: dict[str, Any] = {}
        for i, pair in enumerate(_array(_object(inner, where), "values")):
            pair = _object(pair, f"{where}[{i}]")
            key = _string(_get(pair, "key"), f"{where}[{i}].key")
            result[key] = _json_value(_get(pair, "value"), f"{where}[{key!r}]", depth + 1)
        return result
    raise OtlpDecodeError(f"{where}: unknown AnyValue field {kind!r}")


# -- JSON helpers ----------------------------------------------------------------------------


def _get(obj: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OtlpDecodeError(f"{where} must be a JSON object, not {_kind(value)}")
    return value


def _array(obj: dict[str, Any], *names: str) -> list[Any]:
    value = _get(obj, *names)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{names[0]} must be a JSON array, not {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{where} must be a string, not {_kind(value)}")
    return value


def _int64(value: Any, where: str, *, signed: bool = False) -> int:
    """A 64-bit integer, which the JSON encoding may carry as a decimal string."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise OtlpDecodeError(f"{where} must be an integer, not a boolean")
    if isinstance(value, str):
        try:
            number = int(value.strip(), 10)
        except ValueError:
            raise OtlpDecodeError(f"{where} must be an integer, got {value[:40]!r}") from None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise OtlpDecodeError(f"{where} must be an integer, not {_kind(value)}")
    low, high = (-(2**63), 2**63 - 1) if signed else (0, 2**64 - 1)
    if not low <= number <= high:
        raise OtlpDecodeError(f"{where}={number} is out of the 64-bit range")
    return number


def _double(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise OtlpDecodeError(f"{where} must be a number, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # the protobuf JSON mapping spells these as strings
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if value in special:
            return special[value]
        try:
            return float(value)
        except ValueError:
            pass
    raise OtlpDecodeError(f"{where} must be a number, got {str(value)[:40]!r}")


def _enum(value: Any, names: dict[str, int], where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        if value in names:
            return names[value]
        raise OtlpDecodeError(f"{where}: unknown value {value[:60]!r}")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    raise OtlpDecodeError(f"{where} must be a number or an enum name, not {_kind(value)}")


def _hex_id(value: Any, where: str) -> str:
    """An id as the JSON encoding carries it: hex (case-insensitive), empty when absent."""
    text = _string(value, where).strip().lower()
    if text and not all(c in "0123456789abcdef" for c in text):
        raise OtlpDecodeError(f"{where} must be hex digits, got {text[:40]!r}")
    return text


def _parent_or_none(parent: str) -> str | None:
    """No parent: absent, empty, or all zeros (as some exporters send for a root)."""
    return None if not parent or parent == _ZERO_SPAN else parent


def _id_problem(trace_id: str, span_id: str, parent: str | None) -> str:
    if len(trace_id) != 32 or trace_id == _ZERO_TRACE:
        return f"invalid trace id {trace_id!r} (need 16 non-zero bytes)"
    if len(span_id) != 16 or span_id == _ZERO_SPAN:
        return f"invalid span id {span_id!r} (need 8 non-zero bytes)"
    if parent is not None and (len(parent) != 16 or parent == _ZERO_SPAN):
        return f"invalid parent span id {parent!r} (need 8 non-zero bytes)"
    return ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )
