"""The SQL the request search is built from: filters, search branches, page merging, cursors.

History.list_requests (store/history.py) answers a filter as a union of
"branches", each an ordered index range on (ts, id), merged here into one
keyset page. The pieces that build those branches and merge their rows do no
I/O of their own (q_branches asks the small `names` table and an FTS count to
choose a plan), so they live apart from the connection handling.
"""

from __future__ import annotations

import base64
import heapq
import json
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from .schema import BOOL_COLUMNS, JSON_COLUMNS

#: columns returned in list pages (bodies only come with get_request)
LIST_COLUMNS = (
    "id", "ts", "route", "stream", "outcome", "http_status", "client_key_id", "final_target", "model",
    "attempts", "failovers", "latency_ms", "ttft_ms", "overhead_ms", "prompt_tokens", "completion_tokens",
    "cost", "error_class", "error_message", "drill_id",
)

#: below this many FTS matches, fetch them all and sort; above, walk the time index
_SPARSE_MATCHES = 2000
#: most sub-queries one filter may expand into (lists of routes x targets x outcomes, q matches)
MAX_BRANCHES = 64

_ID_RE = re.compile(r"^[A-Za-z]+_[0-9a-f]{12,}$")


class BadCursor(ValueError):
    """The cursor string was not produced by this store (bad input from a client)."""


def encode_cursor(ts: float, id_: str) -> str:
    raw = f"{ts!r}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        pad = "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(cursor + pad).decode()
        ts_text, id_ = raw.split("|", 1)
        ts = float(ts_text)
    except Exception as exc:
        raise BadCursor(f"invalid cursor: {cursor[:40]!r}") from exc
    if ts != ts:  # NaN
        raise BadCursor("invalid cursor")
    return ts, id_


def as_list(value: str | Sequence[str] | None) -> list[str] | None:
    """A filter given as one value or several, as a list (None: no filter)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    out = [v for v in value if v is not None]
    return out


def like_escape(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def decode_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row as read from SQLite, its JSON and boolean columns turned back into Python values."""
    for name in JSON_COLUMNS[table]:
        value = row.get(name)
        if isinstance(value, str):
            try:
                row[name] = json.loads(value)
            except ValueError:
                pass
    for name in BOOL_COLUMNS[table]:
        if name in row and row[name] is not None:
            row[name] = bool(row[name])
    return row


