"""Anthropic and Gemini adapters driven over real HTTP against the fake vendors.

The adapter builds the request, aiohttp sends it to `patchbay mock` on
127.0.0.1, and the adapter parses what comes back (body, SSE stream or error).
This checks the two halves against each other: what we send is accepted by a
fake that validates the vendor's wire rules, and what it answers in the
vendor's format comes back as the OpenAI shapes the router expects.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from gateway.config import VendorConfig  # noqa: E402
from gateway.mock.server import start_mock  # noqa: E402
from gateway.vendors import make_adapter  # noqa: E402
from gateway.vendors.base import Adapter, ChatResult, ErrorClass, StreamDelta, VendorError  # noqa: E402
from gateway.vendors.sse import SSEParser  # noqa: E402
from tests.translate_util import fold  # noqa: E402

KEY = "mock-key-123"
MODELS = {"anthropic": "claude-sonnet-4-20250514", "gemini": "gemini-2.0-flash"}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


@pytest.fixture
async def mock():
    m = await start_mock(keys=[KEY])
    try:
        yield m
    finally:
        await m.stop()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def adapter(mock, kind: str, key: str = KEY) -> Adapter:
    return make_adapter(VendorConfig(kind, kind, mock.base_url(kind), api_key_env="X", api_key=key))


async def call(session, ad: Adapter, body: dict, *, stream: bool, prefill: str | None = None,
               model: str | None = None) -> Any:
    """One attempt the way the router makes it: ChatResult, (deltas, decoder) or a raised VendorError."""
    req = ad.chat_request(body, model or MODELS[ad.kind], stream=stream, prefill=prefill)
    async with session.request(req.method, req.url, headers=req.headers, data=req.body) as resp:
        if resp.status != 200:
            raise ad.classify_error(resp.status, resp.headers, await resp.read())
        if not stream:
            return ad.parse_chat(await resp.read())
        assert resp.headers["content-type"].startswith("text/event-stream")
        parser, dec = SSEParser(), ad.stream_decoder()
        deltas: list[StreamDelta] = []
        async for chunk in resp.content.iter_any():
            for event, data in parser.feed(chunk):
                deltas.extend(dec.feed(event, data))
        for event, data in parser.flush():
            deltas.extend(dec.feed(event, data))
        return deltas, dec


KINDS = ["anthropic", "gemini"]
HELLO = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "tell me about otters"}],
         "max_tokens": 64, "temperature": 0.3}


@pytest.mark.parametrize("kind", KINDS)
async def test_text_non_stream_and_stream_agree(mock, session, kind):
    ad = adapter(mock, kind)
    r: ChatResult = await call(session, ad, HELLO, stream=False)
    assert f"Hello from {kind}/{MODELS[kind]}." in r.message["content"]
    assert "otters" in r.message["content"] and r.finish_reason == "stop"
    u = r.usage
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]

    deltas, dec = await call(session, ad, HELLO, stream=True)
    f = fold(deltas)
    assert dec.done and dec.malformed == 0
    assert f["roles"] == ["assistant"] and deltas[0].delta == {"role": "assistant"}
    assert f["content"] == r.message["content"] and f["finish"] == "stop"
    assert f["usage"] == u
    assert sum(1 for d in deltas if d.delta and d.delta.get("content")) > 3  # really streamed in pieces


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip(mock, session, kind, stream):
    ad = adapter(mock, kind)
    body = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [TOOL], "tool_choice": "required"}
    if stream:
        deltas, dec = await call(session, ad, body, stream=True)
        f = fold(deltas)
        assert dec.done and f["finish"] == "tool_calls"
        (tc,) = f["tool_calls"]
        calls = [{"id": tc["id"], "type": "function", "function": {"name": tc["name"], "arguments": tc["arguments"]}}]
    else:
        r = await call(session, ad, body, stream=False)
        assert r.finish_reason == "tool_calls" and r.message["content"] is None
        calls = r.message["tool_calls"]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather" and calls[0]["id"]
    assert isinstance(orjson.loads(calls[0]["function"]["arguments"]), dict)

    # second turn: the tool result goes back (Gemini needs the name, found by id) and the model answers
    follow = {"messages": [*body["messages"], {"role": "assistant", "content": None, "tool_calls": calls},
                           {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp_c": 18}'}],
              "tools": [TOOL], "tool_choice": "auto"}
    r2 = await call(session, ad, follow, stream=False)
    assert r2.finish_reason == "stop" and r2.message["content"] and "tool_calls" not in r2.message
    # OpenAI lets a client drop `tools` once it has the results; the history must still be accepted
    bare = {"messages": follow["messages"]}
    r3 = await call(session, ad, bare, stream=stream)
    if stream:
        assert fold(r3[0])["finish"] == "stop"
    else:
        assert r3.finish_reason == "stop" and "tool_calls" not in r3.message


async def test_anthropic_prefill_accepted(mock, session):
    ad = adapter(mock, "anthropic")
    deltas, dec = await call(session, ad, HELLO, stream=True, prefill="Otters are ")
    assert dec.done and fold(deltas)["finish"] == "stop"


async def test_gemini_prefill_accepted(mock, session):
    ad = adapter(mock, "gemini")
    r = await call(session, ad, HELLO, stream=False, prefill="Otters are ")
    assert r.finish_reason == "stop"


@pytest.mark.parametrize("kind", KINDS)
async def test_probes(mock, session, kind):
    ad = adapter(mock, kind)
    p = ad.probe_request(MODELS[kind], "models")
    async with session.request(p.method, p.url, headers=p.headers, data=p.body) as resp:
        assert resp.status == 200
        listing = await resp.json()
    names = [m.get("id") or m.get("name") for m in (listing.get("data") or listing.get("models"))]
    assert any(MODELS[kind] in n for n in names)
    c = ad.probe_request(MODELS[kind], "completion")
    async with session.request(c.method, c.url, headers=c.headers, data=c.body) as resp:
        assert resp.status == 200
        r = ad.parse_chat(await resp.read())
    assert r.finish_reason == "length" and r.usage["completion_tokens"] <= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_key_is_misconfigured(mock, session, kind):
    with pytest.raises(VendorError) as ei:
        await call(session, adapter(mock, kind, key="wrong"), HELLO, stream=False)
    assert ei.value.cls is ErrorClass.MISCONFIGURED


FAULTS = [
    ("anthropic", dict(fault="error", status=529), ErrorClass.SERVER, None),
    ("anthropic", dict(fault="error", status=500), ErrorClass.SERVER, None),
    ("anthropic", dict(fault="error", status=429, retry_after=3), ErrorClass.THROTTLED, 3.0),
    ("anthropic", dict(fault="error", status=403), ErrorClass.MISCONFIGURED, None),
    ("anthropic", dict(fault="error", status=404), ErrorClass.MISCONFIGURED, None),
    ("anthropic", dict(fault="billing"), ErrorClass.MISCONFIGURED, None),
    ("anthropic", dict(fault="context_length"), ErrorClass.CONTEXT_LENGTH, None),
    ("anthropic", dict(fault="error", status=400), ErrorClass.BAD_REQUEST, None),
    ("gemini", dict(fault="error", status=429, retry_after=2), ErrorClass.THROTTLED, 2.0),
    ("gemini", dict(fault="error", status=503), ErrorClass.SERVER, None),
    ("gemini", dict(fault="error", status=500), ErrorClass.SERVER, None),
    ("gemini", dict(fault="error", status=403), ErrorClass.MISCONFIGURED, None),
    ("gemini", dict(fault="error", status=404), ErrorClass.MISCONFIGURED, None),
    ("gemini", dict(fault="auth"), ErrorClass.MISCONFIGURED, None),
    ("gemini", dict(fault="billing"), ErrorClass.MISCONFIGURED, None),
    ("gemini", dict(fault="context_length"), ErrorClass.CONTEXT_LENGTH, None),
    ("gemini", dict(fault="content_policy", status=400), ErrorClass.CONTENT_POLICY, None),
    ("anthropic", dict(fault="content_policy", status=400), ErrorClass.CONTENT_POLICY, None),
]


@pytest.mark.parametrize("kind,fault,cls,retry_after", FAULTS)
async def test_vendor_errors_classified(mock, session, kind, fault, cls, retry_after):
    mock.set_fault(model=MODELS[kind], **fault)
    for stream in (False, True):
        with pytest.raises(VendorError) as ei:
            await call(session, adapter(mock, kind), HELLO, stream=stream)
        assert ei.value.cls is cls, (stream, ei.value)
        assert ei.value.retry_after == retry_after


@pytest.mark.parametrize("kind", KINDS)
async def test_refusal_is_an_answer_with_content_filter(mock, session, kind):
    """Claude's stop_reason "refusal" and Gemini's finishReason SAFETY are answers, not errors."""
    mock.set_fault("content_policy", model=MODELS[kind])
    r = await call(session, adapter(mock, kind), HELLO, stream=False)
    assert r.finish_reason == "content_filter"
    deltas, dec = await call(session, adapter(mock, kind), HELLO, stream=True)
    assert fold(deltas)["finish"] == "content_filter" and dec.done


@pytest.mark.parametrize("kind,cls", [("anthropic", ErrorClass.SERVER), ("gemini", ErrorClass.SERVER)])
async def test_in_band_error_event_raises(mock, session, kind, cls):
    mock.set_fault("error_event", model=MODELS[kind], n=2)
    ad = adapter(mock, kind)
    req = ad.chat_request(HELLO, MODELS[kind], stream=True)
    parser, dec = SSEParser(), ad.stream_decoder()
    content = ""
    async with session.request(req.method, req.url, headers=req.headers, data=req.body) as resp:
        assert resp.status == 200
        with pytest.raises(VendorError) as ei:
            async for chunk in resp.content.iter_any():
                for event, data in parser.feed(chunk):
                    for d in dec.feed(event, data):
                        content += (d.delta or {}).get("content") or ""
    assert ei.value.cls is cls
    assert content and not dec.done  # tokens came first: the router applies the mid-stream rule


@pytest.mark.parametrize("kind", KINDS)
async def test_malformed_event_skipped_and_counted(mock, session, kind):
    mock.set_fault("malformed", model=MODELS[kind], n=2)
    deltas, dec = await call(session, adapter(mock, kind), HELLO, stream=True)
    f = fold(deltas)
    assert dec.malformed >= 1 and f["finish"] == "stop" and dec.done


@pytest.mark.parametrize("kind", KINDS)
async def test_image_and_json_mode_accepted(mock, session, kind):
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
        "response_format": {"type": "json_object"}, "stop": ["\n\n\n"]}
    r = await call(session, adapter(mock, kind), body, stream=False)
    assert r.finish_reason in ("stop", "length")
