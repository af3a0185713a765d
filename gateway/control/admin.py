"""The admin API: the one door for operators, the CLI and every TUI.

A separate listener (`admin_listen`, loopback by default) so the data plane
can face clients while control stays on the box or behind SSH. Every endpoint,
including unknown paths, sits behind `Authorization: Bearer <admin token>`
compared in constant time; the token is never logged, echoed or stored.
Every change records who made it (the client's address and an optional
`X-Patchbay-Operator` name) as an `operator` event in SQLite and is persisted
to the overrides file, so it survives a restart.

History reads go to SQLite through `store.history.History` in a thread
executor, so a slow disk never stalls the event loop that serves traffic.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from gateway.control import overrides
from gateway.control.admin_http import (
    REL_TIME,
    AdminHTTPError,
    flag_param,
    int_param,
    json_error,
    json_ok,
    list_param,
    parse_time,
)
from gateway.control.drill_report import stored_json
from gateway.control.drills import DrillError, DrillManager
from gateway.parts import GatewayView
from gateway.runtime import OperatorError, Runtime, Target

log = logging.getLogger("patchbay.admin")

STATE_INTERVAL_S = 1.0       # SSE state cadence
HEARTBEAT_S = 15.0           # SSE comment when nothing else was sent
MAX_BODY = 64 * 1024
OPERATOR_HEADER = "X-Patchbay-Operator"
_OPERATOR_OK = re.compile(r"[^A-Za-z0-9 ._@+\-]")


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("llm-patchbay")
        except PackageNotFoundError:
            return "0+unknown"
    except Exception:  # pragma: no cover
        return "0+unknown"


class Admin:
    """Handlers bound to one gateway."""

    def __init__(self, gateway: GatewayView, token: str):
        self.gw = gateway
        self.rt: Runtime = gateway.runtime  # type: ignore[assignment]
        self._token = token.encode()
        self.drills = DrillManager(gateway)
        self._history: Any = None
        self._closing = asyncio.Event()
        self._sse_clients = 0
        self._state_cache: tuple[float, dict[str, Any]] | None = None

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not self._authorized(request):
            return json_error(401, "Missing or wrong admin token. Send 'Authorization: Bearer <token>' with the "
                                   "token from the gateway's admin token environment variable.",
                              "invalid_admin_token", headers={"www-authenticate": "Bearer"})
        try:
            return await handler(request)
        except AdminHTTPError as e:
            return json_error(e.status, e.message, e.code, e.param)
        except OperatorError as e:
            return json_error(e.status, str(e), "not_found" if e.status == 404 else "invalid_value")
        except DrillError as e:
            return json_error(e.status, str(e), e.code)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 404:
                return json_error(404, f"Unknown admin path {request.method} {request.path}.", "unknown_url")
            if exc.status == 405:
                return json_error(405, f"Method {request.method} is not allowed on {request.path}.",
                                  "method_not_allowed")
            if exc.status == 413:
                return json_error(413, f"Request body over {MAX_BODY} bytes.", "request_too_large")
            return json_error(exc.status, exc.reason or "error")
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("admin API error on %s %s", request.method, request.path)
            return json_error(500, "Patchbay hit an internal error handling this admin request.", "internal_error")

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        ok = hmac.compare_digest(presented.strip().encode(), self._token)
        return scheme.lower() == "bearer" and ok and bool(self._token)

    @staticmethod
    def who(request: web.Request) -> str:
        """The client's address, plus the operator's own name when the client sends one."""
        addr = request.remote or "unknown"
        name = request.headers.get(OPERATOR_HEADER, "").strip()
        if name:
            name = _OPERATOR_OK.sub("", name)[:64].strip()
        return f"{addr} ({name})" if name else addr

    @staticmethod
    async def body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise AdminHTTPError(400, f"The body is not valid JSON: {e}", "invalid_json") from None
        if not isinstance(data, dict):
            raise AdminHTTPError(400, "The body must be a JSON object.", "invalid_json")
        return data

    def _target(self, raw: str) -> Target:
        """A target id from the path: raw (with its slash) or percent-encoded."""
        t = self.rt.targets.get(raw)
        if t is None and "%" in raw:
            t = self.rt.targets.get(unquote(raw))
        if t is None:
            return self.rt.target(unquote(raw))  # raises OperatorError(404) with the list
        return t

    def _name(self, raw: str) -> str:
        return unquote(raw) if "%" in raw else raw

    def _persist(self) -> dict[str, Any]:
        try:
            path = overrides.save(self.rt)
            return {"persisted": True, "overrides_path": path}
        except OSError as e:
            msg = f"could not write {self.rt.config.overrides_path}: {e.strerror or e}"
            log.error("operator change is live but not persisted: %s", msg)
            self.rt.overrides_status.update(ok=False, error=msg)
            return {"persisted": False, "persist_error": msg}

    def history(self) -> Any:
        if self._history is None:
            from store.history import History
            opener = getattr(self.rt.store, "history", None)  # the store's own reader handles ":memory:"
            self._history = opener() if opener is not None else History(self.rt.config.store.path)
        return self._history

    async def in_thread(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: fn(*args, **kw))

    # ------------------------------------------------------------ state

    def state(self, max_age: float = 0.0) -> dict[str, Any]:
        """The /admin/state body; SSE streams share one computed copy per tick (max_age)."""
        cached = self._state_cache
        if max_age > 0 and cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        st = self._compute_state()
        self._state_cache = (time.monotonic(), st)
        return st

    def _compute_state(self) -> dict[str, Any]:
        st = self.rt.state_snapshot()
        stats = self.rt.store.stats()
        cfg = self.rt.config
        st["drills"] = self.drills.list_json(recent=10)
        st["store"] = {k: stats.get(k) for k in ("ok", "rows_not_written", "queue_dropped", "queued",
                                                 "last_error", "written", "failing_since")}
        st["store"]["ok"] = bool(stats.get("ok", True))
        st["store"]["rows_not_written"] = int(stats.get("rows_not_written") or 0)
        st["overrides"] = {k: v for k, v in self.rt.overrides_status.items()}
        now = time.time()
        st["gateway"] = {
            "version": _version(), "started_at": self.rt.started_at, "uptime_s": round(now - self.rt.started_at, 1),
            "now": now, "listen": self.gw.url if self.gw.port else cfg.server.listen,
            "config": cfg.path,
            "prober": {"enabled": cfg.prober.enabled, "interval": cfg.prober.interval, "mode": cfg.prober.mode},
            "breaker": {"failures_to_open": cfg.breaker.failures_to_open, "cooldown": cfg.breaker.cooldown},
            "malformed_events": self.rt.malformed_events, "sse_clients": self._sse_clients,
        }
        if self.gw.prober is not None:
            st["gateway"]["prober"].update(self.gw.prober.stats())
        return st

    async def get_state(self, request: web.Request) -> web.Response:
        return json_ok(self.state())

    async def get_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `state` about once a second, every discrete event as it happens."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        q = self.rt.subscribe()
        self._sse_clients += 1
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n" + self._sse("state", self.state()))
            next_state = time.monotonic() + STATE_INTERVAL_S
            last_sent = time.monotonic()
            closing = asyncio.ensure_future(self._closing.wait())
            try:
                while not self._closing.is_set():
                    timeout = max(0.0, next_state - time.monotonic())
                    getter = asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait({getter, closing}, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    out = []
                    if getter in done:
                        rows = [getter.result()]
                        while not q.empty():
                            rows.append(q.get_nowait())
                        for row in rows:
                            out.append(self._sse(row.kind, {"ts": row.ts, "kind": row.kind, "target": row.target,
                                                            "route": row.route, "detail": row.detail,
                                                            "request_id": row.request_id}))
                    else:
                        getter.cancel()
                    now = time.monotonic()
                    if now >= next_state:
                        out.append(self._sse("state", self.state(max_age=STATE_INTERVAL_S / 2)))
                        next_state = now + STATE_INTERVAL_S
                    if not out and now - last_sent >= HEARTBEAT_S:
                        out.append(b": keep-alive\n\n")
                    if out:
                        await resp.write(b"".join(out))
                        last_sent = now
            finally:
                closing.cancel()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.rt.unsubscribe(q)
            self._sse_clients -= 1
        return resp

    @staticmethod
    def _sse(event: str, data: Any) -> bytes:
        return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data, default=str) + b"\n\n"

    # ------------------------------------------------------------ operator changes

    async def post_order(self, request: web.Request) -> web.Response:
        route = self._name(request.match_info["route"])
        data = await self.body(request)
        if "order" not in data:
            raise AdminHTTPError(400, 'Send {"order": [target ids]}: the targets to put first, in that '
                                 'order (the rest keep their order after them).',
                                 "missing_required_parameter", "order")
        old = list(self.rt.routes[route].order) if route in self.rt.routes else None
        r = self.rt.set_order(route, data["order"])
        persisted = self._persist()
        self.rt.emit("operator", route=r.name, action="order", who=self.who(request), order=list(r.order),
                     previous=old)
        log.info("operator %s set route %s order: %s", self.who(request), r.name, " > ".join(r.order))
        return json_ok({**self.rt.route_json(r), **persisted})

    async def post_target(self, request: web.Request) -> web.Response:
        t = self._target(request.match_info["id"])
        action = request.match_info["action"]
        data = await self.body(request)
        who = self.who(request)
        reason = self._reason(data) if action == "disable" else None
        changed = self.rt.set_disabled(t, action == "disable", reason, who)
        persisted = self._persist()
        self.rt.emit("operator", target=t.id, action=action, who=who, reason=reason, changed=changed)
        log.info("operator %s %sd target %s%s", who, action, t.id, f" ({reason})" if reason else "")
        return json_ok({"ok": True, "changed": changed, "target": self.rt.target_json(t), **persisted})

    async def post_vendor(self, request: web.Request) -> web.Response:
        vendor = self._name(request.match_info["vendor"])
        action = request.match_info["action"]
        targets = self.rt.vendor_targets(vendor)
        data = await self.body(request)
        who = self.who(request)
        reason = self._reason(data) if action == "disable" else None
        before = {t.id: t.disabled for t in targets}
        self.rt.set_vendor_disabled(vendor, action == "disable", reason, who)
        changed = [t.id for t in targets if t.disabled != before[t.id]]
        persisted = self._persist()
        self.rt.emit("operator", action=f"vendor_{action}", vendor=vendor, who=who, reason=reason,
                     targets=[t.id for t in targets], changed=changed)
        log.info("operator %s %sd vendor %s (%d target(s))", who, action, vendor, len(targets))
        return json_ok({"ok": True, "vendor": vendor, "changed": changed,
                        "targets": [self.rt.target_json(t) for t in targets], **persisted})

    @staticmethod
    def _reason(data: dict[str, Any]) -> str:
        reason = data.get("reason", "")
        if reason is None:
            return ""
        if not isinstance(reason, str):
            raise AdminHTTPError(400, "'reason' must be a string.", "invalid_type", "reason")
        return reason.strip()[:500]

    # ------------------------------------------------------------ drills

    async def post_drill(self, request: web.Request) -> web.Response:
        data = await self.body(request)
        d = self.drills.start(data, self.who(request))
        return json_ok(d.to_json(), status=201)

    async def get_drills(self, request: web.Request) -> web.Response:
        """Running and recent drills: this process's, then older ones from SQLite (newest first)."""
        live = self.drills.list_json(recent=100)
        seen = {d["id"] for d in live}
        try:
            stored = await self.in_thread(self.history().list_drills, 100)
        except Exception as e:  # the log being unreadable must not hide the live drills
            log.warning("cannot read past drills: %s", e)
            stored = []
        older = [stored_json(r) for r in stored if r["id"] not in seen]
        return json_ok({"drills": live + older})

    async def get_drill(self, request: web.Request) -> web.Response:
        d = self.drills.get(self._name(request.match_info["id"]))
        if d is not None:
            return json_ok(d.to_json())
        row = await self.in_thread(self.history().get_drill, self._name(request.match_info["id"]))
        if row is None:
            raise AdminHTTPError(404, f"No drill {request.match_info['id']!r}.", "not_found")
        return json_ok(stored_json(row))

    async def delete_drill(self, request: web.Request) -> web.Response:
        d = await self.drills.cancel(self._name(request.match_info["id"]), self.who(request))
        return json_ok(d.to_json())

    # ------------------------------------------------------------ history

    async def get_requests(self, request: web.Request) -> web.Response:
        q = request.query
        limit = int_param(q, "limit", 50, 1, 1000)
        kw = dict(route=list_param(q.get("route")), target=list_param(q.get("target")),
                  outcome=list_param(q.get("outcome")), since=parse_time(q.get("since"), "since"),
                  until=parse_time(q.get("until"), "until"), q=(q.get("q") or None), limit=limit,
                  cursor=(q.get("cursor") or None), drill_id=(q.get("drill_id") or None),
                  failover=flag_param(q.get("failover"), "failover"))
        from store.history_sql import BadCursor
        try:
            rows, cursor = await self.in_thread(self.history().list_requests, **kw)
        except BadCursor as e:
            raise AdminHTTPError(400, str(e), "invalid_cursor", "cursor") from None
        except ValueError as e:
            raise AdminHTTPError(400, str(e), "invalid_value") from None
        return json_ok({"requests": rows, "next_cursor": cursor})

    async def get_request(self, request: web.Request) -> web.Response:
        rid = self._name(request.match_info["id"])
        row = await self.in_thread(self.history().get_request, rid)
        if row is None:
            raise AdminHTTPError(404, f"No request {rid!r} in the log (it may not be written yet, or was "
                                      "pruned by retention).", "not_found")
        return json_ok(row)

    async def get_events_recent(self, request: web.Request) -> web.Response:
        """Discrete events from SQLite, newest first (`kind`, `target`, `since`, `limit`, `before_id`)."""
        q = request.query
        limit = int_param(q, "limit", 100, 1, 1000)
        before = int_param(q, "before_id", None, 1, 2**63 - 1)
        rows = await self.in_thread(self.history().list_events, since=parse_time(q.get("since"), "since"),
                                    kind=q.get("kind") or None, limit=limit,
                                    before_id=before, target=q.get("target") or None)
        return json_ok({"events": rows})

    async def get_target(self, request: web.Request) -> web.Response:
        """One target in depth (the panel's per-target view): its live figures, routes, and from the
        store over `window` (5m, 1h, 24h...): latency/TTFT/attempt series, failures by class, recent
        failed attempts, breaker transitions and state history."""
        t = self._target(request.match_info["id"])
        window = request.query.get("window", "1h")
        m = REL_TIME.match(window.strip().lower())
        if not m:
            raise AdminHTTPError(400, f"'window' must be a length like 5m, 1h or 24h; got {window[:20]!r}",
                                 "invalid_value", "window")
        span = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        if not 10 <= span <= 31 * 86400:
            raise AdminHTTPError(400, "'window' must be between 10s and 31d.", "invalid_value", "window")
        now = time.time()
        h = self.history()

        def read() -> dict[str, Any]:
            return {"series": h.target_series(t.id, now - span, now),
                    "failed_attempts": h.failed_attempts(t.id, now - span, 20),
                    "breaker_events": h.list_events(kind="breaker", target=t.id, limit=20),
                    "events": h.list_events(target=t.id, limit=30)}

        stored = await self.in_thread(read)
        routes = [{"name": r.name, "position": r.order.index(t.id) + 1, "of": len(r.order),
                   "serving": self.rt.serving(r)} for r in self.rt.routes_of(t.id)]
        return json_ok({"target": self.rt.target_json(t, now), "window": window, "routes": routes, **stored})

    # ------------------------------------------------------------ lifecycle

    async def on_shutdown(self, app: web.Application) -> None:
        self._closing.set()

    async def on_cleanup(self, app: web.Application) -> None:
        h, self._history = self._history, None
        if h is not None:
            await self.in_thread(h.close)


