"""Prometheus metrics for one gateway, served as `GET /metrics` on the admin listener.

Two kinds, priced differently:

- Traffic (requests, attempts, failovers, tokens, cost, latency, time to first
  token) is derived from each finished request's log row and attempt rows, in
  one `observe` call per request: a few counter increments on label children
  resolved once per (route, target, outcome) and then cached, so the request
  path pays dictionary lookups and increments, never label resolution. Every
  figure is the one the request log holds for the same request, so the two
  always agree.
- State (target state, breaker, in-flight, drills, routes with a healthy
  target, store backlog) is read from the runtime when Prometheus scrapes, by
  a custom collector: nothing per request.

Each gateway owns its own `CollectorRegistry` (never the global one), so
several gateways in one process (tests, the demo) keep separate figures.
Labels are bounded by the config: route names, target ids, outcome and error
classes, token kinds and target states; never a request id, key or free text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from gateway.routing.health import DEGRADED, DISABLED, DOWN, HEALTHY, MISCONFIGURED, OPEN, THROTTLED

if TYPE_CHECKING:  # pragma: no cover
    from gateway.runtime import Runtime
    from store.records import RequestRow

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: LLM answers take from tens of milliseconds (a cached or tiny answer) to minutes (long
#: generations, reasoning models), so the buckets run from 25 ms to 5 minutes.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

#: every state a target can be in (gateway.routing.health); `patchbay_target_state` has one series per state
TARGET_STATES = (HEALTHY, DEGRADED, THROTTLED, DOWN, OPEN, DISABLED, MISCONFIGURED)
#: states in which a target can serve a new request now
SERVING_STATES = frozenset({HEALTHY, DEGRADED})
#: `target` label of a request no target answered (errors, static fallback answers)
NO_TARGET = "none"

#: every metric family this module exports (the contrib/ dashboard and alert tests check against it)
METRIC_NAMES = (
    "patchbay_requests_total", "patchbay_attempts_total", "patchbay_failovers_total",
    "patchbay_request_duration_seconds", "patchbay_ttft_seconds", "patchbay_tokens_total",
    "patchbay_cost_usd_total", "patchbay_target_state", "patchbay_breaker_open", "patchbay_inflight",
    "patchbay_drill_active", "patchbay_route_healthy_targets", "patchbay_route_targets",
    "patchbay_store_backlog_rows", "patchbay_store_rows_not_written", "patchbay_store_rows_dropped_total",
    "patchbay_store_ok", "patchbay_malformed_events_total",
)


class Metrics:
    """The registry of one gateway, and the per-request `observe` hook the router calls."""

    def __init__(self, runtime: Runtime):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("patchbay_requests", "Requests answered, by route, final target and outcome "
                                "(ok, fallback, error, client_error, cut, client_gone).",
                                ("route", "target", "outcome"), registry=r)
        self.attempts = Counter("patchbay_attempts", "Attempts on vendors, by target and outcome class "
                                "(ok or the error class: server, throttled, timeout, reset, ...).",
                                ("target", "outcome"), registry=r)
        self.failovers = Counter("patchbay_failovers", "Moves from one target to the next within a request "
                                 "(mid-stream continuations included).", ("route",), registry=r)
        self.duration = Histogram("patchbay_request_duration_seconds", "Whole request time as the client saw "
                                  "it, all attempts included (streams: until the last byte).", ("route",),
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("patchbay_ttft_seconds", "Time to first token of streamed answers.", ("route",),
                              buckets=TTFT_BUCKETS, registry=r)
        self.tokens = Counter("patchbay_tokens", "Tokens billed, by the target that answered and kind "
                              "(input, output).", ("target", "kind"), registry=r)
        self.cost = Counter("patchbay_cost_usd", "Cost in USD from [prices], by the target that answered.",
                            ("target",), registry=r)
        ProcessCollector(registry=r)
        r.register(_StateCollector(runtime))
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._attempts: dict[tuple[str, str], Any] = {}
        self._routes: dict[str, tuple[Any, Any, Any]] = {}
        self._targets: dict[str, tuple[Any, Any, Any]] = {}

    def _route(self, route: str) -> tuple[Any, Any, Any]:
        c = self._routes[route] = (self.failovers.labels(route), self.duration.labels(route),
                                   self.ttft.labels(route))
        return c

    def _target(self, target: str) -> tuple[Any, Any, Any]:
        c = self._targets[target] = (self.tokens.labels(target, "input"), self.tokens.labels(target, "output"),
                                     self.cost.labels(target))
        return c

    def observe(self, row: RequestRow, call: Any) -> None:
        """One finished request: its log row, and its attempt rows (`call.attempts`).

        Runs on the request path (Router._record): keep it to lookups and increments.
        """
        target = row.final_target or NO_TARGET
        key = (row.route, target, row.outcome)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(*key)
        child.inc()
        acache = self._attempts
        for a in call.attempts:
            akey = (a.target, a.outcome)
            c = acache.get(akey)
            if c is None:
                c = acache[akey] = self.attempts.labels(*akey)
            c.inc()
        failovers, duration, ttft = self._routes.get(row.route) or self._route(row.route)
        if row.failovers:
            failovers.inc(row.failovers)
        if row.latency_ms is not None:
            duration.observe(row.latency_ms / 1000)
        if row.ttft_ms is not None:
            ttft.observe(row.ttft_ms / 1000)
        if row.final_target is not None and (row.prompt_tokens or row.completion_tokens or row.cost):
            tin, tout, cost = self._targets.get(target) or self._target(target)
            if row.prompt_tokens:
                tin.inc(row.prompt_tokens)
            if row.completion_tokens:
                tout.inc(row.completion_tokens)
            if row.cost:
                cost.inc(row.cost)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything in this gateway's registry."""
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges read from the live runtime at scrape time (on the event loop, so consistent)."""

    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def describe(self) -> list[Metric]:
        return []   # names are only known per scrape; no duplicate checks needed against this collector

    def collect(self) -> Iterable[Metric]:
        rt = self.rt
        state = GaugeMetricFamily("patchbay_target_state", "1 on the target's current state, 0 on the others.",
                                  labels=("target", "state"))
        breaker = GaugeMetricFamily("patchbay_breaker_open", "1 while the target's circuit breaker is open or "
                                    "half-open (traffic skips it or waits for one trial).", labels=("target",))
        inflight = GaugeMetricFamily("patchbay_inflight", "Attempts on the target right now.", labels=("target",))
        drill = GaugeMetricFamily("patchbay_drill_active", "1 while a drill injects a fault into the target.",
                                  labels=("target",))
        states: dict[str, str] = {}
        for t in rt.targets.values():
            s = states[t.id] = rt.target_state(t)
            for name in TARGET_STATES:
                state.add_metric((t.id, name), 1.0 if s == name else 0.0)
            breaker.add_metric((t.id,), 0.0 if t.breaker.state == "closed" else 1.0)
            inflight.add_metric((t.id,), float(t.inflight))
            drill.add_metric((t.id,), 1.0 if t.active_fault() is not None else 0.0)
        healthy = GaugeMetricFamily("patchbay_route_healthy_targets", "Targets of the route that can serve a "
                                    "new request now (state healthy or degraded). 0 = the route has nothing "
                                    "healthy to serve it.", labels=("route",))
        total = GaugeMetricFamily("patchbay_route_targets", "Targets configured on the route.", labels=("route",))
        for r in rt.routes.values():
            healthy.add_metric((r.name,), float(sum(1 for tid in r.order if states.get(tid) in SERVING_STATES)))
            total.add_metric((r.name,), float(len(r.order)))
        yield from (state, breaker, inflight, drill, healthy, total)

        st = rt.store.stats()
        yield GaugeMetricFamily("patchbay_store_backlog_rows", "Request-log rows waiting to be written "
                                "(queued, or held for a retry while the database fails).",
                                value=float(st.get("queued", 0) or 0))
        yield GaugeMetricFamily("patchbay_store_rows_not_written", "Request-log rows given up, plus rows held "
                                "for a retry while the database is failing.",
                                value=float(st.get("rows_not_written", 0) or 0))
        yield CounterMetricFamily("patchbay_store_rows_dropped", "Request-log rows dropped because the "
                                  "writer's queue was full.", value=float(st.get("queue_dropped", 0) or 0))
        yield GaugeMetricFamily("patchbay_store_ok", "1 while the request log is writable.",
                                value=1.0 if st.get("ok", True) else 0.0)
        yield CounterMetricFamily("patchbay_malformed_events", "Malformed vendor stream events skipped.",
                                  value=float(rt.malformed_events))
