"""The fake OpenAI / DeepSeek dialect, checked with the official openai SDK and raw HTTP.

If the official SDK parses what the mock sends (and raises the right exception
types for its errors), the gateway's tests against the mock test the real wire format.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from gateway.mock.server import MockVendorThread, start_mock

USER = "tell me about the weather in Paris today"
MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": USER}]
EXPECTED = "Hello from openai/gpt-4.1. You said: tell me about the weather in Paris today"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]},
                                                    "verbose": {"type": "boolean"}},
                   "required": ["city", "days", "unit"]}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}


@pytest.fixture
async def mock():
    server = await start_mock()
    yield server
    await server.stop()


def aclient(mock, dialect="openai", **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock.base_url(dialect), api_key="sk-test", max_retries=0, **kw)


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def test_non_stream_text_and_usage(mock):
    async with aclient(mock) as c:
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
    assert r.object == "chat.completion"
    assert r.model == "gpt-4.1"
    assert r.choices[0].message.content == EXPECTED
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 2 + len(USER.split())
    assert r.usage.completion_tokens == len(EXPECTED.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert mock.stats["chat"]["openai"] == {"gpt-4.1": 1}


async def test_stream_with_usage_and_done(mock):
    async with aclient(mock) as c:
        stream = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [ch async for ch in stream]
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == EXPECTED
    # one chunk per token, then the finish chunk, then the usage chunk with no choices
    tokens = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(tokens) == len(EXPECTED.split())
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(EXPECTED.split())
    # and on the wire: [DONE] terminates it
    async with httpx.AsyncClient() as h:
        raw = await h.post(mock.base_url("openai") + "/chat/completions",
                           json={"model": "gpt-4.1", "messages": MSGS, "stream": True})
    events = sse_events(raw.text)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])  # no include_usage: no usage field


def test_sync_client_stream_and_not():
    with MockVendorThread() as mock:
        c = openai.OpenAI(base_url=mock.base_url("openai"), api_key="sk-test", max_retries=0)
        r = c.chat.completions.create(model="gpt-4.1", messages=MSGS)
        assert r.choices[0].message.content == EXPECTED
        with c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True) as s:
            text = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
        assert text == EXPECTED
        mock.set_fault("error:429", model="gpt-4.1", retry_after=2)
        with pytest.raises(openai.RateLimitError) as ei:
            c.chat.completions.create(model="gpt-4.1", messages=MSGS)
        assert ei.value.response.headers["retry-after"] == "2"
        assert mock.stats["chat"]["openai"]["gpt-4.1"] == 3
        mock.clear_faults()
        assert c.chat.completions.create(model="gpt-4.1", messages=MSGS).choices[0].message.content == EXPECTED


async def test_tool_call_non_stream_and_stream(mock):
    async with aclient(mock) as c:
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, tools=[WEATHER_TOOL, TIME_TOOL])
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls"
        assert msg.content is None
        assert msg.tool_calls[0].function.name == "get_weather"
        assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "mock", "days": 1, "unit": "c"}

        stream = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True,
                                                 tools=[WEATHER_TOOL, TIME_TOOL],
                                                 tool_choice={"type": "function", "function": {"name": "get_time"}},
                                                 stream_options={"include_usage": True})
        chunks = [ch async for ch in stream]
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_time"
    fragments = [tc.function.arguments for tc in calls[1:]]
    assert len(fragments) > 1  # arguments arrive in pieces, as OpenAI streams them
    assert json.loads("".join(fragments)) == {"tz": "mock"}
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens == len(fragments)


async def test_tool_choice_none_and_tool_result_answer_in_text(mock):
    async with aclient(mock) as c:
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, tools=[WEATHER_TOOL], tool_choice="none")
        assert r.choices[0].message.tool_calls is None and r.choices[0].message.content == EXPECTED
        followup = MSGS + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
        r = await c.chat.completions.create(model="gpt-4.1", messages=followup, tools=[WEATHER_TOOL])
        assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == EXPECTED
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model="gpt-4.1", messages=MSGS, tools=[WEATHER_TOOL],
                                            tool_choice={"type": "function", "function": {"name": "nope"}})


async def test_max_tokens_and_stop(mock):
    async with aclient(mock) as c:
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, max_tokens=1)
        assert r.choices[0].message.content == "Hello" and r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 1
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stop=["You said"])
        assert r.choices[0].message.content == "Hello from openai/gpt-4.1."
        assert r.choices[0].finish_reason == "stop"


async def test_models_list_and_probe_counts(mock):
    async with aclient(mock) as c:
        ids = [m.id async for m in c.models.list()]
        assert "gpt-4.1" in ids
        await c.chat.completions.create(model="my-custom-model", messages=MSGS)
        ids = [m.id async for m in c.models.list()]
        assert "my-custom-model" in ids  # models the mock has served are listed too
        assert (await c.models.retrieve("gpt-4.1")).id == "gpt-4.1"
        with pytest.raises(openai.NotFoundError):
            await c.models.retrieve("no-such-model")
    paths = mock.stats["paths"]
    assert paths["GET /openai/v1/models"] == 2
    assert paths["POST /openai/v1/chat/completions"] == 1


async def test_deepseek_reasoning_and_billing(mock):
    async with aclient(mock, "deepseek") as c:
        r = await c.chat.completions.create(model="deepseek-reasoner", messages=MSGS)
        msg = r.choices[0].message
        assert msg.content == EXPECTED.replace("openai/gpt-4.1", "deepseek/deepseek-reasoner")
        assert msg.model_extra["reasoning_content"].startswith("The user wrote")
        assert r.usage.completion_tokens_details.reasoning_tokens > 0
        assert r.usage.model_extra["prompt_cache_miss_tokens"] == r.usage.prompt_tokens

        stream = await c.chat.completions.create(model="deepseek-reasoner", messages=MSGS, stream=True)
        deltas = [ch.choices[0].delta async for ch in stream if ch.choices]
        reasoning = "".join(d.model_extra.get("reasoning_content") or "" for d in deltas)
        assert reasoning == msg.model_extra["reasoning_content"]
        assert "".join(d.content or "" for d in deltas) == msg.content

        r = await c.chat.completions.create(model="deepseek-chat", messages=MSGS)
        assert "reasoning_content" not in (r.choices[0].message.model_extra or {})

        mock.set_fault("billing", model="deepseek-chat")
        with pytest.raises(openai.APIStatusError) as ei:
            await c.chat.completions.create(model="deepseek-chat", messages=MSGS)
    assert ei.value.status_code == 402 and ei.value.message.endswith("Insufficient Balance")
    assert mock.stats["chat"]["deepseek"] == {"deepseek-reasoner": 2, "deepseek-chat": 2}


@pytest.mark.parametrize("fault,params,exc,status,code", [
    ("error", {"status": 429}, openai.RateLimitError, 429, "rate_limit_exceeded"),
    ("error", {"status": 500}, openai.InternalServerError, 500, None),
    ("error", {"status": 503}, openai.InternalServerError, 503, None),
    ("error", {"status": 404}, openai.NotFoundError, 404, "model_not_found"),
    ("error", {"status": 403}, openai.PermissionDeniedError, 403, "permission_denied"),
    ("auth", {}, openai.AuthenticationError, 401, "invalid_api_key"),
    ("billing", {}, openai.RateLimitError, 429, "insufficient_quota"),
    ("context_length", {}, openai.BadRequestError, 400, "context_length_exceeded"),
    ("content_policy", {}, openai.BadRequestError, 400, "content_policy_violation"),
    ("flap", {"seconds": 30}, openai.InternalServerError, 503, None),
])
async def test_error_faults_raise_sdk_errors(mock, fault, params, exc, status, code):
    mock.set_fault(fault, model="gpt-4.1", **params)
    async with aclient(mock) as c:
        for stream in (False, True):
            with pytest.raises(exc) as ei:
                await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=stream)
            assert ei.value.status_code == status
            assert ei.value.code == code
            assert set(ei.value.body) == {"message", "type", "param", "code"}
        # other models are untouched
        r = await c.chat.completions.create(model="gpt-4.1-mini", messages=MSGS)
        assert r.choices[0].message.content


async def test_retry_after_header_and_times(mock):
    mock.set_fault("error", model="*", status=503, retry_after=1, times=2)
    async with aclient(mock) as c:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as ei:
                await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
            assert ei.value.response.headers["retry-after"] == "1"
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
        assert r.choices[0].message.content == EXPECTED
    assert mock.stats["faults"] == {"error": 2}
    assert mock.state.faults.list() == []


async def test_sdk_retries_through_a_single_failure(mock):
    mock.set_fault("error:503", times=1)
    async with openai.AsyncOpenAI(base_url=mock.base_url("openai"), api_key="k", max_retries=1) as c:
        r = await c.with_options(timeout=10).chat.completions.create(model="gpt-4.1", messages=MSGS)
    assert r.choices[0].message.content == EXPECTED
    assert mock.stats["chat"]["openai"]["gpt-4.1"] == 2


async def test_flap_then_recovers(mock):
    import asyncio
    mock.set_fault("flap:0.3", model="gpt-4.1")
    async with aclient(mock) as c:
        with pytest.raises(openai.InternalServerError):
            await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
        await asyncio.sleep(0.5)
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
    assert r.choices[0].message.content == EXPECTED
    assert mock.state.faults.list() == []


async def test_reset_is_a_connection_error(mock):
    mock.set_fault("reset")
    async with aclient(mock) as c:
        for stream in (False, True):
            with pytest.raises(openai.APIConnectionError):
                await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=stream)
    assert mock.stats["faults"]["reset"] == 2


async def test_hang_times_out(mock):
    mock.set_fault("hang", times=1)
    async with aclient(mock, timeout=0.5) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
    assert r.choices[0].message.content == EXPECTED


async def test_latency_and_slow_first_token_still_answer(mock):
    mock.set_fault("latency:50", model="gpt-4.1")
    async with aclient(mock) as c:
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
        assert r.choices[0].message.content == EXPECTED
        mock.set_fault("slow_first_token:50", model="gpt-4.1")
        s = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
        assert "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices]) == EXPECTED
    assert mock.stats["faults"] == {"latency": 1, "slow_first_token": 1}


async def test_slow_first_token_sends_headers_first(mock):
    # headers arrive at once; the first token is held back (2 s >> 0.3 s read timeout)
    mock.set_fault("slow_first_token", ms=2000)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.3)) as h:
        async with h.stream("POST", mock.base_url("openai") + "/chat/completions",
                            json={"model": "gpt-4.1", "messages": MSGS, "stream": True}) as resp:
            assert resp.status_code == 200
            got = b""
            with pytest.raises(httpx.ReadTimeout):
                async for part in resp.aiter_bytes():
                    got += part
    # the role chunk (framing) came before the delay, no content token did
    events = [json.loads(e) for e in sse_events(got.decode())]
    assert events and all("content" not in ev["choices"][0]["delta"] or ev["choices"][0]["delta"]["content"] == ""
                          for ev in events)


async def test_cut_mid_stream(mock):
    mock.set_fault("cut:3", model="gpt-4.1")
    got = []
    async with aclient(mock) as c:
        stream = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for ch in stream:
                if ch.choices and ch.choices[0].delta.content:
                    got.append(ch.choices[0].delta.content)
    assert "".join(got) == "Hello from openai/gpt-4.1."


async def test_cut_non_stream_truncated_body(mock):
    mock.set_fault("cut", n=0)
    async with aclient(mock) as c:
        with pytest.raises(openai.APIConnectionError):
            await c.chat.completions.create(model="gpt-4.1", messages=MSGS)


async def test_stall_mid_stream(mock):
    mock.set_fault("stall:2", model="gpt-4.1")
    got = []
    async with aclient(mock, timeout=httpx.Timeout(5, read=0.4)) as c:
        stream = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
        with pytest.raises(openai.APITimeoutError):
            async for ch in stream:
                if ch.choices and ch.choices[0].delta.content:
                    got.append(ch.choices[0].delta.content)
    assert got == ["Hello", " from"]


async def test_malformed_event(mock):
    mock.set_fault("malformed", model="gpt-4.1", n=2)
    async with httpx.AsyncClient() as h:
        raw = await h.post(mock.base_url("openai") + "/chat/completions",
                           json={"model": "gpt-4.1", "messages": MSGS, "stream": True})
    bad, text = 0, ""
    events = sse_events(raw.text)
    for e in events[:-1]:
        try:
            obj = json.loads(e)
        except json.JSONDecodeError:
            bad += 1
            assert text == "Hello from"  # exactly where it was asked for
            continue
        text += obj["choices"][0]["delta"].get("content") or "" if obj["choices"] else ""
    assert bad == 1 and text == EXPECTED and events[-1] == "[DONE]"
    # the official SDK does not skip it: it raises on the broken event
    mock.set_fault("malformed", model="gpt-4.1")
    async with aclient(mock) as c:
        stream = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
        with pytest.raises(ValueError):
            async for _ in stream:
                pass


async def test_no_done(mock):
    mock.set_fault("no_done", model="gpt-4.1")
    async with httpx.AsyncClient() as h:
        raw = await h.post(mock.base_url("openai") + "/chat/completions",
                           json={"model": "gpt-4.1", "messages": MSGS, "stream": True,
                                 "stream_options": {"include_usage": True}})
    events = sse_events(raw.text)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["usage"]["completion_tokens"] == len(EXPECTED.split())
    async with aclient(mock) as c:
        s = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
        assert "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices]) == EXPECTED


async def test_error_event_mid_stream(mock):
    mock.set_fault("error_event:2", model="gpt-4.1")
    got = []
    async with aclient(mock) as c:
        stream = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
        with pytest.raises(openai.APIError) as ei:
            async for ch in stream:
                if ch.choices and ch.choices[0].delta.content:
                    got.append(ch.choices[0].delta.content)
    assert got == ["Hello", " from"]
    assert "server had an error" in ei.value.message


async def test_bad_requests(mock):
    async with httpx.AsyncClient() as h:
        url = mock.base_url("openai") + "/chat/completions"
        r = await h.post(url, content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = await h.post(url, json={"model": "gpt-4.1"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = await h.post(url, json={"model": "gpt-4.1", "messages": MSGS, "max_tokens": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


async def test_api_keys_when_configured():
    server = await start_mock(keys=["sk-good"])
    try:
        async with openai.AsyncOpenAI(base_url=server.base_url("openai"), api_key="sk-bad", max_retries=0) as c:
            with pytest.raises(openai.AuthenticationError):
                await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
            with pytest.raises(openai.AuthenticationError):
                await c.models.list()
        async with openai.AsyncOpenAI(base_url=server.base_url("openai"), api_key="sk-good", max_retries=0) as c:
            r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
            assert r.choices[0].message.content == EXPECTED
    finally:
        await server.stop()


async def test_models_endpoint_faults_only_from_wildcards(mock):
    mock.set_fault("error:503", model="gpt-4.1")
    async with aclient(mock) as c:
        assert [m.id async for m in c.models.list()]  # a model's fault does not take the list down
        mock.set_fault("error:503", model="*", scope="models")
        with pytest.raises(openai.InternalServerError):
            await c.models.list()
        mock.clear_faults(model="gpt-4.1")
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)  # scope=models spares chat
        assert r.choices[0].message.content == EXPECTED


async def test_control_api_over_http(mock):
    async with httpx.AsyncClient(base_url=mock.url) as h:
        r = await h.post("/_mock/faults", json={"model": "gpt-4.1", "fault": "error:502", "times": 1})
        assert r.status_code == 200
        assert r.json()["faults"] == [{"fault": "error", "model": "gpt-4.1", "dialect": "*", "scope": "all",
                                       "status": 502, "times": 1}]
        r = await h.post("/_mock/faults", json=[{"fault": "cut:2", "dialect": "anthropic"},
                                                 {"fault": "latency", "ms": 10, "model": "x"}])
        assert len(r.json()["faults"]) == 3
        for bad in ({"fault": "explode"}, {"fault": "error"}, {"fault": "cut"}, {"fault": "ok", "color": 1},
                    {"fault": "error:abc"}, {"fault": "latency:5", "dialect": "cohere"}, [1]):
            r = await h.post("/_mock/faults", json=bad)
            assert r.status_code == 400, bad
            assert r.json()["error"]
        r = await h.post(mock.base_url("openai")[len(mock.url):] + "/chat/completions",
                         json={"model": "gpt-4.1", "messages": MSGS})
        assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"
        r = await h.get("/_mock/stats")
        assert r.json()["chat"]["openai"] == {"gpt-4.1": 1}
        assert r.json()["faults"] == {"error": 1}
        assert r.json()["paths"] == {"POST /openai/v1/chat/completions": 1}
        r = await h.delete("/_mock/faults", params={"model": "x"})
        assert r.json()["cleared"] == 1
        r = await h.delete("/_mock/faults")
        assert r.json() == {"cleared": 1, "faults": []}
        r = await h.post("/_mock/reset_stats")
        assert r.json()["total"] == 0
        r = await h.post("/_mock/config", json={"token_interval_ms": 1, "tokens": 3})
        assert r.json()["token_interval_ms"] == 1 and r.json()["tokens"] == 3
        r = await h.post("/_mock/config", json={"speed": 1})
        assert r.status_code == 400
    async with aclient(mock) as c:
        s = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
        pieces = [ch.choices[0].delta.content async for ch in s if ch.choices and ch.choices[0].delta.content]
    assert pieces == ["Hello", " from", " openai/gpt-4.1."]


async def test_forced_token_count_per_fault(mock):
    mock.set_fault("latency", ms=0, tokens=40, model="gpt-4.1")
    async with aclient(mock) as c:
        r = await c.chat.completions.create(model="gpt-4.1", messages=MSGS)
    assert r.usage.completion_tokens == 40 and len(r.choices[0].message.content.split()) == 40


async def test_bodies_match_openai_published_schemas(mock):
    """OpenAI's own OpenAPI schemas accept every body (DeepSeek is left out: like the real one,
    it omits fields OpenAI requires, such as message.refusal)."""
    from tests.spec import assert_valid

    dialect, model = "openai", "gpt-4.1"

    url = mock.base_url(dialect) + "/chat/completions"
    async with httpx.AsyncClient() as h:
        for extra in ({}, {"tools": [WEATHER_TOOL]}, {"max_tokens": 2}):
            body = {"model": model, "messages": MSGS, **extra}
            r = await h.post(url, json=body)
            assert_valid("CreateChatCompletionResponse", r.json())
            r = await h.post(url, json={**body, "stream": True, "stream_options": {"include_usage": True}})
            events = sse_events(r.text)
            assert events[-1] == "[DONE]"
            for e in events[:-1]:
                assert_valid("CreateChatCompletionStreamResponse", json.loads(e))
        for fault in ("error:429", "error:503", "context_length", "auth", "billing"):
            mock.set_fault(fault, model=model)
            r = await h.post(url, json={"model": model, "messages": MSGS})
            assert r.status_code >= 400
            assert_valid("ErrorResponse", r.json())
