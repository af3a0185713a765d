"""The failover contract (DESIGN.md), applied to one client request.

`Router.complete` answers a non-streaming request with a whole completion or
an error, never part of one. `Router.stream` holds the client's response
headers until some target produces its first token, so every failure before
that is invisible to the client; after it, a cut stream continues on a
`prefill = true` target or ends with an in-band error event and no `[DONE]`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
import orjson

from gateway.adapters.base import (ChatResult, ErrorClass, StreamDelta, VendorError, scrub, status_class)
from gateway.config import Config
from gateway.faults import Fault
from gateway.runtime import Runtime, Target
from gateway.sse import SSEParser
from gateway.upstream import ConnectFailed, ConnectionLost, Pool, Response, UpstreamError
from store.records import AttemptRow, RequestRow

log = logging.getLogger("patchbay")

TOTAL_TIMEOUT = "total_timeout"   # VendorError.code when the client's whole budget ran out
FINISH_GRACE_S = 0.5   # after finish_reason, how long to wait for usage / [DONE]
ERROR_BODY_LIMIT = 64 * 1024


class _ClientGone(Exception):
    """The streaming client disconnected or stopped reading."""


def _error_event(message: str, code: str) -> bytes:
    """An in-band SSE error (the OpenAI SDKs raise APIError on it); never followed by [DONE]."""
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                               "code": code}}) + b"\n\n"


class ClientError(Exception):
    """An error returned to the client as an OpenAI-style body."""

    def __init__(self, status: int, message: str, etype: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.etype, self.code, self.param = status, message, etype, code, param
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.etype,
                                       "param": self.param, "code": self.code}})


@dataclass(slots=True)
class Call:
    """One client request in flight."""

    id: str
    route: str
    targets: list[Target]
    fallback: str | None
    body: dict[str, Any]
    stream: bool
    include_usage: bool = False
    client_key_id: str | None = None
    drill_id: str | None = None
    t0: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    attempts: list[AttemptRow] = field(default_factory=list)
    waited_s: float = 0.0          # time spent waiting on vendors or backoff, not in Patchbay
    failovers: int = 0
    errors: list[str] = field(default_factory=list)
    malformed: int = 0
    skipped_open: list[str] = field(default_factory=list)   # passed over: breaker open (request detail)

    def overhead_ms(self) -> float:
        return round(max(0.0, (time.perf_counter() - self.t0 - self.waited_s) * 1000), 3)


@dataclass(slots=True)
class Answer:
    target: Target
    result: Any                    # ChatResult or OpenStream
    cost: float | None = None      # of a whole (non-streaming) answer, computed once


class OpenStream:
    """A vendor stream that has produced its first token (or a clean empty end)."""

    __slots__ = ("resp", "parser", "decoder", "target", "pending", "cut_after_first", "started", "error", "eof")

    def __init__(self, resp: Response, target: Target, cut_after_first: bool):
        self.resp = resp
        self.parser = SSEParser()
        self.decoder = target.adapter.stream_decoder()
        self.target = target
        self.pending: list[StreamDelta] = []
        self.cut_after_first = cut_after_first
        self.started = time.perf_counter()
        self.error: VendorError | None = None
        self.eof = False

    async def read(self, timeout: float) -> list[StreamDelta] | None:
        """Deltas from the next network read; None at end of body.

        An in-band error event raises VendorError, but only after the deltas
        that arrived before it in the same read have been returned.
        """
        if self.error is not None:
            raise self.error
        if self.eof:
            return None
        async with asyncio.timeout(timeout):
            chunk = await self.resp.read_chunk()
        if not chunk:
            self.eof = True
            events = self.parser.flush()
            if not events:
                return None
        else:
            events = self.parser.feed(chunk)
        out: list[StreamDelta] = []
        feed = self.decoder.feed
        for ev, data in events:
            try:
                out.extend(feed(ev, data))
            except VendorError as e:
                scrub(e, self.target.secrets)
                if not out:
                    raise
                self.error = e
                break
        return out

    async def drain(self) -> None:
        """After the vendor's terminal event, read the end of the body so the connection is reused."""
        if self.eof:
            return
        try:
            async with asyncio.timeout(0.05):
                while await self.resp.read_chunk():
                    pass
            self.eof = True
        except (TimeoutError, UpstreamError):
            pass  # close() drops the connection instead

    def close(self) -> None:
        self.resp.close()


