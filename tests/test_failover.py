"""Every row of the failover contract (DESIGN.md), through the real gateway, with the official openai SDK."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

MSG = [{"role": "user", "content": "hello there"}]
PRIMARY, SECONDARY = "openai/gpt-4.1", "deepseek/deepseek-chat"


def client(gw, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


async def ask(gw, model="chat", **kw):
    raw = await client(gw).chat.completions.with_raw_response.create(model=model, messages=MSG, **kw)
    return raw.parse(), raw.headers


def chain(recorder) -> list[tuple[str, str]]:
    return [(a.target, a.outcome) for a in recorder.of("AttemptRow")]


async def test_happy_path_headers_and_model(mock, gateway_cfg, start_gateway, recorder):
    gw = await start_gateway(gateway_cfg, store=recorder)
    resp, headers = await ask(gw)
    assert resp.model == "gpt-4.1"
    assert resp.choices[0].message.content.startswith("Hello from openai/gpt-4.1")
    assert resp.usage.completion_tokens > 0
    assert headers["x-patchbay-target"] == PRIMARY
    assert headers["x-patchbay-attempts"] == "1"
    assert float(headers["x-patchbay-overhead-ms"]) >= 0
    assert headers["x-request-id"].startswith("req_")
    [req] = recorder.of("RequestRow")
    assert req.id == headers["x-request-id"] and req.outcome == "ok" and req.final_target == PRIMARY
    assert req.cost == pytest.approx((req.prompt_tokens * 2.0 + req.completion_tokens * 8.0) / 1e6)


async def test_connection_refused_fails_over_at_once(gateway_cfg, start_gateway, recorder, unused_tcp_port):
    gateway_cfg["vendors"]["openai"]["base_url"] = f"http://127.0.0.1:{unused_tcp_port}/v1"
    gw = await start_gateway(gateway_cfg, store=recorder)
    resp, headers = await ask(gw)
    assert resp.model == "deepseek-chat" and headers["x-patchbay-target"] == SECONDARY
    assert chain(recorder) == [(PRIMARY, "connect"), (SECONDARY, "ok")]
    [ev] = [e for e in recorder.of("EventRow") if e.kind == "failover"]
    assert ev.target == PRIMARY and ev.detail["to"] == SECONDARY


@pytest.mark.parametrize("times,expected", [
    (1, [(PRIMARY, "reset"), (PRIMARY, "ok")]),
    (2, [(PRIMARY, "reset"), (PRIMARY, "reset"), (SECONDARY, "ok")]),
])
async def test_reset_before_headers_is_retried_then_fails_over(mock, gateway_cfg, start_gateway, recorder,
                                                               times, expected):
    mock.set_fault("reset", model="gpt-4.1", times=times)
    gw = await start_gateway(gateway_cfg, store=recorder)
    await ask(gw)
    assert chain(recorder) == expected


async def test_silent_target_is_not_retried(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["timeouts"]["first_byte"] = 0.4
    mock.set_fault("hang", model="gpt-4.1")
    gw = await start_gateway(gateway_cfg, store=recorder)
    resp, _ = await ask(gw)
    assert resp.model == "deepseek-chat"
    assert chain(recorder) == [(PRIMARY, "timeout"), (SECONDARY, "ok")]


async def test_429_retry_after_within_limit_waits_and_retries(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("error", model="gpt-4.1", status=429, retry_after=0.3, times=1)
    gw = await start_gateway(gateway_cfg, store=recorder)
    t0 = time.perf_counter()
    resp, headers = await ask(gw)
    assert time.perf_counter() - t0 >= 0.3  # it honoured Retry-After
    assert resp.model == "gpt-4.1" and headers["x-patchbay-attempts"] == "2"
    assert chain(recorder) == [(PRIMARY, "throttled"), (PRIMARY, "ok")]
    assert gw.runtime.targets[PRIMARY].breaker.failures == 0  # throttled is not down


async def test_429_retry_after_too_long_fails_over(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("error", model="gpt-4.1", status=429, retry_after=30)
    gw = await start_gateway(gateway_cfg, store=recorder)
    t0 = time.perf_counter()
    resp, _ = await ask(gw)
    assert time.perf_counter() - t0 < 5
    assert chain(recorder) == [(PRIMARY, "throttled"), (SECONDARY, "ok")]
    assert gw.runtime.target_state(gw.runtime.targets[PRIMARY]) == "throttled"


async def test_429_without_retry_after_backs_off_then_fails_over(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("error", model="gpt-4.1", status=429)
    gw = await start_gateway(gateway_cfg, store=recorder)
    await ask(gw)
    assert chain(recorder) == [(PRIMARY, "throttled"), (PRIMARY, "throttled"), (SECONDARY, "ok")]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
async def test_server_errors_back_off_then_fail_over(mock, gateway_cfg, start_gateway, recorder, status):
    mock.set_fault("error", model="gpt-4.1", status=status)
    gw = await start_gateway(gateway_cfg, store=recorder)
    resp, _ = await ask(gw)
    assert resp.model == "deepseek-chat"
    assert chain(recorder) == [(PRIMARY, "server"), (PRIMARY, "server"), (SECONDARY, "ok")]


@pytest.mark.parametrize("fault,params", [("auth", {}), ("billing", {}), ("error", {"status": 403}),
                                          ("error", {"status": 404})])
async def test_auth_billing_and_missing_model_mark_misconfigured(mock, gateway_cfg, start_gateway, recorder,
                                                                 fault, params):
    mock.set_fault(fault, model="gpt-4.1", **params)
    gw = await start_gateway(gateway_cfg, store=recorder)
    resp, _ = await ask(gw)
    assert resp.model == "deepseek-chat"
    assert chain(recorder) == [(PRIMARY, "misconfigured"), (SECONDARY, "ok")]
    assert gw.runtime.target_state(gw.runtime.targets[PRIMARY]) == "misconfigured"


async def test_context_length_returned_when_no_larger_window(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["routes"][0]["targets"] = [
        {"vendor": "openai", "model": "gpt-4.1", "context_window": 128000},
        {"vendor": "deepseek", "model": "deepseek-chat", "context_window": 64000},
    ]
    mock.set_fault("context_length", model="gpt-4.1")
    gw = await start_gateway(gateway_cfg, store=recorder)
    with pytest.raises(openai.BadRequestError) as ei:
        await ask(gw)
    assert ei.value.code == "context_length_exceeded"
    assert chain(recorder) == [(PRIMARY, "context_length")]
    assert gw.runtime.targets[PRIMARY].breaker.failures == 0


async def test_context_length_fails_over_only_to_a_larger_window(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["routes"][0]["targets"] = [
        {"vendor": "openai", "model": "gpt-4.1", "context_window": 128000},
        {"vendor": "openai", "model": "gpt-4o", "context_window": 64000},
        {"vendor": "deepseek", "model": "deepseek-chat", "context_window": 1000000},
    ]
    mock.set_fault("context_length", model="gpt-4.1")
    gw = await start_gateway(gateway_cfg, store=recorder)
    resp, _ = await ask(gw)
    assert resp.model == "deepseek-chat"
    assert chain(recorder) == [(PRIMARY, "context_length"), (SECONDARY, "ok")]


async def test_content_policy_is_returned_not_failed_over(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("content_policy", model="gpt-4.1")
    gw = await start_gateway(gateway_cfg, store=recorder)
    with pytest.raises(openai.BadRequestError) as ei:
        await ask(gw)
    assert ei.value.code == "content_policy_violation"
    assert chain(recorder) == [(PRIMARY, "content_policy")]


@pytest.mark.parametrize("status", [400, 422])
async def test_other_client_errors_are_returned(mock, gateway_cfg, start_gateway, recorder, status):
    mock.set_fault("error", model="gpt-4.1", status=status, message="'temperature' is out of range")
    gw = await start_gateway(gateway_cfg, store=recorder)
    with pytest.raises(openai.APIStatusError) as ei:
        await ask(gw)
    assert ei.value.status_code == status
    assert "temperature" in ei.value.message
    assert chain(recorder) == [(PRIMARY, "bad_request")]
    [req] = recorder.of("RequestRow")
    assert req.outcome == "client_error" and req.http_status == status


# ------------------------------------------------------------------ streams

async def collect(stream) -> tuple[str, list]:
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


async def test_stream_error_before_first_token_fails_over_invisibly(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("error", model="gpt-4.1", status=503)
    gw = await start_gateway(gateway_cfg, store=recorder)
    stream = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True,
                                                      stream_options={"include_usage": True})
    text, chunks = await collect(stream)
    assert text.startswith("Hello from deepseek/deepseek-chat")
    assert {c.model for c in chunks} == {"deepseek-chat"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chain(recorder)[-1] == (SECONDARY, "ok")


async def test_stream_slow_first_token_counts_as_silence(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["timeouts"]["first_byte"] = 0.4
    mock.set_fault("slow_first_token", model="gpt-4.1", ms=3000)
    gw = await start_gateway(gateway_cfg, store=recorder)
    stream = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    text, _ = await collect(stream)
    assert text.startswith("Hello from deepseek")
    assert chain(recorder) == [(PRIMARY, "timeout"), (SECONDARY, "ok")]


async def test_stream_cut_after_tokens_continues_on_prefill_target(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["routes"][0]["targets"][1]["prefill"] = True
    mock.set_fault("cut", model="gpt-4.1", n=3)
    gw = await start_gateway(gateway_cfg, store=recorder)
    stream = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    text, chunks = await collect(stream)
    assert text.startswith("Hello from openai")  # the first tokens the client already has
    assert "deepseek" in text                     # the continuation's answer
    assert chunks[-1].choices[0].finish_reason == "stop"
    attempts = recorder.of("AttemptRow")
    assert [(a.target, a.outcome, a.continuation) for a in attempts] == [
        (PRIMARY, "ok", False), (PRIMARY, "stream_cut", False), (SECONDARY, "ok", True)]
    [req] = recorder.of("RequestRow")
    assert req.outcome == "ok" and req.final_target == SECONDARY


async def test_stream_cut_without_prefill_ends_with_error_event(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("cut", model="gpt-4.1", n=3)
    gw = await start_gateway(gateway_cfg, store=recorder)
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        r = await hc.post("/v1/chat/completions", json={"model": "chat", "messages": MSG, "stream": True})
    body = r.text
    assert r.status_code == 200
    assert '"code":"stream_interrupted"' in body
    assert "[DONE]" not in body  # a cut stream never ends like a success
    stream = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    with pytest.raises(openai.APIError, match="interrupted"):
        await collect(stream)
    assert recorder.of("RequestRow")[-1].outcome == "cut"


async def test_stream_stall_after_tokens_is_a_cut(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["timeouts"]["idle"] = 0.3
    mock.set_fault("stall", model="gpt-4.1", n=2)
    gw = await start_gateway(gateway_cfg, store=recorder)
    stream = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    with pytest.raises(openai.APIError):
        await collect(stream)
    assert recorder.of("AttemptRow")[-1].outcome == "stream_cut"
    assert "stalled" in recorder.of("AttemptRow")[-1].error


async def test_stream_malformed_event_is_skipped_and_counted(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("malformed", model="gpt-4.1", n=2)
    gw = await start_gateway(gateway_cfg, store=recorder)
    stream = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    text, chunks = await collect(stream)
    assert text.startswith("Hello from openai") and chunks[-1].choices[0].finish_reason == "stop"
    assert gw.runtime.malformed_events == 1
    assert recorder.of("RequestRow")[-1].outcome == "ok"


async def test_stream_without_done_finishes_promptly(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["timeouts"]["idle"] = 10
    mock.set_fault("no_done", model="gpt-4.1")
    gw = await start_gateway(gateway_cfg, store=recorder)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        r = await hc.post("/v1/chat/completions", json={"model": "chat", "messages": MSG, "stream": True})
    assert time.perf_counter() - t0 < 5  # not the 10 s idle timeout
    assert r.text.rstrip().endswith("data: [DONE]")
    assert recorder.of("RequestRow")[-1].outcome == "ok"


# ------------------------------------------------------- breakers and fallbacks

async def test_breaker_opens_skips_and_recovers_after_cooldown(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["retry"]["max_attempts_per_target"] = 1
    gateway_cfg["breaker"] = {"failures_to_open": 3, "cooldown": 0.5}
    mock.set_fault("error", model="gpt-4.1", status=503)
    gw = await start_gateway(gateway_cfg, store=recorder)
    for _ in range(3):
        await ask(gw)
    br = gw.runtime.targets[PRIMARY].breaker
    assert br.state == "open"
    recorder.rows.clear()
    _, headers = await ask(gw)
    assert chain(recorder) == [(SECONDARY, "ok")]  # skipped without an attempt
    mock.clear_faults()
    await asyncio.sleep(0.6)
    _, headers = await ask(gw)
    assert headers["x-patchbay-target"] == PRIMARY and br.state == "closed"
    changes = [(e.detail["from"], e.detail["to"]) for e in recorder.of("EventRow") if e.kind == "breaker"]
    assert changes == [("half_open", "closed")]


async def test_failed_half_open_trial_reopens(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["retry"]["max_attempts_per_target"] = 1
    gateway_cfg["breaker"] = {"failures_to_open": 1, "cooldown": 0.3}
    mock.set_fault("error", model="gpt-4.1", status=500)
    gw = await start_gateway(gateway_cfg, store=recorder)
    await ask(gw)
    br = gw.runtime.targets[PRIMARY].breaker
    assert br.state == "open"
    await asyncio.sleep(0.35)
    await ask(gw)
    assert br.state == "open" and br.failures == 2
    changes = [(e.detail["from"], e.detail["to"]) for e in recorder.of("EventRow") if e.kind == "breaker"]
    assert changes == [("closed", "open"), ("half_open", "open")]


async def test_all_open_tries_the_one_closest_to_recovery(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["retry"]["max_attempts_per_target"] = 1
    gateway_cfg["breaker"] = {"failures_to_open": 1, "cooldown": 60}
    mock.set_fault("error", model="*", status=503)
    gw = await start_gateway(gateway_cfg, store=recorder)
    with pytest.raises(openai.APIStatusError):
        await ask(gw)  # opens openai, then deepseek
    mock.clear_faults()
    recorder.rows.clear()
    resp, _ = await ask(gw)
    assert resp.model == "gpt-4.1"  # opened first, so closest to recovery
    assert chain(recorder) == [(PRIMARY, "ok")]


async def test_all_failing_serves_fallback_response(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["routes"][0]["fallback_response"] = "Briefly unavailable."
    mock.set_fault("error", model="*", status=503)
    gw = await start_gateway(gateway_cfg, store=recorder)
    raw = await client(gw).chat.completions.with_raw_response.create(model="chat", messages=MSG)
    assert raw.headers["x-patchbay-fallback"] == "static"
    assert raw.parse().choices[0].message.content == "Briefly unavailable."
    stream = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    text, _ = await collect(stream)
    assert text == "Briefly unavailable."
    assert {r.outcome for r in recorder.of("RequestRow")} == {"fallback"}


async def test_all_failing_without_fallback_is_openai_style_503(mock, gateway_cfg, start_gateway, recorder):
    mock.set_fault("error", model="*", status=503)
    gw = await start_gateway(gateway_cfg, store=recorder)
    with pytest.raises(openai.InternalServerError) as ei:
        await ask(gw)
    assert ei.value.status_code == 503
    assert ei.value.code == "all_targets_failed"
    assert PRIMARY in ei.value.message and SECONDARY in ei.value.message
    stream_err = None
    try:
        await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    except openai.APIStatusError as e:
        stream_err = e
    assert stream_err is not None and stream_err.status_code == 503


async def test_total_timeout_bounds_the_whole_request(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["timeouts"].update(first_byte=5, total=0.6)
    mock.set_fault("hang", model="*")
    gw = await start_gateway(gateway_cfg, store=recorder)
    t0 = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as ei:
        await ask(gw)
    assert time.perf_counter() - t0 < 2.5
    assert ei.value.code == "timeout"


async def test_target_id_as_model_skips_the_route(mock, gateway_cfg, start_gateway, recorder):
    gw = await start_gateway(gateway_cfg, store=recorder)
    resp, headers = await ask(gw, model=SECONDARY)
    assert resp.model == "deepseek-chat" and headers["x-patchbay-target"] == SECONDARY


async def test_context_length_after_failover_with_no_larger_target_left(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["routes"][0]["targets"] = [
        {"vendor": "openai", "model": "gpt-4.1", "context_window": 1000000},
        {"vendor": "deepseek", "model": "deepseek-chat", "context_window": 64000},
    ]
    mock.set_fault("error", model="gpt-4.1", status=503)
    mock.set_fault("context_length", model="deepseek-chat")
    gw = await start_gateway(gateway_cfg, store=recorder)
    with pytest.raises(openai.BadRequestError) as ei:
        await ask(gw)
    assert ei.value.code == "context_length_exceeded"
    assert chain(recorder)[-1] == (SECONDARY, "context_length")


@pytest.mark.parametrize("stream", [False, True])
async def test_overhead_header_counts_the_gateways_own_cpu_not_just_time_outside_attempts(
        mock, gateway_cfg, start_gateway, monkeypatch, stream):
    """Translation, parsing and scrubbing are Patchbay's own time: a slow translator shows in
    x-patchbay-overhead-ms (it used to be counted as 'waiting on vendors')."""
    from gateway.vendors.openai import OpenAIAdapter

    real = OpenAIAdapter.chat_request

    def slow_translation(self, *a, **kw):
        end = time.perf_counter() + 0.08
        while time.perf_counter() < end:   # 80 ms of CPU, as a pathological translation would cost
            pass
        return real(self, *a, **kw)

    monkeypatch.setattr(OpenAIAdapter, "chat_request", slow_translation)
    gw = await start_gateway(gateway_cfg)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json={"model": "chat", "stream": stream,
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert float(r.headers["x-patchbay-overhead-ms"]) >= 80.0
