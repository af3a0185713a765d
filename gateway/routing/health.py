"""One health model per target, fed by real traffic and probes alike.

Observations land in per-second buckets on the request path (a few integer
additions and one dict increment); the sliding-window totals are kept as
running sums, adding a bucket when it opens and subtracting it when it ages
out. So everything the admin API derives (success rate, p50/p95 from a
log-spaced latency histogram, requests per minute, cost per hour, state)
costs the same at 1 or 5,000 requests per second, and a state snapshot of
every target stays well under a millisecond no matter the load.

Percentiles come from histogram bins 2% wide: ample for tiles and
sparklines, and the request log keeps the exact latencies.

A real request's latency is recorded once it has ended (`answered`), with the
very figures its request-log row carries: total latency from the request's
start to its last byte and, for streams, time to first token from the same
start. So `/admin/state` and the request log agree for the same window, and a
streaming target's figures include the wait for its first token.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from gateway.vendors.base import ErrorClass

WINDOW_S = 300.0          # sliding window for success rate and percentiles
RATE_WINDOW_S = 60.0      # requests per minute, and the "degraded" ratio
NOW_WINDOW_S = 10.0       # the current rate (`rpm_now`): a disabled target drops to 0 within 10 s
SERIES_POINTS = 60        # latency points kept for sparklines
SERIES_STEP_S = 5.0       # one sparkline point per step (p50 of that step)
RECOVERED_AFTER = 10      # consecutive successes that end "degraded" before the window does

_BIN_BASE_MS = 0.01       # histogram bins: 0.01 ms * 1.02^k
_BIN_LOG = math.log(1.02)
_INV_BIN_LOG = 1.0 / _BIN_LOG
_INV_BASE = 1.0 / _BIN_BASE_MS
_log = math.log

#: failures that say nothing about the target's health (the client's request, or a throttle)
_NOT_HEALTH = frozenset({"bad_request", "content_policy", "context_length", "throttled"})
#: failures the client caused (they never make a target look degraded)
_CLIENT_CAUSED = frozenset({"bad_request", "content_policy", "context_length"})

HEALTHY, DEGRADED, THROTTLED, DOWN, OPEN, DISABLED, MISCONFIGURED = (
    "healthy", "degraded", "throttled", "down", "open", "disabled", "misconfigured")


def _bin(ms: float) -> int:
    """Log-spaced latency bin (multiplications only: this runs on every answered request)."""
    return int(_log(ms * _INV_BASE) * _INV_BIN_LOG) if ms > _BIN_BASE_MS else 0


def _bin_value(b: int) -> float:
    """The middle of a bin, in ms."""
    return _BIN_BASE_MS * math.exp((b + 0.5) * _BIN_LOG)


@dataclass(slots=True)
class _Bucket:
    """One second of observations."""

    sec: int
    n: int = 0            # observations (requests and probes)
    ok: int = 0
    failed_rel: int = 0   # failures that say something about health (not the client's, not throttles)
    real: int = 0         # requests (not probes)
    bad: int = 0          # failures not caused by the client (for the degraded ratio)
    cost: float = 0.0     # of requests
    lat_real: dict[int, int] = field(default_factory=dict)
    lat_probe: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)


@dataclass
class Health:
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None
    last_real_ok_at: float | None = None     # last success of a real request (not a probe)
    last_real_at: float | None = None        # last real request, whatever its outcome
    last_class: str | None = None
    consecutive_failures: int = 0
    misconfigured: bool = False
    throttled_until: float = 0.0
    # The prober's last verdict {"ts", "ok", "latency_ms", "error", "mode"}; None until the first probe.
    last_probe: dict | None = None
    series: deque = field(default_factory=lambda: deque(maxlen=SERIES_POINTS))
    ttft_series: deque = field(default_factory=lambda: deque(maxlen=SERIES_POINTS))
    _bucket_start: float = 0.0
    _bucket: dict = field(default_factory=dict)     # latency histogram of the current sparkline step
    _step_n: int = 0
    _ttft_bucket: dict = field(default_factory=dict)
    _ttft_n: int = 0
    _buckets: deque = field(default_factory=deque)
    # latency histograms over the buckets in `_buckets` (added on observe, subtracted on expiry)
    _lat_real: dict = field(default_factory=dict)
    _lat_probe: dict = field(default_factory=dict)
    _ttft: dict = field(default_factory=dict)
    _recent_bad: deque = field(default_factory=lambda: deque(maxlen=RECOVERED_AFTER))

    def _bucket_now(self, now: float) -> _Bucket:
        buckets = self._buckets
        if not buckets or buckets[-1].sec != int(now):
            buckets.append(_Bucket(int(now)))
            self._expire(now)
        return buckets[-1]

    def observe(self, ok: bool, latency_ms: float = 0.0, error: str | None = None, cls: ErrorClass | None = None,
                cost: float = 0.0, probe: bool = False, retry_after: float | None = None) -> None:
        """One attempt's verdict (a real request's or a probe's).

        `latency_ms` counts only for probes: a real request's latency arrives
        through `answered` once the whole request has ended.
        """
        now = time.time()
        b = self._bucket_now(now)
        b.n += 1
        if ok:
            b.ok += 1
            if probe:
                k = _bin(latency_ms)
                b.lat_probe[k] = b.lat_probe.get(k, 0) + 1
                self._lat_probe[k] = self._lat_probe.get(k, 0) + 1
            else:
                b.real += 1
                b.cost += cost
                self.last_real_at = self.last_real_ok_at = now
            self._recent_bad.append(False)
            self.consecutive_failures = 0
            self.last_ok_at = now
            self.misconfigured = False
            self.last_class = None
            return
        cls_v = cls.value if cls is not None else None
        if cls_v not in _NOT_HEALTH:
            b.failed_rel += 1
        is_bad = cls_v not in _CLIENT_CAUSED
        if is_bad:
            b.bad += 1
        self._recent_bad.append(is_bad)
        if not probe:
            b.real += 1
            b.cost += cost
            self.last_real_at = now
        self.last_error, self.last_error_at = error, now
        self.last_class = cls_v
        if cls is ErrorClass.THROTTLED:
            self.throttled_until = now + max(retry_after or 0.0, 10.0)
        elif cls is not None and cls.counts_against_health:
            self.consecutive_failures += 1
        if cls is ErrorClass.MISCONFIGURED:
            self.misconfigured = True

    def answered(self, total_ms: float, ttft_ms: float | None = None) -> None:
        """A request this target answered: the latency figures of its request-log row
        (total from the request's start; for a stream, time to first token too)."""
        now = time.time()
        b = self._bucket_now(now)
        k = _bin(total_ms)
        b.lat_real[k] = b.lat_real.get(k, 0) + 1
        self._lat_real[k] = self._lat_real.get(k, 0) + 1
        kt = None
        if ttft_ms is not None:
            kt = _bin(ttft_ms)
            b.ttft[kt] = b.ttft.get(kt, 0) + 1
            self._ttft[kt] = self._ttft.get(kt, 0) + 1
        self._add_point(now, k, kt)  # sparklines show what clients get, not probes

    def _expire(self, now: float) -> None:
        """Drop buckets older than the window, and their latencies from the running histograms."""
        cutoff = now - WINDOW_S
        buckets = self._buckets
        while buckets and buckets[0].sec < cutoff:
            b = buckets.popleft()
            for src, tot in ((b.lat_real, self._lat_real), (b.lat_probe, self._lat_probe), (b.ttft, self._ttft)):
                for k, c in src.items():
                    left = tot[k] - c
                    if left:
                        tot[k] = left
                    else:
                        del tot[k]

    def _add_point(self, now: float, k: int, kt: int | None) -> None:
        """One answered request (its latency bins) toward the current sparkline points."""
        if now - self._bucket_start >= SERIES_STEP_S:
            if self._step_n:
                self.series.append(_hist_pct(self._bucket, self._step_n, (0.5,))[0])
                self.ttft_series.append(_hist_pct(self._ttft_bucket, self._ttft_n, (0.5,))[0])
            self._bucket_start, self._bucket, self._step_n = now, {}, 0
            self._ttft_bucket, self._ttft_n = {}, 0
        self._bucket[k] = self._bucket.get(k, 0) + 1
        self._step_n += 1
        if kt is not None:
            self._ttft_bucket[kt] = self._ttft_bucket.get(kt, 0) + 1
            self._ttft_n += 1

    def latency_series(self) -> list[float]:
        """p50 total latency of each SERIES_STEP_S step, oldest first."""
        pts = list(self.series)
        if self._step_n:
            pts.append(_hist_pct(self._bucket, self._step_n, (0.5,))[0])
        return pts[-SERIES_POINTS:]

    def ttft_series_points(self) -> list[float | None]:
        """p50 time to first token per step, aligned with `latency_series` (None: no stream in that step)."""
        pts = list(self.ttft_series)
        if self._step_n:
            pts.append(_hist_pct(self._ttft_bucket, self._ttft_n, (0.5,))[0])
        return pts[-SERIES_POINTS:]

    def _recent(self, now: float, window: float = RATE_WINDOW_S) -> tuple[int, int, int]:
        """(observations, requests, bad) over the last `window` seconds."""
        cutoff = now - window
        n = real = bad = 0
        for b in reversed(self._buckets):
            if b.sec < cutoff:
                break
            n += b.n
            real += b.real
            bad += b.bad
        return n, real, bad

    def snapshot(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        self._expire(now)
        n = ok = failed_rel = 0
        cost = 0.0
        for b in self._buckets:      # at most WINDOW_S buckets
            n += b.n
            ok += b.ok
            failed_rel += b.failed_rel
            cost += b.cost
        # Percentiles of real requests; probes only when there is no real traffic to show.
        hist = self._lat_real or self._lat_probe
        p50, p95 = _hist_pct(hist, sum(hist.values()), (0.50, 0.95))
        ttft50, ttft95 = _hist_pct(self._ttft, sum(self._ttft.values()), (0.50, 0.95))
        _, real_recent, _ = self._recent(now)
        _, real_now, _ = self._recent(now, NOW_WINDOW_S)
        n_rel = ok + failed_rel
        return {
            "p50_ms": p50,
            "p95_ms": p95,
            "ttft_p50_ms": ttft50,
            "ttft_p95_ms": ttft95,
            # what the percentiles measure: real requests, or (a target with no traffic) probes
            "latency_source": "requests" if self._lat_real else ("probes" if self._lat_probe else None),
            "success_rate": round(ok / n_rel, 4) if n_rel else None,
            "rpm": round(real_recent * 60.0 / RATE_WINDOW_S, 1),
            "rpm_now": round(real_now * 60.0 / NOW_WINDOW_S, 1),
            "cost_per_hour": round(cost * (3600.0 / WINDOW_S), 6),
            "observations": n,
            "ok": ok,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "latency_series": self.latency_series(),
            "ttft_series": self.ttft_series_points(),
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
        # Degraded: over 5% failures in the last minute, unless the last RECOVERED_AFTER
        # observations all succeeded (a target that came back shows healthy without
        # waiting a minute for its outage to age out of the window).
        if any(self._recent_bad):
            n, _, bad = self._recent(now)
            if n and bad / n > 0.05:
                return DEGRADED
        return HEALTHY


def _hist_pct(hist: dict[int, int], count: int, qs: tuple[float, ...]) -> tuple[float | None, ...]:
    if count <= 0 or not hist:
        return tuple(None for _ in qs)
    keys = sorted(hist)
    out: list[float | None] = []
    for q in qs:
        rank = min(count - 1, int(q * count))   # zero-based, as for a sorted list
        cum = 0
        value = None
        for k in keys:
            cum += hist[k]
            if cum > rank:
                value = round(_bin_value(k), 1)
                break
        out.append(value if value is not None else round(_bin_value(keys[-1]), 1))
    return tuple(out)
