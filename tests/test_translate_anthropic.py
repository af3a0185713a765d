"""Anthropic adapter: OpenAI request -> Messages API call, and Messages responses/streams/errors -> OpenAI.

Vendor payloads below follow the shapes in Anthropic's Messages and streaming
documentation (event order, field names, usage placement); the non-stream
bodies are also validated against the official `anthropic` SDK's models so a
fixture that drifted from the real wire format fails here.
"""

from __future__ import annotations

import anthropic.types as at
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import VendorConfig
from gateway.vendors import make_adapter
from gateway.vendors.anthropic import AnthropicAdapter
from gateway.vendors.base import ErrorClass, UpstreamRequest, VendorError
from tests.translate_util import decode, fold, request_bodies, vendor_json

VENDOR = VendorConfig("claude", "anthropic", "https://api.anthropic.com", api_key_env="K", api_key="sk-ant-test",
                      headers={"anthropic-beta": "prompt-caching-2024-07-31"})


@pytest.fixture
def ad() -> AnthropicAdapter:
    a = make_adapter(VENDOR)
    assert isinstance(a, AnthropicAdapter) and a.kind == "anthropic" and a.supports_prefill
    return a


def body_of(req: UpstreamRequest) -> dict:
    return orjson.loads(req.body)


def translate(ad, body, stream=False, prefill=None) -> dict:
    return body_of(ad.chat_request(body, "claude-sonnet-4-20250514", stream=stream, prefill=prefill))


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

# --- requests ---------------------------------------------------------------


def test_headers_url_and_required_fields(ad):
    req = ad.chat_request({"messages": [{"role": "user", "content": "hi"}]}, "claude-x", stream=False)
    assert req.method == "POST" and req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-test"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["anthropic-beta"] == "prompt-caching-2024-07-31"  # vendor extra headers
    assert "authorization" not in req.headers
    assert body_of(req) == {"model": "claude-x", "max_tokens": 4096,
                            "messages": [{"role": "user", "content": "hi"}]}
    assert body_of(ad.chat_request({"messages": [{"role": "user", "content": "hi"}]}, "m", stream=True))["stream"]


