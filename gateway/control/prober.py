"""Background health probes: know a target is down before a client finds out.

Real traffic tells the health model about busy targets; quiet targets (a
fallback nobody has needed for an hour) would otherwise go unobserved until
the moment they are needed. The prober sends each target one cheap request
every `prober.interval` seconds (with jitter so targets do not probe in
lockstep): `models` mode lists models (unbilled), `completion` mode asks for
one token (billed, but proves the model itself answers).

Probes go through the router's own upstream client (the same connection
pool, proxy, CA bundle and limits as real traffic), the same `connect` /
`first_byte` / `idle` timeouts and the same drill fault gate, so a probe that
passes proves the path traffic takes, and a drill's injected fault fails
probes exactly as it fails requests. Each target has one probe loop, so there is never more
than one probe in flight per target. Disabled targets are not probed. A
target that served real traffic within the last interval is not probed
either (its health is already known from that traffic; that is the cost
control). A vendor without a models list (404/405/501 on it, as some
OpenAI-compatible relays) makes `models` probes inconclusive rather than
failures: it is logged once and the target's health then comes from real
traffic and breaker trials (set `prober.mode = "completion"` for such vendors). When a
breaker is open the loop wakes when its cooldown ends, so a probe can be the
half-open trial and bring a recovered target back without waiting for a
client to risk it.

Results feed `Target.health` (probe=True) and the breaker. A `probe` event
is emitted only when a target's probe verdict flips (ok <-> failing), to keep
the events table small.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.routing.attempt import NET_ERRORS, net_error, settle
from gateway.routing.router import Router
from gateway.runtime import Runtime, Target
from gateway.vendors.base import ErrorClass, VendorError, scrub

log = logging.getLogger("patchbay.prober")

JITTER = 0.1          # each wait is interval * uniform(1 - JITTER, 1): never later than the interval


class _Inconclusive(Exception):
    """The probe could not say anything about the target (no models list to call)."""


class Prober:
    def __init__(self, runtime: Runtime, router: Router, *, interval: float | None = None,
                 mode: str | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.rt = runtime
        # When probes are due (tests pass virtual time; the breakers' clock must be the same one).
        self._clock = clock
        self._sleep = sleep
        cfg = runtime.config.prober
        self.interval = float(interval if interval is not None else cfg.interval)
        self.mode = mode or cfg.mode
        # The gateway's router: its fault gate, its upstream client, its error reading.
        self._router = router
        self._tasks: dict[str, asyncio.Task] = {}
        self._busy: set[str] = set()
        self._last_ok: dict[str, bool] = {}
        self._warned: set[str] = set()
        self.sent: dict[str, int] = {}           # probes sent per target (for status and tests)
        self.skipped_busy: dict[str, int] = {}   # skipped because real traffic had just succeeded

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for tid, t in self.rt.targets.items():
            if tid not in self._tasks:
                self._tasks[tid] = loop.create_task(self._loop(t), name=f"probe-{tid}")

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {"interval": self.interval, "mode": self.mode, "sent": dict(self.sent),
                "skipped_busy": dict(self.skipped_busy)}

    # ------------------------------------------------------------ scheduling

    def _next_wait(self) -> float:
        return self.interval * random.uniform(1.0 - JITTER, 1.0)

    async def _loop(self, t: Target) -> None:
        # Spread first probes over one interval so N targets do not all probe at start.
        next_at = self._clock() + random.uniform(0.0, self.interval)
        tried_for_open: float | None = None   # breaker.opened_at we already woke early for
        while True:
            now = self._clock()
            wake = next_at
            b = t.breaker
            early = False
            if b.state != "closed" and b.opened_at != tried_for_open and not t.disabled:
                ready = b.ready_at
                if ready < wake:
                    wake, early = max(now, ready), True
            if wake > now:
                await self._sleep(wake - now)
            if early:
                tried_for_open = b.opened_at
                if b.state == "closed" or self._clock() < b.ready_at:
                    continue   # someone else closed it, or it re-opened meanwhile: reschedule
                await self._guarded(t, scheduled=False)
                continue
            next_at = self._clock() + self._next_wait()
            await self._guarded(t, scheduled=True)

    async def _guarded(self, t: Target, scheduled: bool) -> None:
        if t.disabled:
            return  # paused while an operator has it disabled
        if scheduled and t.breaker.state == "closed":
            last_real = t.health.last_real_at
            if last_real is not None and time.time() - last_real < self.interval:
                # Real traffic already tells us (and feeds the breaker): a probe would only cost.
                self.skipped_busy[t.id] = self.skipped_busy.get(t.id, 0) + 1
                return
        try:
            await self.probe_once(t)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one probe must not end the loop for good
            log.exception("probe of %s failed unexpectedly", t.id)

    # ------------------------------------------------------------ one probe

    async def probe_once(self, t: Target) -> bool | None:
        """Probe now (one at a time per target); True/False verdict, None when skipped."""
        if t.id in self._busy:
            return None
        self._busy.add(t.id)
        trial = False
        owner = object()   # this probe, as the owner of a half-open trial it takes
        try:
            b = t.breaker
            if b.state != "closed":
                trial = b.allow(owner)   # the half-open trial when the cooldown is over
            self.sent[t.id] = self.sent.get(t.id, 0) + 1
            start = time.perf_counter()
            err: VendorError | None = None
            try:
                await self._attempt(t)
            except VendorError as e:
                err = e
            except _Inconclusive as e:
                b.release(owner)
                t.health.last_probe = {"ts": time.time(), "ok": None, "latency_ms": None, "error": str(e),
                                       "mode": self.mode}
                if t.id not in self._warned:
                    self._warned.add(t.id)
                    log.warning("probe of %s: %s", t.id, e)
                return None
            except asyncio.CancelledError:
                b.release(owner)
                raise
            lat = round((time.perf_counter() - start) * 1000, 3)
            self._record(t, err, lat, owner, trial)
            return err is None
        finally:
            self._busy.discard(t.id)

    async def _attempt(self, t: Target) -> None:
        cfg = self.rt.config.timeouts
        deadline = time.perf_counter() + cfg.first_byte + cfg.idle
        fault = t.active_fault()
        await self._router.fault_gate(fault, deadline)
        req = t.adapter.probe_request(t.cfg.model, self.mode)
        try:
            async with asyncio.timeout(cfg.first_byte):
                resp = await self._router.request(t, req, False)
        except TimeoutError:
            raise VendorError(ErrorClass.TIMEOUT, f"probe: no response headers within first_byte={cfg.first_byte:g}s") \
                from None
        except NET_ERRORS as e:
            raise net_error(e, True) from None
        if resp.status in (404, 405, 501) and self.mode == "models":
            resp.release()
            raise _Inconclusive(f"{req.url} answered HTTP {resp.status}: this vendor has no models list to probe; "
                                "set prober.mode = \"completion\" to probe it")
        if resp.status != 200:
            raise await self._router.read_error(t, resp)
        try:
            async with asyncio.timeout(cfg.idle):
                data = await resp.read()   # bounded by [upstream] max_body_bytes, like traffic
        except TimeoutError:
            resp.close()
            raise VendorError(ErrorClass.TIMEOUT, "probe: response body stalled") from None
        except NET_ERRORS as e:
            resp.close()
            raise net_error(e, False) from None
        if fault is not None and fault.kind == "stream_cut":
            raise VendorError(ErrorClass.RESET, "drill: connection dropped after headers")
        if self.mode == "completion":
            try:
                t.adapter.parse_chat(data)   # raises VendorError when the answer is not a completion
            except VendorError as e:
                raise scrub(e, t.secrets) from None

    def _record(self, t: Target, err: VendorError | None, lat: float, owner: object, trial: bool) -> None:
        # A probe may move the breaker only with its own trial, or while the breaker is closed.
        settle(self.rt, t, err, lat, owner=owner, verdict=trial or t.breaker.state == "closed", probe=True)
        ok = err is None
        t.health.last_probe = {"ts": time.time(), "ok": ok, "latency_ms": lat,
                               "error": None if ok else str(err)[:300], "mode": self.mode}
        last = self._last_ok.get(t.id, True)
        self._last_ok[t.id] = ok
        if ok != last:
            self.rt.emit("probe", target=t.id, ok=ok, state=self.rt.target_state(t), latency_ms=lat,
                         error=None if ok else str(err)[:300], mode=self.mode)
