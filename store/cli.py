"""`patchbay history` against the local database file: a plain-text table.

Reads the SQLite file directly (no gateway needed), so it works on a box where
the gateway is down -- which is exactly when an operator wants the history.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from .history import History
from .history_sql import LIST_COLUMNS

_COLUMNS = ("time (UTC)", "route", "target", "outcome", "status", "att", "latency", "ttft", "tokens", "cost", "error",
            "request id")
_ERROR_WIDTH = 48


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    return f"{value:.0f}ms"


def _tokens(row: dict[str, Any]) -> str:
    p, c = row.get("prompt_tokens"), row.get("completion_tokens")
    if p is None and c is None:
        return "-"
    return f"{p if p is not None else '-'}/{c if c is not None else '-'}"


def _cost(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def _error(row: dict[str, Any]) -> str:
    text = row.get("error_message") or row.get("error_class") or ""
    text = " ".join(str(text).split())
    return text if len(text) <= _ERROR_WIDTH else text[: _ERROR_WIDTH - 1] + "…"


def _cells(row: dict[str, Any]) -> list[str]:
    attempts = row.get("attempts")
    if isinstance(attempts, list):       # a get_request() dict
        attempts = row.get("attempt_count", len(attempts))
    failovers = row.get("failovers") or 0
    return [
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["ts"])),
        str(row.get("route") or "-"),
        str(row.get("final_target") or "-"),
        str(row.get("outcome") or "-") + ("" if not row.get("drill_id") else " (drill)"),
        str(row.get("http_status") if row.get("http_status") is not None else "-"),
        f"{attempts or 0}" + (f" ({failovers} fo)" if failovers else ""),
        _ms(row.get("latency_ms")),
        _ms(row.get("ttft_ms")),
        _tokens(row),
        _cost(row.get("cost")),
        _error(row),
        str(row.get("id") or "-"),
    ]


def format_history_table(rows: Iterable[dict[str, Any]]) -> str:
    """Rows from `History.list_requests` as an aligned plain-text table (no colour, pipes well)."""
    body = [_cells(r) for r in rows]
    table = [list(_COLUMNS)] + body
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
    right = {4, 5, 6, 7, 8, 9}   # numbers align right
    lines = []
    for n, r in enumerate(table):
        cells = [c.rjust(widths[i]) if i in right and n else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


HISTORY_FILTERS = ("route", "target", "outcome", "q", "since", "until")


def history_params(args: Any) -> dict[str, str]:
    """The history filters given on the command line, as admin API query parameters."""
    out = {k: str(getattr(args, k)) for k in HISTORY_FILTERS if getattr(args, k, None)}
    if getattr(args, "failover", False):
        out["failover"] = "1"
    return out


def write_history(rows: list[dict[str, Any]], more: Any, fmt: str, filtered: bool, out: TextIO) -> None:
    """A history page as a table (people), JSON (one array) or CSV (header + rows) for scripts."""
    if fmt == "json":
        print(json.dumps(rows, indent=1, default=str), file=out)
        return
    if fmt == "csv":
        w = csv.DictWriter(out, fieldnames=list(LIST_COLUMNS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return
    if not rows:
        print("no requests recorded" + (" matching the filters" if filtered else ""), file=out)
        return
    print(format_history_table(rows), file=out)
    if more:
        print(f"(showing the {len(rows)} most recent; use --limit for more)", file=out)


def history_main(
    db_path: str,
    limit: int = 20,
    route: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    q: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    fmt: str = "table",
    failover: bool = False,
    since: float | None = None,
    until: float | None = None,
) -> int:
    """`patchbay history -c FILE [--limit N] [--route R] [--target T] [--outcome O]`: print and return an exit code.

    0 when the table (possibly empty) was printed, 1 when there is no database to read.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if not os.path.exists(db_path):
        print(f"patchbay history: no request log at {db_path} (has the gateway run with this config?)", file=err)
        return 1
    try:
        with History(db_path) as history:
            rows, more = history.list_requests(route=route, target=target, outcome=outcome, q=q,
                                               limit=max(1, int(limit)), failover=failover,
                                               since=since, until=until)
    except Exception as exc:  # a corrupt or foreign file: say so, no traceback
        print(f"patchbay history: cannot read {db_path}: {exc}", file=err)
        return 1
    write_history(rows, more, fmt, bool(route or target or outcome or q or failover), out)
    return 0
