"""Live state of one gateway: targets, route order, disables, drills, events.

The router reads it on every request; the admin API and the prober change
it. Everything lives on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config, Price, TargetConfig, VendorConfig
from gateway.parts import Store
from gateway.routing.breaker import Breaker
from gateway.routing.faults import DrillFault
from gateway.routing.health import SERIES_STEP_S, Health
from gateway.vendors import make_adapter
from gateway.vendors.base import Adapter, env_proxy_secrets, vendor_secrets
from store.records import EventRow


@dataclass(frozen=True, slots=True)
class Disable:
    """One operator disable: of a target itself, or of its whole vendor."""

    reason: str | None
    by: str | None          # admin client address / operator name
    at: float               # epoch seconds

    def json(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by, "at": self.at}


@dataclass
class Target:
    cfg: TargetConfig
    vendor: VendorConfig
    adapter: Adapter
    breaker: Breaker
    price: Price | None
    health: Health = field(default_factory=Health)
    # What the router reads: off by the target's own disable or its vendor's. The two are
    # kept apart so enabling the vendor leaves a target the operator disabled by itself off.
    disabled: bool = False
    own_disable: Disable | None = None
    vendor_disable: Disable | None = None
    fault: DrillFault | None = None
    inflight: int = 0
    # the vendor's key and header values, scrubbed from its error texts (never shown: repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    secret_bytes: tuple[bytes, ...] = field(default=(), repr=False)   # the same, for raw bodies

    def __post_init__(self) -> None:
        if self.secrets and not self.secret_bytes:
            self.secret_bytes = tuple(s.encode("utf-8", "replace") for s in self.secrets)

    @property
    def id(self) -> str:
        return self.cfg.id

    def _disable(self) -> Disable | None:
        return self.own_disable or self.vendor_disable

    @property
    def disabled_reason(self) -> str | None:
        d = self._disable()
        return d.reason if d is not None else None

    @property
    def disabled_by(self) -> str | None:
        d = self._disable()
        return d.by if d is not None else None

    @property
    def disabled_at(self) -> float | None:
        d = self._disable()
        return d.at if d is not None else None

    def active_fault(self) -> DrillFault | None:
        f = self.fault
        if f is not None and not f.active:
            self.fault = f = None
        return f

    def cost(self, usage: dict | None) -> float | None:
        if not usage or self.price is None:
            return None if self.price is None else 0.0
        pt = usage.get("prompt_tokens") or 0
        ct = usage.get("completion_tokens") or 0
        return (pt * self.price.input + ct * self.price.output) / 1_000_000


@dataclass
class Route:
    name: str
    order: list[str]
    fallback_response: str | None = None


class OperatorError(ValueError):
    """An operator change that cannot be applied; `status` is the HTTP status the admin API answers."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class NullStore:
    """Used when no store is configured (some tests, benchmarks of the raw path)."""

    def put(self, row: Any) -> None:
        pass

    def stats(self) -> dict:
        return {"ok": True, "rows_not_written": 0, "queue_dropped": 0, "queued": 0, "last_error": None}

    def close(self) -> None:
        pass


