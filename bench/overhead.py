"""What Patchbay costs in latency and throughput, direct vs through the gateway.

Starts the fake vendors and `patchbay serve` (request logging on) as separate
processes on 127.0.0.1, drives them with a bounded load (wrk when on PATH,
else a built-in aiohttp load generator in its own process) and prints
requests/s and p50/p99 latency direct vs through Patchbay, the added latency,
and the extra cost of a route whose first target's breaker is open.

    python bench/overhead.py [--seconds 5] [--concurrency 1 32] [--loadgen auto|wrk|python]

Every run is bounded by --seconds per measurement; every process started is
stopped by PID at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BODY, ROOT, free_port, run_py, run_wrk, wait_http  # noqa: E402  (shared bench helpers)


# ----------------------------------------------------------------------- setup

CONFIG = """
[server]
listen = "127.0.0.1:{gw_port}"
admin_listen = "127.0.0.1:{admin_port}"

[store]
path = "{db}"

[prober]
enabled = false

[breaker]
failures_to_open = 3
cooldown = 3600

[retry]
max_attempts_per_target = 1

[vendors.fast]
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/openai/v1"

[vendors.dead]
kind = "openai"
base_url = "http://127.0.0.1:{dead_port}/v1"

[[routes]]
name = "chat"
targets = [{{ vendor = "fast", model = "gpt-4.1" }}]

[[routes]]
name = "open-first"
targets = [{{ vendor = "dead", model = "gone" }}, {{ vendor = "fast", model = "gpt-4.1-mini" }}]
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement (bounded)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    args = ap.parse_args()
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    load = run_wrk if use_wrk else run_py

    tmp = Path(tempfile.mkdtemp(prefix="patchbay-bench-"))
    mock_port, gw_port, admin_port, dead_port = free_port(), free_port(), free_port(), free_port()
    cfg = tmp / "patchbay.toml"
    cfg.write_text(CONFIG.format(gw_port=gw_port, admin_port=admin_port, mock_port=mock_port, dead_port=dead_port,
                                 db=tmp / "bench.db"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PATCHBAY_CLIENT_KEYS", None)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "gateway.mock", "--port", str(mock_port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "-c", str(cfg),
                                       "--log-level", "error"], env=env, stdout=subprocess.DEVNULL))
        direct = f"http://127.0.0.1:{mock_port}/openai/v1/chat/completions"
        via = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        wait_http(f"http://127.0.0.1:{mock_port}/_mock/stats")
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        print(f"# Patchbay overhead benchmark — {time.strftime('%Y-%m-%d %H:%M')} — {os.cpu_count()} cores — "
              f"load generator: {'wrk' if use_wrk else 'python/aiohttp'} — {args.seconds:g}s per run — "
              "request logging on (SQLite)")
        # warm up both paths (connection pools, JIT-free but caches)
        load(direct, BODY.replace("MODEL", "gpt-4.1"), 4, 1)
        load(via, BODY.replace("MODEL", "chat"), 4, 1)
        rows = []
        for c in args.concurrency:
            d = load(direct, BODY.replace("MODEL", "gpt-4.1"), c, args.seconds)
            p = load(via, BODY.replace("MODEL", "chat"), c, args.seconds)
            rows.append((c, d, p))
        print()
        print(f"{'conc':>4} | {'direct req/s':>12} {'p50 ms':>8} {'p99 ms':>8} | {'patchbay req/s':>14} "
              f"{'p50 ms':>8} {'p99 ms':>8} | {'added p50':>9} {'added p99':>9} | errors")
        for c, d, p in rows:
            print(f"{c:>4} | {d['rps']:>12.0f} {d['p50']:>8.3f} {d['p99']:>8.3f} | {p['rps']:>14.0f} "
                  f"{p['p50']:>8.3f} {p['p99']:>8.3f} | {p['p50'] - d['p50']:>9.3f} {p['p99'] - d['p99']:>9.3f} | "
                  f"{d['errors']}/{p['errors']}")

        # Breaker-open cost: open the dead target's breaker, then compare its route with the plain one.
        import httpx
        for _ in range(3):
            httpx.post(via, content=BODY.replace("MODEL", "open-first"), headers={"content-type": "application/json"},
                       timeout=10)
        plain = load(via, BODY.replace("MODEL", "chat"), 1, args.seconds)
        skip = load(via, BODY.replace("MODEL", "open-first"), 1, args.seconds)
        print()
        print(f"breaker open on the first target (concurrency 1): p50 {skip['p50']:.3f} ms vs {plain['p50']:.3f} ms "
              f"on a one-target route -> extra {skip['p50'] - plain['p50']:+.3f} ms per request "
              f"(errors {skip['errors']})")
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for pr in procs:
            try:
                pr.wait(15)
            except subprocess.TimeoutExpired:
                pr.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
