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
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.config import split_hostport
from gateway.parts import GatewayView
from gateway.routing.faults import DrillFaultError, parse_drill_fault
from gateway.runtime import Runtime, Target
from gateway.vendors.http_errors import UpstreamError
from store.records import DrillRow, new_id

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


@dataclass
class Drill:
    id: str
    target: str
    fault: str
    duration: float
    traffic: float
    by: str
    routes: list[str]
    started: float = field(default_factory=time.time)
    ended: float | None = None
    state: str = "running"             # running | done | cancelled
    report: dict[str, Any] | None = None
    synthetic: dict[str, int] = field(default_factory=lambda: {"sent": 0, "ok": 0, "failed": 0, "skipped": 0})
    # live observations (epoch seconds)
    first_breaker_open: float | None = None
    first_failover: float | None = None
    first_probe_fail: float | None = None
    first_state_change: float | None = None
    state_before: str | None = None
    order_at_start: dict[str, list[str]] = field(default_factory=dict)
    serving_at_start: list[str] = field(default_factory=list)   # routes the target was serving first
    # counted as each drill-marked request finishes, so a live view needs no history query
    live: dict[str, int] = field(default_factory=lambda: {"requests": 0, "rerouted": 0, "client_errors": 0,
                                                          "failed_attempts": 0})
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    task: asyncio.Task | None = field(default=None, repr=False)

    def params(self) -> dict[str, Any]:
        return {"duration": self.duration, "traffic": self.traffic, "by": self.by, "routes": self.routes}

    def to_json(self) -> dict[str, Any]:
        now = time.time()
        return {"id": self.id, "target": self.target, "fault": self.fault, "state": self.state,
                "duration": self.duration, "traffic": self.traffic, "by": self.by, "routes": self.routes,
                "started": self.started, "ended": self.ended,
                "elapsed_s": round((self.ended or now) - self.started, 3),
                "remaining_s": (round(max(0.0, self.started + self.duration - now), 3)
                                if self.state == "running" else 0.0),
                "synthetic": dict(self.synthetic), "live": dict(self.live), "report": self.report,
                "report_rows": report_rows(self.report)}

    def row(self) -> DrillRow:
        return DrillRow(id=self.id, target=self.target, fault=self.fault, params=self.params(),
                        started=self.started, ended=self.ended, state=self.state, report=self.report)


def _secs(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}s"


def _ms(v: float) -> str:
    return f"{v:.1f}ms" if abs(v) < 10 else f"{v:.0f}ms"


def added_latency_words(v: Any) -> str:
    """p50 added by the drill: `+120ms`; `none` under a millisecond; a drill that made answers faster
    (they went to a quicker target) says so instead of printing a negative latency."""
    if v is None:
        return "-"
    if abs(v) < 1:
        return "none"
    return f"+{_ms(v)}" if v > 0 else f"none ({_ms(-v)} faster)"


def report_rows(r: dict[str, Any] | None) -> list[list[str]]:
    """A report as [label, value] rows: one wording for the CLI, the panel and scripts."""
    if not r:
        return []
    ran = bool(r.get("requests"))
    rows = [
        ["time to detect", _secs(r.get("time_to_detect_s")) + (f" ({r['detected_by']})" if r.get("detected_by")
                                                               else "")],
        ["breaker open after", _secs(r["breaker_open_s"]) if r.get("breaker_open_s") is not None
         else ("never opened" if ran else "-")],
        ["time to fail over", _secs(r["time_to_failover_s"]) if r.get("time_to_failover_s") is not None
         else ("no failover" if ran else "-")],
        ["requests in drill", str(r.get("requests", 0))],
        ["requests rerouted", str(r.get("requests_rerouted", 0))],
        ["client-visible errors", str(r.get("client_visible_errors", 0))],
        ["fallback responses", str(r.get("fallback_responses", 0))],
        ["failed attempts (hidden)", str(r.get("failed_attempts", 0))],
        ["p50 during / before", f"{'-' if r.get('p50_ms_during') is None else _ms(r['p50_ms_during'])} / "
                                f"{'-' if r.get('p50_ms_before') is None else _ms(r['p50_ms_before'])}"],
        ["added latency (p50)", added_latency_words(r.get("added_latency_ms"))],
        ["time back to normal", _secs(r.get("time_back_to_normal_s")) + f" ({r.get('recovery') or '-'})"],
    ]
    syn = r.get("synthetic") or {}
    if syn.get("sent"):
        rows.append(["synthetic traffic", f"{syn.get('sent')} sent, {syn.get('ok')} ok, {syn.get('failed')} failed"])
    if r.get("answered_by"):
        rows.append(["answered by", ", ".join(f"{k} {v}" for k, v in r["answered_by"].items())])
    if r.get("error"):
        rows.append(["report error", str(r["error"])])
    return rows


