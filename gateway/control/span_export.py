"""Patchbay's spans as OTLP/HTTP bytes: `SpanEncoder` and the exporter that uses it.

The SDK's OTLP encoder costs about 100 µs of CPU per span; this one writes the
same bytes (tests/test_tracing.py compares them) in a fraction of that, by
serializing constant parts once and writing fixed-size fields directly. Its own
module because it is a self-contained serializer with its own rules (the wire
format); gateway/control/tracing.py builds the spans it encodes, and its
docstring has the measured costs.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from itertools import islice
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_attributes,
    _encode_instrumentation_scope,
    _encode_resource,
    _encode_value,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
    _SPAN_KIND_MAP,
    _encode_span,
    _encode_status,
    _span_flags,
)
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError, _is_request_too_large
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans as PBResourceSpans
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans as PBScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PBSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

log = logging.getLogger("patchbay.tracing")


class Attributes(dict):
    """A span's attributes whose last `encoded[0]` entries `SpanEncoder` has already serialized
    (`encoded[1]`): the constant part of a route's or target's attributes, made once and added
    after the span's own. Any reader sees a plain dict; these dicts are not changed once handed
    to a span."""

    __slots__ = ("encoded",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoded: tuple[int, bytes] | None = None

    def extend(self, base: Attributes) -> Attributes:
        """Add `base`'s entries (and their encoding) after the ones already here."""
        n = len(self)
        self.update(base)
        # a key already here keeps its place (taking base's value): the encoding no longer fits, encode it all
        self.encoded = base.encoded if len(self) == n + len(base) else None
        return self


_TIMES = struct.Struct("<BQBQ").pack   # Span fields 7 and 8: key, fixed64 (little-endian); key, fixed64


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _nest(field: int, payload: bytes) -> bytes:
    """A message inside another on the wire: key (field number, wire type 2), varint length, bytes."""
    return bytes(((field << 3) | 2,)) + _varint(len(payload)) + payload   # fields below 16: a one-byte key


