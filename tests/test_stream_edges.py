"""Edges of the request path found in review, each against a scripted vendor speaking OpenAI's wire format."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from aiohttp import web

MSG = [{"role": "user", "content": "x"}]


def chunk(delta, finish=None) -> bytes:
    return ("data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            + "\n\n").encode()


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


@pytest.fixture
async def relay():
    """An OpenAI-style vendor whose chat handler each test sets (`relay.handler = ...`)."""
    class Relay:
        handler = None
        calls = 0

    r = Relay()

    async def chat(request: web.Request):
        r.calls += 1
        await request.read()
        return await r.handler(request)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
    yield r
    await runner.cleanup()


def with_relay(cfg, relay, *rest) -> dict:
    cfg["vendors"]["relay"] = {"kind": "openai", "base_url": relay.url}
    cfg["routes"] = [{"name": "r", "targets": [{"vendor": "relay", "model": "m"}, *rest]}]
    return cfg


async def sse_text(gw, **body) -> str:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json={"model": "r", "stream": True, "messages": MSG, **body})
    return r.text


async def test_cut_after_finish_reason_is_a_complete_answer(gateway_cfg, relay, start_gateway, recorder):
    async def handler(request):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk({"role": "assistant", "content": "The answer is 42."}))
        await resp.write(chunk({}, "stop"))
        await asyncio.sleep(0.05)
        request.transport.abort()  # before [DONE]
        return resp
    relay.handler = handler
    prefill_target = {"vendor": "deepseek", "model": "deepseek-chat", "prefill": True}
    gw = await start_gateway(with_relay(gateway_cfg, relay, prefill_target), store=recorder)
    text = await sse_text(gw)
    assert text.count('"finish_reason":"stop"') == 1 and "deepseek" not in text  # not continued
    assert text.rstrip().endswith("data: [DONE]")
    assert gw.runtime.targets["relay/m"].breaker.failures == 0
    assert recorder.of("RequestRow")[-1].outcome == "ok"


async def test_non_string_content_is_a_skipped_malformed_event(gateway_cfg, relay, start_gateway, recorder):
    async def handler(request):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk({"role": "assistant", "content": "Hello"}))
        await resp.write(chunk({"content": ["not", "a", "string"]}))
        await resp.write(chunk({"content": " world"}))
        await resp.write(chunk({}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        return resp
    relay.handler = handler
    gw = await start_gateway(with_relay(gateway_cfg, relay), store=recorder)
    stream = await openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0).chat.completions.create(
        model="r", messages=MSG, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello world"
    assert gw.runtime.malformed_events == 1 and recorder.of("RequestRow")[-1].outcome == "ok"


async def test_unexpected_vendor_answer_neither_500s_nor_leaks_the_breaker_trial(gateway_cfg, relay, start_gateway,
                                                                                 recorder):
    gateway_cfg["breaker"] = {"failures_to_open": 1, "cooldown": 0.2}
    gateway_cfg["retry"]["max_attempts_per_target"] = 1
    state = {"mode": "503"}

    async def handler(request):
        if state["mode"] == "503":
            return web.json_response({"error": {"message": "down", "type": "server_error"}}, status=503)
        if state["mode"] == "odd":
            return web.json_response({"error": {"message": "odd", "type": 400, "code": ["x"]}}, status=400)
        return web.json_response(completion("fine"))
    relay.handler = handler
    gw = await start_gateway(with_relay(gateway_cfg, relay, {"vendor": "openai", "model": "gpt-4.1"}),
                             store=recorder)
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})  # opens the breaker
        breaker = gw.runtime.targets["relay/m"].breaker
        assert breaker.state == "open"
        await asyncio.sleep(0.25)
        state["mode"] = "odd"
        r = await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})  # the trial
        assert r.status_code < 500 and not breaker.trial_in_flight
        state["mode"] = "ok"
        await asyncio.sleep(0.25)
        r = await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.headers["x-patchbay-target"] == "relay/m" and breaker.state == "closed"
    assert len(recorder.of("RequestRow")) == 3


async def test_total_timeout_mid_stream_is_not_charged_to_anyone(gateway_cfg, relay, start_gateway, mock, recorder):
    gateway_cfg["timeouts"].update(total=0.6, idle=5)

    async def handler(request):  # healthy but longer than the client's whole budget
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(20):
            await resp.write(chunk({"content": f"w{i} "}))
            await asyncio.sleep(0.1)
        return resp
    relay.handler = handler
    prefill_target = {"vendor": "deepseek", "model": "deepseek-chat", "prefill": True}
    gw = await start_gateway(with_relay(gateway_cfg, relay, prefill_target), store=recorder)
    text = await sse_text(gw)
    assert "total timeout" in text and "[DONE]" not in text
    for tid in ("relay/m", "deepseek/deepseek-chat"):
        assert gw.runtime.targets[tid].breaker.failures == 0
    assert mock.stats["total"] == 0  # no continuation was attempted with no time left


async def test_streamed_connections_go_back_to_the_pool(gateway_cfg, start_gateway):
    gw = await start_gateway(gateway_cfg)
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        for _ in range(10):
            r = await c.post("/v1/chat/completions", json={"model": "chat", "stream": True, "messages": MSG})
            assert r.text.rstrip().endswith("[DONE]")
    assert gw.upstream.stats()["open"] == 1  # one keep-alive connection served all ten streams


async def test_idle_bounds_each_silence_of_a_trickled_body(gateway_cfg, relay, start_gateway):
    gateway_cfg["timeouts"].update(idle=0.5, first_byte=2)

    async def handler(request):
        body = json.dumps(completion("slow but fine")).encode()
        resp = web.StreamResponse(headers={"content-type": "application/json"})
        resp.content_length = len(body) + 4
        await resp.prepare(request)
        for _ in range(4):  # keep-alive whitespace, as some relays send on long calls
            await resp.write(b" ")
            await asyncio.sleep(0.3)
        await resp.write(body)
        return resp
    relay.handler = handler
    gw = await start_gateway(with_relay(gateway_cfg, relay))
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        r = await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "slow but fine"


@pytest.mark.parametrize("stream", [False, True])
async def test_latency_drill_longer_than_first_byte_fails_over(gateway_cfg, start_gateway, recorder, stream):
    from gateway.routing.faults import parse_drill_fault

    gateway_cfg["timeouts"].update(first_byte=0.4, total=5)
    gw = await start_gateway(gateway_cfg, store=recorder)
    gw.runtime.targets["openai/gpt-4.1"].fault = parse_drill_fault("latency:3000", duration=30)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        r = await c.post("/v1/chat/completions", json={"model": "chat", "stream": stream, "messages": MSG})
    assert r.status_code == 200 and r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
    assert time.perf_counter() - t0 < 2.5
    assert recorder.of("AttemptRow")[0].outcome == "timeout"


def test_breaker_trial_belongs_to_its_owner():
    from gateway.config import BreakerConfig
    from gateway.routing.breaker import Breaker

    now = [0.0]
    b = Breaker(BreakerConfig(failures_to_open=1, cooldown=1), clock=lambda: now[0])
    early, trial = object(), object()
    assert b.allow(early)            # admitted while closed
    b.failure(trial)                 # someone else's failure opens it
    assert b.state == "open"
    now[0] = 2.0
    assert b.allow(trial) and b.state == "half_open"
    assert not b.allow(object())     # exactly one trial
    assert b.failure(early) is None and b.trial_in_flight  # a stale request cannot end the trial
    b.release(early)
    assert b.trial_in_flight
    assert b.success(trial) == ("half_open", "closed")


async def test_requests_rerouted_by_a_drills_open_breaker_are_marked(gateway_cfg, start_gateway, recorder):
    from gateway.routing.faults import parse_drill_fault

    gateway_cfg["breaker"] = {"failures_to_open": 1, "cooldown": 60}
    gateway_cfg["retry"]["max_attempts_per_target"] = 1
    gw = await start_gateway(gateway_cfg, store=recorder)
    gw.runtime.targets["openai/gpt-4.1"].fault = parse_drill_fault("error:503", duration=30, drill_id="drill_x")
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        for _ in range(3):
            r = await c.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
            assert r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
    rows = recorder.of("RequestRow")
    assert [r.drill_id for r in rows] == ["drill_x"] * 3
    assert [a.target for a in recorder.of("AttemptRow")].count("openai/gpt-4.1") == 1  # then skipped
