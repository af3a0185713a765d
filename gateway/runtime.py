"""Live state of one gateway: targets, route order, disables, drills, events.

The router reads it on every request; the admin API and the prober change
it. Everything lives on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gateway.adapters import make_adapter
from gateway.adapters.base import Adapter
from gateway.breaker import Breaker
from gateway.config import Config, Price, TargetConfig, VendorConfig
from gateway.faults import Fault
from gateway.health import Health
from store.records import EventRow


@dataclass
class Target:
    cfg: TargetConfig
    vendor: VendorConfig
    adapter: Adapter
    breaker: Breaker
    price: Price | None
    health: Health = field(default_factory=Health)
    disabled: bool = False
    disabled_reason: str | None = None
    fault: Fault | None = None
    inflight: int = 0

    @property
    def id(self) -> str:
        return self.cfg.id

    def active_fault(self) -> Fault | None:
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


class NullStore:
    """Used when no store is configured (some tests, benchmarks of the raw path)."""

    def put(self, row: Any) -> None:
        pass

    def stats(self) -> dict:
        return {"ok": True, "rows_not_written": 0, "queue_dropped": 0, "queued": 0, "last_error": None}


class Runtime:
    def __init__(self, config: Config, store: Any = None, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.store = store if store is not None else NullStore()
        self.targets: dict[str, Target] = {}
        adapters: dict[str, Adapter] = {}
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
                                             price=config.prices.get(tc.id))
        self.routes: dict[str, Route] = {
            name: Route(name, [t.id for t in r.targets], r.fallback_response)
            for name, r in config.routes.items()
        }
        self._subscribers: set[asyncio.Queue] = set()
        self.malformed_events = 0

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
