"""Anthropic Messages API (`POST /v1/messages`) behind the OpenAI chat format.

What does not map one-to-one, and what we do instead:
- system/developer messages (wherever they appear) become the top-level `system`.
- Anthropic demands alternating user/assistant turns: consecutive same-role
  messages are merged, and tool results (OpenAI role "tool") become
  `tool_result` blocks in a user turn.
- `max_tokens` is required by Anthropic: 4096 when the client gave none.
- `temperature` is clamped to Anthropic's 0..1; when both `temperature` and
  `top_p` are given only `temperature` is sent (newer Claude models refuse both).
- `response_format` json_object/json_schema: Anthropic has no JSON mode, so an
  instruction (with the schema, if any) is appended to the system prompt.
- Thinking blocks come back as `reasoning_content`; they are not sent back
  upstream (OpenAI history carries no signature for them).

The stream decoder (events -> deltas) is in gateway/vendors/anthropic_stream.py.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.config import VendorConfig
from gateway.vendors.anthropic_stream import AnthropicStreamDecoder, finish_reason, map_usage
from gateway.vendors.base import (
    Adapter,
    ChatResult,
    ErrorClass,
    StreamDecoder,
    UpstreamRequest,
    VendorError,
    parse_retry_after,
    refine_400,
    status_class,
)
from gateway.vendors.translate import (
    args_json,
    bad,
    content_parts,
    dumps,
    function_tools,
    header,
    inline_file,
    json_schema_format,
    max_tokens,
    merge_turn,
    opt_number,
    parse_image_url,
    part_text,
    stop_list,
    text_of,
    tool_calls_of,
    tool_choice,
)

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

# Anthropic error `type` -> contract row, for in-band stream errors and ambiguous statuses.
ERROR_TYPES = {"overloaded_error": ErrorClass.SERVER, "api_error": ErrorClass.SERVER,
               "timeout_error": ErrorClass.SERVER, "rate_limit_error": ErrorClass.THROTTLED,
               "authentication_error": ErrorClass.MISCONFIGURED, "permission_error": ErrorClass.MISCONFIGURED,
               "billing_error": ErrorClass.MISCONFIGURED, "not_found_error": ErrorClass.MISCONFIGURED,
               "invalid_request_error": ErrorClass.BAD_REQUEST, "request_too_large": ErrorClass.BAD_REQUEST}

BILLING_MARKERS = ("credit balance", "billing", "spend limit", "insufficient")
CONTEXT_EXTRA = ("exceed context limit", "context limit", "input is too long")
POLICY_EXTRA = ("content filtering", "usage policy", "usage policies")

_BAD_ID = re.compile(r"[^a-zA-Z0-9_-]")
JSON_INSTRUCTION = ("Respond with only a single valid JSON value and no other text, "
                    "no Markdown code fences.")


def _tool_id(cid: str) -> str:
    """Anthropic tool ids must match ^[a-zA-Z0-9_-]+$; ids minted elsewhere may not."""
    return _BAD_ID.sub("_", cid) if _BAD_ID.search(cid) else cid


def _non_blank(text: str) -> bool:
    # Anthropic refuses text blocks that are empty or whitespace only.
    return bool(text) and not text.isspace()


class AnthropicAdapter(Adapter):
    kind = "anthropic"
    supports_prefill = True

    def __init__(self, vendor: VendorConfig) -> None:
        super().__init__(vendor)
        self._headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION,
                         **vendor.headers}
        if vendor.api_key:
            self._headers["x-api-key"] = vendor.api_key
        self._messages_url = f"{vendor.base_url}/v1/messages"

    # --- requests ---------------------------------------------------------

    def chat_request(self, body: dict[str, Any], model: str, *, stream: bool,
                     prefill: str | None = None) -> UpstreamRequest:
        if not isinstance(body, dict):
            bad("request body must be a JSON object")
        system, messages = convert_messages(body.get("messages"), prefill)
        out: dict[str, Any] = {"model": model, "max_tokens": max_tokens(body) or DEFAULT_MAX_TOKENS}

        fmt = json_schema_format(body)
        if fmt is not None:
            _, schema = fmt
            note = JSON_INSTRUCTION
            if schema:
                note += " The JSON must conform to this JSON Schema: " + dumps(schema).decode()
            system.append(note)
        if system:
            out["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": s} for s in system]
        out["messages"] = messages

        temperature = opt_number(body, "temperature")
        top_p = opt_number(body, "top_p")
        if temperature is not None:
            out["temperature"] = min(max(float(temperature), 0.0), 1.0)
        elif top_p is not None:
            out["top_p"] = min(max(float(top_p), 0.0), 1.0)
        stops = stop_list(body)
        if stops:
            stops = [s for s in stops if _non_blank(s)]
            if stops:
                out["stop_sequences"] = stops

        tools = function_tools(body)
        if tools:
            out["tools"] = [_tool(t) for t in tools]
            choice = tool_choice(body)
            tc: dict[str, Any] | None = None
            if choice is not None:
                mode, name = choice
                tc = ({"type": "auto"} if mode == "auto" else {"type": "none"} if mode == "none"
                      else {"type": "any"} if mode == "required" else {"type": "tool", "name": name})
            if body.get("parallel_tool_calls") is False and (tc is None or tc["type"] != "none"):
                tc = tc or {"type": "auto"}
                tc["disable_parallel_tool_use"] = True
            if tc is not None:
                out["tool_choice"] = tc
        else:
            tool_choice(body)  # still validate it
            used = _history_tool_names(messages)
            if used:
                # Anthropic refuses tool_use/tool_result history without tool definitions, which OpenAI
                # allows; declare the names used and forbid new calls, as the client offered no tools.
                out["tools"] = [{"name": n, "input_schema": {"type": "object", "properties": {}}} for n in used]
                out["tool_choice"] = {"type": "none"}
        user = body.get("user")
        if isinstance(user, str) and user:
            out["metadata"] = {"user_id": user[:256]}
        if stream:
            out["stream"] = True
        return UpstreamRequest("POST", self._messages_url, self._headers, dumps(out))

    def probe_request(self, model: str, mode: str) -> UpstreamRequest:
        if mode == "completion":
            body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
            return UpstreamRequest("POST", self._messages_url, self._headers, orjson.dumps(body))
        return UpstreamRequest("GET", f"{self.vendor.base_url}/v1/models", self._headers, None)

    # --- responses --------------------------------------------------------

    def parse_chat(self, data: bytes) -> ChatResult:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned a body that is not JSON", 200) from None
        if not isinstance(obj, dict):
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned a body that is not a message", 200)
        if obj.get("type") == "error":
            raise self._error_from(obj.get("error"), 200)
        content = obj.get("content")
        if not isinstance(content, list):
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned a message without content", 200)
        texts: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text":
                t = block.get("text")
                if isinstance(t, str):
                    texts.append(t)
            elif btype == "tool_use":
                calls.append({"id": str(block.get("id") or ""), "type": "function",
                              "function": {"name": str(block.get("name") or ""),
                                           "arguments": args_json(block.get("input"))}})
            elif btype == "thinking":
                t = block.get("thinking")
                if isinstance(t, str):
                    thinking.append(t)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
        if calls:
            message["tool_calls"] = calls
        if thinking:
            message["reasoning_content"] = "".join(thinking)
        stop = obj.get("stop_reason")
        finish = finish_reason(stop) if stop is not None else None
        return ChatResult(message=message, finish_reason=finish, usage=map_usage(obj.get("usage")))

    def stream_decoder(self) -> StreamDecoder:
        return AnthropicStreamDecoder(self)

    def classify_error(self, status: int, headers: Any, body: bytes) -> VendorError:
        message, etype = _error_fields(body)
        cls = status_class(status)
        hay = message.lower()
        if status == 529 or etype == "overloaded_error":
            cls = ErrorClass.SERVER
        elif status in (400, 413, 422):
            if any(m in hay for m in BILLING_MARKERS) and etype != "rate_limit_error":
                cls = ErrorClass.MISCONFIGURED  # Anthropic reports an empty balance as a 400
            elif any(m in hay for m in CONTEXT_EXTRA):
                cls = ErrorClass.CONTEXT_LENGTH
            elif any(m in hay for m in POLICY_EXTRA):
                cls = ErrorClass.CONTENT_POLICY
            else:
                cls = refine_400(message, None, etype)
        retry_after = None
        if cls in (ErrorClass.THROTTLED, ErrorClass.SERVER):
            retry_after = parse_retry_after(header(headers, "retry-after"))
        return VendorError(cls, message or f"HTTP {status}", status, retry_after, etype)

    def _error_from(self, err: Any, status: int | None) -> VendorError:
        etype = err.get("type") if isinstance(err, dict) else None
        etype = etype if isinstance(etype, str) else None
        message = str(err.get("message") or "") if isinstance(err, dict) else ""
        cls = ERROR_TYPES.get(etype or "", ErrorClass.SERVER)
        return VendorError(cls, message or f"vendor error {etype or ''}".strip(), status, None, etype)


def _error_fields(body: bytes) -> tuple[str, str | None]:
    """(message, error type) from {"type": "error", "error": {"type", "message"}}, tolerating anything."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip(), None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        etype = err.get("type")
        return str(err.get("message") or ""), etype if isinstance(etype, str) else None
    if isinstance(err, str):
        return err, None
    return body[:300].decode("utf-8", "replace"), None


