"""Property-based bad input: whatever arrives, Patchbay answers with a result or a clear error.

Four surfaces take input Patchbay does not control: the client's chat request
(validate_chat, then the whole HTTP path through a real gateway), the three
translators (a client body going out, vendor bytes and stream events coming
back) and the config loader. Each property is "a value of the documented
shape or the documented error type, never anything else", because anything
else is a 500 to a client, a dead stream or a traceback at start.

Example counts are bounded so the file runs in well under 30 s on two cores;
the per-adapter table and property tests in test_translate_*.py go deeper on
translation correctness, these go wider on shapes.
"""

from __future__ import annotations

import math
import string
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from gateway.config import Config, VendorConfig
from gateway.config_load import ConfigError, load_config, parse_config
from gateway.doors.chat import error_body
from gateway.doors.chat import validate as validate_chat
from gateway.routing.call import ClientError
from gateway.vendors import make_adapter
from gateway.vendors.base import ChatResult, StreamDelta, UpstreamRequest, VendorError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- strategies

# What orjson.loads can hand the server: ints up to 64 bits (bigger become floats), finite floats.
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=12)


def sometimes(good: Any) -> Any:
    """Usually the plausible value, sometimes arbitrary JSON in its place."""
    return st.one_of(good, good, good, _json)


_text = st.text(max_size=16)
_url = st.sampled_from(["data:image/png;base64,iVBORw0KGgo=", "https://example.test/cat.png", "data:,",
                        "data:;base64,", "ftp://x", "", "data:image/png,raw"])
_part = sometimes(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": sometimes(_text)}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": sometimes(st.fixed_dictionaries({"url": sometimes(_url)},
                                                                        optional={"detail": _text}))}),
    st.fixed_dictionaries({"type": sometimes(st.sampled_from(["input_audio", "file", "refusal", "video"]))},
                          optional={"input_audio": _json, "file": _json, "refusal": _text}),
))
_content = sometimes(st.one_of(_text, st.lists(_part, max_size=3), st.none()))
_call = sometimes(st.fixed_dictionaries(
    {"id": sometimes(st.sampled_from(["call_1", "call_2", ""])), "type": sometimes(st.just("function")),
     "function": sometimes(st.fixed_dictionaries({"name": sometimes(st.sampled_from(["f", "get_weather", ""])),
                                                  "arguments": sometimes(st.sampled_from(
                                                      ['{"city": "Oslo"}', "{}", "", "{", "[1]", "null"]))}))}))
_role = sometimes(st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]))
_message = sometimes(st.fixed_dictionaries({"role": _role}, optional={
    "content": _content, "tool_calls": sometimes(st.lists(_call, max_size=2)),
    "tool_call_id": sometimes(st.sampled_from(["call_1", "call_9"])), "name": _text}))
_tool = sometimes(st.fixed_dictionaries({"type": sometimes(st.just("function")), "function": sometimes(
    st.fixed_dictionaries({"name": sometimes(st.sampled_from(["f", "get_weather"]))},
                          optional={"description": _text, "parameters": _json}))}))
MODELS = ["chat", "openai/gpt-4.1", "anthropic/claude-sonnet-4", "gemini/gemini-2.0-flash", "nope"]

CHAT_BODIES = st.fixed_dictionaries(
    {"model": sometimes(st.sampled_from(MODELS)), "messages": sometimes(st.lists(_message, max_size=4))},
    optional={
        "stream": sometimes(st.booleans()),
        "stream_options": sometimes(st.fixed_dictionaries({"include_usage": sometimes(st.booleans())})),
        "max_tokens": sometimes(st.integers(-5, 10 ** 7)), "max_completion_tokens": sometimes(st.integers(-5, 99)),
        "temperature": sometimes(st.floats(-1, 3)), "top_p": sometimes(st.floats(-1, 2)),
        "stop": sometimes(st.one_of(_text, st.lists(_text, max_size=5))),
        "tools": sometimes(st.lists(_tool, max_size=3)),
        "tool_choice": sometimes(st.one_of(st.sampled_from(["auto", "none", "required", "any"]),
                                           st.just({"type": "function", "function": {"name": "f"}}))),
        "parallel_tool_calls": sometimes(st.booleans()), "n": sometimes(st.integers(0, 3)),
        "response_format": sometimes(st.sampled_from([{"type": "json_object"}, {"type": "text"},
                                                      {"type": "json_schema", "json_schema": {"name": "s"}},
                                                      {"type": "json_schema",
                                                       "json_schema": {"schema": {"type": "object"}}},
                                                      {"type": "xml"}])),
        "user": sometimes(_text), "seed": sometimes(st.integers(-2 ** 63, 2 ** 63 - 1)),
        "logprobs": sometimes(st.booleans()), "metadata": sometimes(st.dictionaries(_text, _text, max_size=2)),
    })
