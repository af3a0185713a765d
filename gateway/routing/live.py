"""The relay of one stream a client is receiving, continuations included.

`Router.open_stream` hands back a `LiveStream` once a target produced its first
token; from then on the client has seen output, so a cut cannot be retried
invisibly. This module holds what happens after that point: relaying deltas
under the idle and total timeouts, and the mid-stream rule (continue on a
`prefill = true` target with the partial answer, or end with `Interrupted`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.routing.attempt import settle
from gateway.routing.call import Call
from gateway.routing.stream import OpenStream, StreamState
from gateway.routing.verdicts import NO_VERDICT, TOTAL_TIMEOUT
from gateway.runtime import Target
from gateway.vendors.base import ErrorClass, StreamDelta, VendorError
from gateway.vendors.http_errors import ConnectionLost, ProtocolError

if TYPE_CHECKING:   # the router builds LiveStreams; at run time this module never imports it
    from gateway.routing.router import Router

FINISH_GRACE_S = 0.5   # after finish_reason, how long to wait for usage / [DONE]


@dataclass(slots=True)
class Continued:
    """A stream event: from here on another target answers (a prefill continuation)."""

    target: Target


@dataclass(slots=True)
class Interrupted:
    """A stream event: the stream was cut and could not be continued; nothing follows."""

    message: str


StreamEvent = list[StreamDelta] | Continued | Interrupted


class LiveStream:
    """A stream a client is receiving: the router's side of relaying it, continuations included.

    `events()` yields batches of deltas, `Continued` when another target takes
    over, and `Interrupted` (last) when a cut could not be continued. Afterwards
    `outcome` is "ok" or "cut", `target` the target that answered last.
    """

    def __init__(self, router: Router, call: Call, target: Target, st: OpenStream):
        self.router = router
        self.call = call
        self.target = target
        self.st = st
        self.started = st.started
        self.state = StreamState()
        self.outcome = "ok"
        self.error: str | None = None
        self._opening: asyncio.Task | None = None
        router._live.add(self)

    def interrupt(self) -> None:
        """Shutdown: cut the vendor stream and any continuation being opened; events() ends in-band."""
        self.st.close()
        if self._opening is not None:
            self._opening.cancel()

    def close(self) -> None:
        """The client is gone (or the door is done): drop the vendor connection."""
        self.st.close()
        if self._opening is not None:
            self._opening.cancel()
        self.router._live.discard(self)

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        deadline = self.call.t0 + self.router.cfg.timeouts.total
        try:
            try:
                async with aclosing(self._pump(self.st, deadline)) as batches:
                    async for batch in batches:
                        yield batch
            except VendorError as cut:
                self.st.close()
                cut_from = self.target
                async with aclosing(self._continue(cut, deadline)) as evs:
                    async for ev in evs:
                        yield ev
                if self.outcome == "cut":
                    yield Interrupted(f"The stream from {cut_from.id} was interrupted and could not be continued: "
                                      f"{cut.message}")
            if self.outcome == "ok":
                lat = (time.perf_counter() - self.started) * 1000
                self.target.health.observe(True, lat, cost=self.state.total_cost() or 0.0)
        finally:
            self.call.malformed += self.state.malformed
            self.close()

    async def _pump(self, st: OpenStream, deadline: float) -> AsyncGenerator[list[StreamDelta], None]:
        """Deltas until the vendor ends; raise VendorError(STREAM_CUT) on a cut, stall or error.

        Anything that goes wrong after the finish reason arrived ends the stream normally: the
        answer is complete, so it is neither charged to the vendor nor continued elsewhere.
        """
        router = self.router
        state = self.state
        idle = router.cfg.timeouts.idle
        try:
            while True:
                if st.pending:
                    pending, st.pending = st.pending, []
                    yield state.absorb(pending, st.target)
                    if st.cut_after_first and state.text:
                        raise VendorError(ErrorClass.STREAM_CUT, "drill: stream cut after the first token")
                if router.closing and not state.finished:
                    raise router._shutdown_error()
                if st.decoder.done:
                    await st.drain()
                    return
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    if state.finished:
                        return
                    raise self._total_cut()
                wait = FINISH_GRACE_S if state.finished else idle
                try:
                    deltas = await st.read(min(wait, remaining))
                except TimeoutError:
                    if state.finished:
                        return  # complete but no [DONE]: finish promptly
                    if remaining <= wait:
                        raise self._total_cut() from None
                    raise VendorError(ErrorClass.STREAM_CUT, f"stream stalled for {wait:g}s") from None
                except VendorError as e:
                    if state.finished:
                        return
                    raise VendorError(ErrorClass.STREAM_CUT, f"vendor error event mid-stream: {e.message}",
                                      e.status, None, e.code) from None
                except ProtocolError as e:
                    if state.finished:
                        return
                    raise VendorError(ErrorClass.STREAM_CUT, f"vendor broke the stream: {e}") from None
                except (ConnectionLost, ConnectionResetError) as e:
                    if state.finished:
                        return
                    if router.closing:
                        raise router._shutdown_error() from None
                    raise VendorError(ErrorClass.STREAM_CUT, f"stream cut by the vendor ({type(e).__name__})") from None
                if deltas is None:
                    if state.finished:
                        return
                    raise VendorError(ErrorClass.STREAM_CUT, "stream ended without a finish reason")
                st.pending = deltas
        finally:
            self.call.malformed += st.decoder.malformed
            st.decoder.malformed = 0

    def _total_cut(self) -> VendorError:
        return VendorError(ErrorClass.STREAM_CUT,
                           f"stream exceeded the total timeout of {self.router.cfg.timeouts.total:g}s",
                           code=TOTAL_TIMEOUT)

    async def _continue(self, cut: VendorError, deadline: float) -> AsyncGenerator[StreamEvent, None]:
        """Mid-stream rule: continue on a prefill target with the partial answer, else give up."""
        router, call, failed = self.router, self.call, self.target
        lat = round((time.perf_counter() - self.st.started) * 1000, 3)
        settle(router.rt, failed, cut, lat, owner=call, call=call, ts=time.time() - lat / 1000, status=200)
        self.outcome, self.error = "cut", str(cut)
        if cut.code in NO_VERDICT or self.state.tool_calls_seen:
            return  # no time (or no gateway) left; a half-sent tool call cannot be continued faithfully
        try:
            async with aclosing(self._continue_on_prefill_targets(cut, deadline)) as evs:
                async for ev in evs:
                    yield ev
        finally:
            if self.outcome != "ok":
                self.target = failed   # a cut that could not be continued is the first target's

    async def _continue_on_prefill_targets(self, cut: VendorError,
                                           deadline: float) -> AsyncGenerator[StreamEvent, None]:
        router, call, failed = self.router, self.call, self.target
        prev = failed
        for t in call.targets:
            if t is failed or not t.cfg.prefill or t.disabled:
                continue
            if router.closing or deadline - time.perf_counter() <= 0 or not t.breaker.allow(call):
                continue
            router._failover(call, prev, t, cut)
            start = time.perf_counter()
            ts = time.time()
            st: OpenStream | None = None
            fault = t.active_fault()
            if fault is not None and call.drill_id is None:
                call.drill_id = fault.drill_id
            t.inflight += 1
            try:
                self._opening = asyncio.ensure_future(router._open(call, t, fault, deadline, prefill=self.state.text))
                try:
                    st = await self._opening
                except asyncio.CancelledError:
                    if not router.closing:
                        raise
                    raise router._shutdown_error() from None
                finally:
                    self._opening = None
                for d in st.pending:  # the continuation's role delta is not news to the client
                    if d.delta and "role" in d.delta:
                        d.delta = {k: v for k, v in d.delta.items() if k != "role"}
                self.st, self.target = st, t
                yield Continued(t)
                async with aclosing(self._pump(st, deadline)) as batches:
                    async for batch in batches:
                        yield batch
            except VendorError as e:
                lat = round((time.perf_counter() - start) * 1000, 3)
                opened = st is not None
                if opened:   # cut after it started relaying: a stream cut, whatever the cause
                    e = VendorError(ErrorClass.STREAM_CUT, e.message, e.status, None, e.code)
                settle(router.rt, t, e, lat, owner=call, call=call, ts=ts, status=200 if opened else None,
                       continuation=True)
                if e.code in NO_VERDICT:
                    return
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
            settle(router.rt, t, None, lat, owner=call, call=call, ts=ts, continuation=True, observe_ok=False,
                   why="continuation succeeded")
            self.outcome, self.error = "ok", None
            return
