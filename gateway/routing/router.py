"""The failover contract (DESIGN.md), applied to one client request.

The router decides; it does not write. `complete` returns a whole answer or a
`Failed`, never part of one. `open_stream` returns a `LiveStream` once some
target produced its first token (every failure before that is invisible to the
client), or a `Failed`; the door then relays `LiveStream.events()` (routing/live.py),
in which a cut after the first token continues on a `prefill = true` target or
ends with an `Interrupted` event. Every attempt is recorded by `attempt.settle`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from gateway.config import Config
from gateway.routing.attempt import NET_ERRORS, net_error, settle
from gateway.routing.call import Answer, Call, ClientError, Failed
from gateway.routing.faults import DrillFault, apply_fault
from gateway.routing.live import LiveStream
from gateway.routing.stream import OpenStream
from gateway.routing.verdicts import NO_VERDICT, SHUTDOWN, TOO_LARGE, TOTAL_TIMEOUT, timeout_error
from gateway.runtime import Runtime, Target
from gateway.vendors.base import ChatResult, ErrorClass, UpstreamRequest, VendorError, scrub, scrub_text
from gateway.vendors.http import Pool
from gateway.vendors.http_conn import Response
from gateway.vendors.http_errors import ProtocolError, ResponseTooLarge

log = logging.getLogger("patchbay")

ERROR_BODY_LIMIT = 16 * 1024   # of a vendor's error answer: enough for any JSON error, bounded scrub cost
# what reading a vendor's error answer may raise (one tuple: a starred tuple in `except` has no static type)
_ERROR_READ_FAILS: tuple[type[BaseException], ...] = (TimeoutError, *NET_ERRORS)

R = TypeVar("R")


def pool_for(cfg: Config, env: Any = None) -> Pool:
    """The gateway's one upstream client, with the configured limits."""
    up = cfg.upstream
    return Pool(cfg.timeouts.connect, header_limit=up.max_header_bytes, body_limit=up.max_body_bytes, env=env)


def _may_fit(window: int | None, floor: int | None) -> bool:
    """After a context-length error: is a target with this window worth a try?

    Only a known window no larger than a known window that was already too
    small rules a target out; when either is not configured, trying costs the
    client one attempt and may answer.
    """
    return window is None or floor is None or window > floor


def _returned(err: VendorError) -> ClientError:
    """A vendor's verdict on the client's own request (content policy, other 4xx), passed back as it is."""
    code = "content_policy_violation" if err.cls is ErrorClass.CONTENT_POLICY else err.code
    status = err.status if err.status and 400 <= err.status < 500 else 400
    return ClientError(status, err.message, "invalid_request_error", code)


