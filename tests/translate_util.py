"""Helpers shared by the translation tests: feed recorded SSE bytes, fold OpenAI deltas."""

from __future__ import annotations

from typing import Any

from gateway.vendors.base import StreamDecoder, StreamDelta
from gateway.vendors.sse import SSEParser


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """Parse a recorded SSE body with the gateway's own parser, split at awkward byte offsets."""
    data = raw.encode()
    p = SSEParser()
    out = []
    for i in range(0, len(data), 7):  # 7-byte reads: events straddle reads like on a real socket
        out.extend(p.feed(data[i:i + 7]))
    out.extend(p.flush())
    return out


def decode(decoder: StreamDecoder, raw: str) -> list[StreamDelta]:
    deltas: list[StreamDelta] = []
    for event, data in sse_events(raw):
        deltas.extend(decoder.feed(event, data))
    return deltas


def fold(deltas: list[StreamDelta]) -> dict[str, Any]:
    """What an OpenAI client would rebuild from the chunks: one message, finish, usage."""
    msg: dict[str, Any] = {"content": "", "reasoning_content": "", "tool_calls": {}}
    finish = None
    usage = None
    roles = []
    for d in deltas:
        if d.usage is not None:
            usage = d.usage
        if d.finish_reason:
            assert finish is None, "two finish reasons"
            finish = d.finish_reason
        if not d.delta:
            continue
        if "role" in d.delta:
            roles.append(d.delta["role"])
        msg["content"] += d.delta.get("content") or ""
        msg["reasoning_content"] += d.delta.get("reasoning_content") or ""
        for tc in d.delta.get("tool_calls") or []:
            slot = msg["tool_calls"].setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
            if tc.get("id"):
                assert slot["id"] is None, "tool call id sent twice"
                slot["id"] = tc["id"]
                assert tc["type"] == "function"
            fn = tc.get("function") or {}
            slot["name"] += fn.get("name") or ""
            slot["arguments"] += fn.get("arguments") or ""
    return {"roles": roles, "content": msg["content"], "reasoning": msg["reasoning_content"],
            "tool_calls": [msg["tool_calls"][i] for i in sorted(msg["tool_calls"])],
            "finish": finish, "usage": usage}


def request_bodies(tool: dict) -> Any:
    """Hypothesis strategy: OpenAI chat bodies, mostly plausible, with junk mixed in at every level."""
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                       st.text(max_size=12))
    junk = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=8)

    def mostly(good: Any) -> Any:
        # Hypothesis favours small and boundary integers, so junk hides behind a middle value.
        return st.integers(0, 12).flatmap(lambda i: junk if i == 7 else good)

    text = st.one_of(st.text(min_size=1, max_size=10), st.text(max_size=3))
    url = st.sampled_from(["data:image/png;base64,AAAA", "https://x.test/y.png", "https://x.test/a?b=c",
                           "data:,", "data:image/png,raw", "x", "gs://b/o.pdf"])
    part = mostly(st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": text}),
        st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": url})}),
        st.fixed_dictionaries({"type": st.just("image_url"), "image_url": url}),
        st.fixed_dictionaries({"type": st.sampled_from(["file", "input_audio", "refusal", "zzz"])},
                              optional={"file": st.fixed_dictionaries({"file_data": url}),
                                        "input_audio": st.fixed_dictionaries({"data": text, "format": text}),
                                        "refusal": text}),
    ))
    content = mostly(st.one_of(text, st.lists(part, max_size=3)))
    ids = st.sampled_from(["call_1", "call_2", "call:3"])
    call = mostly(st.fixed_dictionaries({
        "id": ids, "type": st.just("function"),
        "function": mostly(st.fixed_dictionaries({
            "name": st.sampled_from(["f", "g", "get_weather"]),
            "arguments": mostly(st.sampled_from(['{"a":1}', "{}", "", "{", "[]"]))}))}))
    message = mostly(st.one_of(
        st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": content}),
        st.fixed_dictionaries({"role": st.just("user"), "content": content}),
        st.fixed_dictionaries({"role": st.just("assistant")},
                              optional={"content": st.one_of(st.none(), content),
                                        "tool_calls": mostly(st.lists(call, max_size=2))}),
        st.fixed_dictionaries({"role": st.sampled_from(["tool", "function"]), "content": content},
                              optional={"tool_call_id": mostly(ids), "name": mostly(st.sampled_from(["f", "g"]))}),
    ))
    number = mostly(st.floats(0, 2))
    tools = mostly(st.lists(mostly(st.one_of(
        st.just(tool),
        st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["f", "g"])}, optional={"description": mostly(text), "parameters": junk})}))),
        max_size=2))
    schema = st.recursive(st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "null", "object"])}),
                          lambda inner: st.one_of(
                              st.fixed_dictionaries({"type": st.just("object"),
                                                     "properties": st.dictionaries(st.text(max_size=4), inner,
                                                                                   max_size=3)},
                                                    optional={"required": st.lists(st.text(max_size=4), max_size=2)}),
                              st.fixed_dictionaries({"type": st.just("array"), "items": inner}),
                              st.fixed_dictionaries({"anyOf": st.lists(inner, max_size=3)}),
                              st.fixed_dictionaries({"$ref": st.sampled_from(["#/$defs/A", "#/nowhere"])}),
                              junk),
                          max_leaves=6)
    return st.fixed_dictionaries({"messages": mostly(st.lists(message, min_size=1, max_size=5))}, optional={
        "max_tokens": mostly(st.integers(1, 10 ** 6)), "max_completion_tokens": mostly(st.integers(1, 10 ** 6)),
        "temperature": number, "top_p": number, "presence_penalty": number, "frequency_penalty": number,
        "seed": mostly(st.integers(-2 ** 63, 2 ** 63 - 1)),
        "stop": mostly(st.one_of(text, st.lists(text, max_size=4))), "tools": tools,
        "tool_choice": mostly(st.one_of(st.sampled_from(["auto", "none", "required"]),
                                        st.just({"type": "function", "function": {"name": "get_weather"}}))),
        "parallel_tool_calls": mostly(st.booleans()), "user": mostly(text), "n": scalar,
        "response_format": mostly(st.one_of(
            st.sampled_from([{"type": "json_object"}, {"type": "text"}]),
            st.fixed_dictionaries({"type": st.just("json_schema"),
                                   "json_schema": st.fixed_dictionaries({"name": st.just("s"), "schema": schema})}))),
    })


def vendor_json(samples: list[Any]) -> Any:
    """Hypothesis strategy: JSON text near real vendor payloads (mutated samples) or arbitrary JSON/garbage."""
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False),
                       st.text(max_size=8))
    junk = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=10)

    def mutate(obj: Any, draw: Any) -> Any:
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                roll = draw(st.integers(0, 9))
                if roll == 3:
                    continue  # drop the key
                out[k] = draw(junk) if roll == 5 else mutate(v, draw)
            return out
        if isinstance(obj, list):
            return [mutate(v, draw) for v in obj if draw(st.integers(0, 9)) != 3]
        return draw(junk) if draw(st.integers(0, 9)) == 5 else obj

    @st.composite
    def near(draw: Any) -> str:
        return json.dumps(mutate(draw(st.sampled_from(samples)), draw))

    import json
    return st.one_of(near(), near(), near(), junk.map(json.dumps), st.text(max_size=20))
