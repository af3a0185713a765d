"""The client-facing listener: /v1/chat/completions, /v1/models, /healthz.

What every door shares lives here: client keys, body size and read time,
JSON parsing, model resolution, drill marks. The dialect itself (validation,
answers, streams, error bodies) is the door's (`doors/chat.py`). Applications
change only `base_url`; everything they can get wrong (bad JSON, wrong types,
oversize bodies, unknown models, bad keys) comes back as an error body in
their own format with the matching status, so their SDK raises the exception
it already knows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.doors import chat
from gateway.doors.base import Door
from gateway.logs import REQUEST_ID
from gateway.routing.call import Call, ClientError
from gateway.routing.router import Router
from gateway.runtime import Runtime
from store.records import new_id

log = logging.getLogger("patchbay")

# Drill traffic marks itself with x-patchbay-drill; only the gateway's own host may do that.
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def error_response(status: int, message: str, etype: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=chat.error_body(ClientError(status, message, etype, code, param)),
                        content_type="application/json", headers=headers)


def _rejected_headers(t0: float) -> dict[str, str]:
    """The response headers every answer carries, for a request refused before any target was tried."""
    return {"x-request-id": new_id(), "x-patchbay-target": "none", "x-patchbay-attempts": "0",
            "x-patchbay-overhead-ms": f"{(time.perf_counter() - t0) * 1000:.3f}"}


def _same_host(request: web.Request) -> bool:
    """Drill traffic comes from the gateway's own host: loopback, or the address it listens on."""
    remote = request.remote
    if remote in _LOOPBACK:
        return True
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        return False
    return remote == sock[0]


