"""OpenTelemetry traces: one span per request, one child span per attempt, over OTLP/HTTP.

Imported only when an OTLP endpoint is configured (`gateway.app.otlp_traces_endpoint`),
so a gateway without `OTEL_EXPORTER_OTLP_ENDPOINT` never loads opentelemetry.

Spans are built after the fact, when a request has finished: its log row and
attempt rows carry start times and durations, so each span gets explicit
start and end times. The request path therefore never enters a span context
while a request is in flight; the SDK's batch span processor exports from its
own thread. The request span's parent is the client's W3C `traceparent` (and
`tracestate`) when it sent one.

Attributes follow the OpenTelemetry GenAI semantic conventions (gen_ai.*)
plus Patchbay's own (patchbay.*): route, target, outcome, failover reason.
Prompts and answers never go into a span; error texts are the vendor
messages already scrubbed of keys, as in the request log.

Cost. Going through `Tracer.start_span`/`end` and the OTLP exporter's encoder
cost about 100 µs of CPU per span (span bookkeeping: context, locks, attribute
validation; encoding: three protobuf objects per attribute, built in Python and
copied). Here instead, about 15-20 µs per span, encoding and export included
(bench/observe.py):

- the spans are the SDK's own span data class, `ReadableSpan`, built directly:
  ids from the provider's id generator, the sampling decision from its sampler
  (OTEL_TRACES_SAMPLER*), the parent from the W3C propagator, one Resource and
  InstrumentationScope; the attributes every request on a route and target
  shares are made once (`Attributes`). Finished spans go to the SDK's
  `BatchSpanProcessor`, in batches of `BATCH_SIZE` unless OTEL_BSP_* say;
- the exporter is the SDK's OTLP/HTTP exporter (endpoint, headers, timeout,
  compression, retries, size limit) encoding with `SpanEncoder`: names,
  trace states, attributes, statuses, resource and scope serialized by
  opentelemetry-proto's classes, attribute entries filled in place rather
  than built as one object per attribute and value, constant parts
  serialized once and reused; ids and times (fixed-size fields) written
  directly; the pieces joined as protobuf's wire format nests messages (field
  key, length, bytes). The result is the bytes of the SDK's own
  `encode_spans(...).SerializeToString()` (tests/test_tracing.py checks it).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from itertools import islice
from typing import Any
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.context import Context
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
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.runtime import Runtime

log = logging.getLogger("patchbay.tracing")

#: gen_ai.system for each vendor kind (GenAI semantic conventions' well-known values)
GENAI_SYSTEM = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}

#: the batch span processor's batch and queue sizes, unless OTEL_BSP_MAX_QUEUE_SIZE or _EXPORT_BATCH_SIZE is set
BATCH_SIZE = 2048
QUEUE_SIZE = 16384

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)


def _pairs(raw: str, lower: bool = False) -> dict[str, str]:
    """`OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_RESOURCE_ATTRIBUTES`: comma-separated key=value, percent-encoded."""
    out = {}
    for part in raw.split(","):
        k, sep, v = part.partition("=")
        if sep and k.strip():
            key = unquote(k.strip())
            out[key.lower() if lower else key] = unquote(v.strip())
    return out


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("llm-patchbay")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+unknown"


# ----------------------------------------------------------------------------------- encoding

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
        self._tails = {r: PBSpan(status=_encode_status(_OK), flags=_span_flags(remote if r else None))
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


# ----------------------------------------------------------------------------------- spans

class Tracing:
    """The tracer provider of one gateway (its own, not the global one) and the per-request hook."""

    def __init__(self, runtime: Runtime, endpoint: str, env: Any):
        self.rt = runtime
        # read from the gateway's environment (the process's, outside tests): OTEL_RESOURCE_ATTRIBUTES,
        # then OTEL_SERVICE_NAME, win over the defaults
        attrs: dict[str, Any] = {"service.name": "patchbay", "service.version": _version(),
                                 **_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES") or "")}
        if env.get("OTEL_SERVICE_NAME"):
            attrs["service.name"] = env["OTEL_SERVICE_NAME"]
        raw_headers = env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
        timeout = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
        self.exporter = Exporter(endpoint=endpoint, headers=_pairs(raw_headers, lower=True) if raw_headers else None,
                                 timeout=float(timeout) / 1000 if timeout else None)
        # the provider holds the configuration (resource, OTEL_TRACES_SAMPLER*, id generator) and flushes and
        # stops the processor; spans are made here, not through its tracer (see the module's docstring)
        self.provider = TracerProvider(resource=Resource.create(attrs))
        # OTEL_BSP_* apply; without them, larger batches than the SDK's 512 (an export costs about 1.5 ms of
        # CPU, whatever its size, in the HTTP client) and a queue that holds several
        sized = any(os.environ.get(k) for k in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"))
        self.processor = BatchSpanProcessor(self.exporter, max_queue_size=None if sized else QUEUE_SIZE,
                                            max_export_batch_size=None if sized else BATCH_SIZE)
        self.provider.add_span_processor(self.processor)
        self.resource = self.provider.resource
        self.scope = InstrumentationScope("patchbay", _version())
        self.sampler = self.provider.sampler
        # ParentBased(ALWAYS_ON), the default: a request without a parent is sampled, its answer known in advance
        self._roots_sampled = (type(self.sampler) is ParentBased
                               and self.sampler.get_description() == DEFAULT_ON.get_description())
        self._new_trace_id = self.provider.id_generator.generate_trace_id
        self._new_span_id = self.provider.id_generator.generate_span_id
        self._propagator = TraceContextTextMapPropagator()
        self._empty = Context()
        self._failed = False
        self.encoder = self.exporter.encoder
        # constant attributes, made and encoded once: by target; by target and outcome; by route, target,
        # outcome and model
        self._targets: dict[str, tuple[str, dict[str, Any]]] = {}
        self._attempts: dict[tuple[str, str], tuple[str, Attributes]] = {}
        self._requests: dict[tuple[Any, ...], tuple[str, Attributes]] = {}

    def shutdown(self) -> None:
        """Export what is still queued and stop the exporter thread (blocking)."""
        self.provider.shutdown()

    def observe(self, row: Any, call: Any) -> None:
        """Spans for one request; a tracing failure never fails the request it describes."""
        try:
            self._observe(row, call)
        except Exception:  # noqa: BLE001 - the answer is already out; say so once, keep serving
            if not self._failed:
                self._failed = True
                log.exception("tracing: could not build the spans of request %s (reported once)", row.id)

    def _target(self, target: str) -> tuple[str, dict[str, Any]]:
        """An attempt span's name and the attributes every attempt on a target has (made once per target)."""
        got = self._targets.get(target)
        if got is None:
            t = self.rt.targets.get(target)
            base: dict[str, Any] = {"gen_ai.operation.name": "chat", "patchbay.target": target}
            if t is not None:
                base["gen_ai.system"] = GENAI_SYSTEM.get(t.vendor.kind, t.vendor.kind)
                base["gen_ai.request.model"] = t.cfg.model
            got = (f"chat {t.cfg.model if t is not None else target}", base)
            if len(self._targets) < 4096:
                self._targets[target] = got
        return got

    def _attempt_base(self, target: str, outcome: str) -> tuple[str, Attributes]:
        """An attempt span's name and constant attributes, by target and outcome (encoded once)."""
        got = self._attempts.get((target, outcome))
        if got is None:
            name, base = self._target(target)
            attrs = {**base, "patchbay.outcome": outcome}
            if outcome != "ok":
                attrs["error.type"] = outcome
            got = (name, self.encoder.prefix(attrs))
            if len(self._attempts) < 4096:
                self._attempts[(target, outcome)] = got
        return got

    def _request_base(self, row: Any) -> tuple[str, Attributes]:
        """The request span's name and the attributes it shares with other requests (encoded once)."""
        key = (row.route, row.final_target, row.outcome, row.model)
        got = self._requests.get(key)
        if got is None:
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": row.route,
                "patchbay.route": row.route,
                "patchbay.target": row.final_target or "none",
                "patchbay.outcome": row.outcome,
            }
            if row.final_target:
                base = self._target(row.final_target)[1]
                if "gen_ai.system" in base:
                    attrs["gen_ai.system"] = base["gen_ai.system"]
                    attrs["gen_ai.response.model"] = row.model
            got = (f"chat {row.route}", self.encoder.prefix(attrs))
            if len(self._requests) < 4096:
                self._requests[key] = got
        return got

    def _observe(self, row: Any, call: Any) -> None:
        """Spans for one finished request (Router._record): the request, then each attempt.

        Spans carry the attributes operators query by and little else; the request log holds the
        rest under the same request id.
        """
        # the request's own attributes, then those it shares with others (Attributes.extend)
        attrs = Attributes()
        attrs["patchbay.request_id"] = row.id
        if row.prompt_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = row.prompt_tokens
        if row.completion_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = row.completion_tokens
        if row.ttft_ms is not None:
            attrs["patchbay.ttft_ms"] = row.ttft_ms
        attempts = call.attempts
        last = len(attempts) - 1
        if row.failovers:
            attrs["patchbay.failovers"] = row.failovers
            # the first failure that moved the request to another target
            for i in range(last):
                a = attempts[i]
                if a.outcome != "ok" and attempts[i + 1].target != a.target:
                    attrs["patchbay.failover_reason"] = a.outcome
                    break
        if row.error_class:
            attrs["error.type"] = row.error_class
        if row.drill_id:
            attrs["patchbay.drill_id"] = row.drill_id
        name, base = self._request_base(row)
        attrs.extend(base)

        # as Tracer.start_span decides: the client's span (if valid) is the parent, the sampler says yes or no
        # (the span keeps Patchbay's attributes: the SDK's samplers add none)
        parent: SpanContext | None
        if call.trace_headers:
            parent_ctx = self._propagator.extract(call.trace_headers)
            parent = trace.get_current_span(parent_ctx).get_span_context()
            if not parent.is_valid:
                parent = None
        else:
            parent_ctx, parent = self._empty, None
        if parent is None and self._roots_sampled:   # the default sampler, no parent: sampled, no trace state
            trace_id, state = self._new_trace_id(), None
        else:
            trace_id = parent.trace_id if parent is not None else self._new_trace_id()
            sampling = self.sampler.should_sample(parent_ctx, trace_id, name, SpanKind.SERVER, attrs)
            if not sampling.decision.is_sampled():   # not sampled (OTEL_TRACES_SAMPLER, or the client's flags)
                return
            state = sampling.trace_state
        resource, scope, new_span_id = self.resource, self.scope, self._new_span_id
        start = int(row.ts * 1e9)
        end = start + int((row.latency_ms or 0.0) * 1e6)
        ctx = SpanContext(trace_id, new_span_id(), False, _SAMPLED, state)
        status = (Status(StatusCode.ERROR, (row.error_message or row.error_class or "")[:300])
                  if row.outcome in ("error", "cut") else _OK)
        spans = [ReadableSpan(name, ctx, parent, resource, attrs, kind=SpanKind.SERVER, status=status,
                              start_time=start, end_time=end, instrumentation_scope=scope)]
        # the attempts: children of the request span, in its trace and sampling decision
        for i, a in enumerate(attempts):
            outcome = a.outcome
            a_name, a_attrs = self._attempt_base(a.target, outcome)
            a_start = int(a.ts * 1e9)
            # the attempt that streamed the answer lasts until the stream ended, not only to its first token
            a_end = end if (row.stream and i == last and outcome == "ok") else a_start + int(a.latency_ms * 1e6)
            a_status = _OK
            if outcome != "ok" or a.continuation:
                shared, a_attrs = a_attrs, Attributes()
                if a.continuation:
                    a_attrs["patchbay.continuation"] = True
                if outcome != "ok":
                    if a.http_status is not None:
                        a_attrs["http.response.status_code"] = a.http_status
                    if i < last and attempts[i + 1].target != a.target:
                        a_attrs["patchbay.failover_reason"] = outcome
                    a_status = Status(StatusCode.ERROR, (a.error or outcome)[:300])
                a_attrs.extend(shared)
            spans.append(ReadableSpan(a_name, SpanContext(trace_id, new_span_id(), False, _SAMPLED, state), ctx,
                                      resource, a_attrs, kind=SpanKind.CLIENT, status=a_status, start_time=a_start,
                                      end_time=max(a_end, a_start), instrumentation_scope=scope))
        on_end = self.processor.on_end
        for s in spans:
            on_end(s)
