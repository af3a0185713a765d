"""Per-target roll-ups of the request log, for charts over hours and days.

A day of a busy target is hundreds of thousands of requests; grouping them at
read time costs seconds. The writer therefore adds each batch into counts per
(resolution, target, time slot, metric, bin): answered requests' total latency
and time to first token as 5%-wide log bins, attempts, and failed attempts by
class, at 1-minute and 10-minute resolution. A 24-hour chart then reads about
150 slots of a few dozen bins each, whatever the traffic was.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from typing import Any

from .records import AttemptRow, RequestRow

RESOLUTIONS = (60, 600)         # seconds per slot
LN_BINS = 20                    # ln(ms) * 20: bins about 5% wide

CREATE = """
CREATE TABLE IF NOT EXISTS rollups (
    res INTEGER NOT NULL, target TEXT NOT NULL, slot INTEGER NOT NULL,
    metric TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (res, target, slot, metric, bin)
) WITHOUT ROWID
"""

UPSERT = ("INSERT INTO rollups (res, target, slot, metric, bin, n) VALUES (?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (res, target, slot, metric, bin) DO UPDATE SET n = n + excluded.n")

_log = math.log


def bin_of(ms: float) -> int:
    return int(_log(ms if ms > 0.01 else 0.01) * LN_BINS)


def bin_value(b: int) -> float:
    """The middle of a bin, in ms."""
    return math.exp((b + 0.5) / LN_BINS)


def deltas(rows: Iterable[Any]) -> list[tuple[int, str, int, str, int, int]]:
    """The roll-up counts a batch of rows adds, as UPSERT parameters."""
    acc: dict[tuple[int, str, int, str, int], int] = {}
    for row in rows:
        if isinstance(row, RequestRow):
            if row.outcome != "ok" or row.final_target is None or row.latency_ms is None:
                continue
            keys = [("lat", bin_of(row.latency_ms))]
            if row.ttft_ms is not None:
                keys.append(("ttft", bin_of(row.ttft_ms)))
            target, ts = row.final_target, row.ts
        elif isinstance(row, AttemptRow):
            keys = [("att", 0)] if row.outcome == "ok" else [("att", 0), (f"fail:{row.outcome}", 0)]
            target, ts = row.target, row.ts
        else:
            continue
        for res in RESOLUTIONS:
            slot = int(ts // res)
            for metric, b in keys:
                k = (res, target, slot, metric, b)
                acc[k] = acc.get(k, 0) + 1
    return [(*k, n) for k, n in acc.items()]


def backfill(conn: sqlite3.Connection) -> None:
    """Roll up rows already in the log (a database from before roll-ups existed)."""
    conn.create_function("pb_bin", 1, lambda v: bin_of(v) if v is not None else None, deterministic=True)
    for res in RESOLUTIONS:
        for col, metric in (("latency_ms", "lat"), ("ttft_ms", "ttft")):
            conn.execute(
                f"INSERT INTO rollups (res, target, slot, metric, bin, n) "
                f"SELECT ?, final_target, CAST(ts / ? AS INTEGER) AS s, ?, pb_bin({col}) AS b, count(*) "
                f"FROM requests WHERE outcome = 'ok' AND final_target IS NOT NULL AND {col} IS NOT NULL "
                f"GROUP BY final_target, s, b "
                "ON CONFLICT (res, target, slot, metric, bin) DO UPDATE SET n = n + excluded.n",
                (res, res, metric))
        conn.execute(
            "INSERT INTO rollups (res, target, slot, metric, bin, n) "
            "SELECT ?, target, CAST(ts / ? AS INTEGER) AS s, 'att', 0, count(*) FROM attempts GROUP BY target, s "
            "ON CONFLICT (res, target, slot, metric, bin) DO UPDATE SET n = n + excluded.n", (res, res))
        conn.execute(
            "INSERT INTO rollups (res, target, slot, metric, bin, n) "
            "SELECT ?, target, CAST(ts / ? AS INTEGER) AS s, 'fail:' || outcome, 0, count(*) FROM attempts "
            "WHERE outcome != 'ok' GROUP BY target, s, outcome "
            "ON CONFLICT (res, target, slot, metric, bin) DO UPDATE SET n = n + excluded.n", (res, res))


def series(conn: sqlite3.Connection, target: str, since: float, until: float, buckets: int) -> dict[str, Any]:
    """Chart points for [since, until) from the finest resolution that keeps the read small."""
    span = until - since
    res = RESOLUTIONS[0] if span <= 6 * 3600 else RESOLUTIONS[1]
    step = span / buckets
    acc: list[dict[str, Any]] = [{"lat": {}, "ttft": {}, "att": 0, "failed": 0} for _ in range(buckets)]
    by_class: dict[str, int] = {}
    for slot, metric, b, n in conn.execute(
            "SELECT slot, metric, bin, n FROM rollups WHERE res = ? AND target = ? AND slot >= ? AND slot < ?",
            # whole slots from `since` on, and every slot that starts before `until` (the current one too)
            (res, target, math.ceil(since / res), math.ceil(until / res))):
        i = min(buckets - 1, max(0, int((slot * res - since) // step)))
        a = acc[i]
        if metric == "lat" or metric == "ttft":
            h = a[metric]
            h[b] = h.get(b, 0) + n
        elif metric == "att":
            a["att"] += n
        else:
            a["failed"] += n
            cls = metric[5:]
            by_class[cls] = by_class.get(cls, 0) + n
    points = []
    for i, a in enumerate(acc):
        lat, ttft = a["lat"], a["ttft"]
        p50, p95 = pct(lat)
        t50, t95 = pct(ttft)
        points.append({"ts": since + i * step, "n": sum(lat.values()), "p50_ms": p50, "p95_ms": p95,
                       "ttft_p50_ms": t50, "ttft_p95_ms": t95, "attempts": a["att"], "failed": a["failed"]})
    return {"since": since, "until": until, "step_s": step, "resolution_s": res, "points": points,
            "errors_by_class": dict(sorted(by_class.items(), key=lambda kv: -kv[1]))}


def pct(hist: dict[int, int]) -> tuple[float | None, float | None]:
    """p50 and p95 (middle of the bin; zero-based int(q * n) rank) of a bin histogram."""
    total = sum(hist.values())
    if not total:
        return None, None
    keys = sorted(hist)
    out: list[float | None] = []
    for q in (0.5, 0.95):
        rank = min(total - 1, int(q * total))
        cum = 0
        for k in keys:
            cum += hist[k]
            if cum > rank:
                out.append(round(bin_value(k), 1))
                break
    return out[0], out[1]
