"""The OpenAI Chat Completions door: validates the client's request, writes the router's answer back.

Everything OpenAI-shaped the client sees is written here: the
`chat.completion` body, `chat.completion.chunk` events (one id and `created`
for the whole stream, continuations included), `[DONE]`, the in-band error
event the SDKs raise on, error bodies, and the `x-patchbay-*` headers. The
router never sees aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from gateway.doors.base import Parsed
from gateway.routing.call import Answer, Call, ClientError, Failed
from gateway.routing.live import Continued, Interrupted, LiveStream
from gateway.routing.record import record, record_failed
from gateway.routing.router import Router
from gateway.routing.stream import with_total
from gateway.runtime import Target
from gateway.vendors.base import StreamDelta

log = logging.getLogger("patchbay")

class _ClientGone(Exception):
    """The streaming client disconnected or stopped reading."""


# ------------------------------------------------------------------------------------------- validation

_TYPES = {
    "temperature": (int, float), "top_p": (int, float), "max_tokens": int, "max_completion_tokens": int,
    "n": int, "stream": bool, "stop": (str, list, type(None)), "tools": list, "user": str,
    "presence_penalty": (int, float), "frequency_penalty": (int, float), "seed": int,
    "stream_options": (dict, type(None)), "response_format": dict, "parallel_tool_calls": bool,
    "tool_choice": (str, dict), "logprobs": bool, "metadata": dict,
}
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "a boolean", str: "a string", list: "an array",
               dict: "an object", type(None): "null"}


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(v), type(v).__name__)


def validate(body: Any) -> None:
    """Raise ClientError for a request no vendor should see."""
    if not isinstance(body, dict):
        raise ClientError(400, f"The request body must be a JSON object, got {_type_name(body)}.")
    model = body.get("model")
    if model is None:
        raise ClientError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise ClientError(400, f"Invalid type for 'model': expected a string, but got {_type_name(model)}.",
                          param="model", code="invalid_type")
    _validate_messages(body.get("messages"))
    for key, types in _TYPES.items():
        v = body.get(key)
        if v is not None:
            tt = types if isinstance(types, tuple) else (types,)
            if isinstance(v, bool) and bool not in tt or not isinstance(v, tt):
                words = " or ".join(_TYPE_WORDS[t] for t in tt)
                raise ClientError(400, f"Invalid type for '{key}': expected {words}, but got {_type_name(v)}.",
                                  param=key, code="invalid_type")
    n = body.get("n")
    if n not in (None, 1):
        raise ClientError(400, "Patchbay supports only n=1: failover cannot merge choices across vendors.",
                          param="n", code="unsupported_value")


def _validate_messages(messages: Any) -> None:
    if messages is None:
        raise ClientError(400, "Missing required parameter: 'messages'.", param="messages",
                          code="missing_required_parameter")
    if not isinstance(messages, list):
        raise ClientError(400, f"Invalid type for 'messages': expected an array, but got {_type_name(messages)}.",
                          param="messages", code="invalid_type")
    if not messages:
        raise ClientError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                          param="messages", code="empty_array")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ClientError(400, f"Invalid type for 'messages[{i}]': expected an object, but got {_type_name(m)}.",
                              param=f"messages[{i}]", code="invalid_type")
        role = m.get("role")
        if not isinstance(role, str) or role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise ClientError(400, f"Invalid value for 'messages[{i}].role': {role!r}. Supported values are: "
                                   "'system', 'developer', 'user', 'assistant' and 'tool'.",
                              param=f"messages[{i}].role", code="invalid_value")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise ClientError(400, f"Invalid type for 'messages[{i}].content': expected a string or an array, "
                                   f"but got {_type_name(content)}.", param=f"messages[{i}].content",
                              code="invalid_type")


# ------------------------------------------------------------------------------------------- encoding

def error_body(ce: ClientError) -> bytes:
    return orjson.dumps({"error": {"message": ce.message, "type": ce.etype, "param": ce.param, "code": ce.code}})


def error_event(message: str, code: str) -> bytes:
    """An in-band SSE error (the OpenAI SDKs raise APIError on it); never followed by [DONE]."""
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                               "code": code}}) + b"\n\n"


def headers_for(call: Call, target: str, overhead_ms: float) -> dict[str, str]:
    h = {"x-request-id": call.id, "x-patchbay-target": target,
         "x-patchbay-attempts": str(len(call.attempts)), "x-patchbay-overhead-ms": f"{overhead_ms:.3f}"}
    if call.dropped:   # what the answering target was not sent (hints it cannot use), never silently
        h["x-patchbay-dropped"] = ",".join(call.dropped)
    return h


def completion_body(call: Call, ans: Answer) -> bytes:
    t, res = ans.target, ans.result
    msg = res.message
    if "content" not in msg:
        msg = {**msg, "content": None}
    if "refusal" not in msg:
        msg = {**msg, "refusal": None}
    choices = [{"index": 0, "message": msg, "logprobs": None, "finish_reason": res.finish_reason or "stop"}]
    choices.extend(res.extra_choices)
    return orjson.dumps({"id": f"chatcmpl-{call.id}", "object": "chat.completion", "created": int(call.ts),
                         "model": t.cfg.model, "choices": choices,
                         "usage": with_total(res.usage) if res.usage is not None else None})


class ChunkEncoder:
    """`chat.completion.chunk` bytes with one id and created for the whole stream."""

    __slots__ = ("call", "prefix", "_role_sent")

    def __init__(self, call: Call, model: str):
        self.call = call
        self._role_sent = False
        self.model(model)

    def model(self, model: str) -> None:
        """Chunks from here on carry this model (after a continuation, the one that now answers)."""
        self.prefix = (b'data: {"id":"chatcmpl-' + self.call.id.encode() + b'","object":"chat.completion.chunk",'
                       b'"created":' + str(int(self.call.ts)).encode() + b',"model":' + orjson.dumps(model)
                       + b",")

    def chunks(self, deltas: list[StreamDelta]) -> bytes:
        parts = []
        for d in deltas:
            if d.usage is not None and d.delta is None and d.finish_reason is None:
                continue   # usage alone is sent once, at the end, when the client asked for it
            delta = d.delta or {}
            if delta:
                if not self._role_sent:
                    if "role" not in delta:
                        delta = {"role": "assistant", **delta}
                    self._role_sent = True
            elif not self._role_sent:
                delta = {"role": "assistant", "content": ""}
                self._role_sent = True
            fr = orjson.dumps(d.finish_reason) if d.finish_reason else b"null"
            parts.append(self.prefix + b'"choices":[{"index":0,"delta":' + orjson.dumps(delta)
                         + b',"logprobs":null,"finish_reason":' + fr + b"}]}\n\n")
        return b"".join(parts)

    def usage_chunk(self, usage: dict | None) -> bytes:
        return self.prefix + b'"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n"


# ------------------------------------------------------------------------------------------- serving

def _json(status: int, headers: dict[str, str], body: bytes) -> web.Response:
    return web.Response(status=status, headers=headers, body=body, content_type="application/json")


def _failed_json(router: Router, call: Call, failed: Failed) -> web.Response:
    overhead = call.overhead_ms()
    record_failed(router.rt, call, failed, overhead)
    if failed.fallback is not None:
        body = orjson.dumps({
            "id": f"chatcmpl-{call.id}", "object": "chat.completion", "created": int(call.ts),
            "model": "patchbay-fallback",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": failed.fallback, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
        return _json(200, {**headers_for(call, "fallback", overhead), "x-patchbay-fallback": "static"}, body)
    last = call.attempts[-1].target if call.attempts else "none"
    return _json(failed.error.status, {**headers_for(call, last, overhead), **failed.error.headers},
                 error_body(failed.error))


async def serve(router: Router, call: Call, request: web.Request) -> web.StreamResponse:
    """Answer one chat completion request (whole or streamed)."""
    if not call.stream:
        res = await router.complete(call)
        if isinstance(res, Failed):
            return _failed_json(router, call, res)
        body = completion_body(call, res)
        overhead = call.overhead_ms()
        record(router.rt, call, "ok", 200, res.target, res.result.usage and with_total(res.result.usage),
               res.cost, overhead_ms=overhead, answer=body)
        return _json(200, headers_for(call, res.target.id, overhead), body)
    live = await router.open_stream(call)
    if isinstance(live, Failed):
        if live.fallback is not None:
            return await _stream_fallback(router, call, request, live)
        return _failed_json(router, call, live)
    return await _relay(router, call, request, live)


class _Writer:
    """Writes to a streaming client; one that stops reading must not hold the vendor connection forever."""

    def __init__(self, resp: web.StreamResponse, idle: float):
        self.resp, self.idle = resp, idle

    async def __call__(self, data: bytes) -> None:
        if not data:
            return
        try:
            async with asyncio.timeout(self.idle):
                await self.resp.write(data)
        except TimeoutError:
            raise _ClientGone(f"client read nothing for {self.idle:g}s") from None


async def _relay(router: Router, call: Call, request: web.Request, live: LiveStream) -> web.StreamResponse:
    first: Target = live.target
    ttft_ms = round((time.perf_counter() - call.t0) * 1000, 3)
    overhead = call.overhead_ms()
    resp = web.StreamResponse(status=200, headers={
        **headers_for(call, first.id, overhead), "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache"})
    enc = ChunkEncoder(call, first.cfg.model)
    write = _Writer(resp, router.cfg.timeouts.idle)
    events = live.events()
    outcome, err_cls, err_msg = "ok", None, None
    try:
        await resp.prepare(request)
        async for ev in events:
            if isinstance(ev, list):
                await write(enc.chunks(ev))
            elif isinstance(ev, Continued):
                enc.model(ev.target.cfg.model)
            elif isinstance(ev, Interrupted):
                await write(error_event(ev.message, "stream_interrupted"))
        if live.outcome == "ok":
            if call.include_usage:
                await write(enc.usage_chunk(live.state.total_usage()))
            await write(b"data: [DONE]\n\n")
        else:
            outcome, err_cls, err_msg = "cut", "stream_cut", live.error
        await resp.write_eof()
    except asyncio.CancelledError:
        await events.aclose()
        record(router.rt, call, "client_gone", 499, live.target, live.state.total_usage(), None, ttft_ms,
               "client_gone", "client disconnected mid-stream", overhead)
        raise
    except (_ClientGone, ConnectionError, OSError):
        await events.aclose()
        if not resp.prepared:
            record(router.rt, call, "client_gone", 499, live.target, ttft_ms=ttft_ms, overhead_ms=overhead)
            return resp
        outcome, err_cls, err_msg = "client_gone", "client_gone", "client disconnected or stopped reading"
    except Exception as e:  # headers are out: the only honest ending left is an in-band error
        log.exception("unexpected error while streaming from %s", live.target.id)
        outcome, err_cls, err_msg = "error", "internal_error", f"internal error mid-stream ({type(e).__name__})"
        try:
            await write(error_event("Patchbay hit an internal error mid-stream.", "internal_error"))
            await resp.write_eof()
        except Exception:  # noqa: BLE001 - the client may be gone as well
            pass
    finally:
        await events.aclose()
    record(router.rt, call, outcome, 200, live.target, live.state.total_usage(), live.state.total_cost(), ttft_ms,
           err_cls, err_msg, overhead, live.state.text)
    return resp


async def _stream_fallback(router: Router, call: Call, request: web.Request, failed: Failed) -> web.StreamResponse:
    overhead = call.overhead_ms()
    resp = web.StreamResponse(status=200, headers={
        **headers_for(call, "fallback", overhead), "x-patchbay-fallback": "static",
        "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"})
    enc = ChunkEncoder(call, "patchbay-fallback")
    try:
        await resp.prepare(request)
        await resp.write(enc.chunks([StreamDelta({"role": "assistant", "content": failed.fallback}),
                                     StreamDelta({}, "stop")]))
        if call.include_usage:
            await resp.write(enc.usage_chunk({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionError, OSError):
        pass
    record_failed(router.rt, call, failed, overhead)
    return resp


class ChatDoor:
    """`POST /v1/chat/completions`: the router's own format, so the body goes on as the client sent it."""

    api = "chat"

    def parse(self, body: Any, headers: Any) -> Parsed:
        validate(body)
        so = body.get("stream_options") or {}
        return Parsed(body["model"], body, bool(body.get("stream")), bool(so.get("include_usage")))

    def error_body(self, ce: ClientError) -> bytes:
        return error_body(ce)

    async def serve(self, router: Router, call: Call, request: web.Request) -> web.StreamResponse:
        return await serve(router, call, request)


DOOR = ChatDoor()