class DataPlane:
    """Handlers for the client-facing listener."""

    def __init__(self, runtime: Runtime, router: Router, client_keys: list[str], trace_headers: bool = False):
        self.rt = runtime
        self.trace_headers = trace_headers   # keep the client's W3C trace context (tracing on only)
        self.router = router
        self._keys = [k.encode() for k in client_keys]
        self._key_ids = {k: hashlib.sha256(k).hexdigest()[:12] for k in self._keys}
        self.max_body = runtime.config.server.max_body_bytes
        self.read_timeout = runtime.config.server.read_timeout

    def _auth(self, request: web.Request) -> str | None:
        """Return the client key id; raise ClientError(401) when keys are set and none matches.

        The key may come as `Authorization: Bearer` (OpenAI SDKs), `x-api-key` (Anthropic SDKs) or
        `x-goog-api-key` (google-genai): each client sends the header its SDK knows."""
        if not self._keys:
            return None
        h = request.headers
        token = h.get("x-api-key") or h.get("x-goog-api-key")
        if token is None:
            scheme, _, token = h.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                token = ""
        if not token:
            raise ClientError(401, "Missing API key. Send 'Authorization: Bearer <key>' (or 'x-api-key') with a "
                                   "Patchbay client key.", "invalid_request_error", "invalid_api_key",
                              headers={"www-authenticate": "Bearer"})
        presented = token.strip().encode()
        match = None
        for k in self._keys:  # compare against every key so timing says nothing about which matched
            if hmac.compare_digest(presented, k):
                match = k
        if match is None:
            raise ClientError(401, "Incorrect API key provided. Use a key listed in the gateway's client keys.",
                              "invalid_request_error", "invalid_api_key",
                              headers={"www-authenticate": "Bearer"})
        return self._key_ids[match]

    def handler(self, door: Door) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler of one door."""

        async def handle(request: web.Request) -> web.StreamResponse:
            t0 = time.perf_counter()
            rid = REQUEST_ID.set(None)
            try:
                return await self._serve(request, door, t0)
            except Exception:
                log.exception("unhandled error in %s", request.path)
                ce = ClientError(500, "Patchbay hit an internal error; the request was not completed.",
                                 "server_error", "internal_error")
                return web.Response(status=500, body=door.error_body(ce), content_type="application/json",
                                    headers=_rejected_headers(t0))
            finally:
                REQUEST_ID.reset(rid)

        return handle

    async def _read_json(self, request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > self.max_body:
            raise ClientError(413, f"Request body is {request.content_length} bytes; the limit is "
                                   f"{self.max_body} bytes.", code="request_too_large")
        try:
            async with asyncio.timeout(self.read_timeout):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ClientError(413, f"Request body exceeds the limit of {self.max_body} bytes.",
                              code="request_too_large") from None
        except TimeoutError:
            # a body that trickles or never ends must not hold a handler for good
            raise ClientError(408, f"The request body did not arrive within {self.read_timeout:g} s.",
                              code="request_timeout", headers={"connection": "close"}) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise ClientError(400, f"We could not parse the JSON body of your request: {e}. "
                                   "The body must be valid JSON.", code="invalid_json") from None

    async def _serve(self, request: web.Request, door: Door, t0: float) -> web.StreamResponse:
        try:
            key_id = self._auth(request)
            parsed = door.parse(await self._read_json(request), request.headers)
            resolved = self.rt.resolve(parsed.model)
            if resolved is None:
                names = ", ".join(self.rt.model_names())
                raise ClientError(404, f"The model '{parsed.model}' does not exist on this gateway. "
                                       f"Available: {names}.", code="model_not_found", param="model")
        except ClientError as ce:
            return web.Response(status=ce.status, body=door.error_body(ce), content_type="application/json",
                                headers={**_rejected_headers(t0), **ce.headers})
        route, targets, fallback = resolved
        call = Call(id=new_id(), route=route, targets=targets, fallback=fallback, body=parsed.body,
                    stream=parsed.stream, include_usage=parsed.include_usage, client_key_id=key_id,
                    drill_id=request.headers.get("x-patchbay-drill") if _same_host(request) else None,
                    api=door.api, extra=parsed.extra)
        REQUEST_ID.set(call.id)   # log lines about this request carry its id
        if self.trace_headers:
            h = request.headers
            tp = h.get("traceparent")
            if tp is not None:
                call.trace_headers = {"traceparent": tp, "tracestate": h.get("tracestate", "")}
        return await door.serve(self.router, call, request)

    async def models(self, request: web.Request) -> web.Response:
        try:
            self._auth(request)
        except ClientError as ce:
            return web.Response(status=ce.status, body=chat.error_body(ce), content_type="application/json",
                                headers=ce.headers)
        now = int(time.time())
        data = [{"id": name, "object": "model", "created": now, "owned_by": "patchbay"}
                for name in self.rt.routes]
        data += [{"id": tid, "object": "model", "created": now, "owned_by": t.vendor.name}
                 for tid, t in self.rt.targets.items()]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        store = self.rt.store.stats()
        routes = {name: self.rt.serving(r) for name, r in self.rt.routes.items()}
        ok = all(v is not None for v in routes.values())
        body = {"ok": ok and store.get("ok", True), "routes": routes,
                "store": {"ok": store.get("ok", True), "rows_not_written": store.get("rows_not_written", 0)}}
        return web.Response(status=200 if body["ok"] else 503, body=orjson.dumps(body),
                            content_type="application/json")

    async def method_not_allowed(self, request: web.Request) -> web.Response:
        return error_response(405, f"Method {request.method} is not allowed on {request.path}.",
                              code="method_not_allowed")

    async def not_found(self, request: web.Request) -> web.Response:
        return error_response(404, f"Unknown path {request.method} {request.path}. Patchbay serves "
                                   "POST /v1/chat/completions, GET /v1/models and GET /healthz.",
                              code="unknown_url")


def make_data_app(runtime: Runtime, router: Router, client_keys: list[str],
                  trace_headers: bool = False) -> web.Application:
    # client_max_size is a hard stop above the limit; the handler reports it OpenAI-style.
    app = web.Application(client_max_size=runtime.config.server.max_body_bytes)
    dp = DataPlane(runtime, router, client_keys, trace_headers)
    chat_handler = dp.handler(chat.DOOR)
    app.router.add_post("/v1/chat/completions", chat_handler)
    app.router.add_post("/chat/completions", chat_handler)
    app.router.add_get("/v1/models", dp.models)
    app.router.add_get("/healthz", dp.healthz)
    # Everything else gets an OpenAI-style error body (no middleware: it would cost every request).
    app.router.add_route("*", "/v1/chat/completions", dp.method_not_allowed)
    app.router.add_route("*", "/v1/models", dp.method_not_allowed)
    app.router.add_route("*", "/{tail:.*}", dp.not_found)
    return app
