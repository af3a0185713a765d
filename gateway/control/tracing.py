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
  The encoder and the exporter are in gateway/control/span_export.py.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.control.span_export import Attributes, Exporter
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
        attempts = call.attempts
        last = len(attempts) - 1
        # the request's own attributes, then those it shares with others (Attributes.extend)
        attrs = self._request_attrs(row, attempts)
        name, base = self._request_base(row)
        attrs.extend(base)
        sampled = self._sample(call, name, attrs)
        if sampled is None:   # not sampled (OTEL_TRACES_SAMPLER, or the client's flags)
            return
        parent, trace_id, state = sampled
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

    @staticmethod
    def _request_attrs(row: Any, attempts: Any) -> Attributes:
        """The request span's own attributes (those it shares with other requests are added after)."""
        attrs = Attributes()
        attrs["patchbay.request_id"] = row.id
        if row.prompt_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = row.prompt_tokens
        if row.completion_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = row.completion_tokens
        if row.ttft_ms is not None:
            attrs["patchbay.ttft_ms"] = row.ttft_ms
        if row.failovers:
            attrs["patchbay.failovers"] = row.failovers
            # the first failure that moved the request to another target
            for i in range(len(attempts) - 1):
                a = attempts[i]
                if a.outcome != "ok" and attempts[i + 1].target != a.target:
                    attrs["patchbay.failover_reason"] = a.outcome
                    break
        if row.error_class:
            attrs["error.type"] = row.error_class
        if row.drill_id:
            attrs["patchbay.drill_id"] = row.drill_id
        return attrs

    def _sample(self, call: Any, name: str, attrs: Attributes) -> tuple[SpanContext | None, int, Any] | None:
        """(parent, trace id, trace state) of a sampled request span, or None when it is not sampled.

        As Tracer.start_span decides: the client's span (if valid) is the parent, the sampler says yes
        or no (the span keeps Patchbay's attributes: the SDK's samplers add none).
        """
        parent: SpanContext | None
        if call.trace_headers:
            parent_ctx = self._propagator.extract(call.trace_headers)
            parent = trace.get_current_span(parent_ctx).get_span_context()
            if not parent.is_valid:
                parent = None
        else:
            parent_ctx, parent = self._empty, None
        if parent is None and self._roots_sampled:   # the default sampler, no parent: sampled, no trace state
            return None, self._new_trace_id(), None
        trace_id = parent.trace_id if parent is not None else self._new_trace_id()
        sampling = self.sampler.should_sample(parent_ctx, trace_id, name, SpanKind.SERVER, attrs)
        if not sampling.decision.is_sampled():
            return None
        return parent, trace_id, sampling.trace_state