ANY_BODY = st.one_of(CHAT_BODIES, CHAT_BODIES, _json)

# Bodies validate_chat lets through (right top-level types), with anything inside the messages:
# what an adapter can actually be handed.
_ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])
ADAPTER_BODIES = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS[:4]),
     "messages": st.lists(st.fixed_dictionaries({"role": _ROLES}, optional={
         "content": st.one_of(_text, st.lists(_part, max_size=3), st.none()),
         "tool_calls": sometimes(st.lists(_call, max_size=2)),
         "tool_call_id": sometimes(st.sampled_from(["call_1", "call_9"])), "name": sometimes(_text)}),
         min_size=1, max_size=5)},
    optional={
        "max_tokens": st.integers(-5, 10 ** 7), "max_completion_tokens": st.integers(-5, 2 ** 63),
        "temperature": st.floats(-1e300, 1e300), "top_p": st.floats(-1, 2),
        "stop": st.one_of(_text, st.lists(sometimes(_text), max_size=5)),
        "tools": st.lists(_tool, max_size=3),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required", "any"]),
                                 st.dictionaries(st.sampled_from(["type", "function"]), _json, max_size=2),
                                 st.just({"type": "function", "function": {"name": "f"}})),
        "parallel_tool_calls": st.booleans(),
        "response_format": st.one_of(st.dictionaries(st.sampled_from(["type", "json_schema"]), _json, max_size=2),
                                     st.sampled_from([{"type": "json_object"},
                                                      {"type": "json_schema", "json_schema": {"schema": {
                                                          "type": "object", "properties": {"a": {"$ref": "#/x"}}}}}])),
        "user": _text, "seed": st.integers(-2 ** 63, 2 ** 63 - 1),
        "metadata": st.dictionaries(_text, _json, max_size=2),
        "stream_options": st.dictionaries(st.sampled_from(["include_usage", "x"]), _json, max_size=2),
        "stream": st.booleans(),
    })


def _vendor(kind: str) -> VendorConfig:
    base = {"openai": "http://127.0.0.1:9/v1", "anthropic": "http://127.0.0.1:9", "gemini": "http://127.0.0.1:9"}
    return VendorConfig(name=kind, kind=kind, base_url=base[kind], api_key=f"{kind}-fuzz-key")


ADAPTERS = {kind: make_adapter(_vendor(kind)) for kind in ("openai", "anthropic", "gemini")}

# ----------------------------------------------------------------------------- validate_chat


@FAST
@given(body=ANY_BODY)
def test_validate_chat_accepts_or_raises_a_client_error(body: Any) -> None:
    try:
        validate_chat(body)
    except ClientError as ce:
        assert 400 <= ce.status < 500
        err = orjson.loads(error_body(ce))["error"]
        assert isinstance(err["message"], str) and err["message"]
        return
    # accepted: what the router relies on without checking again
    assert isinstance(body, dict) and isinstance(body["model"], str)
    assert isinstance(body["messages"], list) and body["messages"]
    assert all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in body["messages"])


# ----------------------------------------------------------------------------- translators


def _check_delta(d: Any) -> None:
    """A StreamDelta the router can fold and re-encode without checking types again."""
    assert isinstance(d, StreamDelta)
    assert d.delta is None or isinstance(d.delta, dict)
    assert d.finish_reason is None or isinstance(d.finish_reason, str)
    _check_usage(d.usage)
    d.has_content  # noqa: B018 - must not raise


def _check_usage(u: Any) -> None:
    assert u is None or isinstance(u, dict), u
    if u:
        for k in ("prompt_tokens", "completion_tokens"):
            v = u.get(k)
            assert v is None or (isinstance(v, int) and not isinstance(v, bool)), u