REQUEST_CASES = [
    ("system and developer hoisted",
     {"messages": [{"role": "system", "content": "Be terse."}, {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                   {"role": "user", "content": "hi"}]},
     {"system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "No emoji."}],
      "messages": [{"role": "user", "content": "hi"}]}),
    ("one system is a plain string",
     {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]},
     {"system": "Be terse.", "messages": [{"role": "user", "content": "hi"}]}),
    ("consecutive same roles merged",
     {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                   {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"}, {"role": "user", "content": "e"}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                   {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
                   {"role": "user", "content": "e"}]}),
    ("tool calls and results",
     {"messages": [{"role": "user", "content": "weather in Paris and Rome?"},
                   {"role": "assistant", "content": "Checking.", "tool_calls": [
                       {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                       {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                   {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
                   {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "25C"}]},
                   {"role": "user", "content": "thanks"}],
      "tools": [WEATHER_TOOL]},
     {"messages": [{"role": "user", "content": "weather in Paris and Rome?"},
                   {"role": "assistant", "content": [
                       {"type": "text", "text": "Checking."},
                       {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
                       {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}}]},
                   {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": "call_a", "content": "18C"},
                       {"type": "tool_result", "tool_use_id": "call_b", "content": "25C"},
                       {"type": "text", "text": "thanks"}]}],
      "tools": [{"name": "get_weather", "description": "Weather for a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}),
    ("tool ids with characters Anthropic refuses are sanitised consistently",
     {"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [{"id": "call:1.2", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                   {"role": "tool", "tool_call_id": "call:1.2", "content": ""}]},
     {"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1_2", "name": "f", "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1_2"}]}]}),
    ("tool history without tools: names declared, new calls forbidden",
     {"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "ok"}, {"role": "user", "content": "sum up"}]},
     {"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}], "tool_choice": {"type": "none"}}),
    ("tool result with an image",
     {"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": [
                       {"type": "text", "text": "screenshot:"},
                       {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
      "tools": [{"type": "function", "function": {"name": "shot"}}]},
     {"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "shot", "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": [
                       {"type": "text", "text": "screenshot:"},
                       {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}]}),
    ("sampling, stop and max_completion_tokens",
     {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 50, "max_tokens": 9,
      "temperature": 0.2, "stop": ["END", " "]},
     {"max_tokens": 50, "temperature": 0.2, "stop_sequences": ["END"], "messages": [{"role": "user", "content": "hi"}]}),
    ("temperature clamped to 1, top_p dropped when both given",
     {"messages": [{"role": "user", "content": "hi"}], "temperature": 1.7, "top_p": 0.5, "stop": "END"},
     {"temperature": 1.0, "stop_sequences": ["END"], "messages": [{"role": "user", "content": "hi"}]}),
    ("top_p alone",
     {"messages": [{"role": "user", "content": "hi"}], "top_p": 0.9, "max_tokens": 7, "user": "u-42"},
     {"top_p": 0.9, "max_tokens": 7, "metadata": {"user_id": "u-42"}, "messages": [{"role": "user", "content": "hi"}]}),
    ("tool_choice required + no parallel",
     {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "required",
      "parallel_tool_calls": False},
     {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}}),
    ("tool_choice named", {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL],
                           "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {"tool_choice": {"type": "tool", "name": "get_weather"}}),
    ("tool_choice none", {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "none",
                          "parallel_tool_calls": False},
     {"tool_choice": {"type": "none"}}),
    ("tool_choice auto", {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "auto"},
     {"tool_choice": {"type": "auto"}}),
    ("parallel false alone", {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL],
                              "parallel_tool_calls": False},
     {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ("tool without parameters gets an empty object schema",
     {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "now"}}]},
     {"tools": [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]}),
    ("images: data URL and http URL",
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "compare"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
         {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "compare"},
         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
         {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]}]}),
    ("pdf file part",
     {"messages": [{"role": "user", "content": [
         {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]}),
    ("empty and whitespace text is dropped (Anthropic refuses blank blocks)",
     {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "},
                   {"role": "assistant", "content": ""}, {"role": "user", "content": "again"}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}]}),
    ("only a system prompt becomes the user turn",
     {"messages": [{"role": "system", "content": "Say hi."}]},
     {"messages": [{"role": "user", "content": "Say hi."}]}),
    ("client prefill: trailing whitespace stripped",
     {"messages": [{"role": "user", "content": "list"}, {"role": "assistant", "content": "1. \n"}]},
     {"messages": [{"role": "user", "content": "list"}, {"role": "assistant", "content": "1."}]}),
    ("json_object: instruction appended to system",
     {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "x"}],
      "response_format": {"type": "json_object"}},
     {"system": [{"type": "text", "text": "S"}, {"type": "text", "text":
      "Respond with only a single valid JSON value and no other text, no Markdown code fences."}]}),
]


@pytest.mark.parametrize("name,body,expect", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_translation(ad, name, body, expect):
    out = translate(ad, body)
    for key, value in expect.items():
        assert out.get(key) == value, (key, out.get(key))
    assert out["model"] == "claude-sonnet-4-20250514"
    # What we send must be a valid Messages request by the official SDK's own types.
    pydantic.TypeAdapter(list[at.MessageParam]).validate_python(out["messages"])
    for t in out.get("tools", []):
        pydantic.TypeAdapter(at.ToolParam).validate_python(t)


def test_request_does_not_mutate_client_body(ad):
    body = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "tools": [WEATHER_TOOL]}
    snapshot = orjson.dumps(body)
    translate(ad, body, prefill="partial ")
    translate(ad, body)
    assert orjson.dumps(body) == snapshot


def test_json_schema_instruction_carries_schema(ad):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    out = translate(ad, {"messages": [{"role": "user", "content": "x"}],
                         "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}})
    assert isinstance(out["system"], str)
    assert out["system"].endswith(orjson.dumps(schema).decode())


def test_prefill_is_a_final_assistant_turn_without_trailing_space(ad):
    body = {"messages": [{"role": "user", "content": "Count to five."}]}
    out = translate(ad, body, stream=True, prefill="One, two, ")
    assert out["messages"][-1] == {"role": "assistant", "content": "One, two,"}
    assert out["stream"] is True
    # a trailing assistant in the client's history merges with the prefill, still alternating
    body2 = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "A"}]}
    out2 = translate(ad, body2, prefill="B ")
    assert out2["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "A"},
                                                                     {"type": "text", "text": "B"}]}


BAD_REQUESTS = [
    ({"messages": "hi"}, "'messages' must be an array"),
    ({"messages": []}, "at least one message"),
    ({"messages": [42]}, "messages[0] must be an object"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "content must be a string"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, "'video' is not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]},
     "not supported by Anthropic"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "data: URL or an http"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]},
     "not valid JSON"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]},
     "JSON object"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "'max_tokens' must be at least 1"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, "'max_tokens' must be an integer"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "'temperature' must be a number"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "'stop'"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {}}]}, "only function tools"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}, "response_format.type"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 1, "metadata": {"k": 2 ** 70}},
     None),  # unknown fields are ignored, not forwarded
]


