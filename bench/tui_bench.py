"""How light is the control panel? Idle CPU, first paint, history page changes.

    python bench/tui_bench.py [--targets 20] [--idle-seconds 20] [--rows 1000000]
                              [--db PATH] [--day-db PATH] [--keep] [--pages 20]
                              [--skip-history] [--skip-target-view]

Targets (issues 5 and 12): idle CPU of the TUI process < 3% of one core with 20
targets at a 1 s refresh; first paint < 1.5 s; history page change < 100 ms with
1,000,000 rows in the log; the per-target view's 24 h charts from 1,000,000 rows
(all within the last 24 h) open in < 300 ms.

1. Idle CPU and first paint. Fake vendors and a real gateway with N targets run
   as their own processes, with light synthetic traffic from this one so every
   state event carries changes. `patchbay tui` runs as its own process on a
   200x50 pseudo-terminal, exactly as an operator would start it. First paint =
   from spawn until the terminal receives a rendered tile (a state word); idle
   CPU = the TUI process's own utime+stime over --idle-seconds with no key
   pressed, after a 3 s settle.
2. History paging. A 1,000,000-request log is built with the store's own insert
   path (bench/store_queries.py), `patchbay serve` serves it, and the TUI (headless,
   in this process) pages forward and back: each figure is from the key event to
   the new page in the table, end to end (HTTP, SQLite, JSON, widget).
3. Per-target view. A second log holds 1,000,000 requests all in the last 24 h
   (about 240,000 per target); the TUI (headless, in this process) switches the
   view between its 1 h and 24 h windows: each figure is from the key to the
   charts painted.

Bounded: fixed durations and page counts; everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Procs,
    cpu_seconds,
    free_port,
    machine_line,
    python_env,
    start_mock,
    start_patchbay,
    wait_http,
)

TOKEN = "bench-admin-token"


class BgLoop:
    """An asyncio loop in a thread: the synthetic traffic runs here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def gateway_config(mock_url: str, workdir: Path, n_targets: int, db: str | None,
                   port: int, admin_port: int, prober: bool, named: bool = False) -> dict[str, Any]:
    dialects = [("openai", "openai", f"{mock_url}/openai/v1"),
                ("deepseek", "openai", f"{mock_url}/deepseek/v1"),
                ("anthropic", "anthropic", f"{mock_url}/anthropic"),
                ("gemini", "gemini", f"{mock_url}/gemini")]
    targets = []
    for i in range(n_targets):
        vendor = dialects[i % len(dialects)][0]
        targets.append({"vendor": vendor, "model": f"model-{i:02d}"})
    if named:       # the targets of bench/store_queries.py's log, so the per-target view finds their rows
        from bench.store_queries import TARGETS
        targets = [{"vendor": t.split("/")[0], "model": t.split("/", 1)[1]} for t in TARGETS[:4]]
    routes = [{"name": f"route-{r}", "targets": targets[r * 5:(r + 1) * 5]}
              for r in range((n_targets + 4) // 5)]
    return {
        "server": {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}",
                   "admin_token_env": "PATCHBAY_BENCH_ADMIN_TOKEN"},
        "store": {"path": db or str(workdir / "patchbay.db")},
        "prober": {"enabled": prober, "interval": 15},
        "vendors": {name: {"kind": kind, "base_url": url} for name, kind, url in dialects},
        "routes": routes,
    }


def start_stack(procs: Procs, workdir: Path, n_targets: int, db: str | None,
                prober: bool = True, named: bool = False) -> tuple[str, str, list[str]]:
    """Fake vendors and `patchbay serve` as their own processes, as in production."""
    import tomli_w

    mock_port, port, admin_port = free_port(), free_port(), free_port()
    start_mock(procs, mock_port)
    raw = gateway_config(f"http://127.0.0.1:{mock_port}", workdir, n_targets, db, port,
                         admin_port, prober, named)
    cfg = workdir / "patchbay.toml"
    cfg.write_bytes(tomli_w.dumps(raw).encode())
    env = {**python_env(), "PATCHBAY_BENCH_ADMIN_TOKEN": TOKEN}
    start_patchbay(procs, cfg, port, env=env)
    wait_http(f"http://127.0.0.1:{admin_port}/admin/state")
    return (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}",
            [r["name"] for r in raw["routes"]])