def _history_tool_names(messages: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for m in messages:
        c = m["content"]
        if m["role"] == "assistant" and isinstance(c, list):
            for b in c:
                if b["type"] == "tool_use":
                    names[b["name"]] = None
    return list(names)


def _tool(t: dict) -> dict:
    schema = t["parameters"] or {"type": "object", "properties": {}}
    if "type" not in schema:
        schema = {"type": "object", **schema}
    out = {"name": t["name"], "input_schema": schema}
    if t["description"]:
        out["description"] = t["description"]
    return out


def _user_blocks(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if _non_blank(content) else []
    if content is None:
        return []
    blocks: list[dict[str, Any]] = []
    for w, ptype, part in content_parts(content, where):
        if ptype == "text":
            text = part_text(part, w)
            if _non_blank(text):
                blocks.append({"type": "text", "text": text})
        elif ptype == "image_url":
            kind, mime, data = parse_image_url(part, w)
            src = ({"type": "base64", "media_type": mime, "data": data} if kind == "base64"
                   else {"type": "url", "url": data})
            blocks.append({"type": "image", "source": src})
        elif ptype == "file":
            mime, data = inline_file(part, w, "Anthropic")
            if mime != "application/pdf":
                bad(f"{w}: Anthropic accepts PDF documents only, got {mime}")
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}})
        else:
            bad(f"{w}: content part type {ptype!r} is not supported by Anthropic")
    return blocks