ADMIN_KEY = web.AppKey("admin", Admin)


def make_admin_app(gateway: GatewayView, token: str) -> web.Application:
    """The admin aiohttp app; `app[ADMIN_KEY].drills` must be stopped with the gateway."""
    admin = Admin(gateway, token)
    app = web.Application(middlewares=[admin.middleware], client_max_size=MAX_BODY)
    r = app.router
    r.add_get("/admin/state", admin.get_state)
    r.add_get("/admin/events", admin.get_events)
    r.add_get("/admin/events/recent", admin.get_events_recent)
    r.add_post(r"/admin/routes/{route:.+}/order", admin.post_order)
    r.add_post(r"/admin/targets/{id:.+}/{action:disable|enable}", admin.post_target)
    r.add_get(r"/admin/targets/{id:.+}", admin.get_target)
    r.add_post(r"/admin/vendors/{vendor}/{action:disable|enable}", admin.post_vendor)
    r.add_post("/admin/drills", admin.post_drill)
    r.add_get("/admin/drills", admin.get_drills)
    r.add_get("/admin/drills/{id}", admin.get_drill)
    r.add_delete("/admin/drills/{id}", admin.delete_drill)
    r.add_get("/admin/requests", admin.get_requests)
    r.add_get("/admin/requests/{id}", admin.get_request)
    app.on_shutdown.append(admin.on_shutdown)
    app.on_cleanup.append(admin.on_cleanup)
    app[ADMIN_KEY] = admin
    return app
