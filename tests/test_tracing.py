"""Traces over OTLP/HTTP: a real receiver on loopback decodes what the gateway's SDK exports.

The receiver is a small aiohttp server speaking the OTLP/HTTP protobuf
protocol; every export is decoded with opentelemetry-proto. Nothing is
mocked on the gateway's side: the standard OTEL_* variables switch tracing on.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.test_secrets import ALL_SECRETS, CLIENT_KEYS, SECRETS, leaks

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "zebra-quartz-prompt-7731 please answer"
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"


class Receiver:
    """OTLP/HTTP trace receiver: keeps every decoded request and the raw bodies."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.requests: list[ExportTraceServiceRequest] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf"
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        self.raw.append(body)
        self.requests.append(msg)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def spans(self) -> list[tuple[Any, Span]]:
        """(resource, span) for every exported span."""
        return [(rs.resource, s) for req in self.requests for rs in req.resource_spans
                for ss in rs.scope_spans for s in ss.spans]


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


def attrs(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = list(x.string_value for x in v.array_value.values) if kind == "array_value" else getattr(v, kind)
    return out


async def flush(gw: Any) -> None:
    assert await asyncio.get_running_loop().run_in_executor(None, gw.tracing.provider.force_flush, 10_000)


async def test_a_failed_over_request_is_one_span_with_two_attempt_spans_in_the_clients_trace(
        start_gateway, gateway_cfg, mock, receiver):
    gateway_cfg["retry"]["max_attempts_per_target"] = 1
    gw = await start_gateway(gateway_cfg, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                                               "OTEL_SERVICE_NAME": "patchbay-test"})
    mock.set_fault("error:503", model="gpt-4.1", times=1)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, default_headers={
        "traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01", "tracestate": "vendor=abc"})
    r = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": PROMPT}])
    answer = r.parse()
    request_id = r.headers["x-request-id"]
    assert answer.model == "deepseek-chat"
    await flush(gw)

    spans = receiver.spans()
    assert len(spans) == 3, [s.name for _, s in spans]
    resource = {kv.key: kv.value.string_value for kv in spans[0][0].attributes}
    assert resource["service.name"] == "patchbay-test"
    roots = [s for _, s in spans if s.kind == Span.SPAN_KIND_SERVER]
    assert len(roots) == 1
    root = roots[0]
    kids = sorted((s for _, s in spans if s is not root), key=lambda s: s.start_time_unix_nano)
    assert len(kids) == 2
    # the request span is a child of the client's span, in the client's trace
    assert root.trace_id.hex() == CLIENT_TRACE_ID
    assert root.parent_span_id.hex() == CLIENT_SPAN_ID
    assert root.trace_state == "vendor=abc"
    for k in kids:
        assert k.trace_id == root.trace_id and k.parent_span_id == root.span_id
        assert k.kind == Span.SPAN_KIND_CLIENT
        assert root.start_time_unix_nano <= k.start_time_unix_nano <= k.end_time_unix_nano <= root.end_time_unix_nano
    assert kids[0].end_time_unix_nano <= kids[1].start_time_unix_nano

    a = attrs(root)
    assert root.name == "chat chat"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "chat"
    assert a["gen_ai.system"] == "openai" and a["gen_ai.response.model"] == "deepseek-chat"
    assert a["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens > 0
    assert a["patchbay.route"] == "chat" and a["patchbay.target"] == "deepseek/deepseek-chat"
    assert a["patchbay.outcome"] == "ok" and a["patchbay.failovers"] == 1
    assert a["patchbay.failover_reason"] == "server"
    assert a["patchbay.request_id"] == request_id
    assert root.status.code == root.status.STATUS_CODE_UNSET

    first, second = attrs(kids[0]), attrs(kids[1])
    assert kids[0].name == "chat gpt-4.1" and kids[1].name == "chat deepseek-chat"
    assert first["patchbay.target"] == "openai/gpt-4.1" and first["gen_ai.request.model"] == "gpt-4.1"
    assert first["gen_ai.system"] == "openai" and first["gen_ai.operation.name"] == "chat"
    assert first["patchbay.outcome"] == "server" and first["error.type"] == "server"
    assert first["patchbay.failover_reason"] == "server" and first["http.response.status_code"] == 503
    assert kids[0].status.code == kids[0].status.STATUS_CODE_ERROR
    assert second["patchbay.target"] == "deepseek/deepseek-chat" and second["patchbay.outcome"] == "ok"
    assert second["gen_ai.system"] == "openai" and second["gen_ai.request.model"] == "deepseek-chat"
    assert "patchbay.failover_reason" not in second and "error.type" not in second

    # prompts and answers never go into a span
    raw = b"".join(receiver.raw)
    assert PROMPT.encode() not in raw and b"zebra-quartz" not in raw
    assert answer.choices[0].message.content.encode() not in raw


async def test_streams_and_requests_without_traceparent_start_their_own_trace(
        start_gateway, gateway_cfg, mock, receiver):
    gw = await start_gateway(gateway_cfg, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/v1/traces"})
    mock.configure(token_interval_ms=20)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": PROMPT}],
                                                  stream=True)
    async for _ in stream:
        pass
    await flush(gw)
    spans = [s for _, s in receiver.spans()]
    assert len(spans) == 2
    root = next(s for s in spans if s.kind == Span.SPAN_KIND_SERVER)
    kid = next(s for s in spans if s is not root)
    assert root.parent_span_id == b"" and kid.parent_span_id == root.span_id
    assert attrs(root)["patchbay.ttft_ms"] > 0 and "patchbay.failovers" not in attrs(root)
    # the attempt that streamed the answer lasts until the stream ended
    assert kid.end_time_unix_nano == root.end_time_unix_nano
    assert kid.end_time_unix_nano - kid.start_time_unix_nano > 20_000_000   # several 20 ms tokens


async def test_no_secret_reaches_a_span(start_gateway, gateway_cfg, mock, receiver):
    """Vendor keys, client keys and the admin token: none in any exported byte, errors included."""
    for name, key_env in (("openai", "OPENAI_KEY"), ("deepseek", "DEEPSEEK_KEY")):
        gateway_cfg["vendors"][name]["api_key_env"] = key_env
    env = {**SECRETS, "PATCHBAY_CLIENT_KEYS": ",".join(CLIENT_KEYS), "PATCHBAY_ADMIN_TOKEN": ALL_SECRETS[-1],
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    gw = await start_gateway(gateway_cfg, env=env)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEYS[0], max_retries=0)
    await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    for fault in ("auth", "error:503", "content_policy"):
        mock.set_fault(fault, model="gpt-4.1", times=4)
        try:
            await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        except openai.APIError:
            pass
        mock.clear_faults()
    await flush(gw)
    assert len(receiver.spans()) >= 8
    assert leaks(b"".join(receiver.raw), "spans") == []


def _run(code: str, env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                         env={**clean, **env}, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


SERVE_ONE = """
    import asyncio, sys, tempfile, httpx
    from gateway.app import Gateway
    from gateway.config_load import parse_config
    from gateway.mock.server import start_mock
    from tests.conftest import base_config

    async def main():
        mock = await start_mock()
        raw = base_config(mock.url, __import__("pathlib").Path(tempfile.mkdtemp()))
        gw = Gateway(parse_config(raw, "patchbay.toml", {}), with_prober=False)
        await gw.start()
        async with httpx.AsyncClient() as c:
            r = await c.post(gw.url + "/v1/chat/completions",
                             json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
        tracing = gw.tracing is not None
        await gw.stop()
        await mock.stop()
        print(tracing, any(m == "opentelemetry" or m.startswith("opentelemetry.") for m in sys.modules))

    asyncio.run(main())
"""


def test_without_an_otlp_endpoint_opentelemetry_is_never_imported():
    assert _run(SERVE_ONE, {}) == "False False"
    # the control: the same program with the standard variable set does load it
    assert _run(SERVE_ONE, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}) == "True True"
    # and the standard off switches win over an endpoint
    assert _run(SERVE_ONE, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}) \
        == "False False"


