"""Gemini adapter: OpenAI request -> generateContent call, and Gemini responses/streams/errors -> OpenAI.

Payload shapes follow the Gemini API reference (GenerateContentResponse,
google.rpc.Status errors with ErrorInfo/RetryInfo details). Requests we build
and the response fixtures are validated against the official `google-genai`
SDK's pydantic models (extra fields forbidden), so drift from the real wire
format fails here.
"""

from __future__ import annotations

import orjson
import pytest
from google.genai import types as gt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import VendorConfig
from gateway.vendors import make_adapter
from gateway.vendors.base import ErrorClass, UpstreamRequest, VendorError
from gateway.vendors.gemini import GeminiAdapter
from gateway.vendors.gemini_schema import to_gemini_schema
from tests.translate_util import decode, fold, request_bodies, vendor_json

VENDOR = VendorConfig("gemini", "gemini", "https://generativelanguage.googleapis.com", api_key_env="G",
                      api_key="AIza-test", headers={"x-goog-user-project": "proj"})
MODEL = "gemini-2.0-flash"


@pytest.fixture
def ad() -> GeminiAdapter:
    a = make_adapter(VENDOR)
    assert isinstance(a, GeminiAdapter) and a.kind == "gemini"
    return a


def body_of(req: UpstreamRequest) -> dict:
    return orjson.loads(req.body)


def validate_request(out: dict) -> None:
    """Every top-level field we send is a valid Gemini request field by the SDK's strict models."""
    assert set(out) <= {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig"}
    for c in out["contents"]:
        gt.Content.model_validate(c)
        assert c["role"] in ("user", "model") and c["parts"]
    if "systemInstruction" in out:
        gt.Content.model_validate(out["systemInstruction"])
    if "generationConfig" in out:
        gt.GenerationConfig.model_validate(out["generationConfig"])
    for t in out.get("tools", []):
        gt.Tool.model_validate(t)
    if "toolConfig" in out:
        gt.ToolConfig.model_validate(out["toolConfig"])


def translate(ad, body, stream=False, prefill=None) -> dict:
    out = body_of(ad.chat_request(body, MODEL, stream=stream, prefill=prefill))
    validate_request(out)
    return out


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"],
                   "enum": ["c", "f"]}}, "required": ["city"], "additionalProperties": False}}}


def test_urls_and_headers(ad):
    req = ad.chat_request({"messages": [{"role": "user", "content": "hi"}]}, MODEL, stream=False)
    assert req.method == "POST"
    assert req.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    assert req.headers["x-goog-api-key"] == "AIza-test"
    assert req.headers["x-goog-user-project"] == "proj"
    assert "key=" not in req.url and "authorization" not in req.headers
    s = ad.chat_request({"messages": [{"role": "user", "content": "hi"}]}, "models/gemini-2.5-pro", stream=True)
    assert s.url == ("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro"
                     ":streamGenerateContent?alt=sse")
    assert body_of(req) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    t = ad.chat_request({"messages": [{"role": "user", "content": "hi"}]}, "tunedModels/my-tune-1", stream=False)
    assert t.url == "https://generativelanguage.googleapis.com/v1beta/tunedModels/my-tune-1:generateContent"


