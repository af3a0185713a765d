"""Google Gemini API wire format (``models/{model}:generateContent`` / ``:streamGenerateContent``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.mock.content import build_reply, example_args, words
from gateway.mock.dialect import TERMINAL, UNIT, BadRequest, Call, Dialect, ErrorReply

FINISH = {"stop": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS", "tool": "STOP", "refusal": "SAFETY"}

# status -> (google.rpc status, message); {model} is filled in.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "models/{model} is not found for API version v1beta, or is not supported for "
                       "generateContent. Call ListModels to see the list of available models and their "
                       "supported methods."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details. "
                                "For more information on this error, head to: "
                                "https://ai.google.dev/gemini-api/docs/rate-limits."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting"),
    501: ("UNIMPLEMENTED", "Method not supported."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}

_ids = itertools.count(1)


def _err(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return orjson.dumps({"error": err})


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:.3f}".rstrip("0") + "s"


def _text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


class GeminiDialect(Dialect):
    name = "gemini"
    policy_is_error = False  # Gemini answers 200 with finishReason SAFETY

    def check_key(self, headers: Mapping[str, str], query: Mapping[str, str],
                  keys: frozenset[str]) -> ErrorReply | None:
        key = headers.get("x-goog-api-key") or query.get("key")
        if key in keys:
            return None
        if not key:
            return ErrorReply(403, _err(403, "PERMISSION_DENIED",
                                        "Method doesn't allow unregistered callers (callers without established "
                                        "identity). Please use API Key or other form of API consumer identity "
                                        "to call this API."))
        return self.error("auth", None, model="")

    # --- requests ---------------------------------------------------------------------------

    def parse_chat(self, body: Any, path_model: str | None, query: Mapping[str, str],
                   headers: Mapping[str, str], forced_tokens: int | None) -> Call:
        model, _, method = (path_model or "").partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise BadRequest(f"Method {method or '(none)'} is not supported.", status=404)
        model = model.removeprefix("models/")
        stream = method == "streamGenerateContent"
        if stream and query.get("alt") != "sse":
            # Without alt=sse Google streams one JSON array; only the SSE form is served here.
            raise BadRequest("This fake serves streamGenerateContent with alt=sse only.")
        if not isinstance(body, dict):
            raise BadRequest("Invalid JSON payload received.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
        si = body.get("systemInstruction") or body.get("system_instruction")
        prompt = words(_text(si.get("parts"))) if isinstance(si, dict) else 0
        last_user = ""
        after_tool_result = False
        for i, c in enumerate(contents):
            if not isinstance(c, dict) or not isinstance(c.get("parts"), list):
                raise BadRequest(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
            role = c.get("role", "user")
            if role not in ("user", "model", "function"):
                raise BadRequest("Please use a valid role: user, model.")
            text = _text(c["parts"])
            prompt += words(text)
            after_tool_result = any(isinstance(p, dict) and "functionResponse" in p for p in c["parts"])
            if role == "user" and text.strip():
                last_user = text
        gc = body.get("generationConfig") or body.get("generation_config") or {}
        max_tokens = gc.get("maxOutputTokens", gc.get("max_output_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise BadRequest("* GenerateContentRequest.generation_config.max_output_tokens: must be positive")
        stop = gc.get("stopSequences", gc.get("stop_sequences"))
        tc = gc.get("thinkingConfig") or gc.get("thinking_config") or {}
        reasoning = bool(tc.get("includeThoughts", tc.get("include_thoughts")))
        tools = body.get("tools") or []
        if tools:
            prompt += words(orjson.dumps(tools).decode())
        tool = self._pick_tool(tools, body.get("toolConfig") or body.get("tool_config"), after_tool_result)
        reply = build_reply(self.name, model, last_user=last_user, prompt_tokens=prompt, max_tokens=max_tokens,
                            stop=stop if isinstance(stop, list) else None, forced_tokens=forced_tokens,
                            reasoning=reasoning, tool=tool)
        if reply.tool_fragments is not None:
            reply.tool_fragments = [reply.tool_args or "{}"]  # Gemini sends a functionCall whole
        return Call(model, stream, reply)

    @staticmethod
    def _pick_tool(tools: Any, config: Any, after_tool_result: bool) -> tuple[str, dict] | None:
        decls = []
        for t in tools if isinstance(tools, list) else ():
            if isinstance(t, dict):
                decls += [d for d in (t.get("functionDeclarations") or t.get("function_declarations") or [])
                          if isinstance(d, dict) and d.get("name")]
        if not decls:
            return None
        fcc = (config or {}).get("functionCallingConfig") or (config or {}).get("function_calling_config") or {}
        mode = str(fcc.get("mode", "AUTO")).upper()
        allowed = fcc.get("allowedFunctionNames") or fcc.get("allowed_function_names")
        if mode == "NONE":
            return None
        if mode in ("ANY", "VALIDATED") and allowed:
            decl = next((d for d in decls if d["name"] in allowed), None)
            if decl is None:
                raise BadRequest("allowed_function_names must name declared functions")
        elif mode in ("ANY", "VALIDATED") or not after_tool_result:
            decl = decls[0]
        else:
            return None
        schema = decl.get("parameters") or decl.get("parametersJsonSchema") or decl.get("parameters_json_schema")
        return str(decl["name"]), example_args(schema)

    # --- replies ----------------------------------------------------------------------------

    def _usage(self, call: Call, final: bool = True) -> dict[str, Any]:
        r = call.reply
        thoughts = len(r.reasoning or ())
        out = r.completion_tokens - thoughts if final else 0
        u: dict[str, Any] = {"promptTokenCount": r.prompt_tokens, "candidatesTokenCount": out,
                             "totalTokenCount": r.prompt_tokens + out + (thoughts if final else 0),
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": r.prompt_tokens}]}
        if thoughts and final:
            u["thoughtsTokenCount"] = thoughts
        if not final:
            del u["candidatesTokenCount"]
        return u

    def _parts(self, call: Call) -> list[dict[str, Any]]:
        r = call.reply
        parts: list[dict[str, Any]] = []
        if r.reasoning:
            parts.append({"text": "".join(r.reasoning), "thought": True})
        if r.tool_name is not None:
            parts.append({"functionCall": {"name": r.tool_name, "args": orjson.loads(r.tool_args or "{}")}})
        else:
            parts.append({"text": r.text})
        return parts

    def _candidate(self, parts: list[dict[str, Any]] | None, finish: str | None) -> dict[str, Any]:
        cand: dict[str, Any] = {}
        if parts is not None:
            cand["content"] = {"parts": parts, "role": "model"}
        if finish is not None:
            cand["finishReason"] = finish
            if finish == "SAFETY":
                cand["safetyRatings"] = [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
        cand["index"] = 0
        return cand

    def render(self, call: Call) -> bytes:
        r = call.reply
        parts = None if r.finish == "refusal" else self._parts(call)
        return orjson.dumps({"candidates": [self._candidate(parts, FINISH[r.finish])],
                             "usageMetadata": self._usage(call), "modelVersion": call.model,
                             "responseId": f"mockresp{next(_ids)}"})

    def stream_events(self, call: Call) -> list[tuple[bytes, int]]:
        r = call.reply
        rid = f"mockresp{next(_ids)}"
        running = orjson.dumps(self._usage(call, final=False))
        tail = b',"usageMetadata":' + running + b',"modelVersion":' + orjson.dumps(call.model) \
            + b',"responseId":"' + rid.encode() + b'"}\r\n\r\n'

        def chunk(part: dict[str, Any]) -> bytes:
            return (b'data: {"candidates":[{"content":{"parts":[' + orjson.dumps(part)
                    + b'],"role":"model"},"index":0}]' + tail)

        ev: list[tuple[bytes, int]] = []
        for piece in r.reasoning or ():
            ev.append((chunk({"text": piece, "thought": True}), UNIT))
        if r.tool_name is not None:
            ev.append((chunk({"functionCall": {"name": r.tool_name, "args": orjson.loads(r.tool_args or "{}")}}),
                       UNIT))
        else:
            for tok in r.tokens:
                ev.append((chunk({"text": tok}), UNIT))
        final_parts = None if r.finish == "refusal" else [{"text": ""}]
        ev.append((b"data: " + orjson.dumps({"candidates": [self._candidate(final_parts, FINISH[r.finish])],
                                              "usageMetadata": self._usage(call), "modelVersion": call.model,
                                              "responseId": rid}) + b"\r\n\r\n", TERMINAL))
        return ev

    def error_event(self, model: str, error_type: str | None, message: str | None) -> bytes:
        status = error_type or "UNAVAILABLE"
        code = next((c for c, (s, _) in ERRORS.items() if s == status), 503)
        return b"data: " + _err(code, status, message or ERRORS.get(code, ("", "error"))[1]) + b"\r\n\r\n"

    def malformed_event(self) -> bytes:
        return b'data: {"candidates": [{"content": {"parts": [{"text": \r\n\r\n'

    # --- errors -----------------------------------------------------------------------------

    def error(self, kind: str, status: int | None, *, model: str, message: str | None = None,
              error_type: str | None = None, retry_after: float | None = None) -> ErrorReply:
        details: list[dict[str, Any]] = []
        if kind == "context_length":
            code, gstatus = status or 400, error_type or "INVALID_ARGUMENT"
            text = message or "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
        elif kind == "content_policy":
            code, gstatus = status or 400, error_type or "INVALID_ARGUMENT"
            text = message or "The request was blocked by safety settings (SAFETY)."
        elif kind == "auth":
            code, gstatus = status or 400, error_type or "INVALID_ARGUMENT"
            text = message or "API key not valid. Please pass a valid API key."
            details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"}},
                       {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                        "message": "API key not valid. Please pass a valid API key."}]
        elif kind == "billing":
            code, gstatus = status or 400, error_type or "FAILED_PRECONDITION"
            text = message or ("Gemini API free tier is not available in your country. Please enable billing "
                               "on your project in Google AI Studio.")
        else:
            code = status or 500
            default = ERRORS.get(code) or (("FAILED_PRECONDITION", "Request failed.") if code < 500
                                           else ("INTERNAL", "An internal error has occurred."))
            gstatus = error_type or default[0]
            text = message or default[1].replace("{model}", model)
            if code == 429:
                details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                     "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                     "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "15"}]})
        if retry_after is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": _duration(retry_after)})
        return ErrorReply(code, _err(code, gstatus, text, details))

    # --- models -----------------------------------------------------------------------------

    @staticmethod
    def _model_obj(model: str) -> dict[str, Any]:
        return {"name": f"models/{model}", "version": "001", "displayName": model.replace("-", " ").title(),
                "description": "Fake Gemini model served by patchbay mock.", "inputTokenLimit": 1048576,
                "outputTokenLimit": 8192,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
                "temperature": 1, "topP": 0.95, "topK": 40, "maxTemperature": 2}

    def models_body(self, models: list[str]) -> bytes:
        return orjson.dumps({"models": [self._model_obj(m) for m in models]})

    def model_body(self, model: str) -> bytes:
        return orjson.dumps(self._model_obj(model))
