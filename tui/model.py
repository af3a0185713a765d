"""Typed views of the admin API's JSON, tolerant of fields added later.

The admin API may grow fields ("extend freely, keep these names"), so parsing
takes what it knows and ignores the rest; a missing number shows as a dash
instead of crashing a tile at 3 a.m.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TARGET_STATES = ("healthy", "degraded", "throttled", "down", "open", "disabled", "misconfigured")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _series(v: Any) -> tuple[float, ...]:
    """Latency series points may be numbers or [ts, ms] pairs or {"ms": ...}; keep the ms."""
    out: list[float] = []
    for p in v or ():
        if isinstance(p, (list, tuple)) and p:
            p = p[-1]
        elif isinstance(p, dict):
            p = p.get("ms", p.get("latency_ms", p.get("value")))
        n = _num(p)
        if n is not None:
            out.append(n)
    return tuple(out)


def _why_off(v: Any) -> str | None:
    """A disable record ({"reason", "by", "at"}) as words, None when not disabled."""
    if not isinstance(v, dict):
        return None
    return str(v.get("reason") or (f"by {v['by']}" if v.get("by") else ""))


@dataclass(frozen=True, slots=True)
class TargetInfo:
    id: str
    vendor: str
    model: str
    state: str = "healthy"
    disabled: bool = False
    disabled_reason: str | None = None
    breaker: str = "closed"
    p50_ms: float | None = None
    p95_ms: float | None = None
    latency_source: str | None = None   # "requests", or "probes" for a target without traffic
    success_rate: float | None = None
    rpm: float | None = None
    cost_per_hour: float | None = None
    last_error: str | None = None
    last_error_ts: float | None = None
    latency_series: tuple[float, ...] = ()
    ttft_p50_ms: float | None = None    # time to first token (streams), like p50/p95 over the last 5 min
    ttft_p95_ms: float | None = None
    rpm_now: float | None = None        # the current rate (last 10 s); `rpm` is the last minute
    priced: bool = True                 # False: the config has no price for it (cost is not "$0")
    series_step_s: float = 5.0          # one sparkline point per step
    target_disabled: str | None = None  # why the target itself is off ("" when no reason was given)
    vendor_disabled: str | None = None  # why its whole vendor is off

    @property
    def rate(self) -> float | None:
        """Requests per minute now (falls back to the minute's rate from an older gateway)."""
        return self.rpm_now if self.rpm_now is not None else self.rpm

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TargetInfo:
        tid = str(d.get("id", "?"))
        vendor, _, model = tid.partition("/")
        last_error = d.get("last_error")
        last_error_ts = _num(d.get("last_error_ts"))
        if isinstance(last_error, dict):
            last_error_ts = _num(last_error.get("ts")) or last_error_ts
            parts = [str(last_error.get(k)) for k in ("status", "class", "message")
                     if last_error.get(k) not in (None, "")]
            last_error = " ".join(parts) or None
        disabled = bool(d.get("disabled")) or d.get("state") == "disabled"
        reason = d.get("disabled_reason", d.get("reason"))
        return cls(
            id=tid,
            vendor=str(d.get("vendor") or vendor),
            model=str(d.get("model") or model),
            state=str(d.get("state") or ("disabled" if disabled else "healthy")),
            disabled=disabled,
            disabled_reason=str(reason) if reason else None,
            breaker=str(d.get("breaker") or "closed"),
            p50_ms=_num(d.get("p50_ms")),
            p95_ms=_num(d.get("p95_ms")),
            latency_source=str(d["latency_source"]) if d.get("latency_source") else None,
            success_rate=_num(d.get("success_rate")),
            rpm=_num(d.get("rpm")),
            cost_per_hour=_num(d.get("cost_per_hour")),
            last_error=str(last_error) if last_error else None,
            last_error_ts=last_error_ts,
            latency_series=_series(d.get("latency_series")),
            ttft_p50_ms=_num(d.get("ttft_p50_ms")),
            ttft_p95_ms=_num(d.get("ttft_p95_ms")),
            rpm_now=_num(d.get("rpm_now")),
            priced=d.get("priced", True) is not False,
            series_step_s=_num(d.get("series_step_s")) or 5.0,
            target_disabled=_why_off(d.get("target_disabled")),
            vendor_disabled=_why_off(d.get("vendor_disabled")),
        )


@dataclass(frozen=True, slots=True)
class RouteInfo:
    name: str
    order: tuple[str, ...]
    serving: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RouteInfo:
        order = d.get("order") or d.get("targets") or []
        order = tuple(str(t["id"]) if isinstance(t, dict) else str(t) for t in order)
        serving = d.get("serving")
        return cls(name=str(d.get("name", "?")), order=order,
                   serving=str(serving) if serving else None)


@dataclass(frozen=True, slots=True)
class GatewayState:
    routes: tuple[RouteInfo, ...] = ()
    targets: tuple[TargetInfo, ...] = ()
    drills: tuple[dict[str, Any], ...] = ()
    store_ok: bool = True
    rows_not_written: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GatewayState:
        store = d.get("store") or {}
        return cls(
            routes=tuple(RouteInfo.from_json(r) for r in d.get("routes") or ()),
            targets=tuple(TargetInfo.from_json(t) for t in d.get("targets") or ()),
            drills=tuple(x for x in d.get("drills") or () if isinstance(x, dict)),
            store_ok=bool(store.get("ok", True)),
            rows_not_written=int(_num(store.get("rows_not_written")) or 0),
            raw=d,
        )

    def target(self, target_id: str) -> TargetInfo | None:
        for t in self.targets:
            if t.id == target_id:
                return t
        return None

    def route(self, name: str) -> RouteInfo | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None

    def vendors(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.targets:
            seen.setdefault(t.vendor)
        return list(seen)

    def running_drills(self) -> list[dict[str, Any]]:
        return [d for d in self.drills if d.get("state") == "running"]
