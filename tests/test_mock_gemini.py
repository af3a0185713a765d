"""The fake Gemini API, checked with the official google-genai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import httpx
import pytest
from google import genai
from google.genai import errors, types

from gateway.mock.server import MockVendorThread, start_mock

MODEL = "gemini-2.0-flash"
USER = "name three rivers in Europe"
EXPECTED = f"Hello from gemini/{MODEL}. You said: {USER}"
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="weather for a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING"),
                                                       "days": types.Schema(type="INTEGER"),
                                                       "metric": types.Schema(type="BOOLEAN")},
                            required=["city", "days", "metric"]))
CLOCK = types.FunctionDeclaration(name="get_time", parameters=types.Schema(
    type="OBJECT", properties={"tz": types.Schema(type="STRING")}, required=["tz"]))
TOOLS = [types.Tool(function_declarations=[WEATHER, CLOCK])]


@pytest.fixture
async def mock():
    server = await start_mock()
    yield server
    await server.stop()


def client(mock, **http) -> genai.Client:
    # attempts=1: no retries, and it also turns off the SDK's implicit 1-10 s retry after a disconnect
    return genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url=mock.base_url("gemini"), retry_options=types.HttpRetryOptions(attempts=1), **http))


def sse(text: str) -> list[str]:
    return [line[6:] for line in text.split("\r\n") if line.startswith("data: ")]


async def test_generate_content_text_and_usage(mock):
    r = await client(mock).aio.models.generate_content(
        model=MODEL, contents=USER, config=types.GenerateContentConfig(system_instruction="be brief"))
    assert r.text == EXPECTED
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.candidates[0].content.role == "model"
    u = r.usage_metadata
    assert u.prompt_token_count == 2 + len(USER.split())
    assert u.candidates_token_count == len(EXPECTED.split())
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert r.model_version == MODEL
    assert mock.stats["chat"]["gemini"] == {MODEL: 1}


async def test_stream_chunks(mock):
    chunks = [ch async for ch in await client(mock).aio.models.generate_content_stream(model=MODEL, contents=USER)]
    assert "".join(ch.text or "" for ch in chunks) == EXPECTED
    assert len(chunks) == len(EXPECTED.split()) + 1
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == len(EXPECTED.split())
    assert all(ch.candidates[0].finish_reason is None for ch in chunks[:-1])
    async with httpx.AsyncClient() as h:
        raw = await h.post(mock.base_url("gemini") + f"/v1beta/models/{MODEL}:streamGenerateContent",
                           params={"alt": "sse"}, headers={"x-goog-api-key": "k"},
                           json={"contents": [{"role": "user", "parts": [{"text": USER}]}]})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("\r\n\r\n")  # Google frames SSE events with CRLF
    assert [json.loads(d) for d in sse(raw.text)][-1]["candidates"][0]["finishReason"] == "STOP"
    assert mock.stats["paths"][f"POST /gemini/v1beta/models/{MODEL}:streamGenerateContent"] == 1


def test_sync_client():
    with MockVendorThread() as mock:
        c = client(mock)
        assert c.models.generate_content(model=MODEL, contents=USER).text == EXPECTED
        assert "".join(ch.text or "" for ch in c.models.generate_content_stream(model=MODEL, contents=USER)) \
            == EXPECTED
        mock.set_fault("error:503", model=MODEL)
        with pytest.raises(errors.ServerError) as ei:
            c.models.generate_content(model=MODEL, contents=USER)
        assert ei.value.code == 503 and ei.value.status == "UNAVAILABLE"


async def test_function_calls(mock):
    c = client(mock).aio
    r = await c.models.generate_content(model=MODEL, contents=USER, config=types.GenerateContentConfig(tools=TOOLS))
    assert r.function_calls[0].name == "get_weather"
    assert r.function_calls[0].args == {"city": "mock", "days": 1, "metric": True}
    cfg = types.GenerateContentConfig(tools=TOOLS, tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["get_time"])))
    chunks = [ch async for ch in await c.models.generate_content_stream(model=MODEL, contents=USER, config=cfg)]
    calls = [fc for ch in chunks for fc in (ch.function_calls or [])]
    assert [(fc.name, fc.args) for fc in calls] == [("get_time", {"tz": "mock"})]
    none = types.GenerateContentConfig(tools=TOOLS, tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode="NONE")))
    r = await c.models.generate_content(model=MODEL, contents=USER, config=none)
    assert r.function_calls is None and r.text == EXPECTED
    # after a function response the model answers in text
    convo = [types.Content(role="user", parts=[types.Part(text=USER)]),
             types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
                 name="get_weather", args={"city": "x", "days": 1, "metric": True}))]),
             types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                 name="get_weather", response={"temp": 20}))])]
    r = await c.models.generate_content(model=MODEL, contents=convo, config=types.GenerateContentConfig(tools=TOOLS))
    assert r.function_calls is None and r.text == EXPECTED


async def test_max_tokens_stop_and_thoughts(mock):
    c = client(mock).aio
    r = await c.models.generate_content(model=MODEL, contents=USER,
                                        config=types.GenerateContentConfig(max_output_tokens=3))
    assert r.text == f"Hello from gemini/{MODEL}." and r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    r = await c.models.generate_content(model=MODEL, contents=USER,
                                        config=types.GenerateContentConfig(stop_sequences=["You said"]))
    assert r.text == f"Hello from gemini/{MODEL}."
    r = await c.models.generate_content(model="gemini-2.5-flash", contents=USER, config=types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True)))
    thought = [p for p in r.candidates[0].content.parts if p.thought]
    assert thought and thought[0].text.startswith("The user wrote")
    assert r.usage_metadata.thoughts_token_count == len(thought[0].text.split())


async def test_models_list_and_get(mock):
    c = client(mock).aio
    names = [m.name async for m in await c.models.list()]
    assert f"models/{MODEL}" in names
    m = await c.models.get(model=MODEL)
    assert m.name == f"models/{MODEL}" and m.input_token_limit > 0
    with pytest.raises(errors.ClientError) as ei:
        await c.models.get(model="gemini-nope")
    assert ei.value.code == 404 and ei.value.status == "NOT_FOUND"


@pytest.mark.parametrize("fault,params,exc,code,status", [
    ("error", {"status": 429}, errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
    ("error", {"status": 500}, errors.ServerError, 500, "INTERNAL"),
    ("error", {"status": 503}, errors.ServerError, 503, "UNAVAILABLE"),
    ("error", {"status": 504}, errors.ServerError, 504, "DEADLINE_EXCEEDED"),
    ("error", {"status": 403}, errors.ClientError, 403, "PERMISSION_DENIED"),
    ("auth", {}, errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("context_length", {}, errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("billing", {}, errors.ClientError, 400, "FAILED_PRECONDITION"),
    ("flap", {"seconds": 30}, errors.ServerError, 503, "UNAVAILABLE"),
])
async def test_error_faults_raise_sdk_errors(mock, fault, params, exc, code, status):
    mock.set_fault(fault, model=MODEL, **params)
    c = client(mock).aio
    with pytest.raises(exc) as ei:
        await c.models.generate_content(model=MODEL, contents=USER)
    assert ei.value.code == code and ei.value.status == status
    with pytest.raises(exc):
        async for _ in await c.models.generate_content_stream(model=MODEL, contents=USER):
            pass
    assert (await c.models.generate_content(model="gemini-2.5-pro", contents=USER)).text


async def test_rate_limit_retry_info_and_api_key_invalid(mock):
    mock.set_fault("error:429", model=MODEL, retry_after=2, times=1)
    c = client(mock).aio
    with pytest.raises(errors.ClientError) as ei:
        await c.models.generate_content(model=MODEL, contents=USER)
    details = ei.value.details["error"]["details"]
    retry = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]
    assert (await c.models.generate_content(model=MODEL, contents=USER)).text == EXPECTED  # times:1 used up
    mock.set_fault("auth", model=MODEL)
    with pytest.raises(errors.ClientError) as ei:
        await c.models.generate_content(model=MODEL, contents=USER)
    reasons = [d.get("reason") for d in ei.value.details["error"]["details"]]
    assert "API_KEY_INVALID" in reasons
    assert "context" not in ei.value.message


async def test_content_policy_is_safety_finish(mock):
    mock.set_fault("content_policy", model=MODEL)
    c = client(mock).aio
    r = await c.models.generate_content(model=MODEL, contents=USER)
    assert r.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert r.text is None
    assert any(s.blocked for s in r.candidates[0].safety_ratings)
    chunks = [ch async for ch in await c.models.generate_content_stream(model=MODEL, contents=USER)]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.SAFETY


async def test_error_event_mid_stream(mock):
    mock.set_fault("error_event:2", model=MODEL)
    got = ""
    with pytest.raises(errors.ServerError) as ei:
        async for ch in await client(mock).aio.models.generate_content_stream(model=MODEL, contents=USER):
            got += ch.text or ""
    assert got == "Hello from" and ei.value.code == 503


async def test_reset_cut_stall_hang(mock):
    c = client(mock).aio
    mock.set_fault("reset", times=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):  # the async client is aiohttp-based
        await c.models.generate_content(model=MODEL, contents=USER)
    mock.set_fault("cut:2", times=1)
    got = ""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for ch in await c.models.generate_content_stream(model=MODEL, contents=USER):
            got += ch.text or ""
    assert got == "Hello from"
    # stall and hang: the client's own timeout fires (HttpOptions.timeout is in ms)
    short = client(mock, timeout=500).aio
    mock.set_fault("hang", times=1)
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        await short.models.generate_content(model=MODEL, contents=USER)
    mock.set_fault("stall:1", times=1)
    got = ""
    with pytest.raises((asyncio.TimeoutError, TimeoutError)):
        async for ch in await short.models.generate_content_stream(model=MODEL, contents=USER):
            got += ch.text or ""
    assert got == "Hello"
    assert (await c.models.generate_content(model=MODEL, contents=USER)).text == EXPECTED
    assert mock.stats["faults"] == {"reset": 1, "cut": 1, "hang": 1, "stall": 1}


async def test_malformed_and_no_done(mock):
    url = mock.base_url("gemini") + f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": USER}]}]}
    mock.set_fault("malformed", model=MODEL)
    async with httpx.AsyncClient() as h:
        raw = await h.post(url, json=body)
        bad = 0
        for d in sse(raw.text):
            try:
                json.loads(d)
            except json.JSONDecodeError:
                bad += 1
        assert bad == 1 and json.loads(sse(raw.text)[-1])["candidates"][0]["finishReason"] == "STOP"
        mock.set_fault("no_done", model=MODEL)
        raw = await h.post(url, json=body)
    chunks = [json.loads(d) for d in sse(raw.text)]
    assert all("finishReason" not in ch["candidates"][0] for ch in chunks)
    assert "".join(ch["candidates"][0]["content"]["parts"][0]["text"] for ch in chunks) == EXPECTED


async def test_request_validation(mock):
    async with httpx.AsyncClient(base_url=mock.base_url("gemini")) as h:
        r = await h.post(f"/v1beta/models/{MODEL}:generateContent", json={"contents": []})
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
        r = await h.post(f"/v1beta/models/{MODEL}:embedContent", json={"contents": []})
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


async def test_api_keys_when_configured():
    server = await start_mock(keys=["good"])
    try:
        bad = genai.Client(api_key="bad", http_options=types.HttpOptions(base_url=server.base_url("gemini"),
                                                                         retry_options=types.HttpRetryOptions(attempts=1)))
        with pytest.raises(errors.ClientError) as ei:
            await bad.aio.models.generate_content(model=MODEL, contents=USER)
        assert ei.value.code == 400
        assert ei.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        good = genai.Client(api_key="good", http_options=types.HttpOptions(base_url=server.base_url("gemini")))
        assert (await good.aio.models.generate_content(model=MODEL, contents=USER)).text == EXPECTED
        async with httpx.AsyncClient() as h:  # ?key= works as well, as on the real API
            r = await h.get(server.base_url("gemini") + "/v1beta/models", params={"key": "good"})
            assert r.status_code == 200
    finally:
        await server.stop()
