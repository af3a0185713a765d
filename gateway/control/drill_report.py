"""A drill's record and what it reports: the figures taken from the request log, and their wording.

The manager in gateway/control/drills.py runs a drill; this module is what a
drill *is* (its parameters and live observations, the `Drill` record stored in
SQLite) and what it found: `figures` turns the drill's requests into the
report, `report_rows` words it once for the CLI, the panel and scripts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from store.records import DrillRow


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


def passed_over(d: Drill, row: dict) -> bool:
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

def figures(d: Drill, rows: list[dict], baseline: list[float], reached: bool = True) -> dict[str, Any]:
    def since_start(ts: float | None) -> float | None:
        return None if ts is None else round(ts - d.started, 3)

    detect_candidates = [(ts, kind) for ts, kind in ((d.first_breaker_open, "breaker_open"),
                                                      (d.first_probe_fail, "probe_failed"),
                                                      (d.first_state_change, "state_change"))
                         if ts is not None]
    detected = min(detect_candidates) if detect_candidates else None
    ok_rows = [r for r in rows if r.get("outcome") == "ok"]
    rerouted = [r for r in ok_rows if passed_over(d, r)]
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
        "warnings": [] if reached else _unreached_warnings(d),
    }
    return report

def _unreached_warnings(d: Drill) -> list[str]:
    """No request met the fault: say so, as the drill's zeros are not a passed test."""
    if not d.serving_at_start:
        why = (f"it was {d.state_before}" if d.state_before not in (None, "healthy", "degraded")
               else "another target was ahead of it in " + ", ".join(d.routes or ["every route"]))
        return [f"{d.target} was serving no route when the drill started ({why}): no request reached the "
                "fault, so this drill exercised nothing and its zeros say nothing about failover"]
    return [f"no request reached {d.target} during the drill: it exercised nothing; add synthetic "
            "traffic (traffic = requests/s) to rehearse with load"]


def event_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The headline figures of a report, for the drill-ended event and the log line."""
    if not report:
        return report
    keys = ("time_to_detect_s", "time_to_failover_s", "requests", "requests_rerouted", "client_visible_errors",
            "added_latency_ms", "error")
    return {k: report[k] for k in keys if k in report}