@FAST
@pytest.mark.parametrize("kind", ADAPTERS)
@given(body=ADAPTER_BODIES, stream=st.booleans(), prefill=st.one_of(st.none(), _text))
def test_chat_request_builds_a_request_or_refuses_with_a_vendor_error(kind: str, body: Any, stream: bool,
                                                                      prefill: str | None) -> None:
    """Only bodies validate_chat accepted reach an adapter; from there it is a request or a 400."""
    try:
        validate_chat(body)
    except ClientError:
        assume(False)
    try:
        req = ADAPTERS[kind].chat_request(body, "m-1", stream=stream, prefill=prefill)
    except VendorError as ve:
        assert ve.status == 400 and ve.message
        return
    assert isinstance(req, UpstreamRequest) and req.method == "POST"
    assert isinstance(orjson.loads(req.body), dict)


_samples = {
    "openai": {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "hi", "tool_calls": [{"id": "c", "type": "function",
                                                             "function": {"name": "f", "arguments": "{}"}}]},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
    "anthropic": {"id": "msg", "type": "message", "role": "assistant", "content": [
        {"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
        {"type": "thinking", "thinking": "hm"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 2}},
    "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}, {"functionCall": {
        "name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}},
}


@st.composite
def _mutated(draw: Any, sample: Any) -> Any:
    """A real payload with keys dropped and values swapped for arbitrary JSON at any depth."""
    if isinstance(sample, dict):
        return {k: draw(_mutated(v)) if draw(st.integers(0, 4)) else draw(_json)
                for k, v in sample.items() if draw(st.integers(0, 6))}
    if isinstance(sample, list):
        return [draw(_mutated(v)) for v in sample if draw(st.integers(0, 6))]
    return draw(_json) if draw(st.integers(0, 3)) == 0 else sample


def _vendor_bytes(kind: str) -> Any:
    return st.one_of(st.binary(max_size=64), _json.map(orjson.dumps),
                     _mutated(_samples[kind]).map(orjson.dumps), _mutated(_samples[kind]).map(orjson.dumps))


def _check_result(res: Any) -> None:
    assert isinstance(res, ChatResult)
    assert isinstance(res.message, dict)
    assert res.finish_reason is None or isinstance(res.finish_reason, str)
    _check_usage(res.usage)
    assert isinstance(res.extra_choices, list)
    orjson.dumps(res.message)        # the router re-encodes it as the client's answer


@FAST
@pytest.mark.parametrize("kind", ADAPTERS)
@given(data=st.data())
def test_parse_chat_returns_a_result_or_a_vendor_error(kind: str, data: Any) -> None:
    raw = data.draw(_vendor_bytes(kind))
    try:
        res = ADAPTERS[kind].parse_chat(raw)
    except VendorError:
        return
    _check_result(res)


_stream_samples = {
    "openai": [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
               {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
                             "finish_reason": "tool_calls"}]},
               {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
               {"error": {"message": "overloaded", "type": "server_error"}}],
    "anthropic": [{"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 0}}},
                  {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t",
                                                                                "name": "f"}},
                  {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta",
                                                                        "partial_json": "{\"a"}},
                  {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "hi"}},
                  {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
                  {"type": "message_stop"}, {"type": "ping"},
                  {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}],
    "gemini": [{"candidates": [{"content": {"parts": [{"text": "hi"}]}}]},
               {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]},
                                "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 2}},
               {"promptFeedback": {"blockReason": "SAFETY"}},
               {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}}],
}
_EVENT_NAMES = st.one_of(st.none(), st.sampled_from(["message", "message_start", "content_block_delta", "error",
                                                     "ping", "message_stop"]), _text)


def _events(kind: str) -> Any:
    data = st.one_of(st.text(max_size=24), st.just("[DONE]"), _json.map(lambda v: orjson.dumps(v).decode()),
                     st.sampled_from(_stream_samples[kind]).flatmap(_mutated).map(lambda v: orjson.dumps(v).decode()),
                     st.sampled_from(_stream_samples[kind]).map(lambda v: orjson.dumps(v).decode()))
    return st.lists(st.tuples(_EVENT_NAMES, data), min_size=1, max_size=8)


