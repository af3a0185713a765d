"""What translating to and from Anthropic and Gemini costs per request and per stream event.

Issue 3 targets: < 0.1 ms of translation per non-streaming request (request
out + response back) and < 5 µs per stream event decoded. Pure CPU, no I/O:
the adapters are driven in-process with realistic payloads (a chat with a
system prompt, history, a tool and a tool result; vendor responses and stream
events in each vendor's wire shape). The OpenAI adapter is measured too, as
the pass-through baseline.

    python bench/translate.py [--seconds 0.5]

Each figure is the best of 5 timeit repeats, each bounded to about --seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import orjson  # noqa: E402

from gateway.config import VendorConfig  # noqa: E402
from gateway.vendors import make_adapter  # noqa: E402

REQUEST = {
    "model": "chat",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly and cite sources when you can."},
        {"role": "user", "content": "What's the weather like in Paris today? I'm deciding what to wear."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_a1",
         "content": "{\"temp_c\": 18, \"sky\": \"overcast\", \"wind_kmh\": 12}"},
        {"role": "assistant", "content": "It's 18°C and overcast in Paris with a light breeze."},
        {"role": "user", "content": "And tomorrow? Should I bring an umbrella?"},
    ],
    "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "Current or forecast weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                        "day": {"type": "string", "enum": ["today", "tomorrow"]}},
                       "required": ["city"]}}}],
    "max_tokens": 512, "temperature": 0.7, "stream": False,
}

ANSWER = ("Tomorrow in Paris looks showery in the afternoon, around 16°C. Yes, bring an umbrella and a light "
          "jacket; mornings should stay mostly dry.")

RESPONSES = {
    "anthropic": orjson.dumps({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 210, "output_tokens": 38, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "service_tier": "standard"}}),
    "gemini": orjson.dumps({
        "candidates": [{"content": {"parts": [{"text": ANSWER}], "role": "model"}, "finishReason": "STOP",
                        "avgLogprobs": -0.21, "index": 0}],
        "usageMetadata": {"promptTokenCount": 205, "candidatesTokenCount": 36, "totalTokenCount": 241,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 205}]},
        "modelVersion": "gemini-2.0-flash", "responseId": "Il0taoSYJ5Cez7"}),
    "openai": orjson.dumps({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
        "model": "gpt-4.1", "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER,
                                                                 "refusal": None, "annotations": []},
                                         "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 205, "completion_tokens": 36, "total_tokens": 241,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}}}),
}

# One typical mid-stream token event per vendor (the bulk of any stream).
EVENTS = {
    "anthropic": ("content_block_delta",
                  '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" umbrella"}}'),
    "gemini": (None, '{"candidates": [{"content": {"parts": [{"text": " umbrella"}],"role": "model"},"index": 0}],'
                     '"usageMetadata": {"promptTokenCount": 205,"totalTokenCount": 205},'
                     '"modelVersion": "gemini-2.0-flash","responseId": "Il0taoSYJ5Cez7"}'),
    "openai": (None, '{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk",'
                     '"created":1741570283,"model":"gpt-4.1","system_fingerprint":null,'
                     '"choices":[{"index":0,"delta":{"content":" umbrella"},'
                     '"logprobs":null,"finish_reason":null}]}'),
}

MODELS = {"anthropic": "claude-sonnet-4-20250514", "gemini": "gemini-2.0-flash", "openai": "gpt-4.1"}
BASES = {"anthropic": "https://api.anthropic.com", "gemini": "https://generativelanguage.googleapis.com",
         "openai": "https://api.openai.com/v1"}


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    """Best-of-5 microseconds per call, each repeat bounded to about `seconds`."""
    t = timeit.Timer(fn)
    n, elapsed = t.autorange()
    number = max(1, int(n * seconds / max(elapsed, 1e-9)))
    best = min(t.repeat(repeat=5, number=number)) / number
    return best * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5, help="time per repeat (5 repeats per figure)")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 0.05), 5.0)

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; best of 5")
    print(f"{'adapter':<10} {'request out':>12} {'response in':>12} {'per request':>12} {'target':>8}"
          f" {'stream event':>13} {'target':>8}")
    ok = True
    for kind in ("anthropic", "gemini", "openai"):
        ad = make_adapter(VendorConfig(kind, kind, BASES[kind], api_key="sk-bench"))
        model = MODELS[kind]
        body = REQUEST
        resp = RESPONSES[kind]
        ad.parse_chat(resp)
        req_us = per_call_us(lambda: ad.chat_request(body, model, stream=False), seconds)
        resp_us = per_call_us(lambda: ad.parse_chat(resp), seconds)
        event, data = EVENTS[kind]
        dec = ad.stream_decoder()
        assert dec.feed(event, data), "the benchmark event must decode to a delta"
        feed = dec.feed
        ev_us = per_call_us(lambda: feed(event, data), seconds)
        total = req_us + resp_us
        req_ok = total < 100 or kind == "openai"
        ev_ok = ev_us < 5 or kind == "openai"
        ok = ok and req_ok and ev_ok
        print(f"{kind:<10} {req_us:>9.2f} µs {resp_us:>9.2f} µs {total:>9.2f} µs {'ok' if req_ok else 'MISS':>8}"
              f" {ev_us:>10.2f} µs {'ok' if ev_ok else 'MISS':>8}")
    print("targets: < 100 µs translation per non-streaming request, < 5 µs per stream event "
          "(Anthropic and Gemini; OpenAI is the pass-through baseline)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
