"""One health model per target, fed by real traffic and probes alike.

Observations are appended on the request path (cheap: one deque append);
everything derived (percentiles, rates, state) is computed when someone asks,
about once a second for the admin API, never per request.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from gateway.adapters.base import ErrorClass

WINDOW_S = 300.0          # sliding window for success rate and percentiles
RATE_WINDOW_S = 60.0      # requests per minute
SERIES_POINTS = 60        # latency points kept for sparklines
RECOVERED_AFTER = 10      # consecutive successes that end "degraded" before the window does
SERIES_STEP_S = 5.0       # one sparkline point per step (p50 of that step)

HEALTHY, DEGRADED, THROTTLED, DOWN, OPEN, DISABLED, MISCONFIGURED = (
    "healthy", "degraded", "throttled", "down", "open", "disabled", "misconfigured")


@dataclass(slots=True)
class Observation:
    t: float
    ok: bool
    latency_ms: float
    cls: str | None
    cost: float
    probe: bool


@dataclass
class Health:
    obs: deque = field(default_factory=lambda: deque(maxlen=20_000))
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None
    last_real_ok_at: float | None = None     # last success of a real request (not a probe)
    last_class: str | None = None
    consecutive_failures: int = 0
    misconfigured: bool = False
    throttled_until: float = 0.0
    # The prober's last verdict {"ts", "ok", "latency_ms", "error"}; None until the first probe.
    last_probe: dict | None = None
    series: deque = field(default_factory=lambda: deque(maxlen=SERIES_POINTS))
    _bucket_start: float = 0.0
    _bucket: list = field(default_factory=list)

    def observe(self, ok: bool, latency_ms: float, error: str | None = None, cls: ErrorClass | None = None,
                cost: float = 0.0, probe: bool = False, retry_after: float | None = None) -> None:
        now = time.time()
        self.obs.append(Observation(now, ok, latency_ms, cls.value if cls else None, cost, probe))
        if ok:
            self.consecutive_failures = 0
            self.last_ok_at = now
            if not probe:
                self.last_real_ok_at = now
            self.misconfigured = False
            self.last_class = None
            if not probe:  # sparklines show what clients get; a models-list probe is not comparable
                self._add_point(now, latency_ms)
        else:
            self.last_error, self.last_error_at = error, now
            self.last_class = cls.value if cls else None
            if cls is ErrorClass.THROTTLED:
                self.throttled_until = now + max(retry_after or 0.0, 10.0)
            elif cls is not None and cls.counts_against_health:
                self.consecutive_failures += 1
            if cls is ErrorClass.MISCONFIGURED:
                self.misconfigured = True

    def _add_point(self, now: float, latency_ms: float) -> None:
        if now - self._bucket_start >= SERIES_STEP_S:
            if self._bucket:
                b = sorted(self._bucket)
                self.series.append(round(b[len(b) // 2], 1))
            self._bucket_start, self._bucket = now, []
        self._bucket.append(latency_ms)

    def latency_series(self) -> list[float]:
        pts = list(self.series)
        if self._bucket:
            b = sorted(self._bucket)
            pts.append(round(b[len(b) // 2], 1))
        return pts[-SERIES_POINTS:]

    def snapshot(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        cutoff = now - WINDOW_S
        while self.obs and self.obs[0].t < cutoff:
            self.obs.popleft()
        # Percentiles of real requests; probes only when there is no real traffic to show.
        lat = sorted(o.latency_ms for o in self.obs if o.ok and not o.probe) or \
            sorted(o.latency_ms for o in self.obs if o.ok)
        total = len(self.obs)
        ok = sum(1 for o in self.obs if o.ok)
        relevant = [o for o in self.obs if o.ok or (o.cls not in ("bad_request", "content_policy",
                                                                   "context_length", "throttled"))]
        ok_rel = sum(1 for o in relevant if o.ok)
        recent = [o for o in self.obs if o.t >= now - RATE_WINDOW_S and not o.probe]
        hour_cost = sum(o.cost for o in self.obs if not o.probe) * (3600.0 / WINDOW_S)
        return {
            "p50_ms": _pct(lat, 0.50),
            "p95_ms": _pct(lat, 0.95),
            "success_rate": round(ok_rel / len(relevant), 4) if relevant else None,
            "rpm": round(len(recent) * 60.0 / RATE_WINDOW_S, 1),
            "cost_per_hour": round(hour_cost, 6),
            "observations": total,
            "ok": ok,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "latency_series": self.latency_series(),
        }

    def state(self, breaker_state: str, disabled: bool, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if disabled:
            return DISABLED
        if self.misconfigured:
            return MISCONFIGURED
        if breaker_state != "closed":
            return OPEN
        if self.consecutive_failures >= 1 and (self.last_ok_at is None or
                                               (self.last_error_at or 0) > self.last_ok_at):
            return DOWN if self.consecutive_failures >= 2 else DEGRADED
        if self.throttled_until > now:
            return THROTTLED
        recent = [o for o in self.obs if o.t >= now - RATE_WINDOW_S]
        if recent:
            def bad(o: Observation) -> bool:
                return not o.ok and o.cls not in ("bad_request", "content_policy", "context_length")
            # Degraded: over 5% failures in the last minute, unless the last RECOVERED_AFTER
            # observations all succeeded (a target that came back shows healthy without
            # waiting a minute for its outage to age out of the window).
            if sum(1 for o in recent if bad(o)) / len(recent) > 0.05 and \
                    any(bad(o) for o in recent[-RECOVERED_AFTER:]):
                return DEGRADED
        return HEALTHY


def _pct(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(q * len(sorted_vals)))
    return round(sorted_vals[i], 1)