class Router:
    def __init__(self, runtime: Runtime, upstream: Pool | None = None):
        self.rt = runtime
        self.cfg: Config = runtime.config
        self.upstream = upstream if upstream is not None else pool_for(self.cfg)
        self.closing = False          # set by begin_shutdown()
        self._streams: set[OpenStream] = set()
        self._live: set[LiveStream] = set()

    def begin_shutdown(self) -> None:
        """Stop relaying: every stream, relaying or still waiting for its first token, is cut now (a relaying
        one ends with the in-band `stream_interrupted` event, never a cut that looks like a normal end; one
        before its first token gets a 503 its SDK retries), so long generations do not hold up a stop."""
        self.closing = True
        for live in list(self._live):
            live.interrupt()
        for st in list(self._streams):
            st.close()

    def _shutdown_error(self) -> VendorError:
        return VendorError(ErrorClass.STREAM_CUT, "Patchbay is shutting down", code=SHUTDOWN)

    # ------------------------------------------------------------------ the walk

    async def _walk(self, call: Call, attempt: Callable[[Target, DrillFault | None, float], Awaitable[R]]
                    ) -> tuple[Target, R] | Failed:
        """Try targets in order under the contract; the first answer, or why there is none."""
        deadline = call.t0 + self.cfg.timeouts.total
        skipped: list[Target] = []
        last: VendorError | None = None
        failed_from: Target | None = None
        ctx_floor: int | None = None     # largest known window that was already too small
        ctx_hit = False                  # some target said "context length exceeded"
        tried = 0
        for t in call.targets:
            if t.disabled or (ctx_hit and not _may_fit(t.cfg.context_window, ctx_floor)):
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
            if not isinstance(res, VendorError):
                return t, res
            last = res
            if last.cls is ErrorClass.CONTEXT_LENGTH:
                ctx_hit = True
                if t.cfg.context_window is not None:
                    ctx_floor = max(ctx_floor or 0, t.cfg.context_window)
            elif not last.cls.fails_over:
                return Failed(_returned(last), detail=last.message)
            if last.code == SHUTDOWN or time.perf_counter() >= deadline:
                break
            failed_from = t
        if tried == 0 and skipped:
            # Every target is open: try the one closest to recovery rather than fail untried.
            t = min(skipped, key=lambda x: x.breaker.ready_at)
            t.breaker.force_trial(call)
            res = await self._on_target(call, t, attempt, deadline)
            if not isinstance(res, VendorError):
                return t, res
            last = res
            if not last.cls.fails_over:  # the client's own error: return it, as in the walk above
                return Failed(_returned(last), detail=last.message)
        if last is None:
            last = VendorError(ErrorClass.SERVER, "no target is available (all disabled)", 503)
        if ctx_hit and last.cls is ErrorClass.CONTEXT_LENGTH:
            # No remaining target has a larger context window: the client must shorten the prompt.
            ce = ClientError(400, last.message, "invalid_request_error", "context_length_exceeded", "messages")
            return Failed(ce, last, detail=ce.message)
        return self._all_failed(call, last)

    def _all_failed(self, call: Call, err: VendorError) -> Failed:
        tried = "; ".join(call.errors[-6:]) or str(err)
        if err.code == SHUTDOWN:
            ce = ClientError(503, "Patchbay is shutting down; retry the request.", "service_unavailable",
                             "shutting_down", headers={"connection": "close"})
            return Failed(ce, err, detail=ce.message)
        if err.code == TOTAL_TIMEOUT:
            code = "timeout"
        elif call.attempts and all(a.outcome == ErrorClass.THROTTLED.value for a in call.attempts):
            code = "rate_limited"
        else:
            code = "all_targets_failed"
        ce = ClientError(503, f"No target of {call.route!r} could answer: {tried}", "service_unavailable", code)
        if call.fallback is not None:
            return Failed(ce, err, call.fallback, detail=tried)
        return Failed(ce, err, detail=ce.message)

    async def _on_target(self, call: Call, t: Target,
                         attempt: Callable[[Target, DrillFault | None, float], Awaitable[R]],
                         deadline: float) -> R | VendorError:
        """Attempts on one target with retries, each settled into the log, health and breaker."""
        retry = self.cfg.retry
        n_here = 0
        while True:
            n_here += 1
            fault = t.active_fault()
            if fault is not None and call.drill_id is None:
                call.drill_id = fault.drill_id
            start = time.perf_counter()
            ts = time.time()
            err: VendorError | None = None
            call.dropped = []   # set again when this attempt's request is translated
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
            lat_ms = round((time.perf_counter() - start) * 1000, 3)
            if err is None:
                cost = None if call.stream else t.cost(result.usage)   # type: ignore[attr-defined]
                # a stream's health is observed when it ends, over its whole length
                settle(self.rt, t, None, lat_ms, owner=call, call=call, ts=ts, observe_ok=not call.stream,
                       cost=cost)
                if not call.stream:
                    return Answer(t, result, cost)   # type: ignore[arg-type,return-value]
                return result
            settle(self.rt, t, err, lat_ms, owner=call, call=call, ts=ts)
            if err.code in NO_VERDICT or not err.cls.retryable or err.code == TOO_LARGE \
                    or n_here >= retry.max_attempts_per_target:
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

    def _failover(self, call: Call, frm: Target, to: Target, why: VendorError | None) -> None:
        call.failovers += 1
        self.rt.emit("failover", target=frm.id, route=call.route, request_id=call.id,
                     to=to.id, reason=str(why)[:300] if why else None,
                     **({"drill_id": call.drill_id} if call.drill_id else {}))

    # ------------------------------------------------------------------ one HTTP stack

    async def request(self, t: Target, req: UpstreamRequest, stream: bool) -> Response:
        """The one way to a vendor: traffic, probes and drills all go through the same pool."""
        v = t.vendor
        if stream:
            return await self.upstream.request(req.method, req.url, req.headers, req.body, proxy=v.proxy,
                                               ca_file=v.ca_file, body_limit=None)
        return await self.upstream.request(req.method, req.url, req.headers, req.body, proxy=v.proxy,
                                           ca_file=v.ca_file)

    async def read_error(self, t: Target, resp: Response) -> VendorError:
        """A vendor's non-200 answer as a classified error, its secrets scrubbed before anything is cut."""
        try:
            async with asyncio.timeout(self.cfg.timeouts.idle):
                data = await resp.read(ERROR_BODY_LIMIT)
        except _ERROR_READ_FAILS:
            data = b""
        finally:
            resp.release()
        if t.secret_bytes:
            data = scrub_text(data, t.secret_bytes)
        return scrub(t.adapter.classify_error(resp.status, resp.headers, data), t.secrets)

    async def fault_gate(self, fault: DrillFault | None, deadline: float, call: Call | None = None) -> None:
        """Apply a drill's fault before the real call; the time it makes a call wait (an injected hang or
        latency, also when it then fails) is the vendor's, not Patchbay's."""
        if fault is None:
            return
        s = time.perf_counter()
        try:
            await apply_fault(fault, deadline, self.cfg.timeouts.first_byte, self.cfg.timeouts.total)
        finally:
            if call is not None:
                call.waited_s += time.perf_counter() - s

    def _timeout_error(self, deadline: float, what: str) -> VendorError:
        return timeout_error(deadline, what, self.cfg.timeouts.first_byte, self.cfg.timeouts.total)

    def _translate(self, call: Call, t: Target, stream: bool, prefill: str | None = None) -> UpstreamRequest:
        try:
            req = t.adapter.chat_request(call.body, t.cfg.model, stream=stream, prefill=prefill)
        except VendorError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise VendorError(ErrorClass.BAD_REQUEST, f"cannot translate request for {t.id}: {e}", 400) from None
        call.dropped = list(req.dropped)   # the answering target's drops are the ones the client is told of
        return req

    # ------------------------------------------------------------------ non-stream

    async def complete(self, call: Call) -> Answer | Failed:
        """A whole answer, or why there is none (never part of one)."""
        res = await self._walk(call, lambda t, f, d: self._attempt_chat(call, t, f, d))
        # _on_target hands a non-stream ChatResult back wrapped in an Answer (with its cost)
        return res if isinstance(res, Failed) else cast(Answer, res[1])

    async def _attempt_chat(self, call: Call, t: Target, fault: DrillFault | None, deadline: float) -> ChatResult:
        await self.fault_gate(fault, deadline, call)
        req = self._translate(call, t, False)
        timeouts = self.cfg.timeouts
        remaining = deadline - time.perf_counter()
        resp = None
        waited = time.perf_counter()
        # One timer for the hot path: first_byte until headers, then idle for each silence of the body.
        try:
            async with asyncio.timeout(max(0.0, min(timeouts.first_byte, remaining))) as timer:
                try:
                    resp = await self.request(t, req, False)
                except NET_ERRORS as e:
                    raise net_error(e, True) from None
                if resp.status != 200:
                    raise await self.read_error(t, resp)
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
                except NET_ERRORS as e:
                    resp.close()
                    raise net_error(e, False) from None
                except BaseException:
                    resp.close()
                    raise
        except TimeoutError:
            if resp is None:
                raise self._timeout_error(deadline, "no response headers") from None
            if time.perf_counter() >= deadline - 0.001:   # a trickling body used up the client's budget
                raise self._timeout_error(deadline, "response body") from None
            raise VendorError(ErrorClass.TIMEOUT, f"response body stalled for idle={timeouts.idle:g}s") from None
        finally:
            call.waited_s += time.perf_counter() - waited
        if fault is not None and fault.kind == "stream_cut":
            raise VendorError(ErrorClass.RESET, "drill: connection dropped after headers")
        try:
            return t.adapter.parse_chat(data)
        except VendorError as e:
            raise scrub(e, t.secrets) from None

    # ------------------------------------------------------------------ stream

    async def open_stream(self, call: Call) -> LiveStream | Failed:
        """Walk the targets until one produces its first token; the client has seen nothing before."""
        res = await self._walk(call, lambda t, f, d: self._open(call, t, f, d))
        if isinstance(res, Failed):
            return res
        t, st = res
        call.waited_s += st.waited_s
        return LiveStream(self, call, t, st)

    async def _open(self, call: Call, t: Target, fault: DrillFault | None, deadline: float,
                    prefill: str | None = None) -> OpenStream:
        """Connect and read until the first token; every failure here is before the client saw anything."""
        if self.closing:
            raise self._shutdown_error()
        await self.fault_gate(fault, deadline, call)
        req = self._translate(call, t, True, prefill)
        fb_deadline = min(time.perf_counter() + self.cfg.timeouts.first_byte, deadline)
        s = time.perf_counter()
        try:
            async with asyncio.timeout(max(0.0, fb_deadline - time.perf_counter())):
                resp = await self.request(t, req, True)
        except TimeoutError:
            raise self._timeout_error(deadline, "no response headers") from None
        except NET_ERRORS as e:
            raise net_error(e, True) from None
        finally:
            call.waited_s += time.perf_counter() - s
        if self.closing:
            resp.close()
            raise self._shutdown_error()
        if resp.status != 200:
            raise await self.read_error(t, resp)
        st = OpenStream(resp, t, fault is not None and fault.kind == "stream_cut", self.cfg.upstream.max_event_bytes,
                        self._streams)
        try:
            while True:
                try:
                    deltas = await st.read(max(0.0, fb_deadline - time.perf_counter()))
                except TimeoutError:
                    raise self._timeout_error(deadline, "no first token") from None
                except (ProtocolError, ResponseTooLarge) as e:
                    raise VendorError(ErrorClass.PROTOCOL, f"before the first token: {e}") from None
                except NET_ERRORS as e:
                    if self.closing:
                        raise self._shutdown_error() from None
                    raise VendorError(ErrorClass.RESET, f"stream lost before the first token ({type(e).__name__})") \
                        from None
                if deltas is None:
                    if st.decoder.done or any(d.finish_reason for d in st.pending):
                        return st
                    raise VendorError(ErrorClass.RESET, "stream ended before the first token")
                st.pending.extend(deltas)
                if st.decoder.done or any(d.has_content or d.finish_reason for d in deltas):
                    return st
        except BaseException:
            call.malformed += st.decoder.malformed
            call.waited_s += st.waited_s
            st.close()
            raise

