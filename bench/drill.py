"""The issue-4 drill target, measured: hard-fail the top target under 50 requests/s.

    python bench/drill.py [--rps 50] [--duration 10] [--cooldown 5] [--interval 2] [--live 10]

Starts the fake vendors and a real gateway (prober on, route chat =
openai/gpt-4.1 > deepseek/deepseek-chat > anthropic/claude-sonnet-4-20250514),
sends a steady unmarked "live" load the whole time, then runs a drill through
the admin API: `error:503` on openai/gpt-4.1 for --duration seconds with --rps
synthetic requests per second. It prints the drill report and checks it
against the targets:

- zero client-visible errors (every request answered, failed attempts hidden)
- breaker open within 1 s of the fault starting
- traffic back on the target within cooldown + 1 probe interval after the drill ends

Bounded: the load stops after the drill's recovery is settled or after
duration + cooldown + 3 probe intervals + 10 s, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from gateway.app import Gateway  # noqa: E402
from gateway.config_load import parse_config  # noqa: E402
from gateway.mock.server import start_mock  # noqa: E402
from store.history import History  # noqa: E402

TOKEN = "bench-drill-token"
TARGET = "openai/gpt-4.1"


def config(mock_url: str, tmp: str, args: argparse.Namespace) -> dict:
    return {
        "server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
        "store": {"path": os.path.join(tmp, "patchbay.db")},
        "breaker": {"failures_to_open": 3, "cooldown": args.cooldown},
        "prober": {"enabled": True, "interval": args.interval, "mode": "models"},
        "vendors": {
            "openai": {"kind": "openai", "base_url": f"{mock_url}/openai/v1"},
            "deepseek": {"kind": "openai", "base_url": f"{mock_url}/deepseek/v1"},
            "anthropic": {"kind": "anthropic", "base_url": f"{mock_url}/anthropic"},
        },
        "routes": [{"name": "chat", "targets": [{"vendor": "openai", "model": "gpt-4.1"},
                                                {"vendor": "deepseek", "model": "deepseek-chat"},
                                                {"vendor": "anthropic", "model": "claude-sonnet-4-20250514"}]}],
    }


async def live_load(url: str, rps: float, stop: asyncio.Event, results: list) -> None:
    """Unmarked client traffic at a fixed rate: (sent_at epoch, status, target)."""
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=200)) as c:
        async def one() -> None:
            ts = time.time()
            try:
                r = await c.post("/v1/chat/completions", json={"model": "chat", "messages": [
                    {"role": "user", "content": "live"}], "max_tokens": 8})
                results.append((ts, r.status_code, r.headers.get("x-patchbay-target")))
            except httpx.HTTPError as e:
                results.append((ts, 0, type(e).__name__))

        tasks: set[asyncio.Task] = set()
        t0 = time.monotonic()
        i = 0
        while not stop.is_set():
            delay = t0 + i / rps - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            i += 1
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks), timeout=30)


async def run(args: argparse.Namespace) -> int:
    tmp = tempfile.mkdtemp(prefix="patchbay-drill-bench-")
    mock = await start_mock()
    env = {"PATCHBAY_ADMIN_TOKEN": TOKEN}
    cfg = parse_config(config(mock.url, tmp, args), os.path.join(tmp, "patchbay.toml"), env)
    gw = Gateway(cfg, env=env)
    await gw.start()
    stop = asyncio.Event()
    live: list = []
    load = asyncio.create_task(live_load(gw.url, args.live, stop, live)) if args.live > 0 else None
    try:
        await asyncio.sleep(3.0)      # a baseline minute (well, 3 s) for the added-latency figure
        async with httpx.AsyncClient(base_url=gw.admin_url, headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=30) as admin:
            r = await admin.post("/admin/drills", json={"target": TARGET, "fault": "error:503",
                                                        "duration": args.duration, "traffic": args.rps})
            r.raise_for_status()
            did = r.json()["id"]
            print(f"drill {did}: error:503 on {TARGET} for {args.duration:g}s, {args.rps:g} synthetic rps, "
                  f"{args.live:g} live rps; breaker failures_to_open=3 cooldown={args.cooldown:g}s, "
                  f"probe interval {args.interval:g}s")
            limit = time.monotonic() + args.duration + args.cooldown + 3 * args.interval + 10
            d = {}
            while time.monotonic() < limit:
                await asyncio.sleep(0.25)
                d = (await admin.get(f"/admin/drills/{did}")).json()
                if d["state"] != "running" and d["report"] and d["report"].get("recovery") != "watching":
                    break
            await asyncio.sleep(0.5)      # some live traffic after recovery
        stop.set()
        if load is not None:
            await load
        await asyncio.to_thread(gw.store.flush, 10.0)
        rep = d.get("report") or {}
        with History(cfg.store.path) as h:
            rows, cursor = [], None
            while True:
                page, cursor = h.list_requests(drill_id=did, limit=1000, cursor=cursor)
                rows += page
                if not cursor:
                    break
    finally:
        stop.set()
        await gw.stop()
        await mock.stop()

    ended = d.get("ended") or time.time()
    failed_per_request = Counter(max(0, (x["attempts"] or 0) - 1) for x in rows)
    live_errors = [x for x in live if x[1] != 200]
    back = sorted(ts for ts, status, target in live if status == 200 and target == TARGET and ts >= ended)
    live_back_s = round(back[0] - ended, 3) if back else None

    print()
    from tui.ops import format_report
    print(format_report(d))
    print("  failed attempts per drill request: "
          + ", ".join(f"{k} failed: {v} request(s)" for k, v in sorted(failed_per_request.items())))
    print(f"  live requests: {len(live)} sent, {len(live) - len(live_errors)} answered, {len(live_errors)} errors; "
          (f"first live answer from {TARGET} {live_back_s}s after the drill ended" if live_back_s is not None
           else f"no live answer from {TARGET} after the drill ended"))

    budget = args.cooldown + args.interval
    checks = [
        ("zero client-visible errors", rep.get("client_visible_errors") == 0 and not live_errors
         and rep.get("fallback_responses", 0) == 0,
         f"{rep.get('client_visible_errors')} drill + {len(live_errors)} live"),
        ("breaker open within 1 s", rep.get("breaker_open_s") is not None and rep["breaker_open_s"] <= 1.0,
         f"{rep.get('breaker_open_s')}s"),
        (f"back on target within cooldown + 1 probe interval ({budget:g}s)",
         rep.get("time_back_to_normal_s") is not None and rep["time_back_to_normal_s"] <= budget
         and (live_back_s is None or live_back_s <= budget),
         f"report {rep.get('time_back_to_normal_s')}s, live traffic {live_back_s}s"),
    ]
    print()
    for name, ok, figure in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {figure}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in checks) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rps", type=float, default=50.0, help="synthetic drill traffic, requests/s")
    ap.add_argument("--live", type=float, default=10.0, help="unmarked live traffic throughout, requests/s")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--cooldown", type=float, default=5.0, help="breaker cooldown (DESIGN default 15)")
    ap.add_argument("--interval", type=float, default=2.0, help="probe interval (DESIGN default 15)")
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