class Runtime:
    def __init__(self, config: Config, store: Store | None = None, clock: Callable[[], float] = time.monotonic,
                 env: Mapping[str, str] | None = None):
        self.config = config
        self.store: Store = store if store is not None else NullStore()
        self.targets: dict[str, Target] = {}
        adapters: dict[str, Adapter] = {}
        # Every vendor's secrets are scrubbed from every vendor's errors: a relay may echo any key it holds;
        # so are the passwords of the environment's proxies (env: what the HTTP client reads, default os.environ).
        found = {s for v in config.vendors.values() for s in vendor_secrets(v)}
        found.update(env_proxy_secrets(os.environ if env is None else env))
        secrets = tuple(sorted(found, key=len, reverse=True))
        for route in config.routes.values():
            for tc in route.targets:
                if tc.id in self.targets:
                    continue
                vendor = config.vendors[tc.vendor]
                adapter = adapters.get(vendor.name)
                if adapter is None:
                    adapter = adapters[vendor.name] = make_adapter(vendor)
                self.targets[tc.id] = Target(cfg=tc, vendor=vendor, adapter=adapter,
                                             breaker=Breaker(config.breaker, clock),
                                             price=config.prices.get(tc.id), secrets=secrets)
        self.routes: dict[str, Route] = {
            name: Route(name, [t.id for t in r.targets], r.fallback_response)
            for name, r in config.routes.items()
        }
        self.vendor_disables: dict[str, Disable] = {}
        self._subscribers: set[asyncio.Queue] = set()
        # called with each finished request that carries a drill id (never for ordinary traffic)
        self.drill_request_listeners: list[Callable[[Any], None]] = []
        # called with (RequestRow, Call) for every finished request: metrics, and traces when enabled
        self.request_observers: list[Callable[[Any, Any], None]] = []
        self.malformed_events = 0
        self.started_at = time.time()
        # What apply_overrides found: {"ok", "path", "error", "warnings", "loaded"}; shown in /admin/state.
        self.overrides_status: dict[str, Any] = {"ok": True, "path": config.overrides_path, "error": None,
                                                 "warnings": [], "loaded": False}

    # --- lookup -------------------------------------------------------------

    def resolve(self, model: str) -> tuple[str, list[Target], str | None] | None:
        """A client's `model` -> (route name, ordered targets, fallback text)."""
        route = self.routes.get(model)
        if route is not None:
            return route.name, [self.targets[i] for i in route.order], route.fallback_response
        target = self.targets.get(model)
        if target is not None:
            return model, [target], None
        return None

    def model_names(self) -> list[str]:
        return [*self.routes, *self.targets]

    # --- events ---------------------------------------------------------------

    def emit(self, kind: str, *, target: str | None = None, route: str | None = None,
             request_id: str | None = None, **detail: Any) -> EventRow:
        """Record a discrete event in SQLite and push it to live subscribers."""
        row = EventRow(ts=time.time(), kind=kind, target=target, route=route, detail=detail,
                       request_id=request_id)
        self.store.put(row)
        for q in tuple(self._subscribers):
            try:
                q.put_nowait(row)
            except asyncio.QueueFull:
                pass  # a slow admin client misses events rather than growing memory
        return row

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def breaker_changed(self, target: Target, change: tuple[str, str] | None, reason: str = "") -> None:
        if change is not None:
            self.emit("breaker", target=target.id, **{"from": change[0], "to": change[1], "reason": reason})

    # --- state for admin / status -------------------------------------------

    def target_state(self, t: Target) -> str:
        return t.health.state(t.breaker.state, t.disabled)

    def serving(self, route: Route) -> str | None:
        """The target a new request on this route would try first."""
        for tid in route.order:
            t = self.targets[tid]
            if t.disabled:
                continue
            if t.breaker.state == "closed" or time.monotonic() >= t.breaker.ready_at:
                return tid
        return None

    # --- operator changes ------------------------------------------------------
    #
    # These change live state only; the admin API persists them (gateway.control.overrides)
    # and records who did it. New requests see a change at once because the router
    # reads `route.order` and `target.disabled` on every request; requests already
    # in flight keep the target list they resolved and finish.

    def config_order(self, route: str) -> list[str]:
        """The order the config file gives (what overrides are measured against)."""
        rc = self.config.routes.get(route)
        return [t.id for t in rc.targets] if rc is not None else []

    def set_order(self, route: str, order: list[str]) -> Route:
        """Put the listed targets first, in the order given; the rest keep their order after them.

        A full list is a whole new order; `["b"]` on `a, b, c` gives `b, a, c`.
        """
        r = self.routes.get(route)
        if r is None:
            raise OperatorError(f"unknown route {route!r}; routes: {', '.join(self.routes) or 'none'}", 404)
        if not isinstance(order, list) or not all(isinstance(x, str) for x in order):
            raise OperatorError('"order" must be a list of target ids')
        extra = [t for t in order if t not in r.order]
        dup = sorted({t for t in order if order.count(t) > 1})
        parts = []
        if not order:
            parts.append("no target listed")
        if extra:
            parts.append(f"not in this route: {', '.join(extra)}")
        if dup:
            parts.append(f"repeated: {', '.join(dup)}")
        if parts:
            raise OperatorError(f"order for route {route!r} lists the targets to put first, each once "
                                f"({'; '.join(parts)}); targets: {', '.join(r.order)}")
        r.order = list(order) + [t for t in r.order if t not in order]
        return r

    def target(self, target_id: str) -> Target:
        t = self.targets.get(target_id)
        if t is None:
            raise OperatorError(f"unknown target {target_id!r}; targets: {', '.join(self.targets)}", 404)
        return t

    def vendor_targets(self, vendor: str) -> list[Target]:
        if vendor not in self.config.vendors:
            raise OperatorError(f"unknown vendor {vendor!r}; vendors: {', '.join(self.config.vendors)}", 404)
        return [t for t in self.targets.values() if t.vendor.name == vendor]

    def set_disabled(self, t: Target, disabled: bool, reason: str | None = None, by: str | None = None,
                     at: float | None = None) -> bool:
        """Force-disable or enable one target by itself (its vendor's disable is separate);
        returns True when something changed."""
        before = t.own_disable
        t.own_disable = Disable(reason or None, by, at if at is not None else time.time()) if disabled else None
        t.disabled = t.own_disable is not None or t.vendor_disable is not None
        if disabled:
            return before is None or before.reason != (reason or None)
        return before is not None

    def set_vendor_disabled(self, vendor: str, disabled: bool, reason: str | None = None, by: str | None = None,
                            at: float | None = None) -> bool:
        """Disable or enable a whole vendor; targets disabled by themselves stay so."""
        targets = self.vendor_targets(vendor)
        before = self.vendor_disables.get(vendor)
        if disabled:
            d = self.vendor_disables[vendor] = Disable(reason or None, by, at if at is not None else time.time())
        else:
            d = None
            self.vendor_disables.pop(vendor, None)
        for t in targets:
            t.vendor_disable = d
            t.disabled = t.own_disable is not None or d is not None
        if disabled:
            return before is None or before.reason != (reason or None)
        return before is not None

    def routes_of(self, target_id: str) -> list[Route]:
        return [r for r in self.routes.values() if target_id in r.order]

    # --- snapshot for the admin API ----------------------------------------------

    def route_json(self, r: Route) -> dict[str, Any]:
        return {"name": r.name, "order": list(r.order), "serving": self.serving(r),
                "config_order": self.config_order(r.name),
                "overridden": list(r.order) != self.config_order(r.name),
                "fallback_response": r.fallback_response is not None}

    def target_json(self, t: Target, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        h = t.health.snapshot(now)
        fault = t.active_fault()
        b = t.breaker
        return {
            "id": t.id, "vendor": t.vendor.name, "vendor_kind": t.vendor.kind, "model": t.cfg.model,
            "prefill": t.cfg.prefill, "context_window": t.cfg.context_window,
            "state": t.health.state(b.state, t.disabled, now),
            "disabled": t.disabled, "disabled_reason": t.disabled_reason, "disabled_by": t.disabled_by,
            "disabled_at": t.disabled_at,
            "target_disabled": t.own_disable.json() if t.own_disable else None,
            "vendor_disabled": t.vendor_disable.json() if t.vendor_disable else None,
            "breaker": b.state, "breaker_failures": b.failures,
            "breaker_retry_in_s": (round(max(0.0, b.ready_at - time.monotonic()), 3)
                                   if b.state != "closed" else None),
            "p50_ms": h["p50_ms"], "p95_ms": h["p95_ms"], "latency_source": h["latency_source"],
            "ttft_p50_ms": h["ttft_p50_ms"], "ttft_p95_ms": h["ttft_p95_ms"],
            "success_rate": h["success_rate"],
            "rpm": h["rpm"], "rpm_now": h["rpm_now"], "cost_per_hour": h["cost_per_hour"],
            "priced": t.price is not None,
            "last_error": h["last_error"], "last_error_ts": h["last_error_at"],
            "last_ok_ts": t.health.last_ok_at, "last_probe": t.health.last_probe,
            "latency_series": h["latency_series"], "ttft_series": h["ttft_series"],
            "series_step_s": SERIES_STEP_S, "inflight": t.inflight,
            "observations": h["observations"],
            "fault": ({"spec": fault.spec, "drill_id": fault.drill_id} if fault is not None else None),
            "routes": [r.name for r in self.routes_of(t.id)],
        }

    def state_snapshot(self) -> dict[str, Any]:
        """Routes (live order, serving target) and targets (health), as DESIGN.md shapes them."""
        now = time.time()
        return {"routes": [self.route_json(r) for r in self.routes.values()],
                "targets": [self.target_json(t, now) for t in self.targets.values()]}
