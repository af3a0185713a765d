"""Gateway responses and stream chunks validate against OpenAI's own schemas, whatever vendor answered."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.spec import assert_valid, validator

MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


def sse_chunks(text: str) -> list[dict]:
    out = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(orjson.loads(line[6:]))
    return out


def test_schema_rejects_a_broken_response():
    """The validator itself must be able to fail, or the tests below prove nothing."""
    v = validator("CreateChatCompletionResponse")
    assert not v.is_valid({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": "nope"})


ROUTES = {
    "openai": [{"vendor": "openai", "model": "gpt-4.1"}],
    "deepseek": [{"vendor": "deepseek", "model": "deepseek-chat"}],
    "anthropic": [{"vendor": "anthropic", "model": "claude-sonnet-4-20250514"}],
    "gemini": [{"vendor": "gemini", "model": "gemini-2.0-flash"}],
}


@pytest.mark.parametrize("vendor", list(ROUTES))
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
async def test_responses_and_chunks_match_the_spec(gateway_cfg, start_gateway, vendor, tools):
    validator("CreateChatCompletionResponse")  # skip early without the spec
    gateway_cfg["routes"] = [{"name": "chat", "targets": ROUTES[vendor]}]
    gw = await start_gateway(gateway_cfg)
    body = {"model": "chat", "messages": MSG}
    if tools:
        body["tools"] = TOOLS
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as hc:
        r = await hc.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        resp = r.json()
        assert_valid("CreateChatCompletionResponse", resp)
        if tools:
            assert resp["choices"][0]["finish_reason"] == "tool_calls"
            assert resp["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        r = await hc.post("/v1/chat/completions",
                          json={**body, "stream": True, "stream_options": {"include_usage": True}})
        assert r.status_code == 200
    chunks = sse_chunks(r.text)
    assert len(chunks) >= 3
    for ch in chunks:
        assert_valid("CreateChatCompletionStreamResponse", ch)
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert r.text.rstrip().endswith("data: [DONE]")


async def test_error_bodies_match_the_spec(gateway_cfg, start_gateway):
    gw = await start_gateway(gateway_cfg)
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        for resp in (await hc.post("/v1/chat/completions", content=b"{nope"),
                     await hc.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})):
            assert_valid("ErrorResponse", resp.json())