class SpanEncoder:
    """`ExportTraceServiceRequest` bytes for a batch of ReadableSpans, equal to the SDK encoder's.

    A span is its fields in number order, as the SDK's message serializes: trace and span ids
    (fixed 16 and 8 bytes, written directly), trace state, parent id, name and kind (a
    `trace_pb2.Span` serialized once per name), times (fixed64, written directly), attributes (a
    `trace_pb2.Span` whose entries are filled in place with `attributes.add()`, not built as
    separate KeyValue and AnyValue objects then copied as the SDK's encoder does; then constant
    ones serialized once, `Attributes.encoded`), status and flags (serialized once for the usual
    unset status). Serialized pieces of a message concatenate on the wire; nesting is key,
    length, bytes. Spans with events, links or dropped counts (Patchbay makes none) go through
    the SDK's `_encode_span` whole.
    """

    def __init__(self) -> None:
        # status unset, and the flags of a span whose parent is local or absent (False) or remote (True)
        remote = SpanContext(1, 1, True)
        unset = Status(StatusCode.UNSET)
        self._tails = {r: PBSpan(status=_encode_status(unset), flags=_span_flags(remote if r else None))
                       .SerializeToString() for r in (False, True)}
        self._names: dict[str, tuple[SpanKind, bytes]] = {}
        self._keys: dict[int, bytes] = {}
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes]] = {}

    def attributes(self, attrs: dict[str, Any]) -> bytes:
        """Entries of a Span's `attributes` (field 9), serialized."""
        return PBSpan(attributes=_encode_attributes(attrs)).SerializeToString()

    def prefix(self, attrs: dict[str, Any]) -> Attributes:
        """`attrs` as `Attributes` carrying their own encoding, to `extend` a span's own attributes with."""
        out = Attributes(attrs)
        out.encoded = (len(attrs), self.attributes(attrs))
        return out

    def span(self, s: ReadableSpan) -> bytes:
        """One serialized `Span` message."""
        raw = getattr(s, "_attributes", None)
        if type(raw) is Attributes and not s._events and not s._links:   # a span of Patchbay's (its fields read
            attrs: Any = raw                                             # directly: no property calls)
            done = raw.encoded
            ctx, parent, name, kind, start, end, status = (s._context, s._parent, s._name, s._kind, s._start_time,
                                                           s._end_time, s._status)
        elif s.events or s.links or s.dropped_attributes:
            return _encode_span(s).SerializeToString()
        else:
            attrs, done = s.attributes, None
            ctx, parent, name, kind, start, end, status = (s.context, s.parent, s.name, s.kind, s.start_time,
                                                           s.end_time, s.status)
        # fields 1-8: the ids (fixed sizes: 16 and 8 bytes), the trace state, the name and kind (serialized once
        # per name), the times (fixed64; a zero or missing time is left out, as protobuf does)
        assert ctx is not None   # a finished span always has its context
        parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
        ts = ctx.trace_state
        if ts:
            parts.append(PBSpan(trace_state=",".join([f"{k}={v}" for k, v in ts.items()])).SerializeToString())
        if parent:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        named = self._names.get(name)
        if named is None or named[0] is not kind:
            named = (kind, PBSpan(name=name, kind=_SPAN_KIND_MAP[kind]).SerializeToString())
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[name] = named
        parts.append(named[1])
        if start and end and 0 < start < 1 << 64 and 0 < end < 1 << 64:
            parts.append(_TIMES(0x39, start, 0x41, end))
        else:
            # 0 is protobuf's "absent", as None is
            parts.append(PBSpan(start_time_unix_nano=start or 0, end_time_unix_nano=end or 0).SerializeToString())
        # field 9, the attributes: the span's own, then the ones serialized already
        if attrs and (done is None or len(attrs) > done[0]):
            items: Any = attrs.items()
            if done is not None:
                items = islice(items, len(attrs) - done[0])
            pb = PBSpan()
            entries = pb.attributes
            add = entries.add
            for k, v in items:
                t = type(v)
                try:
                    if t is str:
                        add(key=k).value.string_value = v
                    elif t is int:
                        add(key=k).value.int_value = v
                    elif t is float:
                        add(key=k).value.double_value = v
                    elif t is bool:
                        add(key=k).value.bool_value = v
                    else:
                        value = _encode_value(v)
                        entry = add(key=k).value
                        entry.CopyFrom(value)
                        entry.SetInParent()
                except Exception:  # noqa: BLE001 - as the SDK's encoder: say so, leave the attribute out
                    if len(entries) and entries[-1].key == k and not entries[-1].value.WhichOneof("value"):
                        del entries[-1]
                    log.exception("tracing: could not encode attribute %s", k)
            parts.append(pb.SerializeToString())
        if done is not None:
            parts.append(done[1])
        if status.status_code is StatusCode.UNSET and status.description is None:   # the usual ending
            parts.append(self._tails[parent is not None and parent.is_remote])
        else:
            parts.append(PBSpan(status=_encode_status(status), flags=_span_flags(parent)).SerializeToString())
        return b"".join(parts)

    def _resource(self, resource: Resource) -> bytes:
        got = self._resources.get(id(resource))
        if got is None or got[0] is not resource:
            got = self._resources[id(resource)] = (resource, _encode_resource(resource).SerializeToString())
        return got[1]

    def _scope(self, scope: Any) -> bytes:
        got = self._scopes.get(id(scope))
        if got is None or got[0] is not scope:
            got = self._scopes[id(scope)] = (scope, _encode_instrumentation_scope(scope).SerializeToString())
        return got[1]

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized `ExportTraceServiceRequest`: spans grouped by resource, then by scope, as the SDK does."""
        groups: dict[Resource, dict[Any, list[bytes]]] = {}
        last_r = last_s = last = None
        keys, span = self._keys, self.span
        for s in spans:
            r, sc = s._resource, s._instrumentation_scope or None
            if r is not last_r or sc is not last_s or last is None:
                last = groups.setdefault(r, {}).setdefault(sc, [])
                last_r, last_s = r, sc
            body = span(s)
            key = keys.get(len(body))   # field 2 of ScopeSpans, then the span's length
            if key is None:
                key = b"\x12" + _varint(len(body))
                if len(keys) < 65536:
                    keys[len(body)] = key
            last.append(key)
            last.append(body)
        out = []
        for r, scopes in groups.items():
            rbody = [_nest(1, self._resource(r))]
            for sc, encoded in scopes.items():
                # "" is protobuf's "absent", as None is
                rbody.append(_nest(2, b"".join([_nest(1, self._scope(sc)), *encoded, PBScopeSpans(
                    schema_url=(sc.schema_url or "") if sc else "").SerializeToString()])))
            rbody.append(PBResourceSpans(schema_url=r.schema_url).SerializeToString())
            out.append(_nest(1, b"".join(rbody)))
        return b"".join(out)


class Exporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter (its HTTP client: endpoint, headers, timeout, compression,
    retries, size limit, self-metrics), encoding with `SpanEncoder`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """As OTLPSpanExporter.export, with SpanEncoder."""
        if self._shutdown:
            log.warning("tracing: the exporter is shut down, a batch of %d spans is dropped", len(spans))
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self.encoder.encode(spans)
            except Exception as error:  # noqa: BLE001 - as the SDK's exporter: the batch fails, serving goes on
                log.error("tracing: could not encode a batch of %d spans: %s", len(spans), error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(data, self._max_request_size):
                log.warning("tracing: dropping a batch of %d spans: %d bytes, over the exporter's limit of %d",
                            len(spans), len(data), self._max_request_size)
                result.error = RequestPayloadTooLargeError(f"{len(data)} bytes")
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = ({"http.response.status_code": sent.status_code}
                                      if sent.status_code is not None else None)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
