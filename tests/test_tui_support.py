"""Helpers for the TUI tests: a recorded-data admin server and fixed data sets.

Snapshot tests need pixel-stable screens, which a live gateway (real
latencies, real clocks) cannot give. This serves fixed admin-API documents
(DESIGN.md shapes) from a real aiohttp server on 127.0.0.1, in its own thread
and loop, so the TUI's real AdminClient and workers run unchanged against it.
It holds no tests itself.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FROZEN_NOW = 1_764_096_000.0  # 2025-11-25 18:40:00 UTC


def _series(base: float, n: int = 40, spread: float = 0.35, phase: int = 0) -> list[float]:
    """Deterministic wavy latency series (no randomness, so snapshots are stable)."""
    pattern = [0, 2, 5, 3, 1, 4, 7, 3, 2, 6, 1, 0, 3, 5, 8, 4, 2, 1, 3, 2]
    return [round(base * (1 + spread * pattern[(i + phase) % len(pattern)] / 8), 1)
            for i in range(n)]


def healthy_state() -> dict[str, Any]:
    targets = [
        ("openai", "gpt-4.1", 412, 980, 0.998, 120, 0.42, 0),
        ("anthropic", "claude-sonnet-4-20250514", 655, 1420, 0.995, 14, 0.09, 3),
        ("deepseek", "deepseek-chat", 520, 1310, 1.0, 6, 0.01, 7),
        ("gemini", "gemini-2.0-flash", 301, 690, 0.999, 2, 0.0, 11),
        ("openai", "gpt-4.1-mini", 181, 402, 1.0, 31, 0.01, 5),
    ]
    return {
        "routes": [{"name": "chat", "order": [f"{v}/{m}" for v, m, *_ in targets[:4]],
                    "serving": "openai/gpt-4.1"},
                   {"name": "fast", "order": ["openai/gpt-4.1-mini", "gemini/gemini-2.0-flash"],
                    "serving": "openai/gpt-4.1-mini"}],
        "targets": [
            {"id": f"{v}/{m}", "vendor": v, "model": m, "state": "healthy", "disabled": False,
             "breaker": "closed", "p50_ms": p50, "p95_ms": p95, "success_rate": sr,
             "ttft_p50_ms": round(p50 * 0.55), "ttft_p95_ms": round(p95 * 0.5),
             "rpm": rpm, "rpm_now": rpm, "cost_per_hour": cost, "priced": v != "gemini",
             "last_error": None, "latency_series": _series(p50, phase=ph), "series_step_s": 5.0,
             "target_disabled": None, "vendor_disabled": None}
            for v, m, p50, p95, sr, rpm, cost, ph in targets
        ],
        "drills": [],
        "store": {"ok": True, "rows_not_written": 0},
    }


def degraded_state() -> dict[str, Any]:
    st = healthy_state()
    oa, an, ds, ge, _mini = st["targets"]
    oa.update(state="open", breaker="open", success_rate=0.412, rpm=3, rpm_now=0, p50_ms=10012,
              p95_ms=10020, ttft_p50_ms=9800, ttft_p95_ms=10010,
              last_error="503 server_error: upstream overloaded",
              last_error_ts=FROZEN_NOW - 12, latency_series=_series(400, spread=20, phase=2))
    an.update(state="degraded", success_rate=0.93, rpm=118, rpm_now=126, p95_ms=4200,
              last_error="529 overloaded_error", last_error_ts=FROZEN_NOW - 95)
    ds.update(state="disabled", disabled=True, disabled_reason="billing hold",
              target_disabled={"reason": "billing hold", "by": "127.0.0.1 (alice)", "at": FROZEN_NOW - 300},
              vendor_disabled={"reason": "vendor outage", "by": "127.0.0.1 (bob)", "at": FROZEN_NOW - 200},
              rpm=40, rpm_now=0, success_rate=None)
    ge.update(state="throttled", rpm=9, rpm_now=12, last_error="429 RESOURCE_EXHAUSTED",
              last_error_ts=FROZEN_NOW - 40)
    st["routes"][0]["serving"] = "anthropic/claude-sonnet-4-20250514"
    return st


def fixed_events() -> list[dict[str, Any]]:
    return [
        {"kind": "breaker", "ts": FROZEN_NOW - 30, "target": "openai/gpt-4.1", "route": None,
         "detail": {"from": "closed", "to": "open"}},
        {"kind": "failover", "ts": FROZEN_NOW - 29, "target": "openai/gpt-4.1", "route": "chat",
         "detail": {"from": "openai/gpt-4.1", "to": "anthropic/claude-sonnet-4-20250514",
                    "reason": "server_error 503"}},
        {"kind": "operator", "ts": FROZEN_NOW - 20, "target": "deepseek/deepseek-chat",
         "route": None, "detail": {"action": "disable", "reason": "billing hold"}},
    ]


def history_rows(n: int = 120) -> list[dict[str, Any]]:
    targets = ["openai/gpt-4.1", "anthropic/claude-sonnet-4-20250514", "deepseek/deepseek-chat"]
    rows = []
    for i in range(n):
        failed = i % 7 == 3
        rows.append({
            "id": f"req_{i:06d}", "ts": FROZEN_NOW - i * 13, "route": "chat",
            "stream": i % 2 == 0,
            "outcome": "ok" if i % 11 else "error",
            "http_status": 200 if i % 11 else 503,
            "final_target": targets[1] if failed else targets[i % 3 and 2 or 0],
            "model": "gpt-4.1", "attempts": 2 if failed else 1, "failovers": 1 if failed else 0,
            "latency_ms": 400 + (i * 37) % 900, "ttft_ms": 150 + (i * 17) % 300,
            "prompt_tokens": 100 + i % 50, "completion_tokens": 20 + i % 30,
            "cost": round(0.0004 + (i % 5) * 0.0001, 6),
            "error_class": None if i % 11 else "server_error",
            "error_message": None if i % 11 else "all targets failed",
            "drill_id": None,
        })
    return rows


def request_detail(row: dict[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d["attempts"] = [
        {"request_id": row["id"], "n": 1, "target": "openai/gpt-4.1", "ts": row["ts"],
         "latency_ms": 2012.0, "outcome": "server_error", "http_status": 503,
         "error": "upstream overloaded", "continuation": False, "drill_id": None},
        {"request_id": row["id"], "n": 2, "target": "openai/gpt-4.1", "ts": row["ts"] + 2.3,
         "latency_ms": 1800.0, "outcome": "server_error", "http_status": 503,
         "error": "upstream overloaded", "continuation": False, "drill_id": None},
        {"request_id": row["id"], "n": 3, "target": "anthropic/claude-sonnet-4-20250514",
         "ts": row["ts"] + 4.2, "latency_ms": 655.0, "outcome": "ok", "http_status": 200,
         "error": None, "continuation": False, "drill_id": None},
    ]
    d.update(attempts_n=3, failovers=1, final_target="anthropic/claude-sonnet-4-20250514",
             latency_ms=4870.0, ttft_ms=4390.0)
    d["events"] = [fixed_events()[1]]
    return d


def done_drill() -> dict[str, Any]:
    from gateway.control.drill_report import report_rows  # the gateway's own wording, as its admin API sends it
    report = {"target": "openai/gpt-4.1", "fault": "error:503", "duration_s": 30.0,
              "time_to_detect_s": 0.412, "detected_by": "breaker_open", "breaker_open_s": 0.412,
              "time_to_failover_s": 0.018, "requests": 300, "requests_rerouted": 296,
              "answered_by": {"anthropic/claude-sonnet-4-20250514": 296, "openai/gpt-4.1": 4},
              "client_visible_errors": 0, "fallback_responses": 0, "failed_attempts": 12,
              "p50_ms_during": 697.0, "p50_ms_before": 656.0, "added_latency_ms": 41.0,
              "synthetic": {"sent": 300, "ok": 300, "failed": 0},
              "time_back_to_normal_s": 17.5, "recovery": "recovered", "serving_at_start": ["chat"],
              "warnings": []}
    return {
        "id": "drill_0001", "target": "openai/gpt-4.1", "fault": "error:503",
        "duration": 30, "traffic": 10, "state": "done",
        "started": FROZEN_NOW - 120, "ended": FROZEN_NOW - 90,
        "report": report, "report_rows": report_rows(report),
    }


def target_detail(state: dict[str, Any], tid: str, window: str) -> dict[str, Any]:
    """GET /admin/targets/{id}: fixed series (60 buckets), failures, breaker events, routes."""
    target = next(t for t in state["targets"] if t["id"] == tid)
    span = {"5m": 300, "1h": 3600, "24h": 86400}.get(window, 3600)
    step = span / 60
    base = target.get("p50_ms") or 400
    lat = _series(base, n=60, spread=0.6, phase=3)
    points = []
    for i in range(60):
        quiet = i in (7, 8, 30)
        failed = 6 if 44 <= i <= 47 else 0
        points.append({"ts": FROZEN_NOW - span + i * step, "n": 0 if quiet else 40,
                       "p50_ms": None if quiet else lat[i], "p95_ms": None if quiet else lat[i] * 2.1,
                       "ttft_p50_ms": None if quiet else round(lat[i] * 0.55, 1),
                       "ttft_p95_ms": None if quiet else round(lat[i] * 1.1, 1),
                       "attempts": 0 if quiet else 40 + failed, "failed": failed})
    routes = [{"name": r["name"], "position": r["order"].index(tid) + 1, "of": len(r["order"]),
               "serving": r.get("serving")} for r in state["routes"] if tid in r["order"]]
    failed_attempts = [
        {"request_id": f"req_{900 + i:06d}", "n": 1, "target": tid, "ts": FROZEN_NOW - 300 - i * 40,
         "latency_ms": 2012.0 - i * 100, "outcome": "server", "http_status": 503,
         "error": "server 503: upstream overloaded", "continuation": False, "drill_id": None}
        for i in range(4)]
    return {"target": target, "window": window, "routes": routes,
            "series": {"since": FROZEN_NOW - span, "until": FROZEN_NOW, "step_s": step, "points": points,
                       "errors_by_class": {"server": 24, "timeout": 3}},
            "failed_attempts": failed_attempts,
            "breaker_events": [{"id": 9, "ts": FROZEN_NOW - 30, "kind": "breaker", "target": tid,
                                "detail": {"from": "closed", "to": "open", "reason": "server 503"}},
                               {"id": 5, "ts": FROZEN_NOW - 900, "kind": "breaker", "target": tid,
                                "detail": {"from": "half_open", "to": "closed", "reason": "probe ok"}}],
            "events": [dict(e, id=i) for i, e in enumerate(reversed(fixed_events()))
                       if e.get("target") == tid]}


@dataclass
class RecordedAdmin:
    """Admin API stand-in serving fixed documents; mutations change them like a gateway would."""

    state: dict[str, Any] = field(default_factory=healthy_state)
    events: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    drills: list[dict[str, Any]] = field(default_factory=list)
    token: str = "test-token"
    url: str = ""
    calls: list[tuple[str, str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    # -- server ---------------------------------------------------------------

    def start(self) -> RecordedAdmin:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recorded admin server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._startup())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _startup(self) -> None:
        self._closing = asyncio.Event()
        self._pushed: asyncio.Queue = asyncio.Queue()
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/admin/state", self._state)
        r.add_get("/admin/events", self._events)
        r.add_get("/admin/events/recent", self._recent)
        r.add_get("/admin/targets/{id:.+}", self._target)
        r.add_get("/admin/requests", self._requests)
        r.add_get("/admin/requests/{id}", self._request)
        r.add_get("/admin/drills", self._drills)
        r.add_get("/admin/drills/{id}", self._drill)
        r.add_post("/admin/routes/{route}/order", self._order)
        r.add_post("/admin/targets/{id:.+}/disable", self._disable)
        r.add_post("/admin/targets/{id:.+}/enable", self._enable)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        assert self._runner is not None
        self._closing.set()
        await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": {"message": "invalid admin token"}}, status=401)
        return await handler(request)

    # -- handlers -------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"event: state\ndata: {json.dumps(self.state)}\n\n".encode())
        for ev in self.events:
            await resp.write(f"event: {ev['kind']}\ndata: {json.dumps(ev)}\n\n".encode())
        try:  # hold the stream open; only events pushed by the test are sent
            while not self._closing.is_set():
                getter = asyncio.ensure_future(self._pushed.get())
                closing = asyncio.ensure_future(self._closing.wait())
                done, pending = await asyncio.wait({getter, closing},
                                                   return_when=asyncio.FIRST_COMPLETED)
                for f in pending:
                    f.cancel()
                if getter in done:
                    ev = getter.result()
                    await resp.write(f"event: {ev['kind']}\ndata: {json.dumps(ev)}\n\n".encode())
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        return resp

    async def _recent(self, request: web.Request) -> web.Response:
        return web.json_response({"events": [dict(e, id=i) for i, e in reversed(list(enumerate(self.events)))]})

    async def _target(self, request: web.Request) -> web.Response:
        tid = request.match_info["id"].replace("%2F", "/")
        if not any(t["id"] == tid for t in self.state["targets"]):
            return web.json_response({"error": {"message": "no such target"}}, status=404)
        return web.json_response(target_detail(self.state, tid, request.query.get("window", "1h")))

    def push_event(self, ev: dict[str, Any]) -> None:
        """Send one more event to every open event stream (thread-safe)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._pushed.put_nowait, ev)

    async def _requests(self, request: web.Request) -> web.Response:
        q = request.query
        rows = self.rows
        for key, col in (("route", "route"), ("target", "final_target"),
                         ("outcome", "outcome")):
            if q.get(key):
                rows = [r for r in rows if r.get(col) == q[key]]
        if q.get("failover") == "1":
            rows = [r for r in rows if r.get("failovers")]
        if q.get("q"):
            needle = q["q"].lower()
            rows = [r for r in rows if needle in json.dumps(r).lower()]
        limit = int(q.get("limit", 50))
        start = 0
        if q.get("cursor"):
            ids = [r["id"] for r in rows]
            start = ids.index(q["cursor"]) + 1 if q["cursor"] in ids else len(rows)
        page = rows[start:start + limit]
        more = start + limit < len(rows)
        self.calls.append(("GET", "/admin/requests", dict(q)))
        return web.json_response({"requests": page,
                                  "next_cursor": page[-1]["id"] if more and page else None})

    async def _request(self, request: web.Request) -> web.Response:
        for r in self.rows:
            if r["id"] == request.match_info["id"]:
                return web.json_response(request_detail(r))
        return web.json_response({"error": {"message": "no such request"}}, status=404)

    async def _drills(self, request: web.Request) -> web.Response:
        return web.json_response({"drills": self.drills})

    async def _drill(self, request: web.Request) -> web.Response:
        for d in self.drills:
            if d["id"] == request.match_info["id"]:
                return web.json_response(d)
        return web.json_response({"error": {"message": "no such drill"}}, status=404)

    async def _order(self, request: web.Request) -> web.Response:
        body = await request.json()
        route = request.match_info["route"]
        self.calls.append(("POST", f"order/{route}", body))
        for r in self.state["routes"]:
            if r["name"] == route:
                r["order"] = list(body["order"])
                return web.json_response({"route": route, "order": r["order"]})
        return web.json_response({"error": {"message": "no such route"}}, status=404)

    async def _set_disabled(self, request: web.Request, disabled: bool) -> web.Response:
        tid = request.match_info["id"].replace("%2F", "/")
        body = await request.json() if request.can_read_body else {}
        self.calls.append(("POST", f"{'disable' if disabled else 'enable'}/{tid}", body))
        for t in self.state["targets"]:
            if t["id"] == tid:
                t["disabled"] = disabled
                t["state"] = "disabled" if disabled else "healthy"
                return web.json_response({"target": tid, "disabled": disabled})
        return web.json_response({"error": {"message": "no such target"}}, status=404)

    async def _disable(self, request: web.Request) -> web.Response:
        return await self._set_disabled(request, True)

    async def _enable(self, request: web.Request) -> web.Response:
        return await self._set_disabled(request, False)


def copy_state(st: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(st)
