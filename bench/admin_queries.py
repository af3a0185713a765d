"""Admin API latency with 1,000,000 rows in `requests` (issue 4 target: < 50 ms each).

    python bench/admin_queries.py [--rows 1000000] [--db PATH] [--keep] [--repeat 20]

Builds the log with bench/store_queries.py's generator (the store's own insert
path), starts a real gateway on that file with fake vendors, fills every
target's health window to its cap (the worst case for `/admin/state`), then
times requests through the real admin API over HTTP (httpx, loopback):
`GET /admin/state`, history pages (first, filtered, deep keyset cursors, free
text, time windows) and a request detail. Prints median / p95 / max per query.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
from store_queries import ensure_log  # noqa: E402

from gateway.app import Gateway  # noqa: E402
from gateway.config_load import parse_config  # noqa: E402
from gateway.mock.server import start_mock, vendor_configs  # noqa: E402
from store.history_sql import encode_cursor  # noqa: E402

TOKEN = "bench-admin-token"
TARGET_MS = 50.0


def config(mock_url: str, db: str) -> dict:
    return {
        "server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
        "store": {"path": db},
        "prober": {"enabled": False},
        "vendors": vendor_configs(mock_url),
        "routes": [
            {"name": "chat", "targets": [{"vendor": "openai", "model": "gpt-4.1"},
                                         {"vendor": "anthropic", "model": "claude-sonnet-4-20250514"},
                                         {"vendor": "deepseek", "model": "deepseek-chat"},
                                         {"vendor": "gemini", "model": "gemini-2.0-flash"}]},
            {"name": "chat-fast", "targets": [{"vendor": "openai", "model": "gpt-4.1-mini"},
                                              {"vendor": "gemini", "model": "gemini-2.0-flash"}]},
        ],
        "prices": {"openai/gpt-4.1": {"input": 2.0, "output": 8.0}},
    }


def fill_health(gw: Gateway, now: float, per_second: int = 60) -> int:
    """Every target's health window full: one bucket per second for 5 minutes, wide latency spread."""
    import random
    from unittest import mock

    from gateway.routing.health import WINDOW_S
    from gateway.vendors.base import ErrorClass

    rnd = random.Random(7)
    total = 0
    for t in gw.runtime.targets.values():
        for sec in range(int(now - WINDOW_S) + 1, int(now) + 1):
            with mock.patch("gateway.routing.health.time.time", return_value=sec + 0.5):
                for i in range(per_second):
                    ok = rnd.random() > 0.02
                    lat = rnd.lognormvariate(6.2, 0.9)
                    t.health.observe(ok, lat, None if ok else "server 503",
                                     None if ok else ErrorClass.SERVER, cost=0.001, probe=i == 0)
                    if ok and i:
                        t.health.answered(lat, lat * 0.4 if i % 2 else None)
                    total += 1
    return total


async def timed(client: httpx.AsyncClient, path: str, params: dict | None, repeat: int) -> tuple[list[float], dict]:
    times = []
    body: dict = {}
    for _ in range(repeat):
        t = time.perf_counter()
        r = await client.get(path, params=params)
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        body = r.json()
    return times, body