def _net_error(exc: BaseException, before_headers: bool) -> VendorError:
    if isinstance(exc, ConnectFailed):
        return VendorError(ErrorClass.CONNECT, str(exc))
    if isinstance(exc, ConnectionLost):
        return VendorError(ErrorClass.RESET, str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return VendorError(ErrorClass.CONNECT, f"cannot connect: {exc.os_error or exc}")
    if isinstance(exc, aiohttp.InvalidURL):
        return VendorError(ErrorClass.MISCONFIGURED, f"invalid vendor URL: {exc}")
    what = "before response headers" if before_headers else "while reading the response"
    name = type(exc).__name__
    return VendorError(ErrorClass.RESET, f"connection lost {what} ({name})")


_NET_ERRORS = (UpstreamError, aiohttp.ClientError, ConnectionError, OSError)


def _returned(err: VendorError) -> ClientError:
    """A vendor's verdict on the client's own request (content policy, other 4xx), passed back as it is."""
    code = "content_policy_violation" if err.cls is ErrorClass.CONTENT_POLICY else err.code
    status = err.status if err.status and 400 <= err.status < 500 else 400
    return ClientError(status, err.message, "invalid_request_error", code)


class Router:
    def __init__(self, runtime: Runtime, session: aiohttp.ClientSession, upstream: Pool | None = None):
        self.rt = runtime
        self.cfg: Config = runtime.config
        self.session = session   # for callers that want aiohttp (the prober)
        self.upstream = upstream if upstream is not None else Pool(self.cfg.timeouts.connect)

    # ------------------------------------------------------------------ walk

    async def _walk(self, call: Call,
                    attempt: Callable[[Target, Fault | None, float], Awaitable[Any]]) -> Answer:
        """Try targets in order under the contract; return the first answer.

        Raises ClientError for errors that go back to the client as they are,
        and VendorError (the last one) when every target failed.
        """
        deadline = call.t0 + self.cfg.timeouts.total
        skipped: list[Target] = []
        last: VendorError | None = None
        failed_from: Target | None = None
        ctx_floor: int | None = None
        tried = 0
        for t in call.targets:
            if t.disabled:
                continue
            if ctx_floor is not None and not (t.cfg.context_window or 0) > ctx_floor:
                continue
            if not t.breaker.allow(call):
                skipped.append(t)
                call.skipped_open.append(t.id)
                if call.drill_id is None and t.fault is not None:
                    fault = t.active_fault()  # rerouted by a drill's open breaker: the drill counts it
                    call.drill_id = fault.drill_id if fault is not None else None
                continue
            tried += 1
            if failed_from is not None:
                self._failover(call, failed_from, t, last)
            res = await self._on_target(call, t, attempt, deadline)
            if isinstance(res, Answer):
                return res
            last = res
            if last.cls is ErrorClass.CONTEXT_LENGTH:
                ctx_floor = max(ctx_floor or 0, t.cfg.context_window or 0)
            elif not last.cls.fails_over:
                raise _returned(last)
            if time.perf_counter() >= deadline:
                break
            failed_from = t
        if tried == 0 and skipped:
            # Every target is open: try the one closest to recovery rather than fail untried.
            t = min(skipped, key=lambda x: x.breaker.ready_at)
            t.breaker.force_trial(call)
            res = await self._on_target(call, t, attempt, deadline)
            if isinstance(res, Answer):
                return res
            last = res
            if not last.cls.fails_over:  # the client's own error: return it, as in the walk above
                raise _returned(last)
        if last is None:
            last = VendorError(ErrorClass.SERVER, "no target is available (all disabled)", 503)
        if ctx_floor is not None and last.cls is ErrorClass.CONTEXT_LENGTH:
            # No remaining target has a larger context window: the client must shorten the prompt.
            raise ClientError(400, last.message, "invalid_request_error", "context_length_exceeded", "messages")
        raise last

    async def _on_target(self, call: Call, t: Target,
                         attempt: Callable[[Target, Fault | None, float], Awaitable[Any]],
                         deadline: float) -> Answer | VendorError:
        """Attempts on one target with retries; updates breaker and health."""
        retry = self.cfg.retry
        n_here = 0
        err: VendorError | None = None
        while True:
            n_here += 1
            fault = t.active_fault()
            if fault is not None and call.drill_id is None:
                call.drill_id = fault.drill_id
            start = time.perf_counter()
            ts = time.time()
            t.inflight += 1
            try:
                result = await attempt(t, fault, deadline)
            except VendorError as e:
                err = e
            except asyncio.CancelledError:
                t.breaker.release(call)
                raise
            except Exception as e:  # a bug or a vendor answer nobody foresaw: fail this attempt, not the request
                log.exception("unexpected error handling %s's answer", t.id)
                err = VendorError(ErrorClass.PROTOCOL, f"internal error handling {t.id}'s answer ({type(e).__name__})")
            finally:
                t.inflight -= 1
            elapsed = time.perf_counter() - start
            call.waited_s += elapsed
            lat_ms = round(elapsed * 1000, 3)
            if err is None:
                call.attempts.append(AttemptRow(call.id, len(call.attempts) + 1, t.id, ts, lat_ms, "ok", 200,
                                                drill_id=call.drill_id))
                self.rt.breaker_changed(t, t.breaker.success(call), "request succeeded")
                cost = None
                if not call.stream:
                    cost = t.cost(result.usage)
                    t.health.observe(True, cost=cost or 0.0)
                return Answer(t, result, cost)
            call.attempts.append(AttemptRow(call.id, len(call.attempts) + 1, t.id, ts, lat_ms, err.cls.value,
                                            err.status, err.message[:500], drill_id=call.drill_id))
            call.errors.append(f"{t.id}: {err}")
            if err.code == TOTAL_TIMEOUT:
                t.breaker.release(call)  # the client's budget ran out: no verdict on this target
                return err
            t.health.observe(False, lat_ms, str(err)[:300], err.cls, retry_after=err.retry_after)
            if err.cls.counts_against_health:
                self.rt.breaker_changed(t, t.breaker.failure(call), str(err)[:200])
            else:
                t.breaker.release(call)
            if not err.cls.retryable or n_here >= retry.max_attempts_per_target:
                return err
            remaining = deadline - time.perf_counter()
            if err.cls is ErrorClass.THROTTLED and err.retry_after is not None:
                if err.retry_after > retry.retry_after_max or err.retry_after >= remaining:
                    return err  # a longer Retry-After fails over instead of waiting
                delay = err.retry_after
            else:
                cap = min(retry.backoff_max, retry.backoff_base * (2 ** (n_here - 1)))
                delay = cap / 2 + random.uniform(0, cap / 2)
                if delay >= remaining:
                    return err
            if not t.breaker.allow(call):
                return err  # the breaker opened on this failure: move on
            if delay > 0:
                s = time.perf_counter()
                await asyncio.sleep(delay)
                call.waited_s += time.perf_counter() - s
            err = None

    def _failover(self, call: Call, frm: Target, to: Target, why: VendorError | None) -> None:
        call.failovers += 1
        self.rt.emit("failover", target=frm.id, route=call.route, request_id=call.id,
                     to=to.id, reason=str(why)[:300] if why else None,
                     **({"drill_id": call.drill_id} if call.drill_id else {}))

    # ---------------------------------------------------------- attempts

    async def _fault_gate(self, fault: Fault | None, deadline: float) -> None:
        """Apply a drill's fault before the real call (or instead of it)."""
        if fault is None:
            return
        kind = fault.kind
        if kind == "error":
            cls = status_class(fault.status)
            raise VendorError(cls, f"drill: injected HTTP {fault.status}", fault.status,
                              fault.retry_after if fault.status == 429 else None)
        if kind == "timeout":
            raise VendorError(ErrorClass.TIMEOUT, "drill: injected timeout (no response headers)")
        if kind == "hang":
            wait = min(self.cfg.timeouts.first_byte, max(0.0, deadline - time.perf_counter()))
            await asyncio.sleep(wait)
            raise VendorError(ErrorClass.TIMEOUT, f"drill: vendor hung, nothing within {wait:.1f}s")
        if kind == "latency":
            budget = min(self.cfg.timeouts.first_byte, max(0.0, deadline - time.perf_counter()))
            if fault.ms / 1000 >= budget:  # as slow as a vendor that misses first_byte: same verdict
                await asyncio.sleep(budget)
                raise self._timeout_error(deadline, f"drill: {fault.ms:g} ms of injected latency, nothing")
            await asyncio.sleep(fault.ms / 1000)

    async def _send(self, t: Target, body: dict, stream: bool, deadline: float,
                    prefill: str | None = None) -> tuple[Response, float]:
        """Send one request; return the response with headers read, and the first-byte deadline."""
        try:
            req = t.adapter.chat_request(body, t.cfg.model, stream=stream, prefill=prefill)
        except VendorError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise VendorError(ErrorClass.BAD_REQUEST, f"cannot translate request for {t.id}: {e}", 400) from None
        fb_deadline = min(time.perf_counter() + self.cfg.timeouts.first_byte, deadline)
        try:
            async with asyncio.timeout(max(0.0, fb_deadline - time.perf_counter())):
                resp = await self.upstream.request(req.method, req.url, req.headers, req.body)
        except TimeoutError:
            raise self._timeout_error(deadline, "no response headers") from None
        except _NET_ERRORS as e:
            raise _net_error(e, True) from None
        return resp, fb_deadline

    def _timeout_error(self, deadline: float, what: str) -> VendorError:
        if time.perf_counter() >= deadline - 0.001:
            return VendorError(ErrorClass.TIMEOUT, f"request exceeded total timeout of {self.cfg.timeouts.total:g}s",
                               code=TOTAL_TIMEOUT)
        return VendorError(ErrorClass.TIMEOUT, f"{what} within first_byte={self.cfg.timeouts.first_byte:g}s")

    async def _error_from(self, t: Target, resp: Response | aiohttp.ClientResponse) -> VendorError:
        try:
            async with asyncio.timeout(self.cfg.timeouts.idle):
                if isinstance(resp, Response):
                    data = await resp.read(ERROR_BODY_LIMIT)
                else:
                    data = await resp.content.read(ERROR_BODY_LIMIT)
        except (TimeoutError, *_NET_ERRORS):
            data = b""
        finally:
            if isinstance(resp, Response):
                resp.release()
            else:
                resp.close()
        return scrub(t.adapter.classify_error(resp.status, resp.headers, data), t.secrets)

    async def _attempt_chat(self, call: Call, t: Target, fault: Fault | None, deadline: float) -> ChatResult:
        if fault is not None:
            await self._fault_gate(fault, deadline)
        try:
            req = t.adapter.chat_request(call.body, t.cfg.model, stream=False)
        except VendorError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise VendorError(ErrorClass.BAD_REQUEST, f"cannot translate request for {t.id}: {e}", 400) from None
        timeouts = self.cfg.timeouts
        remaining = deadline - time.perf_counter()
        resp = None
        # One timer for the hot path: first_byte until headers, then idle for the body.
        try:
            async with asyncio.timeout(max(0.0, min(timeouts.first_byte, remaining))) as timer:
                try:
                    resp = await self.upstream.request(req.method, req.url, req.headers, req.body)
                except _NET_ERRORS as e:
                    raise _net_error(e, True) from None
                if resp.status != 200:
                    raise await self._error_from(t, resp)
                loop = asyncio.get_running_loop()
                parts: list[bytes] = []
                try:
                    while True:  # idle bounds each silence, not the whole body (relays trickle keep-alives)
                        timer.reschedule(loop.time() + max(0.0, min(timeouts.idle, deadline - time.perf_counter())))
                        chunk = await resp.read_chunk()
                        if not chunk:
                            break
                        parts.append(chunk)
                    data = b"".join(parts)
                except _NET_ERRORS as e:
                    resp.close()
                    raise _net_error(e, False) from None
                except BaseException:
                    resp.close()
                    raise
        except TimeoutError:
            if resp is None:
                raise self._timeout_error(deadline, "no response headers") from None
            raise VendorError(ErrorClass.TIMEOUT, "response body stalled") from None
        if fault is not None and fault.kind == "stream_cut":
            raise VendorError(ErrorClass.RESET, "drill: connection dropped after headers")
        try:
            return t.adapter.parse_chat(data)
        except VendorError as e:
            raise scrub(e, t.secrets) from None

    async def _open_stream(self, call: Call, t: Target, fault: Fault | None, deadline: float,
                           prefill: str | None = None) -> OpenStream:
        """Connect and read until the first token; every failure here is before the client saw anything."""
        await self._fault_gate(fault, deadline)
        resp, fb_deadline = await self._send(t, call.body, True, deadline, prefill)
        if resp.status != 200:
            raise await self._error_from(t, resp)
        st = OpenStream(resp, t, fault is not None and fault.kind == "stream_cut")
        try:
            while True:
                try:
                    deltas = await st.read(max(0.0, fb_deadline - time.perf_counter()))
                except TimeoutError:
                    raise self._timeout_error(deadline, "no first token") from None
                except _NET_ERRORS as e:
                    raise VendorError(ErrorClass.RESET, f"stream lost before the first token ({type(e).__name__})") from None
                if deltas is None:
                    if st.decoder.done or any(d.finish_reason for d in st.pending):
                        return st
                    raise VendorError(ErrorClass.RESET, "stream ended before the first token")
                st.pending.extend(deltas)
                if st.decoder.done or any(d.has_content or d.finish_reason for d in deltas):
                    return st
        except BaseException:
            call.malformed += st.decoder.malformed
            st.close()
            raise

    # ------------------------------------------------------------ results

    def _final_error(self, call: Call, err: VendorError) -> ClientError:
        tried = "; ".join(call.errors[-6:]) or str(err)
        if err.code == TOTAL_TIMEOUT:
            code = "timeout"
        elif all(a.outcome == ErrorClass.THROTTLED.value for a in call.attempts) and call.attempts:
            code = "rate_limited"
        else:
            code = "all_targets_failed"
        return ClientError(503, f"No target of {call.route!r} could answer: {tried}", "service_unavailable",
                           code)

    def _record(self, call: Call, outcome: str, status: int, target: Target | None = None,
                usage: dict | None = None, cost: float | None = None, ttft_ms: float | None = None,
                err_cls: str | None = None, err_msg: str | None = None, overhead_ms: float | None = None,
                answer: str | bytes | None = None) -> None:
        store = self.rt.store
        row = RequestRow(
            id=call.id, ts=call.ts, route=call.route, stream=call.stream, outcome=outcome, http_status=status,
            client_key_id=call.client_key_id, final_target=target.id if target else None,
            model=target.cfg.model if target else None, attempts=len(call.attempts), failovers=call.failovers,
            latency_ms=round((time.perf_counter() - call.t0) * 1000, 3), ttft_ms=ttft_ms,
            overhead_ms=overhead_ms if overhead_ms is not None else call.overhead_ms(),
            prompt_tokens=(usage or {}).get("prompt_tokens"), completion_tokens=(usage or {}).get("completion_tokens"),
            cost=cost, error_class=err_cls, error_message=err_msg[:1000] if err_msg else None, drill_id=call.drill_id,
            skipped_open=",".join(call.skipped_open) or None,
        )
        if self.cfg.store.log_bodies:
            try:
                row.request_body = orjson.dumps(call.body).decode()
            except TypeError:  # nested deeper than orjson writes: the client's 400 must not become a 500
                row.request_body = None
            if answer is not None:
                row.response_body = answer.decode() if isinstance(answer, bytes) else answer
        if outcome == "ok" and target is not None:  # the tile's latency is the log's latency
            target.health.answered(row.latency_ms, ttft_ms)
        store.put(row)
        for a in call.attempts:
            store.put(a)
        if row.drill_id is not None:
            for listener in self.rt.drill_request_listeners:
                listener(row)
        if call.malformed:
            self.rt.malformed_events += call.malformed

    def _headers(self, call: Call, target: str, overhead_ms: float) -> dict[str, str]:
        return {"x-request-id": call.id, "x-patchbay-target": target,
                "x-patchbay-attempts": str(len(call.attempts)), "x-patchbay-overhead-ms": f"{overhead_ms:.3f}"}

    # ---------------------------------------------------------- non-stream

    async def complete(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        """Whole answer or an error: (status, headers, body)."""
        try:
            ans = await self._walk(call, lambda t, f, d: self._attempt_chat(call, t, f, d))
        except ClientError as ce:
            return self._client_error(call, ce)
        except VendorError as ve:
            if call.fallback is not None:
                return self._fallback_json(call, ve)
            return self._client_error(call, self._final_error(call, ve), ve)
        t, res = ans.target, ans.result
        usage = _with_total(res.usage) if res.usage is not None else None
        msg = res.message
        if "content" not in msg:
            msg = {**msg, "content": None}
        if "refusal" not in msg:
            msg = {**msg, "refusal": None}
        choices = [{"index": 0, "message": msg, "logprobs": None, "finish_reason": res.finish_reason or "stop"}]
        choices.extend(res.extra_choices)
        out = {"id": f"chatcmpl-{call.id}", "object": "chat.completion", "created": int(call.ts),
               "model": t.cfg.model, "choices": choices, "usage": usage}
        cost = ans.cost
        overhead = call.overhead_ms()
        body = orjson.dumps(out)
        self._record(call, "ok", 200, t, usage, cost, overhead_ms=overhead, answer=body)
        return 200, self._headers(call, t.id, overhead), body

    def _client_error(self, call: Call, ce: ClientError, ve: VendorError | None = None) -> tuple[int, dict, bytes]:
        overhead = call.overhead_ms()
        outcome = "error" if ce.status >= 500 else "client_error"
        self._record(call, outcome, ce.status, None, err_cls=(ve.cls.value if ve else ce.code), err_msg=ce.message,
                     overhead_ms=overhead)
        last = call.attempts[-1].target if call.attempts else "none"
        return ce.status, {**self._headers(call, last, overhead), **ce.headers}, ce.body()

    def _fallback_json(self, call: Call, ve: VendorError) -> tuple[int, dict, bytes]:
        out = {"id": f"chatcmpl-{call.id}", "object": "chat.completion", "created": int(call.ts),
               "model": "patchbay-fallback",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": call.fallback, "refusal": None},
                            "logprobs": None, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
        overhead = call.overhead_ms()
        self._record(call, "fallback", 200, None, err_cls=ve.cls.value, err_msg="; ".join(call.errors[-6:]),
                     overhead_ms=overhead)
        headers = {**self._headers(call, "fallback", overhead), "x-patchbay-fallback": "static"}
        return 200, headers, orjson.dumps(out)

    # -------------------------------------------------------------- stream

    async def stream(self, call: Call, request: Any) -> Any:
        """Stream to the client; returns the aiohttp response (already written) or a plain error."""
        from aiohttp import web

        try:
            ans = await self._walk(call, lambda t, f, d: self._open_stream(call, t, f, d))
        except ClientError as ce:
            status, headers, body = self._client_error(call, ce)
            return web.Response(status=status, headers=headers, body=body, content_type="application/json")
        except VendorError as ve:
            if call.fallback is None:
                status, headers, body = self._client_error(call, self._final_error(call, ve), ve)
                return web.Response(status=status, headers=headers, body=body, content_type="application/json")
            return await self._stream_fallback(call, request, ve)
        t: Target = ans.target
        st: OpenStream = ans.result
        ttft_ms = round((time.perf_counter() - call.t0) * 1000, 3)
        overhead = call.overhead_ms()
        resp = web.StreamResponse(status=200, headers={
            **self._headers(call, t.id, overhead), "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache"})
        out = _ChunkWriter(call, t.cfg.model)
        try:
            await resp.prepare(request)
        except _NET_ERRORS:
            st.close()
            self._record(call, "client_gone", 499, t, ttft_ms=ttft_ms, overhead_ms=overhead)
            return resp
        deadline = call.t0 + self.cfg.timeouts.total
        outcome, err_cls, err_msg, final = "ok", None, None, t
        try:
            try:
                await self._pump(call, st, resp, out, deadline)
            except VendorError as cut:
                st.close()
                final, ok = await self._continue(call, t, cut, resp, out, deadline)
                if not ok:
                    outcome, err_cls, err_msg = "cut", ErrorClass.STREAM_CUT.value, str(cut)
                    await self._write(resp, _error_event(
                        f"The stream from {t.id} was interrupted and could not be continued: {cut.message}",
                        "stream_interrupted"))
            if outcome == "ok":
                if call.include_usage:
                    await self._write(resp, out.usage_chunk())
                await self._write(resp, b"data: [DONE]\n\n")
            await resp.write_eof()
        except (_ClientGone, *_NET_ERRORS):
            outcome, err_cls, err_msg = "client_gone", "client_gone", "client disconnected or stopped reading"
        except asyncio.CancelledError:
            st.close()
            self._record(call, "client_gone", 499, final, out.total_usage(), None, ttft_ms, "client_gone",
                         "client disconnected mid-stream", overhead)
            raise
        except Exception as e:  # headers are out: the only honest ending left is an in-band error
            log.exception("unexpected error while streaming from %s", final.id)
            outcome, err_cls, err_msg = "error", "internal_error", f"internal error mid-stream ({type(e).__name__})"
            try:
                await self._write(resp, _error_event("Patchbay hit an internal error mid-stream.", "internal_error"))
                await resp.write_eof()
            except Exception:  # noqa: BLE001 - the client may be gone as well
                pass
        finally:
            st.close()
        cost = out.total_cost()
        if outcome == "ok":
            final.health.observe(True, cost=cost or 0.0)
        self._record(call, outcome, 200, final, out.total_usage(), cost, ttft_ms, err_cls, err_msg, overhead,
                     out.text)
        return resp

    async def _write(self, resp: Any, data: bytes) -> None:
        """Write to a streaming client; one that stops reading must not hold the vendor connection forever."""
        try:
            async with asyncio.timeout(self.cfg.timeouts.idle):
                await resp.write(data)
        except TimeoutError:
            raise _ClientGone(f"client read nothing for {self.cfg.timeouts.idle:g}s") from None

    async def _pump(self, call: Call, st: OpenStream, resp: Any, out: "_ChunkWriter", deadline: float) -> None:
        """Forward deltas until the vendor ends; raise VendorError(STREAM_CUT) on a cut, stall or error.

        Anything that goes wrong after the finish reason arrived ends the stream normally: the
        answer is complete, so it is neither charged to the vendor nor continued elsewhere.
        """
        idle = self.cfg.timeouts.idle
        try:
            while True:
                if st.pending:
                    pending, st.pending = st.pending, []
                    await self._write(resp, out.chunks(pending, st.target))
                    if st.cut_after_first and out.text:
                        raise VendorError(ErrorClass.STREAM_CUT, "drill: stream cut after the first token")
                if st.decoder.done:
                    await st.drain()
                    return
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    if out.finished:
                        return
                    raise self._total_cut()
                wait = FINISH_GRACE_S if out.finished else idle
                try:
                    deltas = await st.read(min(wait, remaining))
                except TimeoutError:
                    if out.finished:
                        return  # complete but no [DONE]: finish promptly
                    if remaining <= wait:
                        raise self._total_cut() from None
                    raise VendorError(ErrorClass.STREAM_CUT, f"stream stalled for {wait:g}s") from None
                except VendorError as e:
                    if out.finished:
                        return
                    raise VendorError(ErrorClass.STREAM_CUT, f"vendor error event mid-stream: {e.message}",
                                      e.status, None, e.code) from None
                except (ConnectionLost, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                        aiohttp.ClientOSError, ConnectionResetError) as e:
                    if out.finished:
                        return
                    raise VendorError(ErrorClass.STREAM_CUT, f"stream cut by the vendor ({type(e).__name__})") from None
                if deltas is None:
                    if out.finished:
                        return
                    raise VendorError(ErrorClass.STREAM_CUT, "stream ended without a finish reason")
                st.pending = deltas
        finally:
            call.malformed += st.decoder.malformed + out.take_malformed()
            st.decoder.malformed = 0

    def _total_cut(self) -> VendorError:
        return VendorError(ErrorClass.STREAM_CUT, f"stream exceeded the total timeout of {self.cfg.timeouts.total:g}s",
                           code=TOTAL_TIMEOUT)

    async def _continue(self, call: Call, failed: Target, cut: VendorError, resp: Any,
                        out: "_ChunkWriter", deadline: float) -> tuple[Target, bool]:
        """Mid-stream rule: continue on a prefill target with the partial answer, else give up."""
        lat = round((time.perf_counter() - out.started) * 1000, 3)
        call.attempts.append(AttemptRow(call.id, len(call.attempts) + 1, failed.id, time.time(), lat,
                                        ErrorClass.STREAM_CUT.value, 200, cut.message[:500], drill_id=call.drill_id))
        call.errors.append(f"{failed.id}: {cut}")
        if cut.code == TOTAL_TIMEOUT:
            failed.breaker.release(call)   # the client's budget ran out, not the vendor
            return failed, False           # and there is no time left to continue anywhere
        failed.health.observe(False, lat, str(cut)[:300], ErrorClass.STREAM_CUT)
        self.rt.breaker_changed(failed, failed.breaker.failure(call), str(cut)[:200])
        if out.tool_calls_seen:
            return failed, False  # a half-sent tool call cannot be continued faithfully
        prev = failed
        for t in call.targets:
            if t is failed or not t.cfg.prefill or t.disabled:
                continue
            if deadline - time.perf_counter() <= 0 or not t.breaker.allow(call):
                continue
            self._failover(call, prev, t, cut)
            start = time.perf_counter()
            st: OpenStream | None = None
            fault = t.active_fault()
            if fault is not None and call.drill_id is None:
                call.drill_id = fault.drill_id
            t.inflight += 1
            try:
                st = await self._open_stream(call, t, fault, deadline, prefill=out.text)
                for d in st.pending:  # the continuation's role delta is not news to the client
                    if d.delta and "role" in d.delta:
                        d.delta = {k: v for k, v in d.delta.items() if k != "role"}
                out.continuation_from(t)
                await self._pump(call, st, resp, out, deadline)
            except VendorError as e:
                lat = round((time.perf_counter() - start) * 1000, 3)
                outcome = e.cls.value if st is None else ErrorClass.STREAM_CUT.value
                call.attempts.append(AttemptRow(call.id, len(call.attempts) + 1, t.id, time.time(), lat, outcome,
                                                e.status if st is None else 200, e.message[:500], True,
                                                call.drill_id))
                call.errors.append(f"{t.id}: {e}")
                if e.code == TOTAL_TIMEOUT or not (e.cls.counts_against_health or st is not None):
                    t.breaker.release(call)
                else:
                    t.health.observe(False, lat, str(e)[:300], e.cls)
                    self.rt.breaker_changed(t, t.breaker.failure(call), str(e)[:200])
                prev = t
                continue
            except BaseException:
                t.breaker.release(call)   # the client left (or a bug): no verdict on this target
                raise
            finally:
                t.inflight -= 1
                if st is not None:
                    st.close()
            lat = round((time.perf_counter() - start) * 1000, 3)
            call.attempts.append(AttemptRow(call.id, len(call.attempts) + 1, t.id, time.time(), lat, "ok", 200,
                                            None, True, call.drill_id))
            self.rt.breaker_changed(t, t.breaker.success(call), "continuation succeeded")
            return t, True
        return failed, False

    async def _stream_fallback(self, call: Call, request: Any, ve: VendorError) -> Any:
        from aiohttp import web

        overhead = call.overhead_ms()
        resp = web.StreamResponse(status=200, headers={
            **self._headers(call, "fallback", overhead), "x-patchbay-fallback": "static",
            "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"})
        out = _ChunkWriter(call, "patchbay-fallback")
        try:
            await resp.prepare(request)
            await resp.write(out.chunks([StreamDelta({"role": "assistant", "content": call.fallback}),
                                         StreamDelta({}, "stop")], None))
            if call.include_usage:
                out.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
                await resp.write(out.usage_chunk())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except _NET_ERRORS:
            pass
        self._record(call, "fallback", 200, None, err_cls=ve.cls.value, err_msg="; ".join(call.errors[-6:]),
                     overhead_ms=overhead)
        return resp


class _ChunkWriter:
    """Builds OpenAI `chat.completion.chunk` bytes with one id and created for the whole stream."""

    __slots__ = ("prefix", "call", "text", "finished", "usage", "usage_by_target",
                 "tool_calls_seen", "started", "_role_sent", "_malformed")

    def __init__(self, call: Call, model: str):
        self.call = call
        self._set_prefix(model)
        self.text = ""
        self.finished = False
        self.usage: dict | None = None
        self.usage_by_target: list[tuple[Target, dict]] = []
        self.tool_calls_seen = False
        self.started = time.perf_counter()
        self._role_sent = False
        self._malformed = 0

    def _set_prefix(self, model: str) -> None:
        self.prefix = (b'data: {"id":"chatcmpl-' + self.call.id.encode() + b'","object":"chat.completion.chunk",'
                       b'"created":' + str(int(self.call.ts)).encode() + b',"model":' + orjson.dumps(model)
                       + b",")

    def continuation_from(self, t: Target) -> None:
        """Chunks after a continuation carry the model that now answers."""
        self._set_prefix(t.cfg.model)
        self.started = time.perf_counter()

    def chunks(self, deltas: list[StreamDelta], target: Target | None) -> bytes:
        parts = []
        for d in deltas:
            if d.usage is not None:
                self.usage = _with_total(d.usage)
                if target is not None:
                    self.usage_by_target.append((target, self.usage))
                if d.delta is None and d.finish_reason is None:
                    continue
            delta = d.delta or {}
            if delta:
                c = delta.get("content")
                if c is not None and not isinstance(c, str):
                    self._malformed += 1  # one malformed event: skipped and counted
                    continue
                if c:
                    self.text += c
                if delta.get("tool_calls"):
                    self.tool_calls_seen = True
                if not self._role_sent:
                    if "role" not in delta:
                        delta = {"role": "assistant", **delta}
                    self._role_sent = True
            elif not self._role_sent:
                delta = {"role": "assistant", "content": ""}
                self._role_sent = True
            if d.finish_reason:
                self.finished = True
            fr = orjson.dumps(d.finish_reason) if d.finish_reason else b"null"
            parts.append(self.prefix + b'"choices":[{"index":0,"delta":' + orjson.dumps(delta)
                         + b',"logprobs":null,"finish_reason":' + fr + b"}]}\n\n")
        return b"".join(parts)

    def take_malformed(self) -> int:
        n, self._malformed = self._malformed, 0
        return n

    def total_usage(self) -> dict | None:
        """Tokens of every attempt that streamed to this client (after a continuation, both)."""
        if len(self.usage_by_target) < 2:
            return self.usage
        pt = sum(u.get("prompt_tokens") or 0 for _, u in self.usage_by_target)
        ct = sum(u.get("completion_tokens") or 0 for _, u in self.usage_by_target)
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    def total_cost(self) -> float | None:
        costs = [c for c in (t.cost(u) for t, u in self.usage_by_target) if c is not None]
        return sum(costs) if costs else None

    def usage_chunk(self) -> bytes:
        return self.prefix + b'"choices":[],"usage":' + orjson.dumps(self.total_usage()) + b"}\n\n"


def _with_total(u: dict) -> dict:
    if "total_tokens" in u:
        return u
    return {**u, "total_tokens": (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0)}
