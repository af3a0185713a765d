"""Read side of the request log: history pages, request detail, events, drills.

Every page is a keyset page on (ts, id) descending -- never OFFSET -- so page
1,000 of a million-row log costs the same as page 1, and rows arriving while an
operator pages never shift or repeat what they see. The cursor is opaque
(base64 of the last row's ts and id). The SQL a request search is built from,
and the cursor, are in store/history_sql.py; this module runs it.

Reads use their own connections, one per thread (the admin API calls these
from a thread executor), opened read-only in spirit (`query_only`), so they can
never take the writer's lock. A missing database or schema reads as empty: the
history of a gateway that has not logged anything yet is an empty page, not an
error.
"""

from __future__ import annotations

import heapq
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from . import rollups
from .history_sql import (
    LIST_COLUMNS,
    MAX_BRANCHES,
    any_of,
    as_list,
    base_filters,
    decode_cursor,
    decode_row,
    like_escape,
    merge_page,
    q_branches,
)
from .schema import SCHEMA_VERSION

#: windows up to this long are grouped from the rows themselves; longer ones read the roll-ups
RAW_SERIES_S = 900.0
#: the longest a request may last (its attempts start within this of its own start)
MAX_REQUEST_S = 3600.0


class History:
    """Thread-safe queries over a Patchbay store file. Cheap to construct; connections open lazily."""

    def __init__(self, path: str, timeout: float = 2.0):
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False

    # ----------------------------------------------------------------- connections

    def _conn(self) -> sqlite3.Connection | None:
        """This thread's connection, or None while the file or schema does not exist yet."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise RuntimeError("History is closed")
        if self.path == ":memory:":
            return None      # a private memory database nobody else can see; use Store.history()
        if not self.path.startswith("file:") and not os.path.exists(self.path):
            return None
        conn = None
        for mode in ("rw", "ro"):
            try:
                uri = self.path if self.path.startswith("file:") else f"file:{_quote_path(self.path)}?mode={mode}"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                       timeout=self.timeout)
                conn.execute("PRAGMA query_only=ON")
                if "mode=memory" in self.path:
                    conn.execute("PRAGMA read_uncommitted=ON")   # shared cache: never wait on the writer's table locks
                conn.execute("PRAGMA cache_size=-16384")
                conn.execute("PRAGMA mmap_size=268435456")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                break
            except sqlite3.Error:
                if conn is not None:
                    conn.close()
                conn = None
        if conn is None:
            return None
        if version < 1:
            conn.close()          # no schema yet: try again next call
            return None
        if version > SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(f"database schema version {version} is newer than this Patchbay")
        self._local.conn = conn
        with self._lock:
            self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (call once, when the admin API stops)."""
        self._closed = True
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        conn = self._conn()
        if conn is None:
            return []
        cur = conn.execute(sql, tuple(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    # ----------------------------------------------------------------- requests

    def list_requests(
        self,
        route: str | Sequence[str] | None = None,
        target: str | Sequence[str] | None = None,
        outcome: str | Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        drill_id: str | None = None,
        failover: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of requests, newest first, and the cursor for the next page (None at the end).

        route/target/outcome take one value or a list (any of). A target matches every
        request that tried it (any attempt), not only those it ended, so requests that
        failed over away from it are found too. since/until are epoch seconds (since
        inclusive, until exclusive). failover keeps requests that failed over. q is
        free text matched (case-insensitively, as a substring) against route, final
        target, the final error and every attempt's error, or an exact request id.
        """
        limit = max(1, min(int(limit), 1000))
        after = decode_cursor(cursor) if cursor else None
        conn = self._conn()
        if conn is None:
            return [], None

        routes, targets, outcomes = as_list(route), as_list(target), as_list(outcome)
        if routes == [] or targets == [] or outcomes == []:
            return [], None
        base_where, base_params = base_filters(since, until, drill_id, failover, after)
        if targets is not None:
            return self._by_attempts(conn, targets, routes, outcomes, since, q, limit, after,
                                     base_where, base_params)

        # Each equality list becomes one branch per value so each branch is an
        # ordered index range; branches are merged here (heap merge on ts, id).
        branches: list[tuple[list[str], list[Any], str | None]] = []
        eq_sets: list[list[tuple[str, Any]]] = [[]]  # list of (col, value) combos
        for col, values in (("route", routes), ("final_target", targets), ("outcome", outcomes)):
            if values is None:
                continue
            eq_sets = [combo + [(col, v)] for combo in eq_sets for v in values]
        if len(eq_sets) > MAX_BRANCHES:
            raise ValueError("too many filter combinations")

        text = (q or "").strip()
        for combo in eq_sets:
            where = base_where + [f"{col} = ?" for col, _ in combo]
            params = base_params + [v for _, v in combo]
            if not text:
                branches.append((where, params, None))
            else:
                branches.extend(q_branches(conn, text, combo, where, params))
        if len(branches) > MAX_BRANCHES * 4:
            raise ValueError("search too broad; add a filter")

        cols = ", ".join(LIST_COLUMNS)
        results: list[list[dict[str, Any]]] = []
        for where, params, special in branches:
            if special is None:
                sql = (f"SELECT {cols} FROM requests"
                       + (" WHERE " + " AND ".join(where) if where else "")
                       + " ORDER BY ts DESC, id DESC LIMIT ?")
                rows = self._rows(sql, params + [limit + 1])
            else:
                rows = self._rows(special, params + [limit + 1])
            results.append(rows)
        if text and len(text) >= 3:
            # the errors of attempts that failed over (a request's own error is only its last one)
            where, params = any_of(routes, outcomes, base_where, base_params)
            results.append(self._walk_attempts(conn, "error IS NOT NULL AND error LIKE ? ESCAPE '\\'",
                                               [like_escape(text)], "attempts_err_ts", where, params,
                                               after, since, limit))
        return merge_page(results, limit)

    def _by_attempts(self, conn: sqlite3.Connection, targets: list[str], routes: list[str] | None,
                     outcomes: list[str] | None, since: float | None, q: str | None, limit: int,
                     after: tuple[float, str] | None, base_where: list[str],
                     base_params: list[Any]) -> tuple[list[dict[str, Any]], str | None]:
        """Requests with any attempt on one of `targets`, the other filters applied to each request."""
        where, params = any_of(routes, outcomes, base_where, base_params)
        text = (q or "").strip()
        if text:
            like = like_escape(text)
            where.append("(route LIKE ? ESCAPE '\\' OR final_target LIKE ? ESCAPE '\\' "
                         "OR error_class LIKE ? ESCAPE '\\' OR error_message LIKE ? ESCAPE '\\' OR id = ? "
                         "OR EXISTS (SELECT 1 FROM attempts a WHERE a.request_id = requests.id "
                         "AND a.error LIKE ? ESCAPE '\\'))")
            params.extend([like, like, like, like, text, like])
        if len(targets) > MAX_BRANCHES:
            raise ValueError("too many filter combinations")
        cols = ", ".join(LIST_COLUMNS)
        results = []
        for t in targets:
            # the requests it ended (one index range), and those that only passed through it
            results.append(self._rows(f"SELECT {cols} FROM requests INDEXED BY requests_target_ts "
                                      f"WHERE {' AND '.join(['final_target = ?', *where])} "
                                      "ORDER BY ts DESC, id DESC LIMIT ?", [t, *params, limit + 1]))
            results.append(self._walk_attempts(conn, "target = ?", [t], "attempts_target_ts", where, params,
                                               after, since, limit))
        return merge_page(results, limit)

    def _walk_attempts(self, conn: sqlite3.Connection, cond: str, cond_params: list[Any], index: str,
                       where: list[str], params: list[Any], after: tuple[float, str] | None,
                       since: float | None, limit: int) -> list[dict[str, Any]]:
        """Up to limit+1 requests, newest first, that have an attempt matching `cond` and pass `where`.

        Walks the attempts index newest first. A request starts no later than its attempts,
        so once limit+1 requests have started at or after the attempt being read, no
        attempt further down can belong to a newer request: the walk stops there. Keyset
        pages stay exact; attempts more than MAX_REQUEST_S after a cursor are not read.
        """
        a_where = [cond]
        a_params = list(cond_params)
        if after is not None:
            a_where.append("ts < ?")
            a_params.append(after[0] + MAX_REQUEST_S)
        if since is not None:
            a_where.append("ts >= ?")
            a_params.append(float(since))
        cols = ", ".join(LIST_COLUMNS)
        found: dict[str, dict[str, Any]] = {}
        pos: tuple[float, int] | None = None
        chunk = max(100, 2 * limit)
        while True:
            extra = " AND (ts, rowid) < (?, ?)" if pos is not None else ""
            rows = conn.execute(
                f"SELECT ts, rowid, request_id FROM attempts INDEXED BY {index} WHERE {' AND '.join(a_where)}"
                f"{extra} ORDER BY ts DESC, rowid DESC LIMIT ?",
                a_params + (list(pos) if pos is not None else []) + [chunk]).fetchall()
            ids = list({rid for _, _, rid in rows if rid not in found})
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                cond_ids = f"id IN ({', '.join('?' for _ in part)})"
                for r in self._rows(f"SELECT {cols} FROM requests WHERE {' AND '.join([cond_ids, *where])}",
                                    part + params):
                    found[r["id"]] = r
            if len(rows) < chunk:
                break
            pos = (rows[-1][0], rows[-1][1])
            if len(found) > limit:
                best = heapq.nlargest(limit + 1, found.values(), key=lambda r: (r["ts"], r["id"]))
                if best[-1]["ts"] >= pos[0]:
                    break
            chunk = min(chunk * 2, 20_000)
        return sorted(found.values(), key=lambda r: (r["ts"], r["id"]), reverse=True)[:limit + 1]

    def count_requests(
        self,
        route: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cap: int | None = None,
    ) -> int:
        """How many requests match (an index count; pass `cap` to bound the work on huge logs)."""
        where: list[str] = []
        params: list[Any] = []
        for col, value in (("route", route), ("final_target", target), ("outcome", outcome)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        if since is not None:
            where.append("ts >= ?")
            params.append(float(since))
        if until is not None:
            where.append("ts < ?")
            params.append(float(until))
        inner = "SELECT 1 FROM requests" + (" WHERE " + " AND ".join(where) if where else "")
        if cap is not None:
            inner += " LIMIT ?"
            params.append(int(cap))
        rows = self._rows(f"SELECT count(*) AS n FROM ({inner})", params)
        return int(rows[0]["n"]) if rows else 0

    def get_request(self, id_: str) -> dict[str, Any] | None:
        """A request with its attempt chain (ordered by n) and the events tied to it."""
        rows = self._rows("SELECT * FROM requests WHERE id = ?", (id_,))
        if not rows:
            return None
        req = decode_row("requests", rows[0])
        attempts = [decode_row("attempts", r) for r in
                    self._rows("SELECT * FROM attempts WHERE request_id = ? ORDER BY n", (id_,))]
        events = [decode_row("events", r) for r in
                  self._rows("SELECT rowid AS id, * FROM events WHERE request_id = ? ORDER BY ts, rowid", (id_,))]
        req["attempt_count"] = req["attempts"]
        req["attempts"] = attempts
        req["events"] = events
        return req

    def summary(self, since: float, until: float | None = None) -> dict[str, dict[str, Any]]:
        """Per-target figures from attempts since `since`: attempts, errors, p50/p95 latency of
        successful attempts, plus requests answered and their cost. Seeds the health model
        after a restart so tiles do not start blank."""
        where = "ts >= ?" + (" AND ts < ?" if until is not None else "")
        params: list[Any] = [float(since)] + ([float(until)] if until is not None else [])
        out: dict[str, dict[str, Any]] = {}
        for r in self._rows(
            f"SELECT target, count(*) AS attempts, sum(outcome != 'ok') AS errors FROM attempts INDEXED BY attempts_ts "
            f"WHERE {where} GROUP BY target", params,
        ):
            out[r["target"]] = {"attempts": r["attempts"], "errors": int(r["errors"] or 0),
                                "requests": 0, "cost": 0.0, "p50_ms": None, "p95_ms": None}
        latencies: dict[str, list[float]] = {}
        for r in self._rows(
            f"SELECT target, latency_ms FROM attempts INDEXED BY attempts_ts WHERE {where} AND outcome = 'ok' "
            "ORDER BY target, latency_ms",
            params,
        ):
            latencies.setdefault(r["target"], []).append(r["latency_ms"])
        for target, values in latencies.items():
            entry = out.setdefault(target, {"attempts": 0, "errors": 0, "requests": 0, "cost": 0.0})
            entry["p50_ms"] = _percentile(values, 0.50)
            entry["p95_ms"] = _percentile(values, 0.95)
        for r in self._rows(
            f"SELECT final_target AS target, count(*) AS n, sum(cost) AS cost FROM requests "
            f"WHERE {where} AND +final_target IS NOT NULL GROUP BY final_target", params,
        ):
            entry = out.setdefault(r["target"], {"attempts": 0, "errors": 0, "p50_ms": None, "p95_ms": None})
            entry["requests"] = r["n"]
            entry["cost"] = float(r["cost"] or 0.0)
        return out

    def target_series(self, target: str, since: float, until: float, buckets: int = 60) -> dict[str, Any]:
        """One target over [since, until): per time bucket, p50/p95 of answered requests' total latency
        and time to first token, attempts and failed attempts; and failed attempts by class.

        Windows over RAW_SERIES_S come from the writer's roll-ups (store/rollups.py), so a day
        of a busy target reads a few thousand small rows; shorter ones group the rows themselves.
        """
        conn = self._conn()
        step = max(1e-3, (until - since) / buckets)
        empty = {"since": since, "until": until, "step_s": step, "points": [], "errors_by_class": {}}
        if conn is None:
            return empty
        if until - since > RAW_SERIES_S:
            return rollups.series(conn, target, since, until, buckets)
        pts: list[dict[str, Any]] = [
            {"ts": since + i * step, "n": 0, "p50_ms": None, "p95_ms": None, "ttft_p50_ms": None,
             "ttft_p95_ms": None, "attempts": 0, "failed": 0} for i in range(buckets)]
        hists: dict[str, list[dict[int, int]]] = {"lat": [{} for _ in pts], "ttft": [{} for _ in pts]}
        by_class: dict[str, int] = {}
        for ts, lat, ttft in conn.execute(
                "SELECT ts, latency_ms, ttft_ms FROM requests INDEXED BY requests_target_ts WHERE final_target = ? "
                "AND ts >= ? AND ts < ? AND outcome = 'ok' AND latency_ms IS NOT NULL", (target, since, until)):
            i = min(buckets - 1, int((ts - since) // step))
            h = hists["lat"][i]
            b = rollups.bin_of(lat)
            h[b] = h.get(b, 0) + 1
            if ttft is not None:
                h = hists["ttft"][i]
                b = rollups.bin_of(ttft)
                h[b] = h.get(b, 0) + 1
        for i, p in enumerate(pts):
            p["n"] = sum(hists["lat"][i].values())
            p["p50_ms"], p["p95_ms"] = rollups.pct(hists["lat"][i])
            p["ttft_p50_ms"], p["ttft_p95_ms"] = rollups.pct(hists["ttft"][i])
        for ts, outcome in conn.execute(
                "SELECT ts, outcome FROM attempts INDEXED BY attempts_target_ts WHERE target = ? AND ts >= ? "
                "AND ts < ?", (target, since, until)):
            p = pts[min(buckets - 1, int((ts - since) // step))]
            p["attempts"] += 1
            if outcome != "ok":
                p["failed"] += 1
                by_class[outcome] = by_class.get(outcome, 0) + 1
        return {**empty, "points": pts, "errors_by_class": dict(sorted(by_class.items(), key=lambda kv: -kv[1]))}

    def failed_attempts(self, target: str, since: float | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The target's most recent failed attempts, newest first."""
        sql = ("SELECT * FROM attempts INDEXED BY attempts_target_ts WHERE target = ? AND outcome != 'ok'"
               + (" AND ts >= ?" if since is not None else "") + " ORDER BY ts DESC LIMIT ?")
        params: list[Any] = [target] + ([float(since)] if since is not None else []) + [max(1, int(limit))]
        return [decode_row("attempts", r) for r in self._rows(sql, params)]

    def facets(self) -> dict[str, list[str]]:
        """Every route, final target and outcome ever logged (for filter pickers)."""
        out: dict[str, list[str]] = {"routes": [], "targets": [], "outcomes": []}
        key = {"route": "routes", "target": "targets", "outcome": "outcomes"}
        for r in self._rows("SELECT kind, value FROM names ORDER BY kind, value"):
            if r["kind"] in key:
                out[key[r["kind"]]].append(r["value"])
        return out

    # ----------------------------------------------------------------- events and drills

    def list_events(
        self,
        since: float | None = None,
        kind: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        target: str | None = None,
        request_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events newest first (insertion order). Each has an integer `id`; pass the last
        one as `before_id` for the next page."""
        limit = max(1, min(int(limit), 5000))
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            # rowid lower bound from the ts index, so a kind filter scans only the window
            where.append("ts >= ? AND rowid >= (SELECT coalesce(min(rowid), 0) FROM events WHERE ts >= ?)")
            params.extend((float(since), float(since)))
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if target is not None:
            where.append("target = ?")
            params.append(target)
        if request_id is not None:
            where.append("request_id = ?")
            params.append(request_id)
        if before_id is not None:
            where.append("rowid < ?")
            params.append(int(before_id))
        sql = ("SELECT rowid AS id, ts, kind, target, route, detail, request_id FROM events"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY rowid DESC LIMIT ?")
        return [decode_row("events", r) for r in self._rows(sql, params + [limit])]

    def list_drills(self, limit: int = 100) -> list[dict[str, Any]]:
        """Drills newest first, with their reports."""
        return [decode_row("drills", r) for r in
                self._rows("SELECT * FROM drills ORDER BY started DESC LIMIT ?", (max(1, int(limit)),))]

    def get_drill(self, id_: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM drills WHERE id = ?", (id_,))
        return decode_row("drills", rows[0]) if rows else None


def _percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p * (len(sorted_values) - 1)))))
    return sorted_values[k]


def _quote_path(path: str) -> str:
    from urllib.parse import quote
    return quote(os.path.abspath(path))
