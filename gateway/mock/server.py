"""The fake-vendor server: three wire formats on one port, with runtime faults.

Why one server: tests, the demo and benchmarks need OpenAI, DeepSeek,
Anthropic and Gemini endpoints at once, and each extra process or port is one
more thing to start, wait for and stop. Path prefixes keep the dialects apart;
see ``gateway/mock/__init__.py`` for the base URLs, the control API and faults.

The happy path is kept lean (benchmarks push thousands of requests per second
through it): no logging, one dict lookup for faults, orjson, and a stream
written in a single write when no token interval is set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.mock.anthropic import AnthropicDialect
from gateway.mock.dialect import TERMINAL, UNIT, BadRequest, Call, Dialect, ErrorReply
from gateway.mock.faults import DIALECTS, Fault, FaultError, FaultTable, Stats, parse_fault
from gateway.mock.gemini import GeminiDialect
from gateway.mock.openai import DeepSeekDialect, OpenAIDialect

DEFAULT_MODELS: dict[str, list[str]] = {
    "openai": ["gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "o3-mini"],
    "deepseek": ["deepseek-chat", "deepseek-reasoner"],
    "anthropic": ["claude-sonnet-4-20250514", "claude-opus-4-20250514", "claude-3-5-haiku-20241022"],
    "gemini": ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro"],
}

BASE_PATHS = {"openai": "/openai/v1", "deepseek": "/deepseek/v1", "anthropic": "/anthropic",
              "gemini": "/gemini"}

VENDOR_KINDS = {"openai": "openai", "deepseek": "openai", "anthropic": "anthropic", "gemini": "gemini"}


def vendor_configs(url: str) -> dict[str, dict[str, str]]:
    """`[vendors.*]` tables pointing a gateway config at fake vendors served from `url`."""
    return {name: {"kind": kind, "base_url": url + BASE_PATHS[name]} for name, kind in VENDOR_KINDS.items()}


JSON_CT = "application/json"
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
ERROR_KINDS = frozenset({"error", "context_length", "auth", "billing"})


@dataclass(slots=True)
class MockState:
    """Everything the running mock knows; mutate it only on the server's loop."""

    faults: FaultTable = field(default_factory=FaultTable)
    stats: Stats = field(default_factory=Stats)
    keys: frozenset[str] = frozenset()
    token_interval_ms: float = 0.0
    tokens: int | None = None
    models: dict[str, list[str]] = field(default_factory=lambda: {d: list(m) for d, m in DEFAULT_MODELS.items()})
    stopping: bool = False

    def set_fault(self, fault: str = "ok", model: str = "*", **params: Any) -> Fault:
        """Switch a fault on (``fault="ok"`` switches the model's fault off)."""
        f = parse_fault({"fault": fault, "model": model, **params})
        self.faults.set(f)
        return f

    def clear_faults(self, model: str | None = None, dialect: str | None = None) -> int:
        return self.faults.clear(model, dialect)

    def configure(self, token_interval_ms: float | None = None, tokens: int | None | str = "keep") -> None:
        if token_interval_ms is not None:
            if token_interval_ms < 0:
                raise FaultError("token_interval_ms must not be negative")
            self.token_interval_ms = float(token_interval_ms)
        if tokens != "keep":
            if tokens is not None and (not isinstance(tokens, int) or tokens < 0):
                raise FaultError("tokens must be a non-negative integer or null")
            self.tokens = tokens

    def model_list(self, dialect: str) -> list[str]:
        listed = self.models.get(dialect, [])
        seen = [m for m in self.stats.chat.get(dialect, {}) if m not in listed]
        return listed + seen


def _json_response(status: int, obj: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON_CT)


def _error_response(err: ErrorReply) -> web.Response:
    return web.Response(status=err.status, body=err.body, content_type=JSON_CT, headers=err.headers)


class _Dropped(web.Response):
    """Marker response for a connection the mock already aborted."""