async def run(args: argparse.Namespace, path: str) -> int:
    with sqlite3.connect(path) as c:
        newest = c.execute("SELECT ts FROM requests ORDER BY ts DESC LIMIT 1").fetchone()[0]
        n = c.execute("SELECT count(*) FROM requests").fetchone()[0]
        mid = c.execute("SELECT ts, id FROM requests ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?", (n // 2,)).fetchone()
        deep = c.execute("SELECT ts, id FROM requests ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?",
                         (max(0, n - 100),)).fetchone()
        some = c.execute("SELECT id FROM requests WHERE outcome = 'fallback' ORDER BY ts DESC LIMIT 1 OFFSET 77"
                         ).fetchone()[0]
    mock = await start_mock()
    env = {"PATCHBAY_ADMIN_TOKEN": TOKEN}
    tmp = tempfile.mkdtemp(prefix="patchbay-admin-bench-")
    cfg = parse_config(config(mock.url, path), os.path.join(tmp, "patchbay.toml"), env)
    gw = Gateway(cfg, env=env, with_prober=False)
    await gw.start()
    try:
        # live figures: some real traffic, then every health window filled to its cap
        async with httpx.AsyncClient(base_url=gw.url) as data:
            for _ in range(200):
                await data.post("/v1/chat/completions", json={"model": "chat", "messages": [
                    {"role": "user", "content": "hi"}]})
        now = time.time()
        obs = fill_health(gw, now)
        print(f"gateway on {n:,} logged requests; {len(gw.runtime.targets)} targets with {obs:,} health "
              f"observations spread over their 5-minute windows")

        cases = [
            ("GET /admin/state", "/admin/state", None),
            ("requests: first page (50)", "/admin/requests", {"limit": 50}),
            ("requests: page at row 500,000 (cursor)", "/admin/requests", {"limit": 50, "cursor": encode_cursor(*mid)}),
            ("requests: page at row ~1,000,000 (cursor)", "/admin/requests",
             {"limit": 50, "cursor": encode_cursor(*deep)}),
            ("requests: route=chat-fast", "/admin/requests", {"route": "chat-fast"}),
            ("requests: route=batch (1%)", "/admin/requests", {"route": "batch"}),
            ("requests: target=gemini/gemini-2.0-flash", "/admin/requests", {"target": "gemini/gemini-2.0-flash"}),
            ("requests: outcome=error (2%)", "/admin/requests", {"outcome": "error"}),
            ("requests: outcome=error,cut,fallback", "/admin/requests", {"outcome": "error,cut,fallback"}),
            ("requests: route=batch & outcome=cut", "/admin/requests", {"route": "batch", "outcome": "cut"}),
            ("requests: since=1h", "/admin/requests", {"since": "1h"}),
            ("requests: 1-hour window 15 days ago", "/admin/requests",
             {"since": newest - 15 * 86400, "until": newest - 15 * 86400 + 3600}),
            ("requests: q=refused (error text)", "/admin/requests", {"q": "refused"}),
            ("requests: q=503", "/admin/requests", {"q": "503"}),
            ("requests: q=claude (target name)", "/admin/requests", {"q": "claude"}),
            ("requests: limit=1000", "/admin/requests", {"limit": 1000}),
            ("request detail (attempts + events)", f"/admin/requests/{some}", None),
        ]
        rows = []
        async with httpx.AsyncClient(base_url=gw.admin_url, headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=30) as admin:
            for name, p, params in cases:
                times, body = await timed(admin, p, params, args.repeat)
                if "requests" in body:
                    info = f"{len(body['requests'])} rows" + (" +more" if body.get("next_cursor") else "")
                elif "targets" in body:
                    info = f"{len(body['targets'])} targets, {len(body['routes'])} routes"
                else:
                    info = f"{len(body.get('attempts', []))} attempts"
                s = sorted(times)
                rows.append((name, times[0], statistics.median(s), s[int(0.95 * (len(s) - 1))], s[-1], info))
        w = max(len(r[0]) for r in rows)
        print(f"\n{'query'.ljust(w)}  {'first':>8}  {'median':>8}  {'p95':>8}  {'max':>8}  result")
        for name, first, med, p95, worst, info in rows:
            flag = "" if p95 < TARGET_MS else "  <-- over target"
            print(f"{name.ljust(w)}  {first:7.1f}ms  {med:7.1f}ms  {p95:7.1f}ms  {worst:7.1f}ms  {info}{flag}")
        over = [r for r in rows if r[3] >= TARGET_MS]
        print(f"\n{len(rows) - len(over)}/{len(rows)} queries under {TARGET_MS:.0f} ms at p95 "
              f"({args.repeat} runs each, over HTTP through the admin API)")
        return 0 if not over else 1
    finally:
        await gw.stop()
        await mock.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", help="database file (default: a temporary file, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep (and on later runs reuse) --db")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    tmpdir = None
    path = args.db
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="patchbay-bench-")
        path = os.path.join(tmpdir, "bench.db")
    secs = ensure_log(path, args.rows)
    print(f"built {args.rows:,} requests in {secs:.1f}s" if secs is not None
          else f"reusing {path} ({args.rows:,} requests)")
    try:
        return asyncio.run(run(args, path))
    finally:
        if tmpdir and not args.keep:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