def q_branches(conn: sqlite3.Connection, text: str, combo: list[tuple[str, str]],
               where: list[str], params: list[Any]) -> list[tuple[list[str], list[Any], str | None]]:
    """Sub-queries whose union is "rows matching text", each ordered by (ts, id) desc."""
    out: list[tuple[list[str], list[Any], str | None]] = []
    fixed = dict(combo)
    needle = text.lower()
    # route / target names: the small `names` table, matched in Python
    for kind, col in (("route", "route"), ("target", "final_target")):
        values = [v for (v,) in conn.execute("SELECT value FROM names WHERE kind = ?", (kind,))
                  if needle in v.lower()]
        for v in values:
            if col in fixed and fixed[col] != v:
                continue
            out.append((where + [f"{col} = ?"], params + [v], None))
    # an exact request id
    if _ID_RE.match(text):
        out.append((where + ["id = ?"], params + [text], None))
    # error class / message: few matches -> fetch them all and sort
    rcols = ", ".join("r." + c for c in LIST_COLUMNS)
    if len(text) >= 3:
        n = conn.execute(
            "SELECT count(*) FROM (SELECT rowid FROM requests_fts WHERE requests_fts MATCH ? LIMIT ?)",
            (_fts_phrase(text), _SPARSE_MATCHES),
        ).fetchone()[0]
        if n == 0:
            return out
        if n < _SPARSE_MATCHES:
            sql = (f"SELECT {rcols} FROM (SELECT rowid AS rid FROM requests_fts WHERE requests_fts MATCH ?) AS m "
                   f"CROSS JOIN requests AS r ON r.rowid = m.rid WHERE 1{_qualify(where)} "
                   "ORDER BY r.ts DESC, r.id DESC LIMIT ?")
            out.append(([], [_fts_phrase(text)] + params, sql))
            return out
    # Otherwise walk an index already in (ts, id) order -- the first equality filter's,
    # else the partial index of rows with error text -- and keep the matching rows.
    index = {"route": "requests_route_ts", "final_target": "requests_target_ts",
             "outcome": "requests_outcome_ts"}.get(combo[0][0], "") if combo else "requests_err_ts"
    cols = ", ".join(LIST_COLUMNS)
    if len(text) >= 3 and combo:
        # many matches and a filter: walk the filter's index, test membership in the
        # match set (no table lookup for rows that do not match)
        cond = " AND ".join(where)
        sql = (f"SELECT {cols} FROM requests INDEXED BY {index} WHERE {cond} "
               "AND rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH ?) "
               "ORDER BY ts DESC, id DESC LIMIT ?")
        out.append(([], params + [_fts_phrase(text)], sql))
    else:
        # many matches and no filter (matches are dense among rows with error text, so
        # the walk stops early), or too short for trigrams: compare the text itself
        cond = " AND ".join(["error_message IS NOT NULL"] + where)
        like = like_escape(text)
        sql = (f"SELECT {cols} FROM requests INDEXED BY {index} WHERE {cond} "
               "AND (error_message LIKE ? ESCAPE '\\' OR error_class LIKE ? ESCAPE '\\') "
               "ORDER BY ts DESC, id DESC LIMIT ?")
        out.append(([], params + [like, like], sql))
    return out


def base_filters(since: float | None, until: float | None, drill_id: str | None, failover: bool,
                 after: tuple[float, str] | None) -> tuple[list[str], list[Any]]:
    """The conditions every history query shares (time window, drill, failovers, keyset page)."""
    where: list[str] = []
    params: list[Any] = []
    if failover:
        where.append("failovers > 0")
    if since is not None:
        where.append("ts >= ?")
        params.append(float(since))
    if until is not None:
        where.append("ts < ?")
        params.append(float(until))
    if drill_id is not None:
        where.append("drill_id = ?")
        params.append(drill_id)
    if after is not None:
        where.append("(ts, id) < (?, ?)")      # a row value: an index range, not a scan
        params.extend(after)
    return where, params


def any_of(routes: list[str] | None, outcomes: list[str] | None, where: list[str],
           params: list[Any]) -> tuple[list[str], list[Any]]:
    """`where` (copied) plus `route IN (...)` / `outcome IN (...)` for the lists given."""
    where, params = list(where), list(params)
    for col, values in (("route", routes), ("outcome", outcomes)):
        if values is not None:
            where.append(f"{col} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    return where, params


def merge_page(results: list[list[dict[str, Any]]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Merge branches (each newest first, up to limit+1 rows) into one page and its next cursor."""
    if len(results) == 1:
        merged = results[0]
    else:
        merged = []
        seen: set[str] = set()
        for row in heapq.merge(*results, key=lambda r: (r["ts"], r["id"]), reverse=True):
            if row["id"] in seen:
                continue
            seen.add(row["id"])
            merged.append(row)
            if len(merged) > limit:
                break
    page = [decode_row("requests", r) for r in merged[:limit]]
    next_cursor = encode_cursor(page[-1]["ts"], page[-1]["id"]) if len(merged) > limit else None
    return page, next_cursor


def _qualify(where: list[str]) -> str:
    """Prefix the shared filter terms with the `r.` alias for the FTS join."""
    out = []
    for w in where:
        w = re.sub(r"\b(ts|id|route|final_target|outcome|drill_id)\b", r"r.\1", w)
        out.append(w)
    return "".join(" AND " + w for w in out)
