"""The fake Anthropic Messages API, checked with the official anthropic SDK and raw HTTP."""

from __future__ import annotations

import json

import anthropic
import httpx
import httpx2  # the anthropic SDK (2.x) is built on httpx2 and lets its stream errors through
import pytest

from gateway.mock.server import MockVendorThread, start_mock

MODEL = "claude-sonnet-4-20250514"
USER = "what is the capital of France"
MSGS = [{"role": "user", "content": USER}]
EXPECTED = f"Hello from anthropic/{MODEL}. You said: {USER}"
TOOLS = [{"name": "lookup", "description": "find facts",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                           "required": ["query", "limit"]}},
         {"name": "clock", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}},
                                            "required": ["tz"]}}]
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def mock():
    server = await start_mock()
    yield server
    await server.stop()


def aclient(mock, **kw) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=mock.base_url("anthropic"), api_key="k", max_retries=0, **kw)


def sse(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of an Anthropic stream."""
    out, event = [], None
    for line in text.splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, line[6:]))
    return out


async def test_non_stream_text_and_usage(mock):
    async with aclient(mock) as c:
        r = await c.messages.create(model=MODEL, max_tokens=256, system="be brief", messages=MSGS)
    assert r.type == "message" and r.role == "assistant" and r.model == MODEL
    assert [b.type for b in r.content] == ["text"]
    assert r.content[0].text == EXPECTED
    assert r.stop_reason == "end_turn"
    assert r.usage.input_tokens == 2 + len(USER.split())
    assert r.usage.output_tokens == len(EXPECTED.split())
    assert mock.stats["chat"]["anthropic"] == {MODEL: 1}


async def test_stream_events_and_final_message(mock):
    async with aclient(mock) as c:
        async with c.messages.stream(model=MODEL, max_tokens=256, messages=MSGS) as s:
            types = []
            text = ""
            async for ev in s:
                types.append(ev.type)
                if ev.type == "text":
                    text += ev.text
            final = await s.get_final_message()
    assert text == EXPECTED == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(EXPECTED.split())
    assert final.usage.input_tokens == len(USER.split())
    assert types[0] == "message_start" and types[-1] == "message_stop"
    # the wire: the real event order, ping included
    async with httpx.AsyncClient() as h:
        raw = await h.post(mock.base_url("anthropic") + "/v1/messages", headers=HEADERS,
                           json={"model": MODEL, "max_tokens": 256, "messages": MSGS, "stream": True})
    events = [e for e, _ in sse(raw.text)]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events.count("content_block_delta") == len(EXPECTED.split())
    for e, d in sse(raw.text):
        assert json.loads(d)["type"] == e


def test_sync_client():
    with MockVendorThread() as mock:
        c = anthropic.Anthropic(base_url=mock.base_url("anthropic"), api_key="k", max_retries=0)
        assert c.messages.create(model=MODEL, max_tokens=64, messages=MSGS).content[0].text == EXPECTED
        with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
            assert "".join(s.text_stream) == EXPECTED
        mock.set_fault("error", model=MODEL, status=529)
        with pytest.raises(anthropic.OverloadedError):
            c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)


async def test_tool_use_non_stream_and_stream(mock):
    async with aclient(mock) as c:
        r = await c.messages.create(model=MODEL, max_tokens=256, messages=MSGS, tools=TOOLS)
        assert r.stop_reason == "tool_use"
        block = r.content[0]
        assert block.type == "tool_use" and block.name == "lookup" and block.id.startswith("toolu_")
        assert block.input == {"query": "mock", "limit": 1}

        async with c.messages.stream(model=MODEL, max_tokens=256, messages=MSGS, tools=TOOLS,
                                     tool_choice={"type": "tool", "name": "clock"}) as s:
            partials = [ev.partial_json async for ev in s if ev.type == "input_json"]
            final = await s.get_final_message()
    assert len(partials) > 1 and json.loads("".join(partials)) == {"tz": "mock"}
    assert final.content[0].type == "tool_use" and final.content[0].input == {"tz": "mock"}
    assert final.stop_reason == "tool_use"


async def test_tool_result_and_tool_choice_none_answer_in_text(mock):
    async with aclient(mock) as c:
        r = await c.messages.create(model=MODEL, max_tokens=256, messages=MSGS, tools=TOOLS,
                                    tool_choice={"type": "none"})
        assert r.content[0].type == "text" and r.stop_reason == "end_turn"
        convo = MSGS + [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                               "input": {"query": "x", "limit": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Paris"}]}]
        r = await c.messages.create(model=MODEL, max_tokens=256, messages=convo, tools=TOOLS)
    assert r.content[0].type == "text" and r.content[0].text == EXPECTED


async def test_thinking_blocks(mock):
    async with aclient(mock) as c:
        r = await c.messages.create(model=MODEL, max_tokens=2048, messages=MSGS,
                                    thinking={"type": "enabled", "budget_tokens": 1024})
        assert [b.type for b in r.content] == ["thinking", "text"]
        assert r.content[0].thinking and r.content[0].signature
        async with c.messages.stream(model=MODEL, max_tokens=2048, messages=MSGS,
                                     thinking={"type": "enabled", "budget_tokens": 1024}) as s:
            thinking = "".join([ev.thinking async for ev in s if ev.type == "thinking"])
            final = await s.get_final_message()
    assert thinking == r.content[0].thinking == final.content[0].thinking
    assert final.content[0].signature == r.content[0].signature
    assert final.content[1].text == EXPECTED


async def test_max_tokens_and_stop_sequences(mock):
    async with aclient(mock) as c:
        r = await c.messages.create(model=MODEL, max_tokens=2, messages=MSGS)
        assert r.content[0].text == "Hello from" and r.stop_reason == "max_tokens"
        assert r.usage.output_tokens == 2
        r = await c.messages.create(model=MODEL, max_tokens=100, messages=MSGS, stop_sequences=["You said"])
        assert r.stop_reason == "stop_sequence" and r.stop_sequence == "You said"
        assert r.content[0].text == f"Hello from anthropic/{MODEL}."


async def test_validation_like_the_real_api(mock):
    url = mock.base_url("anthropic") + "/v1/messages"
    async with httpx.AsyncClient() as h:
        r = await h.post(url, headers={"x-api-key": "k"}, json={"model": MODEL, "max_tokens": 5, "messages": MSGS})
        assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
        r = await h.post(url, headers=HEADERS, json={"model": MODEL, "messages": MSGS})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in r.json()["error"]["message"]
        r = await h.post(url, headers=HEADERS, json={"model": MODEL, "max_tokens": 5,
                                                      "messages": [{"role": "system", "content": "x"}]})
        assert r.status_code == 400
    async with aclient(mock) as c:
        with pytest.raises(anthropic.BadRequestError):
            await c.messages.create(model=MODEL, max_tokens=5, messages=[])


async def test_models_list_and_counts(mock):
    async with aclient(mock) as c:
        ids = [m.id async for m in c.models.list()]
        assert MODEL in ids
        assert (await c.models.retrieve(MODEL)).id == MODEL
        with pytest.raises(anthropic.NotFoundError):
            await c.models.retrieve("claude-nope")
    assert mock.stats["paths"]["GET /anthropic/v1/models"] == 1


@pytest.mark.parametrize("fault,params,exc,status,etype", [
    ("error", {"status": 529}, anthropic.OverloadedError, 529, "overloaded_error"),
    ("error", {"status": 500}, anthropic.InternalServerError, 500, "api_error"),
    ("error", {"status": 503}, anthropic.InternalServerError, 503, "api_error"),
    ("error", {"status": 429}, anthropic.RateLimitError, 429, "rate_limit_error"),
    ("error", {"status": 404}, anthropic.NotFoundError, 404, "not_found_error"),
    ("error", {"status": 403}, anthropic.PermissionDeniedError, 403, "permission_error"),
    ("auth", {}, anthropic.AuthenticationError, 401, "authentication_error"),
    ("billing", {}, anthropic.APIStatusError, 402, "billing_error"),
    ("context_length", {}, anthropic.BadRequestError, 400, "invalid_request_error"),
    ("content_policy", {"status": 400}, anthropic.BadRequestError, 400, "invalid_request_error"),
    ("flap", {"seconds": 30, "status": 529}, anthropic.OverloadedError, 529, "overloaded_error"),
])
async def test_error_faults_raise_sdk_errors(mock, fault, params, exc, status, etype):
    mock.set_fault(fault, model=MODEL, **params)
    async with aclient(mock) as c:
        with pytest.raises(exc) as ei:
            await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
        assert ei.value.status_code == status
        assert ei.value.body["type"] == "error" and ei.value.body["error"]["type"] == etype
        with pytest.raises(exc):
            async with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
                await s.get_final_message()
        r = await c.messages.create(model="claude-3-5-haiku-20241022", max_tokens=64, messages=MSGS)
        assert r.content[0].text


async def test_context_length_message(mock):
    mock.set_fault("context_length")
    async with aclient(mock) as c:
        with pytest.raises(anthropic.BadRequestError) as ei:
            await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
    assert "prompt is too long" in ei.value.message


async def test_rate_limit_retry_after_and_times(mock):
    mock.set_fault("error:429", retry_after=3, times=1)
    async with aclient(mock) as c:
        with pytest.raises(anthropic.RateLimitError) as ei:
            await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
        assert ei.value.response.headers["retry-after"] == "3"
        r = await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
    assert r.content[0].text == EXPECTED


async def test_content_policy_is_a_refusal(mock):
    mock.set_fault("content_policy", model=MODEL)
    async with aclient(mock) as c:
        r = await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
        assert r.stop_reason == "refusal" and r.content == []
        async with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
            final = await s.get_final_message()
    assert final.stop_reason == "refusal"


async def test_error_event_before_content_and_after(mock):
    mock.set_fault("error_event:0", model=MODEL)
    async with aclient(mock) as c:
        with pytest.raises(anthropic.APIStatusError) as ei:
            async with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
                async for _ in s:
                    pass
        assert ei.value.body["error"]["type"] == "overloaded_error"
        mock.set_fault("error_event:3", model=MODEL)
        got = ""
        with pytest.raises(anthropic.APIStatusError):
            async with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
                async for ev in s:
                    if ev.type == "text":
                        got += ev.text
    assert got == f"Hello from anthropic/{MODEL}."
    async with httpx.AsyncClient() as h:
        mock.set_fault("error_event:1", model=MODEL, type="api_error")
        raw = await h.post(mock.base_url("anthropic") + "/v1/messages", headers=HEADERS,
                           json={"model": MODEL, "max_tokens": 64, "messages": MSGS, "stream": True})
    events = sse(raw.text)
    assert events[-1][0] == "error" and json.loads(events[-1][1])["error"]["type"] == "api_error"
    assert "message_stop" not in [e for e, _ in events]


async def test_reset_and_hang(mock):
    mock.set_fault("reset", times=1)
    async with aclient(mock, timeout=0.5) as c:
        with pytest.raises(anthropic.APIConnectionError):
            await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
        mock.set_fault("hang", times=1)
        with pytest.raises(anthropic.APITimeoutError):
            await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
        r = await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
    assert r.content[0].text == EXPECTED
    assert mock.stats["faults"] == {"reset": 1, "hang": 1}


async def test_cut_mid_stream(mock):
    mock.set_fault("cut:2", model=MODEL)
    got = ""
    async with aclient(mock) as c:
        with pytest.raises(httpx2.RemoteProtocolError):
            async with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
                async for ev in s:
                    if ev.type == "text":
                        got += ev.text
    assert got == "Hello from"


async def test_stall_mid_stream(mock):
    mock.set_fault("stall:1", model=MODEL)
    got = ""
    async with aclient(mock, timeout=anthropic.Timeout(5, read=0.4)) as c:
        with pytest.raises(httpx2.ReadTimeout):
            async with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
                async for ev in s:
                    if ev.type == "text":
                        got += ev.text
    assert got == "Hello"


async def test_malformed_and_no_done(mock):
    mock.set_fault("malformed", model=MODEL)
    async with httpx.AsyncClient() as h:
        url = mock.base_url("anthropic") + "/v1/messages"
        body = {"model": MODEL, "max_tokens": 64, "messages": MSGS, "stream": True}
        raw = await h.post(url, headers=HEADERS, json=body)
        bad = 0
        for _, d in sse(raw.text):
            try:
                json.loads(d)
            except json.JSONDecodeError:
                bad += 1
        assert bad == 1 and sse(raw.text)[-1][0] == "message_stop"
        mock.set_fault("no_done", model=MODEL)
        raw = await h.post(url, headers=HEADERS, json=body)
    events = [e for e, _ in sse(raw.text)]
    assert events[-1] == "message_delta" and "message_stop" not in events
    async with aclient(mock) as c:
        async with c.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as s:
            assert "".join([t async for t in s.text_stream]) == EXPECTED


async def test_api_keys_when_configured():
    server = await start_mock(keys=["good"])
    try:
        async with anthropic.AsyncAnthropic(base_url=server.base_url("anthropic"), api_key="bad",
                                            max_retries=0) as c:
            with pytest.raises(anthropic.AuthenticationError) as ei:
                await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
            assert ei.value.body["error"]["type"] == "authentication_error"
        async with anthropic.AsyncAnthropic(base_url=server.base_url("anthropic"), api_key="good",
                                            max_retries=0) as c:
            r = await c.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
            assert r.content[0].text == EXPECTED
    finally:
        await server.stop()