async def traffic(gw_url: str, routes: list[str], rps: float, stop: asyncio.Event) -> int:
    """A few requests per second so tiles and sparklines change every state event."""
    import aiohttp
    sent = 0
    body = {"messages": [{"role": "user", "content": "bench"}]}
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            route = routes[sent % len(routes)]
            try:
                async with s.post(f"{gw_url}/v1/chat/completions",
                                  json={**body, "model": route}) as r:
                    await r.read()
            except aiohttp.ClientError:
                pass
            sent += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0 / rps)
            except TimeoutError:
                pass
    return sent


# ------------------------------------------------------------------ part 1: idle CPU, first paint


def spawn_tui(admin_url: str, cols: int = 200, rows: int = 50) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "PATCHBAY_ADMIN_TOKEN": TOKEN, "TERM": "xterm-256color",
           "COLUMNS": str(cols), "LINES": str(rows), "PYTHONPATH": str(ROOT)}
    code = ("import sys; from tui.app import run_tui; "
            f"sys.exit(run_tui({admin_url!r}, None, False, 1.0))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    return proc, master


class PtyReader(threading.Thread):
    """Drains the TUI's terminal output (a full pty would block it) and notes first paint."""

    def __init__(self, fd: int, needles: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.fd, self.needles = fd, needles
        self.t_first_byte: float | None = None
        self.t_paint: float | None = None
        self.bytes = 0
        self._tail = b""
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if not r:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.perf_counter()
            self.bytes += len(chunk)
            if self.t_first_byte is None:
                self.t_first_byte = now
            if self.t_paint is None:
                hay = self._tail + chunk
                if any(n in hay for n in self.needles):
                    self.t_paint = now
                self._tail = hay[-64:]


def bench_idle(n_targets: int, idle_seconds: float) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="pb-tui-bench-"))
    try:
        return _bench_idle(workdir, n_targets, idle_seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench_idle(workdir: Path, n_targets: int, idle_seconds: float) -> dict[str, float]:
    with Procs(workdir) as procs:
        gw_url, admin_url, routes = start_stack(procs, workdir, n_targets, None)
        bg = BgLoop()
        stop = asyncio.Event()
        fut = asyncio.run_coroutine_threadsafe(traffic(gw_url, routes, 5.0, stop), bg.loop)
        proc = master = reader = None
        try:
            t0 = time.perf_counter()
            proc, master = spawn_tui(admin_url)
            reader = PtyReader(master, [b"HEALTHY", b"DEGRADED", b"THROTTLED"])
            reader.start()
            deadline = time.perf_counter() + 30
            while reader.t_paint is None and time.perf_counter() < deadline and proc.poll() is None:
                time.sleep(0.01)
            if reader.t_paint is None:
                raise RuntimeError("the TUI never painted a tile within 30 s")
            first_paint = reader.t_paint - t0
            first_byte = (reader.t_first_byte or reader.t_paint) - t0
            time.sleep(3.0)                             # settle: first layout, SSE open
            c0, w0, b0 = cpu_seconds(proc.pid), time.perf_counter(), reader.bytes
            time.sleep(idle_seconds)
            c1, w1, b1 = cpu_seconds(proc.pid), time.perf_counter(), reader.bytes
            return {"first_byte_s": first_byte, "first_paint_s": first_paint,
                    "idle_cpu_pct": 100.0 * (c1 - c0) / (w1 - w0),
                    "terminal_bytes_per_s": (b1 - b0) / (w1 - w0)}
        finally:
            if proc is not None and master is not None:
                try:
                    os.write(master, b"q")
                    proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(5)
            if reader is not None:
                reader.stop_flag = True
                reader.join(2)
            if master is not None:
                os.close(master)
            bg.loop.call_soon_threadsafe(stop.set)
            fut.result(10)
            bg.close()


# ------------------------------------------------------------------ part 2: history paging


async def drive_history(admin_url: str, pages: int) -> dict[str, list[float]]:
    from textual import events

    from tui.app import PatchbayApp
    from tui.screens.history import HistoryScreen

    app = PatchbayApp(admin_url, TOKEN, refresh=1.0)
    out: dict[str, list[float]] = {"next": [], "prev": [], "first": [], "filter": [],
                                   "fetch": [], "fill": []}

    async with app.run_test(size=(200, 50)) as pilot:
        async def until(cond, limit: float = 30.0) -> None:
            end = time.perf_counter() + limit
            while not cond():
                if time.perf_counter() > end:
                    raise RuntimeError("history did not answer within 30 s")
                await asyncio.sleep(0.001)

        def key(k: str) -> None:
            # As the terminal driver delivers a key: no Pilot bookkeeping in the figure.
            app.post_message(events.Key(k, k if len(k) == 1 else None))

        await until(lambda: app.connected)
        t = time.perf_counter()
        key("h")
        await until(lambda: isinstance(app.screen, HistoryScreen) and app.screen.pages_loaded >= 1)
        out["first"].append((time.perf_counter() - t) * 1000)
        hist = app.screen
        for i in range(pages):
            n = hist.pages_loaded
            t = time.perf_counter()
            key("n")
            await until(lambda: hist.pages_loaded > n)
            out["next"].append((time.perf_counter() - t) * 1000)
            out["fetch"].append(hist.last_fetch_ms)
            out["fill"].append(hist.last_fill_ms)
        for i in range(pages):
            n = hist.pages_loaded
            t = time.perf_counter()
            key("b")
            await until(lambda: hist.pages_loaded > n)
            out["prev"].append((time.perf_counter() - t) * 1000)
            out["fetch"].append(hist.last_fetch_ms)
            out["fill"].append(hist.last_fill_ms)
        from tui.client import HistoryFilters
        for target in ("openai/gpt-4.1", "gemini/gemini-2.0-flash", "vllm/local-mixtral"):
            n = hist.pages_loaded
            t = time.perf_counter()
            hist.set_filters(HistoryFilters(target=target))
            await until(lambda: hist.pages_loaded > n)
            out["filter"].append((time.perf_counter() - t) * 1000)
        await pilot.press("escape", "q")
    return out


def bench_history(rows: int, db: str | None, keep: bool, pages: int) -> dict[str, Any]:
    from bench.store_queries import build

    path = db or os.path.join(tempfile.mkdtemp(prefix="pb-tui-hist-"), "history.db")
    built = None
    if not (os.path.exists(path) and keep):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        print(f"building a {rows:,}-request log at {path} …", flush=True)
        built = build(path, rows)
    workdir = Path(tempfile.mkdtemp(prefix="pb-tui-hist-gw-"))
    try:
        with Procs(workdir) as procs:
            _, admin_url, _ = start_stack(procs, workdir, 4, path, prober=False)
            times = asyncio.run(drive_history(admin_url, pages))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not keep and db is None:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return {"built_s": built, "times": times}


# ------------------------------------------------------------------ part 3: the per-target view


async def drive_target_view(admin_url: str, target: str, repeat: int) -> dict[str, list[float]]:
    """Key press to 24 h charts painted in the per-target view, and the admin API's share of it."""
    import httpx
    from textual import events

    from tui.app import PatchbayApp
    from tui.screens.target import TargetScreen

    out: dict[str, list[float]] = {"open_24h": [], "api_24h": [], "fetch": [], "paint": []}
    async with httpx.AsyncClient(base_url=admin_url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=30) as hc:
        for _ in range(repeat):
            t = time.perf_counter()
            r = await hc.get(f"/admin/targets/{target.replace('/', '%2F')}", params={"window": "24h"})
            r.raise_for_status()
            out["api_24h"].append((time.perf_counter() - t) * 1000)
    app = PatchbayApp(admin_url, TOKEN, refresh=1.0)
    async with app.run_test(size=(200, 50)) as pilot:
        async def until(cond, limit: float = 30.0) -> None:
            end = time.perf_counter() + limit
            while not cond():
                if time.perf_counter() > end:
                    raise RuntimeError("the target view did not answer within 30 s")
                await asyncio.sleep(0.001)

        def key(k: str) -> None:
            app.post_message(events.Key(k, k))

        await until(lambda: app.connected)
        app.open_target(target)
        await until(lambda: isinstance(app.screen, TargetScreen) and app.screen.loads >= 1)
        view = app.screen
        for _ in range(repeat):
            for k, window in (("2", "1h"), ("3", "24h")):
                n = view.loads
                t = time.perf_counter()
                key(k)
                await until(lambda: view.loads > n)
                if window == "24h":
                    out["open_24h"].append((time.perf_counter() - t) * 1000)
                    out["fetch"].append(view.last_fetch_ms)
                    out["paint"].append(view.last_paint_ms)
        await pilot.press("escape", "q")
    return out


def bench_target_view(rows: int, db: str | None, keep: bool, repeat: int) -> dict[str, Any]:
    """A log of `rows` requests all within the last 24 hours (the per-target view's worst case)."""
    from bench.store_queries import TARGETS, ensure_log_days

    path = db or os.path.join(tempfile.mkdtemp(prefix="pb-tui-day-"), "day.db")
    print(f"building (or reusing) a {rows:,}-request log over the last 24 h at {path} …", flush=True)
    built = ensure_log_days(path, rows, days=1.0)
    workdir = Path(tempfile.mkdtemp(prefix="pb-tui-day-gw-"))
    try:
        with Procs(workdir) as procs:
            _, admin_url, _ = start_stack(procs, workdir, 4, path, prober=False, named=True)
            times = asyncio.run(drive_target_view(admin_url, TARGETS[0], repeat))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not keep and db is None:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return {"built_s": built, "times": times}


def _stats(ms: list[float]) -> str:
    if not ms:
        return "–"
    s = sorted(ms)
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return (f"median {statistics.median(s):6.1f} ms   p95 {p95:6.1f} ms   "
            f"max {s[-1]:6.1f} ms   (n={len(s)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", help="history database to build or reuse (with --keep)")
    ap.add_argument("--keep", action="store_true", help="keep/reuse the history database")
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--skip-history", action="store_true")
    ap.add_argument("--day-db", help="24-hour log for the per-target view to build or reuse (with --keep)")
    ap.add_argument("--skip-target-view", action="store_true")
    args = ap.parse_args()

    print(machine_line())
    idle = bench_idle(args.targets, args.idle_seconds)
    print(f"\nTUI process, {args.targets} targets, 1 s refresh, 200x50 pty, no keys pressed "
          f"(gateway and fake vendors in their own processes, 5 req/s of traffic):")
    print(f"  first output         {idle['first_byte_s'] * 1000:7.0f} ms after spawn")
    print(f"  first paint (tiles)  {idle['first_paint_s'] * 1000:7.0f} ms after spawn   "
          f"(target < 1500 ms)")
    print(f"  idle CPU             {idle['idle_cpu_pct']:7.2f} % of one core over "
          f"{args.idle_seconds:g} s   (target < 3 %)")
    print(f"  terminal output      {idle['terminal_bytes_per_s'] / 1024:7.1f} KiB/s")
    if not args.skip_history:
        hist = bench_history(args.rows, args.db, args.keep, args.pages)
        if hist["built_s"] is not None:
            print(f"\nbuilt {args.rows:,} requests in {hist['built_s']:.0f} s")
        t = hist["times"]
        print(f"\nHistory view on {args.rows:,} requests (key press to new page on screen, "
              f"50 rows/page, target < 100 ms):")
        print(f"  open history         {_stats(t['first'])}")
        print(f"  next page (n)        {_stats(t['next'])}")
        print(f"  previous page (b)    {_stats(t['prev'])}")
        print(f"  new target filter    {_stats(t['filter'])}")
        print(f"  of which admin API   {_stats(t['fetch'])}   (HTTP + SQLite + JSON)")
        print(f"  of which table fill  {_stats(t['fill'])}")
    if not args.skip_target_view:
        tv = bench_target_view(args.rows, args.day_db, args.keep, 5)
        if tv["built_s"] is not None:
            print(f"\nbuilt {args.rows:,} requests over 24 h in {tv['built_s']:.0f} s")
        t = tv["times"]
        print(f"\nPer-target view, 24 h charts of a target with ~1/4 of {args.rows:,} requests in the last "
              f"24 h (key press to charts painted, target < 300 ms):")
        print(f"  open 24 h window     {_stats(t['open_24h'])}")
        print(f"  of which fetch       {_stats(t['fetch'])}   (the TUI's own request: HTTP + SQLite roll-ups + JSON)")
        print(f"  of which paint       {_stats(t['paint'])}")
        print(f"  admin API alone      {_stats(t['api_24h'])}   (measured separately, before)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
