"""Failover drills: break a target on purpose, watch the gateway cope, keep a report.

An operator's trust in failover comes from seeing it work, on the real
gateway, under real (or synthetic) traffic, with numbers. A drill sets a
`DrillFault` on one target (the router and the prober both go through the same
fault gate, so live requests and probes see it exactly as if the vendor had
it), optionally drives synthetic requests through every route holding the
target via the gateway's own data listener (marked `x-patchbay-drill`, so
they land in SQLite with the drill's id), lifts the fault after `duration`
(or on DELETE) and writes a report:

- time_to_detect_s: first breaker opening (or health-state change) of the target
- time_to_failover_s: first failover event away from the target
- requests_rerouted: drill requests that passed over the target and were answered by another
- client_visible_errors: drill requests the client saw fail (outcome error or cut)
- added_latency_ms: p50 of drill requests minus the route's p50 in the minute before
- time_back_to_normal_s: from the fault's end to the target's first success with its breaker closed

Events (breaker, failover, probe) are taken live from the runtime's event
bus, which is exact to the millisecond; per-request figures come from the
request log (flushed first), which is the same record operators browse.
This module runs drills; the `Drill` record, the report's figures and their
wording are in gateway/control/drill_report.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from gateway.config import split_hostport
from gateway.control.drill_report import Drill, event_summary, figures, passed_over
from gateway.parts import GatewayView
from gateway.routing.faults import DrillFaultError, parse_drill_fault
from gateway.runtime import Runtime, Target
from gateway.vendors.http_errors import UpstreamError
from store.records import new_id

log = logging.getLogger("patchbay.drills")

MAX_DURATION_S = 3600.0
MAX_TRAFFIC_RPS = 500.0
MAX_SYNTHETIC_INFLIGHT = 500
POLL_S = 0.05
RECENT_KEPT = 50
DRILL_PROMPT = "Patchbay failover drill: reply with one word."


class DrillError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_value"):
        super().__init__(message)
        self.status, self.code = status, code


class DrillManager:
    """Runs drills for one gateway; `stop()` ends them all (the gateway calls it on shutdown)."""

    def __init__(self, gateway: GatewayView):
        self.gw = gateway
        self.rt: Runtime = gateway.runtime  # type: ignore[assignment]
        self.drills: dict[str, Drill] = {}
        self._history: Any = None
        self._stopping = False
        self.rt.drill_request_listeners.append(self._count_request)

    def _count_request(self, row: Any) -> None:
        """Live figures of a running drill, by the same rules as its report."""
        d = self.drills.get(row.drill_id)
        if d is None:
            return
        live = d.live
        live["requests"] += 1
        live["failed_attempts"] += max(0, (row.attempts or 0) - 1)
        if row.outcome in ("error", "cut"):
            live["client_errors"] += 1
        elif row.outcome == "ok" and passed_over(d, {"final_target": row.final_target,
                                                     "failovers": row.failovers, "route": row.route}):
            live["rerouted"] += 1

    # ------------------------------------------------------------ API

    def start(self, data: dict[str, Any], by: str) -> Drill:
        """Validate and start a drill now; raises DrillError (400/404/409) for bad input."""
        if self._stopping:
            raise DrillError(503, "the gateway is stopping", "stopping")
        tid = data.get("target")
        if not isinstance(tid, str) or not tid:
            raise DrillError(400, "'target' is required: a target id like openai/gpt-4.1", "missing_required_parameter")
        t = self.rt.targets.get(tid)
        if t is None:
            raise DrillError(404, f"unknown target {tid!r}; targets: {', '.join(self.rt.targets)}", "not_found")
        spec = data.get("fault")
        duration = data.get("duration", 30)
        traffic = data.get("traffic") or 0
        retry_after = data.get("retry_after")
        for name, v in (("duration", duration), ("traffic", traffic)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise DrillError(400, f"'{name}' must be a number", "invalid_type")
        if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, (int, float))
                                        or retry_after < 0):
            raise DrillError(400, "'retry_after' must be a non-negative number of seconds", "invalid_type")
        if not 0 < duration <= MAX_DURATION_S:
            raise DrillError(400, f"'duration' must be greater than 0 and at most {MAX_DURATION_S:g} seconds")
        if not 0 <= traffic <= MAX_TRAFFIC_RPS:
            raise DrillError(400, f"'traffic' must be 0..{MAX_TRAFFIC_RPS:g} requests per second")
        if not isinstance(spec, str):
            raise DrillError(400, "'fault' is required: error:<status> | error:429 | timeout | hang | "
                                  "latency:<ms> | stream_cut", "missing_required_parameter")
        for d in self.drills.values():
            if d.target == tid and d.state == "running":
                raise DrillError(409, f"drill {d.id} is already running on {tid}; DELETE it first", "conflict")
        did = new_id("drill")
        try:
            fault = parse_drill_fault(spec, duration=float(duration), drill_id=did, retry_after=retry_after)
        except DrillFaultError as e:
            raise DrillError(400, str(e)) from None
        routes = [r.name for r in self.rt.routes_of(tid)]
        d = Drill(id=did, target=tid, fault=fault.spec, duration=float(duration), traffic=float(traffic), by=by,
                  routes=routes)
        d.state_before = self.rt.target_state(t)
        d.order_at_start = {r: list(self.rt.routes[r].order) for r in routes}
        d.serving_at_start = [r for r in routes if self.rt.serving(self.rt.routes[r]) == tid]
        q = self.rt.subscribe(maxsize=10_000)
        t.fault = fault
        self.drills[did] = d
        self.rt.store.put(d.row())
        self.rt.emit("operator", target=tid, action="drill_start", who=by, drill_id=did, fault=fault.spec,
                     duration=d.duration, traffic=d.traffic)
        self.rt.emit("drill", target=tid, drill_id=did, state="running", fault=fault.spec, duration=d.duration,
                     traffic=d.traffic, who=by)
        log.info("drill %s started by %s: %s on %s for %gs, traffic %g rps", did, by, fault.spec, tid,
                 d.duration, d.traffic)
        d.task = asyncio.get_running_loop().create_task(self._run(d, t, q), name=f"drill-{did}")
        self._trim()
        return d

    def get(self, did: str) -> Drill | None:
        return self.drills.get(did)

    def list_json(self, recent: int = 10) -> list[dict[str, Any]]:
        running = [d for d in self.drills.values() if d.state == "running"]
        done = sorted((d for d in self.drills.values() if d.state != "running"), key=lambda d: -d.started)
        return [d.to_json() for d in running + done[:recent]]

    async def cancel(self, did: str, by: str) -> Drill:
        d = self.drills.get(did)
        if d is None:
            raise DrillError(404, f"no running or recent drill {did!r}", "not_found")
        if d.state == "running":
            d.cancel_event.set()
            log.info("drill %s cancelled by %s", did, by)
            self.rt.emit("operator", target=d.target, action="drill_cancel", who=by, drill_id=did)
            # wait (bounded) for the drill to lift its fault so the answer shows the final state
            for _ in range(100):
                if d.state != "running":
                    break
                await asyncio.sleep(0.02)
        return d

    async def stop(self) -> None:
        self._stopping = True
        for d in self.drills.values():
            if d.state == "running":
                d.cancel_event.set()
        tasks = [d.task for d in self.drills.values() if d.task is not None and not d.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for d in self.drills.values():  # whatever happened above, leave no fault behind
            t = self.rt.targets.get(d.target)
            if t is not None and t.fault is not None and t.fault.drill_id == d.id:
                t.fault = None
        if self._history is not None:
            h, self._history = self._history, None
            await asyncio.get_running_loop().run_in_executor(None, h.close)

    # ------------------------------------------------------------ the run

    async def _run(self, d: Drill, t: Target, q: asyncio.Queue) -> None:
        watcher = asyncio.create_task(self._watch_events(d, q))
        traffic = asyncio.create_task(self._traffic(d)) if d.traffic > 0 else None
        try:
            end_at = time.monotonic() + d.duration
            while time.monotonic() < end_at and not d.cancel_event.is_set():
                self._check_state(d, t)
                try:
                    await asyncio.wait_for(d.cancel_event.wait(),
                                           timeout=min(POLL_S, max(0.0, end_at - time.monotonic())))
                except TimeoutError:
                    pass
            if t.fault is not None and t.fault.drill_id == d.id:
                t.fault = None
            d.ended = time.time()
            d.state = "cancelled" if d.cancel_event.is_set() else "done"
            if traffic is not None:
                await self._finish_traffic(traffic)
            await asyncio.sleep(0)  # let the last events reach the watcher
            self._drain(d, q)
            try:
                d.report = await self._report(d)
            except Exception as e:  # a report failure must not leave the drill "running"
                log.exception("drill %s: report failed", d.id)
                d.report = {"error": f"report failed: {type(e).__name__}: {e}"}
            self.rt.store.put(d.row())
            self.rt.emit("drill", target=d.target, drill_id=d.id, state=d.state, fault=d.fault,
                         report=event_summary(d.report))
            log.info("drill %s %s: %s", d.id, d.state, event_summary(d.report))
            if not self._stopping:
                await self._watch_recovery(d, t)
        except asyncio.CancelledError:
            if t.fault is not None and t.fault.drill_id == d.id:
                t.fault = None
            if d.state == "running":
                d.state, d.ended = "cancelled", time.time()
                self.rt.store.put(d.row())
            raise
        finally:
            watcher.cancel()
            self.rt.unsubscribe(q)
            if traffic is not None and not traffic.done():
                traffic.cancel()

    def _check_state(self, d: Drill, t: Target) -> None:
        if d.first_state_change is None and self.rt.target_state(t) != d.state_before:
            d.first_state_change = time.time()

    async def _watch_events(self, d: Drill, q: asyncio.Queue) -> None:
        while True:
            row = await q.get()
            self._note(d, row)

    def _drain(self, d: Drill, q: asyncio.Queue) -> None:
        while not q.empty():
            self._note(d, q.get_nowait())

    def _note(self, d: Drill, row: Any) -> None:
        if row.target != d.target or row.ts < d.started or (d.ended is not None and row.ts > d.ended + 1.0):
            return
        det = row.detail or {}
        if row.kind == "breaker" and det.get("to") == "open" and d.first_breaker_open is None:
            d.first_breaker_open = row.ts
        elif row.kind == "failover" and d.first_failover is None:
            d.first_failover = row.ts
        elif row.kind == "probe" and det.get("ok") is False and d.first_probe_fail is None:
            d.first_probe_fail = row.ts

    # ------------------------------------------------------------ synthetic traffic

    def _data_url(self) -> str:
        host, _ = split_hostport(self.rt.config.server.listen)
        if host in ("", "0.0.0.0", "::", "*"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.gw.port}/v1/chat/completions"

    async def _traffic(self, d: Drill) -> None:
        """Requests at a fixed rate, round-robin over the drill's routes, bounded by the duration."""
        url = self._data_url()
        headers = {"x-patchbay-drill": d.id, "content-type": "application/json"}
        keys = self.gw.client_keys()
        if keys:
            headers["authorization"] = f"Bearer {keys[0]}"
        timeout = self.rt.config.timeouts.total + 5
        interval = 1.0 / d.traffic
        t0 = time.monotonic()
        end = t0 + d.duration
        pending: set[asyncio.Task] = set()
        i = 0
        try:
            while not d.cancel_event.is_set():
                at = t0 + i * interval
                if at >= end:
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(d.cancel_event.wait(), timeout=delay)
                        break
                    except TimeoutError:
                        pass
                route = d.routes[i % len(d.routes)] if d.routes else d.target
                i += 1
                if len(pending) >= MAX_SYNTHETIC_INFLIGHT:
                    d.synthetic["skipped"] += 1
                    continue
                task = asyncio.create_task(self._one(d, url, headers, route, timeout))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(set(pending), timeout=self.rt.config.timeouts.total + 5)
        finally:
            for task in list(pending):
                task.cancel()

    async def _one(self, d: Drill, url: str, headers: dict[str, str], route: str, timeout: float) -> None:
        """One synthetic request to the gateway's own listener, over the gateway's one HTTP client
        (direct: a configured proxy is for vendors, never for our own loopback listener)."""
        body = orjson.dumps({"model": route, "messages": [{"role": "user", "content": DRILL_PROMPT}],
                             "max_tokens": 8})
        d.synthetic["sent"] += 1
        ok = False
        try:
            async with asyncio.timeout(timeout):
                resp = await self.gw.upstream.request("POST", url, headers, body, proxy="")  # type: ignore[union-attr]
                try:
                    await resp.read()
                except BaseException:
                    resp.close()
                    raise
                ok = resp.status == 200
        except (UpstreamError, OSError, TimeoutError):
            ok = False
        d.synthetic["ok" if ok else "failed"] += 1

    async def _finish_traffic(self, task: asyncio.Task) -> None:
        """The traffic task stops sending at the end; let in-flight requests finish (bounded)."""
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.rt.config.timeouts.total + 5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception:  # pragma: no cover
            log.exception("drill traffic failed")

    # ------------------------------------------------------------ report

    def history(self) -> Any:
        if self._history is None:
            from store.history import History
            opener = getattr(self.rt.store, "history", None)  # the store's own reader handles ":memory:"
            self._history = opener() if opener is not None else History(self.rt.config.store.path)
        return self._history

    async def _report(self, d: Drill) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        flush = getattr(self.rt.store, "flush", None)
        if flush is not None:
            await loop.run_in_executor(None, flush, 10.0)
        rows, baseline, reached = await loop.run_in_executor(None, self._read_rows, d)
        return figures(d, rows, baseline, reached)

    def _read_rows(self, d: Drill) -> tuple[list[dict], list[float], bool]:
        h = self.history()
        # did any request of the drill try the target (an attempt on it), i.e. meet the fault?
        reached = bool(h.list_requests(drill_id=d.id, target=d.target, limit=1)[0])
        rows: list[dict] = []
        cursor = None
        while True:
            page, cursor = h.list_requests(drill_id=d.id, limit=1000, cursor=cursor)
            rows.extend(page)
            if cursor is None or len(rows) >= 200_000:
                break
        baseline: list[float] = []
        if d.routes:
            cursor = None
            while len(baseline) < 5000:
                page, cursor = h.list_requests(route=d.routes, outcome="ok", since=d.started - 60.0,
                                               until=d.started, limit=1000, cursor=cursor)
                baseline.extend(r["latency_ms"] for r in page if r.get("drill_id") is None
                                and r.get("latency_ms") is not None)
                if cursor is None:
                    break
        return rows, baseline, reached

    async def _watch_recovery(self, d: Drill, t: Target) -> None:
        """After the fault is lifted: when does the target serve again (breaker closed, a success)?"""
        cfg = self.rt.config
        end = d.ended or time.time()
        limit = cfg.breaker.cooldown + 2 * cfg.prober.interval + 2.0
        deadline = time.monotonic() + max(0.0, end + limit - time.time())
        while time.monotonic() < deadline and not self._stopping:
            ok_at = t.health.last_ok_at
            if t.breaker.state == "closed" and ok_at is not None and ok_at >= end:
                self._set_recovery(d, round(ok_at - end, 3), "recovered")
                return
            await asyncio.sleep(POLL_S)
        if not self._stopping:
            self._set_recovery(d, None, f"not back within {limit:g}s (breaker {t.breaker.state}"
                                        f"{', disabled' if t.disabled else ''})")

    def _set_recovery(self, d: Drill, seconds: float | None, note: str) -> None:
        if d.report is None:
            return
        d.report = {**d.report, "time_back_to_normal_s": seconds, "recovery": note}
        self.rt.store.put(d.row())
        if seconds is not None:
            log.info("drill %s: %s back to normal %.3fs after the fault ended", d.id, d.target, seconds)

    def _trim(self) -> None:
        done = sorted((d for d in self.drills.values() if d.state != "running"), key=lambda d: d.started)
        for d in done[:-RECENT_KEPT] if len(done) > RECENT_KEPT else []:
            if d.task is None or d.task.done():
                self.drills.pop(d.id, None)