def stored_json(row: dict[str, Any], running_here: bool = False) -> dict[str, Any]:
    """A drill row from SQLite in the API's shape. A row still "running" that no manager runs was
    cut short by a restart: it is shown as "interrupted"."""
    params = row.get("params") or {}
    state = row.get("state") or "done"
    if state == "running" and not running_here:
        state = "interrupted"
    return {"id": row["id"], "target": row.get("target"), "fault": row.get("fault"), "state": state,
            "duration": params.get("duration"), "traffic": params.get("traffic"), "by": params.get("by"),
            "routes": params.get("routes"), "started": row.get("started"), "ended": row.get("ended"),
            "report": row.get("report"), "report_rows": report_rows(row.get("report"))}


def _p50(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[len(v) // 2], 1)


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
        elif row.outcome == "ok" and self._passed_over(d, {"final_target": row.final_target,
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
                         report=_event_summary(d.report))
            log.info("drill %s %s: %s", d.id, d.state, _event_summary(d.report))
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
        return self._figures(d, rows, baseline, reached)

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

    def _passed_over(self, d: Drill, row: dict) -> bool:
        """Did this request go past the drilled target to be answered by another one?"""
        final = row.get("final_target")
        if final is None or final == d.target:
            return False
        if (row.get("failovers") or 0) > 0:
            return True
        if d.state_before == "disabled":
            return False    # skipped because an operator had it off, not because of the drill
        order = d.order_at_start.get(row.get("route") or "")
        if not order or final not in order:
            return False
        return order.index(d.target) < order.index(final)

    def _figures(self, d: Drill, rows: list[dict], baseline: list[float], reached: bool = True) -> dict[str, Any]:
        def since_start(ts: float | None) -> float | None:
            return None if ts is None else round(ts - d.started, 3)

        detect_candidates = [(ts, kind) for ts, kind in ((d.first_breaker_open, "breaker_open"),
                                                          (d.first_probe_fail, "probe_failed"),
                                                          (d.first_state_change, "state_change"))
                             if ts is not None]
        detected = min(detect_candidates) if detect_candidates else None
        ok_rows = [r for r in rows if r.get("outcome") == "ok"]
        rerouted = [r for r in ok_rows if self._passed_over(d, r)]
        on_target = [r for r in ok_rows if r.get("final_target") == d.target]
        errors = [r for r in rows if r.get("outcome") in ("error", "cut")]
        fallbacks = [r for r in rows if r.get("outcome") == "fallback"]
        lat = [r["latency_ms"] for r in ok_rows if r.get("latency_ms") is not None]
        p50_drill, p50_base = _p50(lat), _p50(baseline)
        failed_attempts = sum(max(0, (r.get("attempts") or 0) - 1) for r in ok_rows)
        by_target: dict[str, int] = {}
        for r in rows:
            key = r.get("final_target") or r.get("outcome") or "?"
            by_target[key] = by_target.get(key, 0) + 1
        report = {
            "target": d.target, "fault": d.fault, "duration_s": round((d.ended or time.time()) - d.started, 3),
            "time_to_detect_s": since_start(detected[0]) if detected else None,
            "detected_by": detected[1] if detected else None,
            "breaker_open_s": since_start(d.first_breaker_open),
            "time_to_failover_s": since_start(d.first_failover),
            "requests": len(rows),
            "requests_rerouted": len(rerouted),
            "answered_by_target": len(on_target),
            "answered_by": by_target,
            "client_visible_errors": len(errors),
            "fallback_responses": len(fallbacks),
            "failed_attempts": failed_attempts,
            "max_attempts_per_request": max((r.get("attempts") or 0 for r in rows), default=0),
            "p50_ms_during": p50_drill,
            "p50_ms_before": p50_base,
            "added_latency_ms": (round(p50_drill - p50_base, 1)
                                 if p50_drill is not None and p50_base is not None else None),
            "synthetic": dict(d.synthetic),
            "time_back_to_normal_s": None,
            "recovery": "watching" if d.state in ("done", "cancelled") else None,
            "serving_at_start": list(d.serving_at_start),
            "warnings": [] if reached else self._warnings(d),
        }
        return report

    @staticmethod
    def _warnings(d: Drill) -> list[str]:
        """No request met the fault: say so, as the drill's zeros are not a passed test."""
        if not d.serving_at_start:
            why = (f"it was {d.state_before}" if d.state_before not in (None, "healthy", "degraded")
                   else "another target was ahead of it in " + ", ".join(d.routes or ["every route"]))
            return [f"{d.target} was serving no route when the drill started ({why}): no request reached the "
                    "fault, so this drill exercised nothing and its zeros say nothing about failover"]
        return [f"no request reached {d.target} during the drill: it exercised nothing; add synthetic "
                "traffic (traffic = requests/s) to rehearse with load"]

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


def _event_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return report
    keys = ("time_to_detect_s", "time_to_failover_s", "requests", "requests_rerouted", "client_visible_errors",
            "added_latency_ms", "error")
    return {k: report[k] for k in keys if k in report}