@pytest.mark.parametrize("body,fragment", BAD_REQUESTS)
def test_bad_requests_are_client_errors(ad, body, fragment):
    if fragment is None:
        translate(ad, body)
        return
    with pytest.raises(VendorError) as ei:
        translate(ad, body)
    assert ei.value.cls is ErrorClass.BAD_REQUEST and ei.value.status == 400
    assert fragment in ei.value.message


def test_probe_requests(ad):
    p = ad.probe_request("claude-x", "models")
    assert (p.method, p.url, p.body) == ("GET", "https://api.anthropic.com/v1/models", None)
    assert p.headers["x-api-key"] == "sk-ant-test"
    c = ad.probe_request("claude-x", "completion")
    assert c.method == "POST" and c.url.endswith("/v1/messages")
    assert body_of(c) == {"model": "claude-x", "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}


# --- non-streaming responses --------------------------------------------------

TEXT_RESPONSE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}

TOOL_RESPONSE = {
    "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather; call the tool.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
        {"type": "text", "text": "I'll check the weather in San Francisco."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "celsius"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 120, "output_tokens": 60, "cache_creation_input_tokens": 30, "cache_read_input_tokens": 1000}}

RESPONSE_CASES = [
    ("text", TEXT_RESPONSE,
     {"role": "assistant", "content": "Hi! My name is Claude."}, "stop",
     {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598, "prompt_tokens_details": {"cached_tokens": 0}}),
    ("tool use with thinking and cache", TOOL_RESPONSE,
     {"role": "assistant", "content": "I'll check the weather in San Francisco.",
      "reasoning_content": "The user wants weather; call the tool.",
      "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
          "name": "get_weather", "arguments": '{"location":"San Francisco, CA","unit":"celsius"}'}}]},
     "tool_calls",
     {"prompt_tokens": 1150, "completion_tokens": 60, "total_tokens": 1210, "prompt_tokens_details": {"cached_tokens": 1000}}),
    ("max_tokens", {**TEXT_RESPONSE, "stop_reason": "max_tokens"}, None, "length", None),
    ("stop_sequence", {**TEXT_RESPONSE, "stop_reason": "stop_sequence", "stop_sequence": "END"}, None, "stop", None),
    ("refusal", {**TEXT_RESPONSE, "stop_reason": "refusal", "content": []},
     {"role": "assistant", "content": ""}, "content_filter", None),
    ("tool only: content null", {**TOOL_RESPONSE, "content": TOOL_RESPONSE["content"][2:]}, None, "tool_calls", None),
]


@pytest.mark.parametrize("name,resp,message,finish,usage", RESPONSE_CASES, ids=[c[0] for c in RESPONSE_CASES])
def test_response_translation(ad, name, resp, message, finish, usage):
    at.Message.model_validate(resp)  # the fixture is a real Messages response shape
    r = ad.parse_chat(orjson.dumps(resp))
    assert r.finish_reason == finish
    if message is not None:
        assert r.message == message
    if usage is not None:
        assert r.usage == usage
    if name.startswith("tool only"):
        assert r.message["content"] is None and len(r.message["tool_calls"]) == 1
    assert orjson.loads(r.message["tool_calls"][0]["function"]["arguments"]) if "tool_calls" in r.message else True


@pytest.mark.parametrize("data", [b"not json", b"[1,2]", b'{"type":"message"}', b'{"content": "x"}'])
def test_unusable_200_is_protocol_error(ad, data):
    with pytest.raises(VendorError) as ei:
        ad.parse_chat(data)
    assert ei.value.cls is ErrorClass.PROTOCOL


