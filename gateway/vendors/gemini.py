"""Google Gemini API (`models/{model}:generateContent` / `:streamGenerateContent?alt=sse`).

What does not map one-to-one, and what we do instead:
- system/developer messages become `systemInstruction`; roles become user/model,
  consecutive same-role turns are merged.
- Tool results need the function's name in Gemini (`functionResponse.name`);
  it is looked up from the earlier assistant `tool_calls` by `tool_call_id`.
  A tool result that is a JSON object is sent as the response object, anything
  else as `{"result": <text>}`.
- Gemini has no tool call ids: ids are kept when Gemini sends one, otherwise
  `call_<random>` is minted. Gemini 3 wants the thought signature of a function
  call back in history; OpenAI history cannot carry it, so assistant function
  calls are sent with Google's documented placeholder signature.
- JSON Schemas (tool parameters, response_format json_schema) are converted to
  Gemini's OpenAPI-subset `Schema`: local `$ref`s inlined, `["x", "null"]`
  types turned into `nullable`, unsupported keywords dropped (gemini_schema.py).
- `parallel_tool_calls` has no Gemini equivalent and is ignored.
- Prefill (only on targets configured with `prefill = true`): the partial
  answer is sent as a final `model` turn, which Gemini continues.
- Gemini has no `[DONE]`: a chunk carrying `finishReason` ends the stream.
- Safety finishes (SAFETY, PROHIBITED_CONTENT, BLOCKLIST, ...) and a blocked
  prompt (`promptFeedback.blockReason`) are answers with finish_reason
  "content_filter", not errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

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
from gateway.vendors.gemini_schema import to_gemini_schema
from gateway.vendors.translate import (
    args_json,
    as_int,
    bad,
    content_parts,
    dumps,
    function_tools,
    header,
    inline_file,
    json_schema_format,
    max_tokens,
    merge_turn,
    new_call_id,
    opt_int,
    opt_number,
    parse_image_url,
    part_text,
    stop_list,
    text_of,
    tool_calls_of,
    tool_choice,
    usage_dict,
)

FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR", "JAILBREAK"})
# Google's documented value for function calls whose real thought signature is unknown.
PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"

MISCONFIG_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED",
                               "API_KEY_HTTP_REFERRER_BLOCKED", "API_KEY_IP_ADDRESS_BLOCKED",
                               "SERVICE_DISABLED", "BILLING_DISABLED", "CONSUMER_INVALID",
                               "ACCESS_TOKEN_TYPE_UNSUPPORTED"})


def finish_of(reason: Any, has_calls: bool) -> str:
    if not isinstance(reason, str):
        return "tool_calls" if has_calls else "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def map_usage(u: Any) -> dict[str, Any] | None:
    if not isinstance(u, dict):
        return None
    thoughts = as_int(u.get("thoughtsTokenCount"))
    prompt = as_int(u.get("promptTokenCount")) + as_int(u.get("toolUsePromptTokenCount"))
    return usage_dict(prompt, as_int(u.get("candidatesTokenCount")) + thoughts,
                      as_int(u.get("cachedContentTokenCount")), thoughts or None)


class GeminiAdapter(Adapter):
    kind = "gemini"
    supports_prefill = True  # a final "model" turn; used only on targets with prefill = true

    def __init__(self, vendor: VendorConfig) -> None:
        super().__init__(vendor)
        self._headers = {"content-type": "application/json", **vendor.headers}
        if vendor.api_key:
            self._headers["x-goog-api-key"] = vendor.api_key
        self._urls: dict[tuple[str, bool], str] = {}

    def _url(self, model: str, stream: bool) -> str:
        url = self._urls.get((model, stream))
        if url is None:
            if model.startswith("tunedModels/"):  # tuned models live beside, not under, models/
                base = f"{self.vendor.base_url}/v1beta/tunedModels/{quote(model[12:], safe='-._~@')}"
            else:
                name = model[7:] if model.startswith("models/") else model
                base = f"{self.vendor.base_url}/v1beta/models/{quote(name, safe='-._~@')}"
            url = f"{base}:streamGenerateContent?alt=sse" if stream else f"{base}:generateContent"
            if len(self._urls) < 1024:
                self._urls[(model, stream)] = url
        return url

    # --- requests ---------------------------------------------------------

    def chat_request(self, body: dict[str, Any], model: str, *, stream: bool,
                     prefill: str | None = None) -> UpstreamRequest:
        if not isinstance(body, dict):
            bad("request body must be a JSON object")
        system, contents = convert_messages(body.get("messages"), prefill)
        out: dict[str, Any] = {"contents": contents}
        if system:
            out["systemInstruction"] = {"parts": [{"text": s} for s in system]}
        gc: dict[str, Any] = {}
        mt = max_tokens(body)
        if mt is not None:
            gc["maxOutputTokens"] = mt
        for src, dst in (("temperature", "temperature"), ("top_p", "topP"),
                         ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
            v = opt_number(body, src)
            if v is not None:
                gc[dst] = v
        seed = opt_int(body, "seed", minimum=-(2 ** 63))
        if seed is not None:
            gc["seed"] = seed % 2 ** 31  # Gemini's seed is an int32; OpenAI's an int64
        stops = stop_list(body)
        if stops:
            gc["stopSequences"] = stops
        fmt = json_schema_format(body)
        if fmt is not None:
            gc["responseMimeType"] = "application/json"
            if fmt[1]:
                schema = to_gemini_schema(fmt[1])
                if schema:
                    gc["responseSchema"] = schema
        if gc:
            out["generationConfig"] = gc

        tools = function_tools(body)
        choice = tool_choice(body)
        if tools:
            decls = []
            for t in tools:
                d: dict[str, Any] = {"name": t["name"]}
                if t["description"]:
                    d["description"] = t["description"]
                params = to_gemini_schema(t["parameters"]) if t["parameters"] else None
                if params and (params.get("type") != "OBJECT" or params.get("properties")):
                    d["parameters"] = params  # Gemini refuses OBJECT parameters with no properties
                decls.append(d)
            out["tools"] = [{"functionDeclarations": decls}]
            if choice is not None:
                mode, name = choice
                fcc: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE"}.get(mode, "ANY")}
                if mode == "function":
                    fcc["allowedFunctionNames"] = [name]
                out["toolConfig"] = {"functionCallingConfig": fcc}
        return UpstreamRequest("POST", self._url(model, stream), self._headers, dumps(out))

    def probe_request(self, model: str, mode: str) -> UpstreamRequest:
        if mode == "completion":
            body = {"contents": [{"role": "user", "parts": [{"text": "ping"}]}],
                    "generationConfig": {"maxOutputTokens": 1}}
            return UpstreamRequest("POST", self._url(model, False), self._headers, orjson.dumps(body))
        return UpstreamRequest("GET", f"{self.vendor.base_url}/v1beta/models", self._headers, None)

    # --- responses --------------------------------------------------------

    def parse_chat(self, data: bytes) -> ChatResult:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned a body that is not JSON", 200) from None
        if not isinstance(obj, dict):
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned a body that is not a response", 200)
        if isinstance(obj.get("error"), dict):
            raise self._error_obj(obj["error"], None, None)
        usage = map_usage(obj.get("usageMetadata"))
        cands = obj.get("candidates")
        if not cands:
            fb = obj.get("promptFeedback")
            if isinstance(fb, dict) and fb.get("blockReason"):
                return ChatResult({"role": "assistant", "content": ""}, "content_filter", usage)
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned no candidates", 200)
        if not isinstance(cands, list) or not isinstance(cands[0], dict):
            raise VendorError(ErrorClass.PROTOCOL, "vendor returned malformed candidates", 200)
        message, finish = _candidate(cands[0])
        extra = []
        for i, c in enumerate(cands[1:], 1):
            if isinstance(c, dict):
                m, f = _candidate(c)
                extra.append({"index": i, "message": m, "finish_reason": f})
        return ChatResult(message, finish, usage, extra)

    def stream_decoder(self) -> StreamDecoder:
        return GeminiStreamDecoder(self)

    def classify_error(self, status: int, headers: Any, body: bytes) -> VendorError:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, list) and obj:
            obj = obj[0]  # the non-SSE stream endpoint wraps errors in an array
        err = obj.get("error") if isinstance(obj, dict) else None
        if not isinstance(err, dict):
            message = body[:300].decode("utf-8", "replace").strip()
            cls = status_class(status)
            if status == 400:
                cls = refine_400(message, None, None)
            retry = parse_retry_after(header(headers, "retry-after")) if status in (429, 503) else None
            return VendorError(cls, message or f"HTTP {status}", status, retry, None)
        return self._error_obj(err, status, headers)

    def _error_obj(self, err: dict, status: int | None, headers: Any) -> VendorError:
        """A google.rpc.Status error -> the failover contract (also used for in-band stream errors)."""
        gstatus = err.get("status") if isinstance(err.get("status"), str) else None
        message = str(err.get("message") or "")
        if status is None:
            status = as_int(err.get("code")) or None
        reasons: list[str] = []
        retry: float | None = None
        details = err.get("details")
        if isinstance(details, list):
            for d in details:
                if not isinstance(d, dict):
                    continue
                dtype = str(d.get("@type") or "")
                if dtype.endswith("google.rpc.ErrorInfo") and isinstance(d.get("reason"), str):
                    reasons.append(d["reason"])
                elif dtype.endswith("google.rpc.RetryInfo"):
                    retry = _duration(d.get("retryDelay"))
        low = message.lower()
        if (MISCONFIG_REASONS.intersection(reasons) or gstatus in ("UNAUTHENTICATED", "PERMISSION_DENIED")
                or "api key not valid" in low or "api key expired" in low):
            cls = ErrorClass.MISCONFIGURED
        elif gstatus == "RESOURCE_EXHAUSTED" or status == 429:
            cls = ErrorClass.THROTTLED
        elif gstatus == "NOT_FOUND" or status == 404:
            cls = ErrorClass.MISCONFIGURED
        elif gstatus == "FAILED_PRECONDITION":
            cls = ErrorClass.MISCONFIGURED  # billing not enabled, unsupported location
        elif gstatus in ("UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "UNKNOWN", "ABORTED") or (
                status is not None and status >= 500):
            cls = ErrorClass.SERVER
        elif status is None:
            cls = ErrorClass.SERVER
        else:
            cls = status_class(status)
            if status in (400, 422) or gstatus == "INVALID_ARGUMENT":
                cls = refine_400(message, gstatus, None)
        if retry is None and cls in (ErrorClass.THROTTLED, ErrorClass.SERVER):
            retry = parse_retry_after(header(headers, "retry-after"))
        code = reasons[0] if reasons else gstatus
        return VendorError(cls, message or f"HTTP {status}", status, retry, code)


def _duration(v: Any) -> float | None:
    """A protobuf Duration in JSON ("2s", "0.5s", "1.000340s") as seconds."""
    if isinstance(v, str) and v.endswith("s"):
        try:
            return max(0.0, float(v[:-1]))
        except ValueError:
            return None
    return None


def _candidate(c: dict) -> tuple[dict[str, Any], str]:
    content = c.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    if isinstance(parts, list):
        for p in parts:
            if not isinstance(p, dict):
                continue
            text = p.get("text")
            if isinstance(text, str):
                (thoughts if p.get("thought") is True else texts).append(text)
                continue
            fc = p.get("functionCall")
            if isinstance(fc, dict):
                calls.append(_call(fc))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return message, finish_of(c.get("finishReason"), bool(calls))


def _call(fc: dict) -> dict[str, Any]:
    cid = fc.get("id")
    return {"id": cid if isinstance(cid, str) and cid else new_call_id(), "type": "function",
            "function": {"name": str(fc.get("name") or ""), "arguments": args_json(fc.get("args"))}}


# --- request conversion -----------------------------------------------------

def _user_parts(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if content is None:
        return []
    parts: list[dict[str, Any]] = []
    for w, ptype, part in content_parts(content, where):
        if ptype == "text":
            text = part_text(part, w)
            if text:
                parts.append({"text": text})
        elif ptype == "image_url":
            kind, mime, data = parse_image_url(part, w)
            parts.append({"inlineData": {"mimeType": mime, "data": data}} if kind == "base64"
                         else {"fileData": {"mimeType": mime, "fileUri": data}})
        elif ptype == "input_audio":
            a = part.get("input_audio")
            if not isinstance(a, dict) or not isinstance(a.get("data"), str) or not isinstance(a.get("format"), str):
                bad(f"{w}: input_audio needs 'data' and 'format' strings")
            parts.append({"inlineData": {"mimeType": f"audio/{a['format']}", "data": a["data"]}})
        elif ptype == "file":
            mime, data = inline_file(part, w, "Gemini")
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        else:
            bad(f"{w}: content part type {ptype!r} is not supported by Gemini")
    return parts


def _response_object(text: str) -> dict:
    if text[:1] == "{":
        try:
            value = orjson.loads(text)
            if isinstance(value, dict):
                return value
        except orjson.JSONDecodeError:
            pass
    return {"result": text}


def convert_messages(messages: Any, prefill: str | None) -> tuple[list[str], list[dict]]:
    """OpenAI messages -> (system texts, Gemini contents with merged user/model turns)."""
    if not isinstance(messages, list):
        bad("'messages' must be an array")
    system: list[str] = []
    out: list[dict] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse

    def add(role: str, parts: list[dict]) -> None:
        merge_turn(out, role, parts, "parts")

    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            bad(f"{where} must be an object")
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            text = text_of(content, where)
            if text:
                system.append(text)
        elif role == "user":
            add("user", _user_parts(content, where))
        elif role == "assistant":
            parts: list[dict] = []
            text = text_of(content, where)
            if text:
                parts.append({"text": text})
            first = True
            for cid, name, args in tool_calls_of(m, where):
                names[cid] = name
                p: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
                if first:
                    p["thoughtSignature"] = PLACEHOLDER_SIGNATURE
                    first = False
                parts.append(p)
            add("model", parts)
        elif role in ("tool", "function"):
            call_id = m.get("tool_call_id")
            fn_name = names.get(call_id) if isinstance(call_id, str) else None
            if fn_name is None:
                n = m.get("name")
                if isinstance(n, str) and n:
                    fn_name = n
                elif isinstance(call_id, str):
                    bad(f"{where}: tool_call_id {call_id!r} matches no earlier assistant tool call")
                else:
                    bad(f"{where}: a tool message needs 'tool_call_id' (a string)")
            add("user", [{"functionResponse": {"name": fn_name,
                                               "response": _response_object(text_of(content, where))}}])
        else:
            bad(f"{where}.role must be system, developer, user, assistant or tool")

    if prefill:
        add("model", [{"text": prefill}])
    if not out:
        if not system:
            bad("'messages' must contain at least one message with content")
        out.append({"role": "user", "parts": [{"text": "\n\n".join(system)}]})
        system = []
    return system, out


class GeminiStreamDecoder(StreamDecoder):
    """Each SSE `data:` is a whole GenerateContentResponse; the one with finishReason is the last."""

    def __init__(self, adapter: GeminiAdapter):
        super().__init__()
        self._adapter = adapter
        self._role_sent = False
        self._tool_index = 0
        self._usage: Any = None

    def feed(self, event: str | None, data: str) -> list[StreamDelta]:
        obj = self.load(data)
        if obj is None:
            return []
        out: list[StreamDelta] = []
        if not self._role_sent:
            err = obj.get("error")
            if isinstance(err, dict):
                raise self._adapter._error_obj(err, None, None)
            self._role_sent = True
            out.append(StreamDelta({"role": "assistant"}))
        um = obj.get("usageMetadata")
        if um is not None:
            self._usage = um
        cands = obj.get("candidates")
        if not cands:
            err = obj.get("error")
            if isinstance(err, dict):
                raise self._adapter._error_obj(err, None, None)
            fb = obj.get("promptFeedback")
            if isinstance(fb, dict) and fb.get("blockReason"):
                self.done = True
                out.append(StreamDelta({}, "content_filter", map_usage(self._usage)))
            elif um is None and not isinstance(cands, list):
                self.malformed += 1
            return out
        c = cands[0] if isinstance(cands, list) else None
        if not isinstance(c, dict):
            self.malformed += 1
            return out
        content = c.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            for p in parts:
                if not isinstance(p, dict):
                    continue
                text = p.get("text")
                if isinstance(text, str):
                    if text:
                        out.append(StreamDelta({"reasoning_content": text} if p.get("thought") is True
                                               else {"content": text}))
                    continue
                fc = p.get("functionCall")
                if isinstance(fc, dict):
                    call = _call(fc)
                    call["index"] = self._tool_index
                    self._tool_index += 1
                    out.append(StreamDelta({"tool_calls": [call]}))
        reason = c.get("finishReason")
        if reason:
            self.done = True
            out.append(StreamDelta({}, finish_of(reason, self._tool_index > 0), map_usage(self._usage)))
        return out
