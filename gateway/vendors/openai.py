"""OpenAI and every OpenAI-compatible API (DeepSeek, OpenRouter, Groq, vLLM, Ollama, relays)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import VendorConfig
from gateway.vendors.base import (
    Adapter,
    ChatResult,
    ErrorClass,
    StreamDecoder,
    StreamDelta,
    UpstreamRequest,
    VendorError,
    parse_retry_after,
    refine_400,
    status_class,
)


class OpenAIAdapter(Adapter):
    kind = "openai"

    def __init__(self, vendor: VendorConfig) -> None:
        super().__init__(vendor)
        self._headers = {"content-type": "application/json", **vendor.headers}
        if vendor.api_key:
            self._headers["authorization"] = f"Bearer {vendor.api_key}"
        self._chat_url = f"{vendor.base_url}/chat/completions"

    def chat_request(self, body: dict[str, Any], model: str, *, stream: bool,
                     prefill: str | None = None) -> UpstreamRequest:
        out = dict(body)
        out["model"] = model
        if stream:
            out["stream"] = True
            # Always ask for usage: accounting needs it even when the client did not.
            out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            out.pop("stream", None)
            out.pop("stream_options", None)
        if prefill:
            out["messages"] = [*body["messages"], {"role": "assistant", "content": prefill}]
        return UpstreamRequest("POST", self._chat_url, self._headers, orjson.dumps(out))

    def probe_request(self, model: str, mode: str) -> UpstreamRequest:
        if mode == "completion":
            body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
            return UpstreamRequest("POST", self._chat_url, self._headers, orjson.dumps(body))
        return UpstreamRequest("GET", f"{self.vendor.base_url}/models", self._headers, None)

    def parse_chat(self, data: bytes) -> ChatResult:
        try:
            obj = orjson.loads(data)
            choices = obj["choices"]
            first = choices[0]
            message = first["message"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned a body that is not a chat completion",
                              200) from None
        if not isinstance(message, dict):
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned a message that is not an object", 200)
        return ChatResult(message=message, finish_reason=_finish(first.get("finish_reason")),
                          usage=clean_usage(obj.get("usage")), extra_choices=list(choices[1:]))

    def stream_decoder(self) -> StreamDecoder:
        return OpenAIStreamDecoder()

    def classify_error(self, status: int, headers: Any, body: bytes) -> VendorError:
        message, code, etype = error_fields(body)
        cls = status_class(status)
        if status == 400 or status == 422:
            cls = refine_400(message, code, etype)
        elif status == 429 and (code == "insufficient_quota" or etype == "insufficient_quota"):
            cls = ErrorClass.MISCONFIGURED  # OpenAI's billing failure arrives as a 429
        elif status == 404 and "model" not in f"{message} {code}".lower():
            cls = ErrorClass.MISCONFIGURED
        retry_after = parse_retry_after(headers.get("retry-after")) if status in (429, 503) else None
        return VendorError(cls, message or f"HTTP {status}", status, retry_after, code)


def error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, type) from an OpenAI-style error body, tolerating anything."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip(), None, None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        code, etype = err.get("code"), err.get("type")
        return (str(err.get("message") or ""), str(code) if code is not None else None,
                str(etype) if etype is not None else None)
    if isinstance(err, str):
        return err, None, None
    if isinstance(obj, dict) and "message" in obj:
        return str(obj["message"]), None, None
    return body[:300].decode("utf-8", "replace"), None, None


class OpenAIStreamDecoder(StreamDecoder):
    def feed(self, event: str | None, data: str) -> list[StreamDelta]:
        if data == "[DONE]":
            self.done = True
            return []
        obj = self.load(data)
        if obj is None:
            return []
        err = obj.get("error")
        if err:
            message, code, etype = error_fields(data.encode())
            cls = ErrorClass.THROTTLED if "rate" in f"{code} {etype}".lower() else ErrorClass.SERVER
            raise VendorError(cls, message or "error event in stream", None, None, code)
        out: list[StreamDelta] = []
        choices = obj.get("choices")
        if choices:
            c0 = choices[0] if isinstance(choices, list) else None
            delta = (c0.get("delta") or {}) if isinstance(c0, dict) else None
            if isinstance(c0, dict) and isinstance(delta, dict):
                out.append(StreamDelta(delta, _finish(c0.get("finish_reason"))))
            else:
                self.malformed += 1
        usage = clean_usage(obj.get("usage"))
        if usage:
            out.append(StreamDelta(None, None, usage))
        return out


def _finish(reason: Any) -> str | None:
    return reason if isinstance(reason, str) and reason else None


def clean_usage(usage: Any) -> dict[str, Any] | None:
    """The vendor's usage object, kept whole, but with token counts the router can do sums with.

    A relay that sends `"usage": []` or `"prompt_tokens": "12"` must not turn a good answer into
    a 500 when the gateway totals tokens and cost.
    """
    if not isinstance(usage, dict):
        return None
    out = dict(usage)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if key in out and not (isinstance(out[key], int) and not isinstance(out[key], bool) and out[key] >= 0):
            out[key] = 0
    return out