async def test_a_client_trace_that_is_not_sampled_exports_nothing(start_gateway, gateway_cfg, receiver):
    """The default sampler is parent-based: a client that does not sample its trace gets no spans from us."""
    gw = await start_gateway(gateway_cfg, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    for flags, trace_id in (("00", "1" * 32), ("01", "2" * 32)):
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0,
                                    default_headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN_ID}-{flags}"})
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    await flush(gw)
    assert {s.trace_id.hex() for _, s in receiver.spans()} == {"2" * 32}
    assert len(receiver.spans()) == 2


# ------------------------------------------------------------------ encoding (no network)

def _tracing(tmp_path: Path) -> Any:
    from gateway.config_load import parse_config
    from gateway.control.tracing import Tracing
    from gateway.runtime import Runtime
    from tests.conftest import base_config

    rt = Runtime(parse_config(base_config("http://127.0.0.1:9", tmp_path), "patchbay.toml", {}))
    return Tracing(rt, "http://127.0.0.1:9/v1/traces", {"OTEL_SERVICE_NAME": "patchbay-test",
                                                           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=t"})


def _requests() -> list[tuple[Any, Any]]:
    """Rows as Router._record hands them over: plain, failed over, streamed, failed, cut, continued, traced."""
    from types import SimpleNamespace

    from store.records import AttemptRow, RequestRow

    t = 1764790000.123456
    out = []

    def add(row: RequestRow, attempts: list[AttemptRow], headers: dict[str, str] | None = None) -> None:
        out.append((row, SimpleNamespace(attempts=attempts, trace_headers=headers)))

    add(RequestRow("req_1", t, "chat", False, "ok", 200, final_target="openai/gpt-4.1", model="gpt-4.1",
                   attempts=1, latency_ms=41.5, prompt_tokens=12, completion_tokens=30),
        [AttemptRow("req_1", 1, "openai/gpt-4.1", t + 0.001, 40.0, "ok", 200)])
    add(RequestRow("req_2", t, "chat", False, "fallback", 200, final_target="deepseek/deepseek-chat",
                   model="deepseek-chat", attempts=3, failovers=1, latency_ms=49.0, prompt_tokens=0,
                   completion_tokens=123456789, drill_id="drill_7"),
        [AttemptRow("req_2", 1, "openai/gpt-4.1", t, 3.0, "server", 503, "HTTP 503: overloaded"),
         AttemptRow("req_2", 2, "openai/gpt-4.1", t + 0.004, 3.0, "timeout", None, None),
         AttemptRow("req_2", 3, "deepseek/deepseek-chat", t + 0.008, 40.0, "ok", 200)],
        {"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01", "tracestate": "vendor=abc,other=x"})
    add(RequestRow("req_3", t, "chat", True, "ok", 200, final_target="openai/gpt-4.1", model="gpt-4.1-2025",
                   attempts=2, latency_ms=900.0, ttft_ms=123.25, prompt_tokens=5, completion_tokens=7),
        [AttemptRow("req_3", 1, "openai/gpt-4.1", t, 300.0, "ok", 200),
         AttemptRow("req_3", 2, "openai/gpt-4.1", t + 0.3, 100.0, "ok", 200, continuation=True)])
    add(RequestRow("req_4", t, "chat", False, "error", 502, attempts=2, latency_ms=7.0, error_class="auth",
                   error_message="HTTP 401: bad key ***"),
        [AttemptRow("req_4", 1, "openai/gpt-4.1", t, 3.0, "auth", 401, "HTTP 401: bad key ***"),
         AttemptRow("req_4", 2, "nowhere/gone", t + 0.004, 3.0, "connect", None, "refused")])
    add(RequestRow("req_5", t, "openai/gpt-4.1", True, "cut", 200, final_target="openai/gpt-4.1", model="gpt-4.1",
                   attempts=1, latency_ms=None, error_class="stream_cut", error_message=""),
        [AttemptRow("req_5", 1, "openai/gpt-4.1", t, 3.0, "stream_cut", 200, None)],
        {"traceparent": f"00-{'3' * 32}-{CLIENT_SPAN_ID}-01"})
    return out


def test_the_encoding_is_the_sdk_encoders_byte_for_byte(tmp_path):
    """SpanEncoder's request equals opentelemetry's own encode_spans(...).SerializeToString()."""
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans

    tr = _tracing(tmp_path)
    spans: list[Any] = []
    tr.processor.on_end = spans.append
    try:
        for _ in range(2):   # the second time from the kept encodings
            spans.clear()
            for row, call in _requests():
                tr.observe(row, call)
            assert len(spans) == 5 + 9 and not tr._failed
            ours = tr.encoder.encode(spans)
            assert ours == encode_spans(spans).SerializeToString()
            for s in spans:   # and span by span
                assert tr.encoder.encode([s]) == encode_spans([s]).SerializeToString()
        msg = ExportTraceServiceRequest.FromString(ours)
        got = [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(msg.resource_spans) == 1 and len(got) == 14
        by_id = {attrs(s).get("patchbay.request_id"): s for s in got if s.kind == Span.SPAN_KIND_SERVER}
        assert by_id["req_2"].trace_id.hex() == CLIENT_TRACE_ID and by_id["req_2"].trace_state == "vendor=abc,other=x"
        assert by_id["req_2"].flags == 0x300   # parent is remote
        assert attrs(by_id["req_2"])["gen_ai.usage.output_tokens"] == 123456789
        assert attrs(by_id["req_3"])["patchbay.ttft_ms"] == 123.25
        assert by_id["req_4"].status.code == by_id["req_4"].status.STATUS_CODE_ERROR
        assert by_id["req_4"].status.message == "HTTP 401: bad key ***"
    finally:
        tr.shutdown()


def test_the_encoding_of_any_sdk_span_is_the_sdk_encoders(tmp_path):
    """Spans made by the SDK's tracer: other value types, events, links, several resources and scopes."""
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceState

    from gateway.control.span_export import SpanEncoder

    memory = InMemorySpanExporter()
    for service in ("a", "b"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        for scope in ("one", "two"):
            tracer = provider.get_tracer(scope, "1.0", schema_url="https://opentelemetry.io/schemas/1.21.0")
            with tracer.start_as_current_span("outer", attributes={"s": "x", "i": -5, "f": 0.5, "b": True,
                                                                   "l": ["p", "q"], "n": [1, 2], "e": ""}) as outer:
                outer.add_event("ev", {"k": 1})
                with tracer.start_as_current_span("inner", links=[Link(outer.get_span_context(), {"w": 2})]) as s:
                    s.set_status(Status(StatusCode.OK))
                with tracer.start_as_current_span("plain"):
                    pass
                with tracer.start_as_current_span("values", attributes={"s": "x", "i": -5, "f": 0.5, "b": False,
                                                                        "l": ["p"], "n": [1.5, 2.5], "e": ""}):
                    pass
    spans = list(memory.get_finished_spans())
    # made by hand: no times, a trace state, a remote parent, the default resource (a new, equal one each)
    state = TraceState([("k", "v"), ("w", "z")])
    for i in (1, 2):
        spans.append(ReadableSpan("bare", SpanContext(5, 6 + i, False, trace_state=state), SpanContext(5, 4, True),
                                  start_time=None if i == 1 else 0, end_time=i,
                                  attributes={"x": i, "too big": 2**64, "y": "after"}))   # an int64 no more
    enc = SpanEncoder()
    assert enc.encode(spans) == encode_spans(spans).SerializeToString()
    mixed = [spans[0], spans[5], spans[-1], spans[1], spans[13], spans[2], spans[-2], spans[3]]
    assert enc.encode(mixed) == encode_spans(mixed).SerializeToString()
    assert enc.encode([]) == encode_spans([]).SerializeToString()


def test_a_request_whose_spans_cannot_be_built_is_served_and_logged_once(tmp_path, caplog):
    from types import SimpleNamespace

    tr = _tracing(tmp_path)
    try:
        row, call = _requests()[0]
        broken = SimpleNamespace(id="req_x", route="chat")   # no fields the spans need
        with caplog.at_level("ERROR", logger="patchbay.tracing"):
            tr.observe(broken, call)   # does not raise
            tr.observe(broken, call)
            tr.observe(row, call)      # and the next request is traced as usual
        assert [r.message for r in caplog.records].count(
            "tracing: could not build the spans of request req_x (reported once)") == 1
    finally:
        tr.shutdown()