REQUEST_CASES = [
    ("system and developer -> systemInstruction",
     {"messages": [{"role": "system", "content": "Be terse."}, {"role": "developer", "content": "No emoji."},
                   {"role": "user", "content": "hi"}]},
     {"systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "No emoji."}]},
      "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    ("roles user/model, same roles merged",
     {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]},
     {"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}, {"role": "model", "parts": [{"text": "c"}]}]}),
    ("tool calls and results: names looked up by id",
     {"messages": [{"role": "user", "content": "Paris and Rome?"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                       {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\": 18}"},
                   {"role": "tool", "tool_call_id": "call_b", "content": "12:00"}]},
     {"contents": [{"role": "user", "parts": [{"text": "Paris and Rome?"}]},
                   {"role": "model", "parts": [
                       {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "skip_thought_signature_validator"},
                       {"functionCall": {"name": "get_time", "args": {}}}]},
                   {"role": "user", "parts": [
                       {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                       {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}}]}]}),
    ("legacy function role uses its name",
     {"messages": [{"role": "user", "content": "x"}, {"role": "function", "name": "now", "content": "noon"}]},
     {"contents": [{"role": "user", "parts": [{"text": "x"}, {"functionResponse": {"name": "now", "response": {"result": "noon"}}}]}]}),
    ("generation config",
     {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "max_completion_tokens": 64, "temperature": 1.5,
      "top_p": 0.9, "stop": ["END", "STOP"], "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 7},
     {"generationConfig": {"maxOutputTokens": 64, "temperature": 1.5, "topP": 0.9, "stopSequences": ["END", "STOP"],
                           "presencePenalty": 0.5, "frequencyPenalty": -0.5, "seed": 7}}),
    ("64-bit seed folded into Gemini's int32", {"messages": [{"role": "user", "content": "hi"}], "seed": 2 ** 40 + 5},
     {"generationConfig": {"seed": 5}}),
    ("stop as a string", {"messages": [{"role": "user", "content": "hi"}], "stop": "END"},
     {"generationConfig": {"stopSequences": ["END"]}}),
    ("tools and schema conversion",
     {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}]},
     {"tools": [{"functionDeclarations": [
         {"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"},
                                                          "unit": {"type": "STRING", "nullable": True, "enum": ["c", "f"]}},
                         "required": ["city"]}},
         {"name": "now"}]}]}),
    ("tool_choice required", {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "required"},
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    ("tool_choice none", {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "none"},
     {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    ("tool_choice auto", {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": "auto"},
     {"toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}),
    ("tool_choice named",
     {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL],
      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}}),
    ("images, audio and pdf",
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "look"},
         {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
         {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.png?x=1"}},
         {"type": "image_url", "image_url": {"url": "https://example.com/noext"}},
         {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
         {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}]}]},
     {"contents": [{"role": "user", "parts": [
         {"text": "look"},
         {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
         {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a/cat.png?x=1"}},
         {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/noext"}},
         {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
         {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]}]}),
    ("json_object", {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
     {"generationConfig": {"responseMimeType": "application/json"}}),
    ("json_schema with $defs and anyOf",
     {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {
         "name": "person", "strict": True, "schema": {
             "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
             "properties": {"name": {"type": "string", "minLength": 1, "format": "email"},
                            "age": {"anyOf": [{"type": "integer", "format": "int32"}, {"type": "null"}]},
                            "pet": {"$ref": "#/$defs/Pet"},
                            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
             "required": ["name", "ghost"], "additionalProperties": False,
             "$defs": {"Pet": {"type": "object", "properties": {"kind": {"const": "cat"}}}}}}}},
     {"generationConfig": {"responseMimeType": "application/json", "responseSchema": {
         "type": "OBJECT", "required": ["name"],
         "properties": {"name": {"type": "STRING", "minLength": 1},
                        "age": {"nullable": True, "type": "INTEGER", "format": "int32"},
                        "pet": {"type": "OBJECT", "properties": {"kind": {"type": "STRING", "enum": ["cat"]}}},
                        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3}}}}}),
    ("only a system prompt becomes the user turn", {"messages": [{"role": "system", "content": "Say hi."}]},
     {"contents": [{"role": "user", "parts": [{"text": "Say hi."}]}]}),
]


@pytest.mark.parametrize("name,body,expect", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_translation(ad, name, body, expect):
    out = translate(ad, body)
    for key, value in expect.items():
        assert out.get(key) == value, (key, out.get(key))


def test_schema_validates_as_sdk_schema():
    conv = to_gemini_schema(REQUEST_CASES[-2][1]["response_format"]["json_schema"]["schema"])
    gt.Schema.model_validate(conv)
    # a recursive schema terminates and stays valid
    rec = {"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"}
    gt.Schema.model_validate(to_gemini_schema(rec))


def test_prefill_is_a_final_model_turn(ad):
    out = translate(ad, {"messages": [{"role": "user", "content": "Count."}]}, stream=True, prefill="One, two, ")
    assert out["contents"][-1] == {"role": "model", "parts": [{"text": "One, two, "}]}


def test_request_does_not_mutate_client_body(ad):
    body = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "tools": [WEATHER_TOOL],
            "response_format": {"type": "json_schema", "json_schema": {"schema": WEATHER_TOOL["function"]["parameters"]}}}
    snapshot = orjson.dumps(body)
    translate(ad, body, prefill="x")
    assert orjson.dumps(body) == snapshot


BAD_REQUESTS = [
    ({"messages": {"role": "user"}}, "'messages' must be an array"),
    ({"messages": []}, "at least one message"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_zz", "content": "x"}]}, "matches no earlier assistant tool call"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}]},
     "not valid JSON"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]},
     "base64"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": True}, "'temperature' must be a number"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}, "'seed' must be an integer"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"parameters": {}}}]},
     "function.name"),
]


@pytest.mark.parametrize("body,fragment", BAD_REQUESTS)
def test_bad_requests_are_client_errors(ad, body, fragment):
    with pytest.raises(VendorError) as ei:
        translate(ad, body)
    assert ei.value.cls is ErrorClass.BAD_REQUEST and ei.value.status == 400
    assert fragment in ei.value.message


def test_probe_requests(ad):
    p = ad.probe_request(MODEL, "models")
    assert (p.method, p.url, p.body) == ("GET", "https://generativelanguage.googleapis.com/v1beta/models", None)
    assert p.headers["x-goog-api-key"] == "AIza-test"
    c = ad.probe_request(MODEL, "completion")
    assert c.url.endswith("/v1beta/models/gemini-2.0-flash:generateContent")
    assert body_of(c)["generationConfig"] == {"maxOutputTokens": 1}


# --- non-streaming responses ----------------------------------------------------

TEXT_RESPONSE = {
    "candidates": [{"content": {"parts": [{"text": "The sky is blue because of Rayleigh scattering."}], "role": "model"},
                    "finishReason": "STOP", "avgLogprobs": -0.12, "index": 0}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 10, "totalTokenCount": 18,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
                      "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]},
    "modelVersion": "gemini-2.0-flash", "responseId": "Il0taoSYJ5Cez7"}

TOOL_RESPONSE = {
    "candidates": [{"content": {"parts": [
        {"text": "Let me think about lights.", "thought": True},
        {"functionCall": {"name": "set_light_values", "args": {"brightness": 25, "color_temp": "warm"}},
         "thoughtSignature": "CiQBVKhc7vB5"},
        {"functionCall": {"id": "fc-2", "name": "get_time", "args": {}}}], "role": "model"},
        "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 170,
                      "cachedContentTokenCount": 64, "thoughtsTokenCount": 50},
    "modelVersion": "gemini-2.5-flash"}

RESPONSE_CASES = [
    ("text", TEXT_RESPONSE, {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."}, "stop",
     {"prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 0}}),
    ("function calls with thoughts", TOOL_RESPONSE, None, "tool_calls",
     {"prompt_tokens": 100, "completion_tokens": 70, "total_tokens": 170, "prompt_tokens_details": {"cached_tokens": 64},
      "completion_tokens_details": {"reasoning_tokens": 50}}),
    ("max tokens", {**TEXT_RESPONSE, "candidates": [{**TEXT_RESPONSE["candidates"][0], "finishReason": "MAX_TOKENS"}]},
     None, "length", None),
    ("safety finish is an answer",
     {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": [
         {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]}],
      "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}},
     {"role": "assistant", "content": ""}, "content_filter", None),
    ("prohibited content", {"candidates": [{"finishReason": "PROHIBITED_CONTENT", "index": 0}]}, None, "content_filter", None),
    ("blocklist", {"candidates": [{"content": {"parts": [{"text": "Par"}], "role": "model"}, "finishReason": "BLOCKLIST"}]},
     {"role": "assistant", "content": "Par"}, "content_filter", None),
    ("blocked prompt", {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]},
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}, "modelVersion": "gemini-2.0-flash"},
     {"role": "assistant", "content": ""}, "content_filter",
     {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 0}}),
]


@pytest.mark.parametrize("name,resp,message,finish,usage", RESPONSE_CASES, ids=[c[0] for c in RESPONSE_CASES])
def test_response_translation(ad, name, resp, message, finish, usage):
    gt.GenerateContentResponse.model_validate(resp)  # fixture is a real response shape
    r = ad.parse_chat(orjson.dumps(resp))
    assert r.finish_reason == finish
    if message is not None:
        assert r.message == message
    if usage is not None:
        assert r.usage == usage


def test_function_call_response_details(ad):
    r = ad.parse_chat(orjson.dumps(TOOL_RESPONSE))
    m = r.message
    assert m["content"] is None and m["reasoning_content"] == "Let me think about lights."
    c0, c1 = m["tool_calls"]
    assert c0["id"].startswith("call_") and len(c0["id"]) > 10 and c0["type"] == "function"
    assert c0["function"]["name"] == "set_light_values"
    assert orjson.loads(c0["function"]["arguments"]) == {"brightness": 25, "color_temp": "warm"}
    assert c1["id"] == "fc-2"  # ids Gemini gives are kept
    again = ad.parse_chat(orjson.dumps(TOOL_RESPONSE)).message["tool_calls"][0]["id"]
    assert again != c0["id"]  # synthesised ids are unique


def test_multiple_candidates_become_extra_choices(ad):
    resp = {"candidates": [TEXT_RESPONSE["candidates"][0],
                           {"content": {"parts": [{"text": "Second."}], "role": "model"}, "finishReason": "MAX_TOKENS", "index": 1}]}
    r = ad.parse_chat(orjson.dumps(resp))
    assert r.extra_choices == [{"index": 1, "message": {"role": "assistant", "content": "Second."}, "finish_reason": "length"}]


@pytest.mark.parametrize("data", [b"<html>", b"[]", b"{}", b'{"candidates": [3]}'])
def test_unusable_200_is_protocol_error(ad, data):
    with pytest.raises(VendorError) as ei:
        ad.parse_chat(data)
    assert ei.value.cls is ErrorClass.PROTOCOL


# --- streams ----------------------------------------------------------------------

TEXT_STREAM = """data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.0-flash","responseId": "r1"}

data: {"candidates": [{"content": {"parts": [{"text": " sky is blue"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.0-flash","responseId": "r1"}

data: {"candidates": [{"content": {"parts": [{"text": "."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 5,"totalTokenCount": 13,"cachedContentTokenCount": 4,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}]},"modelVersion": "gemini-2.0-flash","responseId": "r1"}

"""

TOOL_STREAM = """data: {"candidates": [{"content": {"parts": [{"text": "Planning the call.", "thought": true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 30,"totalTokenCount": 30},"modelVersion": "gemini-2.5-flash"}

data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Paris"}},"thoughtSignature": "CiQBVKhc7vA="}, {"functionCall": {"name": "get_weather","args": {"city": "Rome"}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 30,"candidatesTokenCount": 12,"thoughtsTokenCount": 6,"totalTokenCount": 48},"modelVersion": "gemini-2.5-flash"}

"""


def _validate_stream_fixture(raw: str) -> None:
    from tests.translate_util import sse_events
    for _, data in sse_events(raw):
        gt.GenerateContentResponse.model_validate(orjson.loads(data))


def test_text_stream(ad):
    _validate_stream_fixture(TEXT_STREAM)
    dec = ad.stream_decoder()
    deltas = decode(dec, TEXT_STREAM)
    assert deltas[0].delta == {"role": "assistant"}
    f = fold(deltas)
    assert f["roles"] == ["assistant"] and f["content"] == "The sky is blue." and f["finish"] == "stop"
    assert f["usage"] == {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13,
                          "prompt_tokens_details": {"cached_tokens": 4}}
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage == f["usage"]
    assert dec.done and dec.malformed == 0


def test_tool_stream(ad):
    _validate_stream_fixture(TOOL_STREAM)
    dec = ad.stream_decoder()
    f = fold(decode(dec, TOOL_STREAM))
    assert f["reasoning"] == "Planning the call." and f["content"] == ""
    assert [(t["name"], orjson.loads(t["arguments"])) for t in f["tool_calls"]] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert all(t["id"].startswith("call_") for t in f["tool_calls"])
    assert f["tool_calls"][0]["id"] != f["tool_calls"][1]["id"]
    assert f["finish"] == "tool_calls"
    assert f["usage"]["completion_tokens"] == 18 and f["usage"]["completion_tokens_details"] == {"reasoning_tokens": 6}
    assert dec.done


def test_not_done_until_finish_reason(ad):
    dec = ad.stream_decoder()
    first = TEXT_STREAM.split("\n\n")[0] + "\n\n"
    f = fold(decode(dec, first))
    assert f["content"] == "The" and f["finish"] is None and not dec.done


@pytest.mark.parametrize("reason,finish", [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                           ("RECITATION", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
                                           ("BLOCKLIST", "content_filter"), ("SPII", "content_filter"),
                                           ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop")])
def test_stream_finish_reasons(ad, reason, finish):
    dec = ad.stream_decoder()
    deltas = dec.feed(None, orjson.dumps({"candidates": [{"finishReason": reason, "index": 0}]}).decode())
    assert deltas[-1].finish_reason == finish and dec.done


def test_stream_blocked_prompt(ad):
    dec = ad.stream_decoder()
    deltas = dec.feed(None, '{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, '
                            '"usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}')
    assert deltas[-1].finish_reason == "content_filter" and deltas[-1].usage["prompt_tokens"] == 5 and dec.done


def test_malformed_chunks_skipped_and_counted(ad):
    raw = TEXT_STREAM.replace('" sky is blue"}]', '" sky is blue"}', 1)  # broken JSON
    raw = raw.replace("data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \".\"}]",
                      "data: [1, 2]\n\ndata: {\"candidates\": [7]}\n\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \".\"}]")
    dec = ad.stream_decoder()
    f = fold(decode(dec, raw))
    assert dec.malformed == 3 and f["content"] == "The." and f["finish"] == "stop" and dec.done


def test_in_band_error_chunk_raises(ad):
    dec = ad.stream_decoder()
    dec.feed(None, TEXT_STREAM.split("\n\n")[0][6:])
    with pytest.raises(VendorError) as ei:
        dec.feed(None, '{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}')
    assert ei.value.cls is ErrorClass.SERVER and ei.value.status == 503


# --- errors -------------------------------------------------------------------------

def _gerr(code: int, status: str, message: str, details: list | None = None) -> bytes:
    err: dict = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return orjson.dumps({"error": err})


QUOTA_DETAILS = [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"}, "quotaValue": "15"}]},
    {"@type": "type.googleapis.com/google.rpc.Help", "links": [
        {"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]
KEY_DETAILS = [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
     "metadata": {"service": "generativelanguage.googleapis.com"}},
    {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
     "message": "API key not valid. Please pass a valid API key."}]

ERROR_CASES = [
    (429, {}, _gerr(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details.",
                    QUOTA_DETAILS), ErrorClass.THROTTLED, 2.0, None),
    (429, {"Retry-After": "5"}, _gerr(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
     ErrorClass.THROTTLED, 5.0, "RESOURCE_EXHAUSTED"),
    (429, {}, _gerr(429, "RESOURCE_EXHAUSTED", "quota", [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                          "retryDelay": "0.250s"}]), ErrorClass.THROTTLED, 0.25, None),
    (400, {}, _gerr(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", KEY_DETAILS),
     ErrorClass.MISCONFIGURED, None, "API_KEY_INVALID"),
    (403, {}, _gerr(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established "
                                              "identity). Please use API Key or other form of API consumer identity to call this API."),
     ErrorClass.MISCONFIGURED, None, "PERMISSION_DENIED"),
    (404, {}, _gerr(404, "NOT_FOUND", "models/gemini-nope is not found for API version v1beta, or is not supported for "
                                      "generateContent. Call ListModels to see the list of available models and their supported methods."),
     ErrorClass.MISCONFIGURED, None, "NOT_FOUND"),
    (503, {}, _gerr(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), ErrorClass.SERVER, None, "UNAVAILABLE"),
    (500, {}, _gerr(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                                     "https://developers.generativeai.google/guide/troubleshooting"),
     ErrorClass.SERVER, None, "INTERNAL"),
    (504, {}, _gerr(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."), ErrorClass.SERVER, None, None),
    (400, {}, _gerr(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens "
                                             "allowed (1048576)."), ErrorClass.CONTEXT_LENGTH, None, "INVALID_ARGUMENT"),
    (400, {}, _gerr(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n"),
     ErrorClass.BAD_REQUEST, None, "INVALID_ARGUMENT"),
    (400, {}, _gerr(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
     ErrorClass.MISCONFIGURED, None, None),
    (400, {}, b'[{"error": {"code": 400, "message": "API key expired. Please renew the API key.", "status": "INVALID_ARGUMENT"}}]',
     ErrorClass.MISCONFIGURED, None, None),
    (502, {}, b"<html><title>502 Bad Gateway</title></html>", ErrorClass.SERVER, None, None),
]


@pytest.mark.parametrize("status,headers,body,cls,retry_after,code", ERROR_CASES)
def test_classify_error(ad, status, headers, body, cls, retry_after, code):
    e = ad.classify_error(status, {k.lower(): v for k, v in headers.items()}, body)
    assert e.cls is cls and e.status == status and e.retry_after == retry_after and e.message
    if code is not None:
        assert e.code == code


# --- property: any OpenAI-ish body gives a request or a clean 400 ----------------------

REQUEST_BODIES = request_bodies(WEATHER_TOOL)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=REQUEST_BODIES, stream=st.booleans(), prefill=st.one_of(st.none(), st.text(max_size=8)))
def test_property_any_body_translates_or_is_a_clean_400(body, stream, prefill):
    ad = GeminiAdapter(VENDOR)
    try:
        req = ad.chat_request(body, MODEL, stream=stream, prefill=prefill)
    except VendorError as e:
        assert e.cls is ErrorClass.BAD_REQUEST and e.status == 400 and e.message
        return
    out = orjson.loads(req.body)
    assert out["contents"]
    roles = [c["role"] for c in out["contents"]]
    assert all(a != b for a, b in zip(roles, roles[1:]))


def _samples() -> list:
    from tests.translate_util import sse_events
    evs = [orjson.loads(d) for raw in (TEXT_STREAM, TOOL_STREAM) for _, d in sse_events(raw)]
    return [TEXT_RESPONSE, TOOL_RESPONSE, *evs, *(c[1] for c in RESPONSE_CASES),
            orjson.loads(_gerr(429, "RESOURCE_EXHAUSTED", "q", QUOTA_DETAILS))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(vendor_json(_samples()), min_size=1, max_size=6), status=st.sampled_from([400, 403, 429, 500]))
def test_property_vendor_garbage_never_crashes(data, status):
    """Whatever the vendor sends, parse/decode/classify give OpenAI shapes or a VendorError."""
    ad = GeminiAdapter(VENDOR)
    for d in data:
        try:
            r = ad.parse_chat(d.encode())
            assert r.message["role"] == "assistant"
            orjson.dumps(r.usage)
        except VendorError:
            pass
        e = ad.classify_error(status, {}, d.encode())
        assert isinstance(e, VendorError) and e.message
    dec = ad.stream_decoder()
    for d in data:
        try:
            for delta in dec.feed(None, d):
                assert delta.delta is None or isinstance(delta.delta, dict)
        except VendorError:
            pass
