"""OpenTelemetry traces: one span per request, one child span per attempt, over OTLP/HTTP.

Imported only when an OTLP endpoint is configured (`gateway.app.otlp_traces_endpoint`),
so a gateway without `OTEL_EXPORTER_OTLP_ENDPOINT` never loads opentelemetry.

Spans are built after the fact, when a request has finished: its log row and
attempt rows carry start times and durations, so each span gets explicit
start and end times. The request path therefore never enters a span context
or touches the SDK while a request is in flight; a batch processor exports
from its own thread. The request span's parent is the client's W3C
`traceparent` (and `tracestate`) when it sent one.

Attributes follow the OpenTelemetry GenAI semantic conventions (gen_ai.*)
plus Patchbay's own (patchbay.*): route, target, outcome, failover reason.
Prompts and answers never go into a span; error texts are the vendor
messages already scrubbed of keys, as in the request log.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.runtime import Runtime

log = logging.getLogger("patchbay.tracing")

#: gen_ai.system for each vendor kind (GenAI semantic conventions' well-known values)
GENAI_SYSTEM = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}


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
        exporter = OTLPSpanExporter(endpoint=endpoint, headers=_pairs(raw_headers, lower=True) if raw_headers else None,
                                    timeout=float(timeout) / 1000 if timeout else None)
        self.provider = TracerProvider(resource=Resource.create(attrs))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("patchbay", _version())
        self._propagator = TraceContextTextMapPropagator()
        self._empty = Context()
        self._failed = False

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

    def _observe(self, row: Any, call: Any) -> None:
        """Spans for one finished request (Router._record): the request, then each attempt.

        The SDK's span creation and OTLP encoding cost tens of microseconds per span and per
        attribute, so spans carry the attributes operators query by and little else; the request
        log holds the rest under the same request id.
        """
        tracer = self.tracer
        targets = self.rt.targets
        parent = self._propagator.extract(call.trace_headers) if call.trace_headers else self._empty
        start = int(row.ts * 1e9)
        end = start + int((row.latency_ms or 0.0) * 1e6)
        attempts = call.attempts
        last = len(attempts) - 1
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": row.route,
            "patchbay.route": row.route,
            "patchbay.target": row.final_target or "none",
            "patchbay.outcome": row.outcome,
            "patchbay.request_id": row.id,
        }
        final = targets.get(row.final_target) if row.final_target else None
        if final is not None:
            attrs["gen_ai.system"] = GENAI_SYSTEM.get(final.vendor.kind, final.vendor.kind)
            attrs["gen_ai.response.model"] = row.model
        if row.prompt_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = row.prompt_tokens
        if row.completion_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = row.completion_tokens
        if row.ttft_ms is not None:
            attrs["patchbay.ttft_ms"] = row.ttft_ms
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
        span = tracer.start_span(f"chat {row.route}", context=parent, kind=SpanKind.SERVER, attributes=attrs,
                                 start_time=start)
        if not span.is_recording():   # not sampled (OTEL_TRACES_SAMPLER, or the client's flags): no children
            span.end(end_time=end)
            return
        if row.outcome in ("error", "cut"):
            span.set_status(Status(StatusCode.ERROR, (row.error_message or row.error_class or "")[:300]))
        ctx = trace.set_span_in_context(span, self._empty)
        for i, a in enumerate(attempts):
            t = targets.get(a.target)
            a_start = int(a.ts * 1e9)
            # the attempt that streamed the answer lasts until the stream ended, not only to its first token
            a_end = end if (row.stream and i == last and a.outcome == "ok") else a_start + int(a.latency_ms * 1e6)
            a_attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "patchbay.target": a.target,
                                       "patchbay.outcome": a.outcome}
            if t is not None:
                a_attrs["gen_ai.system"] = GENAI_SYSTEM.get(t.vendor.kind, t.vendor.kind)
                a_attrs["gen_ai.request.model"] = t.cfg.model
            if a.continuation:
                a_attrs["patchbay.continuation"] = True
            if a.outcome != "ok":
                a_attrs["error.type"] = a.outcome
                if a.http_status is not None:
                    a_attrs["http.response.status_code"] = a.http_status
                if i < last and attempts[i + 1].target != a.target:
                    a_attrs["patchbay.failover_reason"] = a.outcome
            s = tracer.start_span(f"chat {t.cfg.model if t is not None else a.target}", context=ctx,
                                  kind=SpanKind.CLIENT, attributes=a_attrs, start_time=a_start)
            if a.outcome != "ok":
                s.set_status(Status(StatusCode.ERROR, (a.error or a.outcome)[:300]))
            s.end(end_time=max(a_end, a_start))
        span.end(end_time=end)