class MockApp:
    """Request handlers bound to one MockState."""

    def __init__(self, state: MockState) -> None:
        self.state = state
        self.dialects: dict[str, Dialect] = {"openai": OpenAIDialect(), "deepseek": DeepSeekDialect(),
                                             "anthropic": AnthropicDialect(), "gemini": GeminiDialect()}

    # --- app ---------------------------------------------------------------------------------

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        for name in ("openai", "deepseek"):
            d = self.dialects[name]
            base = BASE_PATHS[name]
            r.add_post(f"{base}/chat/completions", self._chat_handler(d))
            r.add_get(f"{base}/models", self._models_handler(d))
            r.add_get(f"{base}/models/{{model}}", self._model_handler(d))
        d = self.dialects["anthropic"]
        r.add_post("/anthropic/v1/messages", self._chat_handler(d))
        r.add_get("/anthropic/v1/models", self._models_handler(d))
        r.add_get("/anthropic/v1/models/{model}", self._model_handler(d))
        d = self.dialects["gemini"]
        r.add_post("/gemini/{version}/models/{call}", self._gemini_handler(d))
        r.add_get("/gemini/{version}/models", self._models_handler(d))
        r.add_get("/gemini/{version}/models/{model}", self._model_handler(d))
        r.add_post("/_mock/faults", self.post_faults)
        r.add_get("/_mock/faults", self.get_faults)
        r.add_delete("/_mock/faults", self.delete_faults)
        r.add_get("/_mock/stats", self.get_stats)
        r.add_post("/_mock/reset_stats", self.reset_stats)
        r.add_get("/_mock/config", self.get_config)
        r.add_post("/_mock/config", self.post_config)
        r.add_get("/_mock/health", self.health)
        return app

    # --- control API -------------------------------------------------------------------------

    async def post_faults(self, request: web.Request) -> web.Response:
        try:
            spec = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json_response(400, {"error": "body must be JSON"})
        specs = spec if isinstance(spec, list) else [spec]
        try:
            parsed = [parse_fault(s) for s in specs]
        except FaultError as exc:
            return _json_response(400, {"error": str(exc)})
        for f in parsed:
            self.state.faults.set(f)
        return _json_response(200, {"faults": self.state.faults.list()})

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json_response(200, {"faults": self.state.faults.list()})

    async def delete_faults(self, request: web.Request) -> web.Response:
        q = request.query
        n = self.state.clear_faults(q.get("model"), q.get("dialect"))
        return _json_response(200, {"cleared": n, "faults": self.state.faults.list()})

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json_response(200, self.state.stats.to_json())

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.state.stats.reset()
        return _json_response(200, self.state.stats.to_json())

    def _config_json(self) -> dict[str, Any]:
        return {"token_interval_ms": self.state.token_interval_ms, "tokens": self.state.tokens,
                "auth": bool(self.state.keys), "dialects": sorted(self.dialects)}

    async def get_config(self, request: web.Request) -> web.Response:
        return _json_response(200, self._config_json())

    async def post_config(self, request: web.Request) -> web.Response:
        try:
            spec = orjson.loads(await request.read())
            if not isinstance(spec, dict) or set(spec) - {"token_interval_ms", "tokens"}:
                raise FaultError("config takes token_interval_ms and tokens")
            self.state.configure(spec.get("token_interval_ms"), spec.get("tokens", "keep"))
        except (orjson.JSONDecodeError, FaultError, TypeError) as exc:
            return _json_response(400, {"error": str(exc)})
        return _json_response(200, self._config_json())

    async def health(self, request: web.Request) -> web.Response:
        return _json_response(200, {"ok": True})

    # --- vendor endpoints --------------------------------------------------------------------

    def _chat_handler(self, d: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.chat(request, d, None)
        return handler

    def _gemini_handler(self, d: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.chat(request, d, request.match_info["call"])
        return handler

    def _models_handler(self, d: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.models(request, d, None)
        return handler

    def _model_handler(self, d: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.models(request, d, request.match_info["model"])
        return handler

    async def models(self, request: web.Request, d: Dialect, model: str | None) -> web.StreamResponse:
        st = self.state
        st.stats.count_path(f"GET {request.path}")
        if st.keys and (err := d.check_key(request.headers, request.query, st.keys)) is not None:
            return _error_response(err)
        if model is not None and d.name == "gemini":
            model = model.removeprefix("models/")
        if st.faults:
            fault = st.faults.take(d.name, model or "*", "models")
            if fault is not None:
                st.stats.count_fault(fault.fault)
                early = await self._pre_faults(request, d, fault, model or "*")
                if early is not None:
                    return early
        if model is None:
            return web.Response(body=d.models_body(st.model_list(d.name)), content_type=JSON_CT)
        if model not in st.model_list(d.name):
            return _error_response(d.error("error", 404, model=model))
        return web.Response(body=d.model_body(model), content_type=JSON_CT)

    async def chat(self, request: web.Request, d: Dialect, path_model: str | None) -> web.StreamResponse:
        st = self.state
        st.stats.count_path(f"{request.method} {request.path}")
        if st.keys and (err := d.check_key(request.headers, request.query, st.keys)) is not None:
            return _error_response(err)
        raw = await request.read()
        model = "unknown"
        try:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BadRequest("We could not parse the JSON body of your request.") from None
            try:
                call = d.parse_chat(body, path_model, request.query, request.headers, st.tokens)
            except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
                # A field of the wrong shape: vendors answer 400, never 500.
                raise BadRequest(f"Invalid request: {type(exc).__name__} in the request body.") from None
        except BadRequest as exc:
            return _error_response(d.bad_request(exc, model))
        st.stats.count_chat(d.name, call.model)
        fault = st.faults.take(d.name, call.model, "chat") if st.faults else None
        if fault is None:
            if not call.stream:
                return web.Response(body=d.render(call), content_type=JSON_CT)
            if not st.token_interval_ms:
                resp = web.StreamResponse(headers=SSE_HEADERS)
                await resp.prepare(request)
                await resp.write(b"".join([e[0] for e in d.stream_events(call)]))
                await resp.write_eof()
                return resp
            return await self._stream(request, d, call, None)
        st.stats.count_fault(fault.fault)
        early = await self._pre_faults(request, d, fault, call.model)
        if early is not None:
            return early
        if fault.tokens is not None:
            call = d.parse_chat(body, path_model, request.query, request.headers, fault.tokens)
        if fault.fault == "content_policy":
            d.refuse(call)
        if not call.stream:
            return await self._nonstream_faulted(request, d, call, fault)
        try:
            return await self._stream(request, d, call, fault)
        except ConnectionResetError:  # the client (usually the gateway) hung up mid-stream: not the mock's error
            return _Dropped()

    async def _pre_faults(self, request: web.Request, d: Dialect, fault: Fault,
                          model: str) -> web.StreamResponse | None:
        """Faults that act before any response: a response to send, or None to go on."""
        if fault.latency_ms:
            await self._sleep(fault.latency_ms / 1000)
        name = fault.fault
        if name == "latency":
            await self._sleep((fault.ms or 0) / 1000)
            return None
        if name in ERROR_KINDS:
            return _error_response(d.error(name, fault.status, model=model, message=fault.message,
                                           error_type=fault.error_type, retry_after=fault.retry_after))
        if name == "flap":
            return _error_response(d.error("error", fault.status or 503, model=model, message=fault.message,
                                           error_type=fault.error_type, retry_after=fault.retry_after))
        if name == "content_policy" and (d.policy_is_error or fault.status):
            return _error_response(d.error("content_policy", fault.status, model=model, message=fault.message,
                                           error_type=fault.error_type, retry_after=fault.retry_after))
        if name == "reset":
            self._abort(request)
            return _Dropped()
        if name == "hang":
            await self._wait_gone(request)
            self._abort(request)
            return _Dropped()
        return None

    async def _nonstream_faulted(self, request: web.Request, d: Dialect, call: Call,
                                 fault: Fault) -> web.StreamResponse:
        name = fault.fault
        body = d.render(call)
        if name == "slow_first_token":
            await self._sleep((fault.ms or 0) / 1000)
        elif name in ("cut", "stall"):
            # Headers and (for cut) part of the body, then the connection dies or goes silent.
            resp = web.StreamResponse(headers={"Content-Type": JSON_CT})
            resp.content_length = len(body)
            writer = await resp.prepare(request)
            if name == "cut":
                await resp.write(body[:len(body) // 2])
                self._abort(request)
            else:
                _send_headers(writer)
                await self._wait_gone(request)
                self._abort(request)
            return resp
        elif name == "malformed":
            body = body[:len(body) // 2]
        return web.Response(body=body, content_type=JSON_CT)

    async def _stream(self, request: web.Request, d: Dialect, call: Call, fault: Fault | None) -> web.StreamResponse:
        events = d.stream_events(call)
        interval_ms = self.state.token_interval_ms
        name = "ok"
        n = -1
        if fault is not None:
            name = fault.fault
            if fault.interval_ms is not None:
                interval_ms = fault.interval_ms
            if name == "malformed":
                n = fault.n if fault.n is not None else sum(1 for _, k in events if k == UNIT) // 2
            elif name == "slow_first_token":
                n = 0
            elif name in ("cut", "stall", "error_event"):
                n = fault.n or 0
        interval = interval_ms / 1000
        resp = web.StreamResponse(headers=SSE_HEADERS)
        writer = await resp.prepare(request)
        sent = 0          # token events written
        pending: list[bytes] = []
        trig = -1
        if n >= 0:
            unit_idx = [i for i, (_, k) in enumerate(events) if k == UNIT]
            # before the (n+1)th token, or right after the last one when n >= tokens
            trig = unit_idx[n] if n < len(unit_idx) else (unit_idx[-1] + 1 if unit_idx else 1)
        for i, (data, kind) in enumerate(events):
            if i == trig:
                if name == "slow_first_token":
                    await _flush(resp, pending)
                    _send_headers(writer)
                    await self._sleep((fault.ms or 0) / 1000)  # type: ignore[union-attr]
                elif name == "malformed":
                    pending.append(d.malformed_event())
                elif name == "cut":
                    await _flush(resp, pending)
                    _send_headers(writer)
                    self._abort(request)
                    return resp
                elif name == "stall":
                    await _flush(resp, pending)
                    _send_headers(writer)
                    await self._wait_gone(request)
                    self._abort(request)
                    return resp
                elif name == "error_event":
                    pending.append(d.error_event(call.model, fault.error_type, fault.message))  # type: ignore[union-attr]
                    await _flush(resp, pending)
                    await resp.write_eof()
                    return resp
            if kind == UNIT:
                if interval and sent:
                    await _flush(resp, pending)
                    await asyncio.sleep(interval)
                sent += 1
            elif kind == TERMINAL and name == "no_done":
                continue
            pending.append(data)
        await _flush(resp, pending)
        await resp.write_eof()
        return resp

    @staticmethod
    def _abort(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def _sleep(self, seconds: float) -> None:
        """A fault's delay, cut short when the mock stops (so stop() never waits on it)."""
        if seconds < 0.2:
            await asyncio.sleep(seconds)
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self.state.stopping and (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, 0.05))

    async def _wait_gone(self, request: web.Request) -> None:
        """Sit silent until the client hangs up (or the mock stops)."""
        while not self.state.stopping:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)


async def _flush(resp: web.StreamResponse, pending: list[bytes]) -> None:
    if pending:
        data = b"".join(pending)
        pending.clear()
        await resp.write(data)


def _send_headers(writer: Any) -> None:
    """aiohttp holds headers back to coalesce them with the first body write; some faults need them now."""
    send = getattr(writer, "send_headers", None)
    if send is not None:
        send()


# --- running it -------------------------------------------------------------------------------


def _normalise_models(models: dict[str, Iterable[str]] | None) -> dict[str, list[str]]:
    out = {d: list(m) for d, m in DEFAULT_MODELS.items()}
    for d, ms in (models or {}).items():
        if d not in DIALECTS:
            raise ValueError(f"unknown dialect {d!r}")
        out[d] = list(ms)
    return out


class MockServer:
    """A running mock on this event loop. Build it with :func:`start_mock`."""

    def __init__(self, state: MockState, runner: web.AppRunner, host: str, port: int) -> None:
        self.state = state
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def base_url(self, dialect: str) -> str:
        """The base_url a vendor of this kind (or an official SDK) should be given."""
        return self.url + BASE_PATHS[dialect]

    def set_fault(self, fault: str = "ok", model: str = "*", **params: Any) -> Fault:
        return self.state.set_fault(fault, model, **params)

    def clear_faults(self, model: str | None = None, dialect: str | None = None) -> int:
        return self.state.clear_faults(model, dialect)

    def configure(self, token_interval_ms: float | None = None, tokens: int | None | str = "keep") -> None:
        self.state.configure(token_interval_ms, tokens)

    @property
    def stats(self) -> dict[str, Any]:
        return self.state.stats.to_json()

    def reset_stats(self) -> None:
        self.state.stats.reset()

    async def stop(self) -> None:
        """Stop listening; hanging and stalled requests are let go at once. Safe to call twice."""
        if self.state.stopping:
            return
        self.state.stopping = True
        await self._runner.cleanup()

    async def __aenter__(self) -> MockServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_mock(host: str = "127.0.0.1", port: int = 0, *, keys: Iterable[str] | None = None,
                     token_interval_ms: float = 0.0, tokens: int | None = None,
                     models: dict[str, Iterable[str]] | None = None) -> MockServer:
    """Start the fake vendors on the running loop; ``port=0`` lets the OS pick.

    ``keys``: when given, every vendor endpoint requires one of them (Bearer,
    x-api-key or x-goog-api-key / ?key=, per dialect). ``models`` overrides the
    per-dialect model lists (models used in requests are listed too).
    """
    state = MockState(keys=frozenset(keys or ()), token_interval_ms=float(token_interval_ms), tokens=tokens,
                      models=_normalise_models(models))
    app = MockApp(state).build()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - aiohttp has no public port getter
    bound = sockets[0].getsockname()[1] if sockets else port
    return MockServer(state, runner, host, bound)


class MockVendorThread:
    """The mock on its own loop in a background thread, for sync code (SDK sync clients, CLIs).

    ``with MockVendorThread() as mock: OpenAI(base_url=mock.base_url("openai"))``.
    Control calls are marshalled onto the mock's loop, so they are safe from any thread.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self._host = host
        self._port = port
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: MockServer | None = None
        self._done: asyncio.Event | None = None

    def start(self) -> MockVendorThread:
        ready: concurrent.futures.Future[MockServer] = concurrent.futures.Future()

        def main() -> None:
            loop = _new_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                self._done = asyncio.Event()
                try:
                    server = await start_mock(self._host, self._port, **self._options)
                except BaseException as exc:  # report start failures to the caller
                    ready.set_exception(exc)
                    return
                ready.set_result(server)
                await self._done.wait()
                await server.stop()

            try:
                loop.run_until_complete(serve())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="patchbay-mock", daemon=True)
        self._thread.start()
        self._server = ready.result(timeout=30)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._done is None:
            return
        self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> MockVendorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> MockServer:
        assert self._server is not None, "mock not started"
        return self._server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def base_url(self, dialect: str) -> str:
        return self.server.base_url(dialect)

    def _call(self, fn: Callable[[], Any]) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def set_fault(self, fault: str = "ok", model: str = "*", **params: Any) -> Fault:
        return self._call(lambda: self.server.set_fault(fault, model, **params))

    def clear_faults(self, model: str | None = None, dialect: str | None = None) -> int:
        return self._call(lambda: self.server.clear_faults(model, dialect))

    def configure(self, token_interval_ms: float | None = None, tokens: int | None | str = "keep") -> None:
        self._call(lambda: self.server.configure(token_interval_ms, tokens))

    @property
    def stats(self) -> dict[str, Any]:
        return self._call(lambda: self.server.stats)

    def reset_stats(self) -> None:
        self._call(self.server.reset_stats)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run(host: str = "127.0.0.1", port: int = 8800, *, keys: Iterable[str] | None = None,
        token_interval_ms: float = 0.0, tokens: int | None = None,
        print_fn: Callable[[str], None] | None = print) -> None:
    """Blocking entry point for ``patchbay mock`` / ``python -m gateway.mock``; stops on SIGINT/SIGTERM."""

    async def main() -> None:
        server = await start_mock(host, port, keys=keys, token_interval_ms=token_interval_ms, tokens=tokens)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if print_fn is not None:
            print_fn(f"patchbay mock listening on {server.url}")
            for d in BASE_PATHS:
                print_fn(f"  {d:<9} base_url = {server.base_url(d)}")
            print_fn(f"  control   {server.url}/_mock/faults  {server.url}/_mock/stats")
        try:
            await stop.wait()
        finally:
            await server.stop()

    loop = _new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