def convert_messages(messages: Any, prefill: str | None) -> tuple[list[str], list[dict]]:
    """OpenAI messages -> (system texts, alternating Anthropic messages with block lists)."""
    if not isinstance(messages, list):
        bad("'messages' must be an array")
    system: list[str] = []
    out: list[dict] = []

    def add(role: str, blocks: list[dict]) -> None:
        merge_turn(out, role, blocks, "content")

    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            bad(f"{where} must be an object")
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            text = text_of(content, where)
            if _non_blank(text):
                system.append(text)
        elif role == "user":
            add("user", _user_blocks(content, where))
        elif role == "assistant":
            blocks: list[dict] = []
            text = text_of(content, where)
            if _non_blank(text):
                blocks.append({"type": "text", "text": text})
            for cid, name, args in tool_calls_of(m, where):
                blocks.append({"type": "tool_use", "id": _tool_id(cid), "name": name, "input": args})
            add("assistant", blocks)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                bad(f"{where}: a tool message needs 'tool_call_id' (a string)")
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
            if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url"
                                                 for p in content):
                block["content"] = _user_blocks(content, where)  # a tool may return images
            else:
                text = text_of(content, where)
                if text:
                    block["content"] = text
            add("user", [block])
        elif role == "function":
            bad(f"{where}: legacy 'function' role messages cannot be sent to Anthropic; use tools")
        else:
            bad(f"{where}.role must be system, developer, user, assistant or tool")

    if prefill and _non_blank(prefill):
        add("assistant", [{"type": "text", "text": prefill}])
    if not out:
        if not system:
            bad("'messages' must contain at least one message with content")
        # Only a system prompt: Anthropic needs a user turn, so the prompt becomes it.
        out.append({"role": "user", "content": [{"type": "text", "text": "\n\n".join(system)}]})
        system = []
    last = out[-1]
    if last["role"] == "assistant":
        # A final assistant turn is a prefill; Anthropic refuses trailing whitespace there.
        tail = last["content"][-1]
        if tail["type"] == "text":
            tail["text"] = tail["text"].rstrip()
    for msg in out:
        c = msg["content"]
        if len(c) == 1 and c[0]["type"] == "text":
            msg["content"] = c[0]["text"]
    return system, out
