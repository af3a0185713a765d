"""Anthropic Messages API wire format (``POST /v1/messages``, ``GET /v1/models``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.mock.content import build_reply, example_args, words
from gateway.mock.dialect import (
    FRAME,
    TERMINAL,
    UNIT,
    BadRequest,
    Call,
    Dialect,
    ErrorReply,
    retry_after_header,
    text_of,
)

STOP = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens", "tool": "tool_use",
        "refusal": "refusal"}

# status -> (type, message); {model} is filled in.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
                           "Billing to upgrade or purchase credits."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization of 50 requests "
                              "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}

_ids = itertools.count(1)


def _err(etype: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": etype, "message": message},
                         "request_id": f"req_mock{next(_ids):012d}"})


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class AnthropicDialect(Dialect):
    name = "anthropic"
    policy_is_error = False  # Claude answers 200 with stop_reason "refusal"

    def check_key(self, headers: Mapping[str, str], query: Mapping[str, str],
                  keys: frozenset[str]) -> ErrorReply | None:
        key = headers.get("x-api-key")
        if key is None:
            auth = headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if key in keys:
            return None
        if key is None:
            return ErrorReply(401, _err("authentication_error", "x-api-key header is required"))
        return self.error("auth", 401, model="")

    # --- requests ---------------------------------------------------------------------------

    def parse_chat(self, body: Any, path_model: str | None, query: Mapping[str, str],
                   headers: Mapping[str, str], forced_tokens: int | None) -> Call:
        if "anthropic-version" not in headers:
            raise BadRequest("anthropic-version: header is required")
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise BadRequest("max_tokens: Field required")
        if max_tokens < 1:
            raise BadRequest("max_tokens: Input should be greater than or equal to 1")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: at least one message is required")
        system = body.get("system")
        prompt = words(text_of(system)) if system else 0
        last_user = ""
        last_is_tool_result = False
        prev = None
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in ("user", "assistant"):
                raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = m.get("content")
            text = text_of(content)
            prompt += words(text)
            if role == "user":
                blocks = content if isinstance(content, list) else []
                last_is_tool_result = any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks)
                if text.strip() and not last_is_tool_result:
                    last_user = text
            prev = role
        if messages[0].get("role") != "user":
            raise BadRequest("messages: first message must use the \"user\" role")
        tools = body.get("tools") or []
        if tools:
            prompt += words(orjson.dumps(tools).decode())
        stop = body.get("stop_sequences")
        thinking = body.get("thinking")
        reasoning = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
        tool = self._pick_tool(tools, body.get("tool_choice"), last_is_tool_result and prev == "user")
        reply = build_reply(self.name, model, last_user=last_user, prompt_tokens=prompt, max_tokens=max_tokens,
                            stop=stop if isinstance(stop, list) else None, forced_tokens=forced_tokens,
                            reasoning=reasoning, tool=tool)
        return Call(model, bool(body.get("stream")), reply)

    @staticmethod
    def _pick_tool(tools: Any, choice: Any, after_tool_result: bool) -> tuple[str, dict] | None:
        if not isinstance(tools, list):
            return None
        tools = [t for t in tools if isinstance(t, dict) and t.get("name") and "input_schema" in t]
        if not tools:
            return None
        ctype = choice.get("type") if isinstance(choice, dict) else "auto"
        if ctype == "none":
            return None
        if ctype == "tool":
            name = choice.get("name")
            tool = next((t for t in tools if t["name"] == name), None)
            if tool is None:
                raise BadRequest(f"tool_choice: tool '{name}' not found in tools")
        elif ctype == "any" or not after_tool_result:
            tool = tools[0]
        else:
            return None
        return str(tool["name"]), example_args(tool.get("input_schema"))

    # --- replies ----------------------------------------------------------------------------

    def _usage(self, call: Call) -> dict[str, Any]:
        return {"input_tokens": call.reply.prompt_tokens, "output_tokens": call.reply.completion_tokens,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "service_tier": "standard"}

    def _signature(self, call: Call) -> str:
        return "mocksig" + str(len(call.reply.reasoning or ()))

    def render(self, call: Call) -> bytes:
        r = call.reply
        content: list[dict[str, Any]] = []
        if r.reasoning:
            content.append({"type": "thinking", "thinking": "".join(r.reasoning), "signature": self._signature(call)})
        if r.tool_name is not None:
            content.append({"type": "tool_use", "id": f"toolu_mock{next(_ids)}", "name": r.tool_name,
                            "input": orjson.loads(r.tool_args or "{}")})
        elif r.tokens or r.finish != "refusal":
            content.append({"type": "text", "text": r.text})
        return orjson.dumps({"id": f"msg_mock{next(_ids)}", "type": "message", "role": "assistant",
                             "model": call.model, "content": content, "stop_reason": STOP[r.finish],
                             "stop_sequence": r.stop_sequence, "usage": self._usage(call)})

    def stream_events(self, call: Call) -> list[tuple[bytes, int]]:
        r = call.reply
        start_usage = self._usage(call)
        start_usage["output_tokens"] = 1
        ev: list[tuple[bytes, int]] = [(_event("message_start", {"type": "message_start", "message": {
            "id": f"msg_mock{next(_ids)}", "type": "message", "role": "assistant", "model": call.model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}), FRAME)]
        index = 0
        pinged = False

        def block(start: dict[str, Any], deltas: list[dict[str, Any]], tail: Sequence[dict[str, Any]] = ()) -> None:
            nonlocal index, pinged
            ev.append((_event("content_block_start", {"type": "content_block_start", "index": index,
                                                      "content_block": start}), FRAME))
            if not pinged:
                ev.append((_event("ping", {"type": "ping"}), FRAME))
                pinged = True
            for d in deltas:
                ev.append((_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                          "delta": d}), UNIT))
            for d in tail:
                ev.append((_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                          "delta": d}), FRAME))
            ev.append((_event("content_block_stop", {"type": "content_block_stop", "index": index}), FRAME))
            index += 1

        if r.reasoning:
            block({"type": "thinking", "thinking": "", "signature": ""},
                  [{"type": "thinking_delta", "thinking": p} for p in r.reasoning],
                  [{"type": "signature_delta", "signature": self._signature(call)}])
        if r.tool_name is not None:
            block({"type": "tool_use", "id": f"toolu_mock{next(_ids)}", "name": r.tool_name, "input": {}},
                  [{"type": "input_json_delta", "partial_json": f} for f in r.tool_fragments or ()])
        elif r.tokens or r.finish != "refusal":
            block({"type": "text", "text": ""}, [{"type": "text_delta", "text": t} for t in r.tokens])
        ev.append((_event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": STOP[r.finish],
                                                      "stop_sequence": r.stop_sequence},
                                            "usage": {"input_tokens": r.prompt_tokens,
                                                      "output_tokens": r.completion_tokens,
                                                      "cache_creation_input_tokens": 0,
                                                      "cache_read_input_tokens": 0}}), FRAME))
        ev.append((_event("message_stop", {"type": "message_stop"}), TERMINAL))
        return ev

    def error_event(self, model: str, error_type: str | None, message: str | None) -> bytes:
        etype = error_type or "overloaded_error"
        default = next((m for t, m in ERRORS.values() if t == etype), "Overloaded")
        return _event("error", {"type": "error", "error": {"type": etype, "message": message or default}})

    def malformed_event(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n'

    # --- errors -----------------------------------------------------------------------------

    def error(self, kind: str, status: int | None, *, model: str, message: str | None = None,
              error_type: str | None = None, retry_after: float | None = None) -> ErrorReply:
        headers = retry_after_header(retry_after)
        if kind == "context_length":
            return ErrorReply(status or 400, _err(error_type or "invalid_request_error", message or
                                                  "prompt is too long: 210000 tokens > 200000 maximum"), headers)
        if kind == "content_policy":
            return ErrorReply(status or 400, _err(error_type or "invalid_request_error", message or
                                                  "Output blocked by content filtering policy"), headers)
        if kind == "billing":
            status = status or 402
        elif kind == "auth":
            status = status or 401
        status = status or 500
        default = ERRORS.get(status) or (("invalid_request_error", "Request failed.") if status < 500
                                         else ("api_error", "Internal server error"))
        etype = error_type or default[0]
        return ErrorReply(status, _err(etype, message or default[1].replace("{model}", model)), headers)

    # --- models -----------------------------------------------------------------------------

    @staticmethod
    def _model_obj(model: str) -> dict[str, Any]:
        return {"type": "model", "id": model, "display_name": model.replace("-", " ").title(),
                "created_at": "2025-05-14T00:00:00Z"}

    def models_body(self, models: list[str]) -> bytes:
        return orjson.dumps({"data": [self._model_obj(m) for m in models], "has_more": False,
                             "first_id": models[0] if models else None, "last_id": models[-1] if models else None})

    def model_body(self, model: str) -> bytes:
        return orjson.dumps(self._model_obj(model))