@FAST
@pytest.mark.parametrize("kind", ADAPTERS)
@given(data=st.data())
def test_stream_decoder_yields_deltas_or_a_vendor_error(kind: str, data: Any) -> None:
    events = data.draw(_events(kind))
    decoder = ADAPTERS[kind].stream_decoder()
    for name, payload in events:
        try:
            deltas = decoder.feed(name, payload)
        except VendorError:
            return                   # an in-band error ends the attempt; the router fails over
        assert isinstance(deltas, list)
        for d in deltas:
            _check_delta(d)
    assert decoder.malformed >= 0


@FAST
@pytest.mark.parametrize("kind", ADAPTERS)
@given(status=st.integers(100, 599), retry_after=st.one_of(st.none(), _text, st.sampled_from(
    ["1", "0.5", "-3", "1e309", "nan", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"])),
       data=st.data())
def test_classify_error_always_gives_a_classified_vendor_error(kind: str, status: int, retry_after: Any,
                                                               data: Any) -> None:
    body = data.draw(st.one_of(st.binary(max_size=48), _json.map(orjson.dumps),
                               st.just(b'{"error": {"message": "x", "type": "overloaded_error"}}'),
                               st.just(b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": '
                                       b'[{"@type": "type.googleapis.com/google.rpc.RetryInfo", '
                                       b'"retryDelay": "1e999s"}]}}')))
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    ve = ADAPTERS[kind].classify_error(status, headers, body)
    assert isinstance(ve, VendorError)
    assert isinstance(ve.message, str)
    if ve.retry_after is not None:
        assert ve.retry_after >= 0 and not math.isnan(ve.retry_after)


# ----------------------------------------------------------------------------- config

_toml_scalar = st.one_of(st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(),
                         st.text(max_size=12), st.datetimes().map(lambda d: d),
                         st.sampled_from(["127.0.0.1:0", "127.0.0.1:99999", "h:²", ":1", "[::1]:4000", "x:-1",
                                          "http://x", "https://x/", "openai", "anthropic", "gemini", "models",
                                          "completion"]))
_toml = st.recursive(_toml_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=10)
_section_keys = {
    "server": ["listen", "admin_listen", "client_keys_env", "admin_token_env", "max_body_bytes"],
    "store": ["path", "retention_days", "log_bodies"], "timeouts": ["connect", "first_byte", "idle", "total"],
    "retry": ["max_attempts_per_target", "backoff_base", "backoff_max", "retry_after_max"],
    "breaker": ["failures_to_open", "cooldown"], "prober": ["interval", "mode", "enabled"],
}


def _section(keys: list[str]) -> Any:
    return sometimes(st.dictionaries(st.one_of(st.sampled_from(keys), _text), _toml, max_size=4))


_vendor_table = sometimes(st.dictionaries(
    st.sampled_from(["kind", "base_url", "api_key_env", "headers", "extra"]),
    st.one_of(st.sampled_from(["openai", "anthropic", "gemini", "soap", "http://v.test/v1", "KEY_SET", "KEY_UNSET"]),
              _toml), max_size=5))
_target = sometimes(st.dictionaries(st.sampled_from(["vendor", "model", "prefill", "context_window", "weight"]),
                                    st.one_of(st.sampled_from(["a", "b", "m", "", "a/m"]), _toml), max_size=4))
_route = sometimes(st.dictionaries(st.sampled_from(["name", "targets", "fallback_response", "x"]),
                                   st.one_of(st.sampled_from(["chat", "a/m", ""]), st.lists(_target, max_size=3),
                                             _toml), max_size=3))
CONFIGS = st.fixed_dictionaries({}, optional={
    **{name: _section(keys) for name, keys in _section_keys.items()},
    "vendors": sometimes(st.dictionaries(st.sampled_from(["a", "b", "c"]), _vendor_table, max_size=3)),
    "routes": sometimes(st.lists(_route, max_size=3)),
    "prices": sometimes(st.dictionaries(st.sampled_from(["a/m", "b/m"]), sometimes(
        st.dictionaries(st.sampled_from(["input", "output", "cached"]), _toml, max_size=2)), max_size=2)),
    "extra": _toml,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=CONFIGS)
def test_parse_config_returns_a_config_or_a_config_error(raw: dict) -> None:
    try:
        cfg = parse_config(raw, "/etc/patchbay/patchbay.toml", {"KEY_SET": "k"})
    except ConfigError as e:
        assert e.problems and all(isinstance(k, str) and isinstance(r, str) and r for k, r in e.problems)
        assert e.render().startswith("/etc/patchbay/patchbay.toml:")
        return
    assert isinstance(cfg, Config) and cfg.routes and cfg.vendors
    for route in cfg.routes.values():
        assert all(t.vendor in cfg.vendors for t in route.targets)


@settings(max_examples=100, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), st.text(alphabet=string.printable + "é²\x00", max_size=200)
                      .map(str.encode),
                      st.sampled_from([b"\xff\xfe[server]\n", b"[server]\nlisten = \"a:\xc2\xb2\"\n",
                                       b"[[routes]]\nname = 1\n", b"routes = 3\n", b"[vendors]\na = 1\n"])))
def test_load_config_on_arbitrary_bytes_gives_a_config_error(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "patchbay.toml"
    path.write_bytes(data)
    try:
        load_config(path, env={})
    except ConfigError as e:
        assert e.problems
        assert str(path) in e.render()


# ----------------------------------------------------------------------------- the HTTP path


def _fuzz_config(raw: dict) -> None:
    raw["routes"].append({"name": "direct", "targets": [{"vendor": "anthropic", "model": "claude-sonnet-4"},
                                                         {"vendor": "gemini", "model": "gemini-2.0-flash"}]})


@pytest.fixture
def http_gateway(bg_stack):
    mock, gw = bg_stack(_fuzz_config)
    with httpx.Client(base_url=gw.url, timeout=20) as client:
        yield client


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=st.one_of(ADAPTER_BODIES, ADAPTER_BODIES, ADAPTER_BODIES, CHAT_BODIES, _json))
def test_any_json_body_gets_200_or_an_openai_style_4xx(http_gateway: httpx.Client, body: Any) -> None:
    r = http_gateway.post("/v1/chat/completions", content=orjson.dumps(body),
                          headers={"content-type": "application/json"})
    event(f"status {r.status_code}")
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code != 200:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"] and "type" in err
        return
    if r.headers["content-type"].startswith("text/event-stream"):
        # a stream that began must end as a success ([DONE]) or with an in-band error event
        text = r.text
        assert "data: [DONE]" in text or '"error"' in text, text[-300:]
    else:
        data = r.json()
        assert data["object"] == "chat.completion" and data["choices"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=80), st.sampled_from([
    b"", b"{", b"[" * 1000, b'{"model": "chat", "messages": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    b'{"model": "chat", "messages": [{"role": "user", "content": "\xff"}]}', b"\x00" * 50, b"null", b"1e999",
    b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e400}'])))
def test_any_bytes_get_an_openai_style_4xx_not_a_500(http_gateway: httpx.Client, raw: bytes) -> None:
    r = http_gateway.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json()["error"]["message"]


def test_a_bad_request_is_the_clients_400_even_when_every_breaker_is_open(bg_stack) -> None:
    """Found by the property above: with every breaker open the router force-tries one target, and a
    vendor's "your request is wrong" from that trial came back as 503 all_targets_failed (which clients
    retry) instead of the 400 it is."""
    mock, gw = bg_stack()
    mock_ctl = httpx.Client(base_url=mock.url, timeout=10)
    with httpx.Client(base_url=gw.url, timeout=20) as c, mock_ctl:
        mock_ctl.post("/_mock/faults", json={"fault": "error:503"}).raise_for_status()
        ok = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):                        # 3 failures_to_open on each of the two targets
            assert c.post("/v1/chat/completions", json=ok).status_code == 503
        assert all(t.breaker.allow() is False for t in gw.runtime.targets.values() if t.id.startswith(
            ("openai/", "deepseek/")))
        mock_ctl.delete("/_mock/faults").raise_for_status()
        r = c.post("/v1/chat/completions", json={**ok, "max_completion_tokens": 0})
        assert r.status_code == 400, r.text
        assert "max_tokens" in r.json()["error"]["message"]
