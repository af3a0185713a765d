"""A route mixing OpenAI, Anthropic and Gemini: clients cannot tell who answered, except by `model`."""

from __future__ import annotations

import json
import sqlite3

import openai
import pytest

MSG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the weather in Oslo?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TARGETS = {
    "openai": ({"vendor": "openai", "model": "gpt-4.1"}, "gpt-4.1"),
    "anthropic": ({"vendor": "anthropic", "model": "claude-sonnet-4-20250514"}, "claude-sonnet-4-20250514"),
    "gemini": ({"vendor": "gemini", "model": "gemini-2.0-flash"}, "gemini-2.0-flash"),
}


def client(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)


@pytest.mark.parametrize("vendor", list(TARGETS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
async def test_each_vendor_through_the_openai_sdk(gateway_cfg, start_gateway, vendor, stream, tools):
    target, model = TARGETS[vendor]
    gateway_cfg["routes"] = [{"name": "chat", "targets": [target]}]
    gw = await start_gateway(gateway_cfg)
    kw = {"tools": TOOLS} if tools else {}
    c = client(gw)
    if not stream:
        resp = await c.chat.completions.create(model="chat", messages=MSG, **kw)
        assert resp.model == model and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
        choice = resp.choices[0]
        if tools:
            assert choice.finish_reason == "tool_calls"
            call = choice.message.tool_calls[0]
            assert call.function.name == "get_weather" and call.id
            assert "city" in json.loads(call.function.arguments)
        else:
            assert choice.finish_reason == "stop" and vendor in choice.message.content.lower()
        return
    s = await c.chat.completions.create(model="chat", messages=MSG, stream=True,
                                        stream_options={"include_usage": True}, **kw)
    chunks = [ch async for ch in s]
    assert {ch.model for ch in chunks} == {model}
    assert chunks[-1].usage.completion_tokens > 0
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    if tools:
        args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                       for tc in (ch.choices[0].delta.tool_calls or []))
        names = [tc.function.name for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])
                 if tc.function and tc.function.name]
        assert names == ["get_weather"] and "city" in json.loads(args)
        assert finish == ["tool_calls"]
    else:
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert vendor in text.lower() and finish == ["stop"]


async def test_failover_openai_to_anthropic_to_gemini_is_accounted(mock, gateway_cfg, start_gateway, tmp_path):
    gateway_cfg["routes"] = [{"name": "chat", "targets": [TARGETS["openai"][0], TARGETS["anthropic"][0],
                                                          TARGETS["gemini"][0]]}]
    gateway_cfg["prices"] = {"openai/gpt-4.1": {"input": 2.0, "output": 8.0},
                             "anthropic/claude-sonnet-4-20250514": {"input": 3.0, "output": 15.0},
                             "gemini/gemini-2.0-flash": {"input": 0.1, "output": 0.4}}
    mock.set_fault("error", model="gpt-4.1", status=503)
    mock.set_fault("error", model="claude-sonnet-4-20250514", status=529)
    gw = await start_gateway(gateway_cfg)
    raw = await client(gw).chat.completions.with_raw_response.create(model="chat", messages=MSG)
    resp = raw.parse()
    assert resp.model == "gemini-2.0-flash" and raw.headers["x-patchbay-target"] == "gemini/gemini-2.0-flash"
    await gw.stop()
    con = sqlite3.connect(tmp_path / "patchbay.db")
    row = con.execute("select final_target, model, prompt_tokens, completion_tokens, cost, failovers, attempts "
                      "from requests").fetchone()
    assert row[:2] == ("gemini/gemini-2.0-flash", "gemini-2.0-flash")
    assert (row[2], row[3]) == (resp.usage.prompt_tokens, resp.usage.completion_tokens)
    assert row[4] == pytest.approx((row[2] * 0.1 + row[3] * 0.4) / 1e6)  # billed at the answering target's price
    assert row[5] == 2 and row[6] == 5
    outcomes = con.execute("select target, outcome, http_status from attempts order by n").fetchall()
    assert outcomes == [("openai/gpt-4.1", "server", 503)] * 2 + [
        ("anthropic/claude-sonnet-4-20250514", "server", 529)] * 2 + [("gemini/gemini-2.0-flash", "ok", 200)]


async def test_anthropic_overloaded_event_before_content_fails_over(mock, gateway_cfg, start_gateway, recorder):
    gateway_cfg["routes"] = [{"name": "chat", "targets": [TARGETS["anthropic"][0], TARGETS["gemini"][0]]}]
    mock.set_fault("error_event", model="claude-sonnet-4-20250514", n=0)
    gw = await start_gateway(gateway_cfg, store=recorder)
    s = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    chunks = [ch async for ch in s]
    assert {ch.model for ch in chunks} == {"gemini-2.0-flash"}
    assert [(a.target, a.outcome) for a in recorder.of("AttemptRow")][-1] == ("gemini/gemini-2.0-flash", "ok")


async def test_anthropic_error_event_after_content_follows_the_mid_stream_rule(mock, gateway_cfg, start_gateway,
                                                                               recorder):
    gateway_cfg["routes"] = [{"name": "chat", "targets": [
        TARGETS["anthropic"][0], {**TARGETS["gemini"][0], "prefill": True}]}]
    mock.set_fault("error_event", model="claude-sonnet-4-20250514", n=3)
    gw = await start_gateway(gateway_cfg, store=recorder)
    s = await client(gw).chat.completions.create(model="chat", messages=MSG, stream=True)
    chunks = [ch async for ch in s]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.lower().startswith("hello from anthropic") and "gemini" in text.lower()
    assert [(a.target, a.outcome, a.continuation) for a in recorder.of("AttemptRow")] == [
        ("anthropic/claude-sonnet-4-20250514", "ok", False),
        ("anthropic/claude-sonnet-4-20250514", "stream_cut", False),
        ("gemini/gemini-2.0-flash", "ok", True)]
