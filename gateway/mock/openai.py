"""OpenAI Chat Completions wire format (and the DeepSeek flavour of it)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
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

FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls",
          "refusal": "content_filter"}

# status -> (message, type, code); {model} is filled in.
ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided: sk-mock***. You can find your API key at "
          "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model", "invalid_request_error", "permission_denied"),
    404: ("The model `{model}` does not exist or you do not have access to it.",
          "invalid_request_error", "model_not_found"),
    408: ("Request timed out.", "timeout", None),
    409: ("Conflict.", "invalid_request_error", None),
    413: ("Request too large.", "invalid_request_error", "request_too_large"),
    422: ("Unprocessable request.", "invalid_request_error", None),
    429: ("Rate limit reached for {model} in organization org-mock on requests per min (RPM): "
          "Limit 500, Used 500, Requested 1. Please try again in 1s.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}

_ids = itertools.count(1)


def _body(message: str, etype: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": etype, "param": param, "code": code}})


class OpenAIDialect(Dialect):
    name = "openai"
    owned_by = "openai"
    models_created = 1744316542

    def check_key(self, headers: Mapping[str, str], query: Mapping[str, str],
                  keys: frozenset[str]) -> ErrorReply | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip() in keys:
            return None
        if not auth:
            return ErrorReply(401, _body("You didn't provide an API key. You need to provide your API key "
                                         "in an Authorization header using Bearer auth.",
                                         "invalid_request_error", None))
        return self.error("auth", 401, model="")

    # --- requests ---------------------------------------------------------------------------

    def wants_reasoning(self, body: dict[str, Any], model: str) -> bool:
        return False

    def parse_chat(self, body: Any, path_model: str | None, query: Mapping[str, str],
                   headers: Mapping[str, str], forced_tokens: int | None) -> Call:
        if not isinstance(body, dict):
            raise BadRequest("We could not parse the JSON body of your request.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("Missing required parameter: 'messages'.", param="messages",
                             code="missing_required_parameter")
        prompt = 0
        last_user = ""
        last_role = None
        for m in messages:
            if not isinstance(m, dict) or "role" not in m:
                raise BadRequest("Invalid value for 'messages': each message needs a role.", param="messages")
            text = text_of(m.get("content"))
            prompt += words(text)
            last_role = m["role"]
            if last_role == "user":
                last_user = text
        tools = body.get("tools") or []
        if tools:
            prompt += words(orjson.dumps(tools).decode())
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            raise BadRequest("Invalid 'max_tokens': integer below minimum value. Expected a value >= 1.",
                             param="max_tokens", code="integer_below_min_value")
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if isinstance(stop, list) and not all(isinstance(x, str) for x in stop):
            raise BadRequest("Invalid type for 'stop': expected a string or an array of strings.", param="stop",
                             code="invalid_type")
        tool = self._pick_tool(tools, body.get("tool_choice"), last_role)
        stream = bool(body.get("stream"))
        so = body.get("stream_options") or {}
        reply = build_reply(self.name, model, last_user=last_user, prompt_tokens=prompt,
                            max_tokens=max_tokens, stop=stop if isinstance(stop, list) else None,
                            forced_tokens=forced_tokens, reasoning=self.wants_reasoning(body, model),
                            tool=tool)
        return Call(model, stream, reply, include_usage=bool(isinstance(so, dict) and so.get("include_usage")))

    @staticmethod
    def _pick_tool(tools: Any, choice: Any, last_role: str | None) -> tuple[str, dict] | None:
        if not isinstance(tools, list) or not tools or choice == "none":
            return None
        fns: list[dict[str, Any]] = [t["function"] for t in tools
                                     if isinstance(t, dict) and isinstance(t.get("function"), dict)]
        if not fns:
            return None
        if isinstance(choice, dict):
            fn_choice = choice.get("function")
            name = fn_choice.get("name") if isinstance(fn_choice, dict) else None
            fn = next((f for f in fns if f.get("name") == name), None)
            if fn is None:
                raise BadRequest(f"Invalid value for 'tool_choice': function '{name}' not found in 'tools'.",
                                 param="tool_choice")
        elif choice == "required" or last_role != "tool":
            fn = fns[0]
        else:
            return None  # a tool result came back: answer in text, as a model would
        return str(fn.get("name")), example_args(fn.get("parameters"))

    # --- replies ----------------------------------------------------------------------------

    def _message(self, call: Call) -> dict[str, Any]:
        r = call.reply
        msg: dict[str, Any] = {"role": "assistant", "content": r.text if r.tool_name is None else None,
                               "refusal": None, "annotations": []}
        if r.tool_name is not None:
            msg["tool_calls"] = [{"id": f"call_mock{next(_ids)}", "type": "function",
                                  "function": {"name": r.tool_name, "arguments": r.tool_args}}]
        return msg

    def _usage(self, call: Call) -> dict[str, Any]:
        r = call.reply
        c = r.completion_tokens
        return {"prompt_tokens": r.prompt_tokens, "completion_tokens": c,
                "total_tokens": r.prompt_tokens + c,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": len(r.reasoning or ()), "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    def render(self, call: Call) -> bytes:
        return orjson.dumps({
            "id": f"chatcmpl-mock{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": self._message(call), "logprobs": None,
                         "finish_reason": FINISH[call.reply.finish]}],
            "usage": self._usage(call), "service_tier": "default", "system_fingerprint": "fp_mock"})

    def stream_events(self, call: Call) -> list[tuple[bytes, int]]:
        r = call.reply
        cid = f"chatcmpl-mock{next(_ids)}"
        created = int(time.time())
        inc = call.include_usage
        pre = orjson.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                            "model": call.model, "service_tier": "default",
                            "system_fingerprint": "fp_mock"})[:-1] + b',"choices":[{"index":0,"delta":'
        post_open = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null}\n\n' if inc else b"}\n\n")

        def chunk(delta: dict[str, Any]) -> bytes:
            return b"data: " + pre + orjson.dumps(delta) + post_open

        events: list[tuple[bytes, int]] = []
        if r.tool_name is not None:
            events.append((chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": f"call_mock{next(_ids)}", "type": "function",
                 "function": {"name": r.tool_name, "arguments": ""}}], "refusal": None}), FRAME))
        else:
            events.append((chunk({"role": "assistant", "content": "", "refusal": None}), FRAME))
        for piece in r.reasoning or ():
            events.append((chunk(self._reasoning_delta(piece)), UNIT))
        if r.tool_name is not None:
            for frag in r.tool_fragments or ():
                events.append((chunk({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}), UNIT))
        else:
            for tok in r.tokens:
                events.append((chunk({"content": tok}), UNIT))
        fin = (b"data: " + pre + b'{},"logprobs":null,"finish_reason":"' + FINISH[r.finish].encode()
               + b'"}]' + (b',"usage":null}\n\n' if inc else b"}\n\n"))
        events.append((fin, FRAME))
        if inc:
            events.append((b"data: " + pre[:-len(b'{"index":0,"delta":')] + b'],"usage":'
                           + orjson.dumps(self._usage(call)) + b"}\n\n", FRAME))
        events.append((b"data: [DONE]\n\n", TERMINAL))
        return events

    def _reasoning_delta(self, piece: str) -> dict[str, Any]:
        return {"content": None, "reasoning_content": piece}

    def error_event(self, model: str, error_type: str | None, message: str | None) -> bytes:
        return b"data: " + orjson.dumps({"error": {
            "message": message or "The server had an error while processing your request. Sorry about that!",
            "type": error_type or "server_error", "param": None, "code": None}}) + b"\n\n"

    def malformed_event(self) -> bytes:
        return b'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choices": [{"delta": \n\n'

    # --- errors -----------------------------------------------------------------------------

    def error(self, kind: str, status: int | None, *, model: str, message: str | None = None,
              error_type: str | None = None, retry_after: float | None = None) -> ErrorReply:
        headers = retry_after_header(retry_after)
        if kind == "context_length":
            return ErrorReply(status or 400, _body(
                message or "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130000 tokens. Please reduce the length of the messages.",
                error_type or "invalid_request_error", "context_length_exceeded", "messages"), headers)
        if kind == "content_policy":
            return ErrorReply(status or 400, _body(
                message or "Your request was rejected as a result of our safety system. Your prompt may "
                "contain text that is not allowed by our safety system (content_policy_violation).",
                error_type or "invalid_request_error", "content_policy_violation"), headers)
        if kind == "billing":
            return self.billing(status, message, headers)
        if kind == "auth":
            status = status or 401
        status = status or 500
        default = ERRORS.get(status) or (("Request failed.", "invalid_request_error", None) if status < 500
                                         else ("The server had an error.", "server_error", None))
        text = message or default[0].replace("{model}", model)
        code = default[2]
        if kind == "bad_request":
            code = None
        return ErrorReply(status, _body(text, error_type or default[1], code), headers)

    def bad_request(self, exc: BadRequest, model: str) -> ErrorReply:
        return ErrorReply(exc.status, _body(exc.message, "invalid_request_error", exc.code, exc.param))

    def billing(self, status: int | None, message: str | None, headers: dict[str, str] | None) -> ErrorReply:
        # OpenAI reports an exhausted balance as a 429 with code insufficient_quota.
        return ErrorReply(status or 429, _body(
            message or "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota", "insufficient_quota"), headers)

    # --- models -----------------------------------------------------------------------------

    def _model_obj(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self.models_created, "owned_by": self.owned_by}

    def models_body(self, models: list[str]) -> bytes:
        return orjson.dumps({"object": "list", "data": [self._model_obj(m) for m in models]})

    def model_body(self, model: str) -> bytes:
        return orjson.dumps(self._model_obj(model))


class DeepSeekDialect(OpenAIDialect):
    """OpenAI-compatible with DeepSeek's differences: reasoning_content, 402 billing, cache usage."""

    name = "deepseek"
    owned_by = "deepseek"

    def wants_reasoning(self, body: dict[str, Any], model: str) -> bool:
        thinking = body.get("thinking")
        return "reasoner" in model or (isinstance(thinking, dict) and thinking.get("type") == "enabled")

    def _message(self, call: Call) -> dict[str, Any]:
        msg = super()._message(call)
        del msg["refusal"], msg["annotations"]
        if call.reply.reasoning:
            msg["reasoning_content"] = "".join(call.reply.reasoning)
        return msg

    def _usage(self, call: Call) -> dict[str, Any]:
        u = super()._usage(call)
        u["prompt_cache_hit_tokens"] = 0
        u["prompt_cache_miss_tokens"] = call.reply.prompt_tokens
        return u

    def billing(self, status: int | None, message: str | None, headers: dict[str, str] | None) -> ErrorReply:
        return ErrorReply(status or 402, _body(message or "Insufficient Balance", "unknown_error",
                                               "invalid_request_error"), headers)