def test_error_object_in_200_body(ad):
    with pytest.raises(VendorError) as ei:
        ad.parse_chat(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    assert ei.value.cls is ErrorClass.SERVER


# --- streams ----------------------------------------------------------------

TEXT_STREAM = """event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-20250514", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"""

TOOL_STREAM = """event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Need the weather tool."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":", let's check."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisco, CA\\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":", \\"unit\\": \\"fahrenheit\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":3}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""


def _validate_stream_fixture(raw: str) -> None:
    ta = pydantic.TypeAdapter(at.RawMessageStreamEvent)
    from tests.translate_util import sse_events
    for event, data in sse_events(raw):
        if event in ("ping", "error"):
            continue
        obj = ta.validate_python(orjson.loads(data))
        assert obj.type == event


def test_text_stream(ad):
    _validate_stream_fixture(TEXT_STREAM)
    dec = ad.stream_decoder()
    deltas = decode(dec, TEXT_STREAM)
    assert deltas[0].delta == {"role": "assistant"}
    f = fold(deltas)
    assert f["roles"] == ["assistant"]
    assert f["content"] == "Hello!" and f["finish"] == "stop" and f["tool_calls"] == []
    assert f["usage"] == {"prompt_tokens": 35, "completion_tokens": 15, "total_tokens": 50,
                          "prompt_tokens_details": {"cached_tokens": 10}}
    assert dec.done and dec.malformed == 0
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None  # usage on the final delta


def test_tool_stream_with_thinking(ad):
    _validate_stream_fixture(TOOL_STREAM)
    dec = ad.stream_decoder()
    deltas = decode(dec, TOOL_STREAM)
    f = fold(deltas)
    assert f["reasoning"] == "Need the weather tool."
    assert f["content"] == "Okay, let's check."
    assert f["tool_calls"] == [
        {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
         "arguments": '{"location": "San Francisco, CA", "unit": "fahrenheit"}'},
        {"id": "toolu_02", "name": "get_time", "arguments": "{}"}]
    assert orjson.loads(f["tool_calls"][0]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert f["finish"] == "tool_calls"
    assert f["usage"]["prompt_tokens"] == 472 and f["usage"]["completion_tokens"] == 89
    first_tool = next(d for d in deltas if d.delta and d.delta.get("tool_calls"))
    assert first_tool.delta["tool_calls"][0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                                                 "function": {"name": "get_weather", "arguments": ""}}
    assert dec.done


def test_malformed_events_are_skipped_and_counted(ad):
    broken = TEXT_STREAM.replace('"text": "!"}}', '"text": "!"', 1)  # truncated JSON
    broken = broken.replace('event: ping\ndata: {"type": "ping"}',
                            'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": 7}')
    dec = ad.stream_decoder()
    f = fold(decode(dec, broken))
    assert dec.malformed == 2
    assert f["content"] == "Hello" and f["finish"] == "stop" and dec.done


def test_unknown_events_are_ignored_not_counted(ad):
    extra = TEXT_STREAM.replace("event: ping", "event: future_thing\ndata: {\"type\": \"future_thing\"}\n\nevent: ping")
    dec = ad.stream_decoder()
    assert fold(decode(dec, extra))["content"] == "Hello!"
    assert dec.malformed == 0


@pytest.mark.parametrize("etype,cls", [("overloaded_error", ErrorClass.SERVER), ("rate_limit_error", ErrorClass.THROTTLED),
                                       ("api_error", ErrorClass.SERVER)])
def test_error_event_raises(ad, etype, cls):
    raw = TEXT_STREAM.split("event: content_block_start")[0] + (
        f'event: error\ndata: {{"type": "error", "error": {{"type": "{etype}", "message": "Overloaded"}}}}\n\n')
    dec = ad.stream_decoder()
    with pytest.raises(VendorError) as ei:
        decode(dec, raw)
    assert ei.value.cls is cls and ei.value.code == etype and ei.value.message == "Overloaded"
    assert not dec.done


def test_stream_without_message_stop_is_not_done(ad):
    dec = ad.stream_decoder()
    f = fold(decode(dec, TEXT_STREAM.split("event: message_stop")[0]))
    assert f["finish"] == "stop" and not dec.done  # the router finishes promptly on EOF after a finish


@pytest.mark.parametrize("stop,finish", [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                         ("tool_use", "tool_calls"), ("refusal", "content_filter"),
                                         ("pause_turn", "stop"), ("model_context_window_exceeded", "length")])
def test_stream_finish_reasons(ad, stop, finish):
    dec = ad.stream_decoder()
    deltas = dec.feed("message_delta", orjson.dumps({"type": "message_delta", "delta": {"stop_reason": stop},
                                                     "usage": {"output_tokens": 3}}).decode())
    assert deltas[-1].finish_reason == finish


# --- errors -----------------------------------------------------------------

def _err(etype: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})


ERROR_CASES = [
    (529, {}, _err("overloaded_error", "Overloaded"), ErrorClass.SERVER, None),
    (529, {"retry-after": "3"}, _err("overloaded_error", "Overloaded"), ErrorClass.SERVER, 3.0),
    (500, {}, _err("api_error", "Internal server error"), ErrorClass.SERVER, None),
    (429, {"retry-after": "7", "anthropic-ratelimit-requests-remaining": "0"},
     _err("rate_limit_error", "This request would exceed the rate limit for your organization of 50 requests per minute."),
     ErrorClass.THROTTLED, 7.0),
    (429, {}, _err("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
     ErrorClass.THROTTLED, None),
    (401, {}, _err("authentication_error", "invalid x-api-key"), ErrorClass.MISCONFIGURED, None),
    (403, {}, _err("permission_error", "Your API key does not have permission to use the specified resource."),
     ErrorClass.MISCONFIGURED, None),
    (404, {}, _err("not_found_error", "model: claude-nope"), ErrorClass.MISCONFIGURED, None),
    (400, {}, _err("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
     ErrorClass.CONTEXT_LENGTH, None),
    (400, {}, _err("invalid_request_error", "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000"),
     ErrorClass.CONTEXT_LENGTH, None),
    (400, {}, _err("invalid_request_error", "messages.1.content.0.text: text content blocks must be non-empty"),
     ErrorClass.BAD_REQUEST, None),
    (400, {}, _err("invalid_request_error", "Your credit balance is too low to access the Anthropic API. "
                                            "Please go to Plans & Billing to upgrade or purchase credits."),
     ErrorClass.MISCONFIGURED, None),
    (400, {}, _err("invalid_request_error", "Output blocked by content filtering policy"), ErrorClass.CONTENT_POLICY, None),
    (402, {}, _err("billing_error", "Your credit balance is too low to access the Anthropic API."),
     ErrorClass.MISCONFIGURED, None),
    (413, {}, _err("request_too_large", "Request exceeds the maximum allowed number of bytes."), ErrorClass.BAD_REQUEST, None),
    (502, {}, b"<html>Bad Gateway</html>", ErrorClass.SERVER, None),
]


@pytest.mark.parametrize("status,headers,body,cls,retry_after", ERROR_CASES)
def test_classify_error(ad, status, headers, body, cls, retry_after):
    e = ad.classify_error(status, headers, body)
    assert e.cls is cls and e.status == status
    assert e.retry_after == retry_after
    assert e.message and "sk-ant" not in e.message


def test_classify_error_reads_aiohttp_headers(ad):
    from multidict import CIMultiDict, CIMultiDictProxy
    h = CIMultiDictProxy(CIMultiDict({"Retry-After": "2"}))
    assert ad.classify_error(429, h, _err("rate_limit_error", "slow down")).retry_after == 2.0


# --- property: any OpenAI-ish body gives a request or a clean 400 ----------------

REQUEST_BODIES = request_bodies(WEATHER_TOOL)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=REQUEST_BODIES, stream=st.booleans(), prefill=st.one_of(st.none(), st.text(max_size=8)))
def test_property_any_body_translates_or_is_a_clean_400(body, stream, prefill):
    ad = AnthropicAdapter(VENDOR)
    try:
        req = ad.chat_request(body, "claude-x", stream=stream, prefill=prefill)
    except VendorError as e:
        assert e.cls is ErrorClass.BAD_REQUEST and e.status == 400 and e.message
        return
    out = orjson.loads(req.body)
    assert out["messages"] and out["max_tokens"] >= 1
    roles = [m["role"] for m in out["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:])), "roles must alternate"


def _samples() -> list:
    from tests.translate_util import sse_events
    evs = [orjson.loads(d) for raw in (TEXT_STREAM, TOOL_STREAM) for _, d in sse_events(raw)]
    return [TEXT_RESPONSE, TOOL_RESPONSE, *evs, {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(vendor_json(_samples()), min_size=1, max_size=6),
       events=st.lists(st.sampled_from([None, "message_start", "content_block_delta", "error", "ping", "x"]),
                       min_size=6, max_size=6))
def test_property_vendor_garbage_never_crashes(data, events):
    """Whatever the vendor sends, parse_chat and the decoder give OpenAI shapes or a VendorError."""
    ad = AnthropicAdapter(VENDOR)
    for d in data:
        try:
            r = ad.parse_chat(d.encode())
            assert r.message["role"] == "assistant"
            orjson.dumps(r.usage)
        except VendorError:
            pass
    dec = ad.stream_decoder()
    for ev, d in zip(events, data):
        try:
            for delta in dec.feed(ev, d):
                assert delta.delta is None or isinstance(delta.delta, dict)
        except VendorError:
            pass
