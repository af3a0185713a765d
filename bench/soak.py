"""Bounded soak: steady traffic through Patchbay while random faults hit random targets.

Not part of CI (it runs for --minutes, default 10). Starts the fake vendors
and one `patchbay serve` process (request log, prober and admin API on) with a
four-target route across every vendor kind (OpenAI, Anthropic, DeepSeek,
Gemini; the Anthropic and Gemini targets take mid-stream continuations), then
runs a paced mix of streaming and non-streaming requests while, every few
seconds, a random fault (errors, throttling, resets, hangs, slow first token,
stream cuts, stalls, malformed events, missing [DONE], flapping) is switched
on for a random target over the mock's control API, and switched off a few
seconds later.

The scheduler never lets every target be faulted: a target counts as unhealthy
from the moment its fault starts until the gateway's breaker cooldown after it
ends, and a new fault only goes where at least one target -- and at least one
continuation (prefill) target other than a faulted one -- stays healthy. So
the contract says clients must see zero errors.

Prints: client-visible errors (target 0), gateway RSS after warm-up and its
growth (target <= 10%), open file descriptors over time (stable), request log
rows vs requests sent, the store's state, and a per-minute table.

    python bench/soak.py [--minutes 10] [--rate 40] [--seed N]

Every loop is bounded by --minutes; every process is stopped by process group
at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    LoadSpec,
    Procs,
    RssSampler,
    chat_body,
    collect_load,
    fd_count,
    free_port,
    machine_line,
    mock_clear,
    mock_fault,
    python_env,
    run_load,
    start_mock,
    start_patchbay,
)

COOLDOWN = 15.0

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"

[store]
path = "{db}"

[timeouts]
connect = 2
first_byte = 3
idle = 3
total = 30

[retry]
max_attempts_per_target = 2
backoff_base = 0.1
backoff_max = 1.0
retry_after_max = 2

[breaker]
failures_to_open = 3
cooldown = {cooldown}

[prober]
interval = 5

[vendors.openai]
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/openai/v1"

[vendors.anthropic]
kind = "anthropic"
base_url = "http://127.0.0.1:{mock_port}/anthropic"

[vendors.deepseek]
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/deepseek/v1"

[vendors.gemini]
kind = "gemini"
base_url = "http://127.0.0.1:{mock_port}/gemini"

[[routes]]
name = "chat"
targets = [
  {{ vendor = "openai", model = "gpt-4.1" }},
  {{ vendor = "anthropic", model = "claude-sonnet-4-20250514", prefill = true }},
  {{ vendor = "deepseek", model = "deepseek-chat" }},
  {{ vendor = "gemini", model = "gemini-2.0-flash", prefill = true }},
]
"""


@dataclass(frozen=True)
class Target:
    dialect: str
    model: str
    prefill: bool

    @property
    def id(self) -> str:
        return f"{self.dialect}/{self.model}"


TARGETS = [Target("openai", "gpt-4.1", False), Target("anthropic", "claude-sonnet-4-20250514", True),
           Target("deepseek", "deepseek-chat", False), Target("gemini", "gemini-2.0-flash", True)]


def random_fault(rng: random.Random) -> dict:
    """One fault spec for the mock's control API (every kind the failover contract fails over on)."""
    kind = rng.choice(["error503", "error500", "error429", "error529", "reset", "hang", "slow_first_token",
                       "latency", "cut", "stall", "malformed", "no_done", "error_event", "flap"])
    if kind in ("error503", "error500", "error429", "error529"):
        spec: dict = {"fault": "error", "status": int(kind[5:])}
        if spec["status"] == 429 and rng.random() < 0.5:
            spec["retry_after"] = 1
        return spec
    if kind == "slow_first_token":
        return {"fault": kind, "ms": rng.choice([200, 4000])}   # under and over first_byte (3 s)
    if kind == "latency":
        return {"fault": kind, "ms": rng.choice([100, 500, 1500])}
    if kind in ("cut", "stall", "error_event"):
        return {"fault": kind, "n": rng.randint(1, 8)}
    if kind == "flap":
        return {"fault": kind, "seconds": rng.randint(2, 8)}
    return {"fault": kind}


class Chaos:
    """Switches random faults on random targets every few seconds, never on all of them."""

    def __init__(self, mock_url: str, rng: random.Random, stop_at: float) -> None:
        self.mock_url = mock_url
        self.rng = rng
        self.stop_at = stop_at
        self.fault_end: dict[str, float] = {}       # target id -> when its fault is switched off
        self.unhealthy_until: dict[str, float] = {}  # fault end + breaker cooldown + margin
        self.log: list[tuple[float, float, str]] = []   # (wall time, monotonic, what)
        self.count = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> Chaos:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _allowed(self, now: float) -> list[Target]:
        bad = {t for t, until in self.unhealthy_until.items() if until > now}
        out = []
        for t in TARGETS:
            if t.id in bad:
                continue
            after = bad | {t.id}
            healthy = [x for x in TARGETS if x.id not in after]
            # at least one target healthy, and a continuation target for a stream cut anywhere
            if healthy and any(x.prefill for x in healthy):
                out.append(t)
        return out

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # a broken scheduler must not pass for a quiet soak
            self.errors.append(f"chaos thread died: {type(e).__name__}: {e}")
            raise
        finally:
            for tid in list(self.fault_end):
                self._switch(tid, {"fault": "ok"})
            self.fault_end.clear()

    def _loop(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.stop_at:
            now = time.monotonic()
            for tid, end in list(self.fault_end.items()):
                if end <= now:
                    self._switch(tid, {"fault": "ok"})
                    del self.fault_end[tid]
            choices = self._allowed(now)
            if choices and time.monotonic() < self.stop_at - 5:
                # half the faults hit the target now serving (the first allowed in route order), so most
                # faults meet traffic; the rest hit any allowed target (the fallbacks must be ready too)
                t = choices[0] if self.rng.random() < 0.5 else self.rng.choice(choices)
                spec = random_fault(self.rng)
                dur = spec.get("seconds") or self.rng.uniform(3, 12)
                if self._switch(t.id, spec):
                    self.count += 1
                    self.fault_end[t.id] = now + dur
                    self.unhealthy_until[t.id] = now + dur + COOLDOWN + 3
            self._stop.wait(self.rng.uniform(2, 5))

    def _switch(self, tid: str, spec: dict) -> bool:
        dialect, model = tid.split("/", 1)
        try:
            mock_fault(self.mock_url, dialect=dialect, model=model, scope="chat", **spec)
        except Exception as e:  # the soak goes on; reported at the end
            self.errors.append(f"{tid} {spec}: {e}")
            return False
        desc = spec["fault"] + "".join(f" {k}={v}" for k, v in spec.items() if k != "fault")
        self.log.append((time.time(), time.monotonic(), f"{tid}: {desc}"))
        return True


@dataclass
class _Soak:
    """What one soak run leaves to report on."""

    t0: float
    sampler: RssSampler
    report: dict
    chaos: Chaos
    state: dict
    mock_stats: dict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second (half of them streaming)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before memory is baselined "
                    "(default: 20%% of the run, at least 30 s)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else max(30.0, seconds * 0.2)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)

    tmp = Path(tempfile.mkdtemp(prefix="patchbay-soak-"))
    db = tmp / "soak.db"
    print(f"# Patchbay soak — {machine_line()}", flush=True)
    print(f"# {args.minutes:g} min, {args.rate:g} req/s (half streaming), warm-up {warmup:.0f} s, seed {seed}; route "
          f"chat = {' -> '.join(t.id for t in TARGETS)}", flush=True)
    try:
        run = _soak(tmp, db, seconds, args.rate, rng)
    except KeyboardInterrupt:
        print("interrupted: every process was stopped", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        return 130
    try:
        log = _log_figures(db)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    series = [(t - run.t0, kb / 1024, fds) for t, kb, fds in run.sampler.series]
    _print_minutes(series, run, seconds)
    return _print_summary(run, series, warmup, log)


def _soak(tmp: Path, db: Path, seconds: float, rate: float, rng: random.Random) -> _Soak:
    """Mock vendors, the gateway and the load for `seconds`, with the fault schedule switching faults."""
    admin_token = os.urandom(16).hex()
    with Procs(tmp) as procs:
        mock_port, port, admin_port = free_port(), free_port(), free_port()
        mock = start_mock(procs, mock_port, token_interval_ms=10, tokens=20)
        mock_url = f"http://127.0.0.1:{mock_port}"
        cfg = tmp / "patchbay.toml"
        cfg.write_text(CONFIG.format(port=port, admin_port=admin_port, mock_port=mock_port, db=db,
                                     cooldown=COOLDOWN))
        env = {**python_env(), "PATCHBAY_ADMIN_TOKEN": admin_token}
        gw = start_patchbay(procs, cfg, port, env=env)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        t0 = time.monotonic()
        sampler = RssSampler(gw.pid, interval=1.0).start()
        spec = LoadSpec(url=url, bodies=[(chat_body("chat", stream=True), True), (chat_body("chat"), False)],
                        concurrency=max(16, int(rate * 4)), seconds=seconds, rate=rate, timeout=60,
                        timeline=True)
        pops = run_load(spec, processes=1, wait=False)
        chaos = Chaos(mock_url, rng, t0 + seconds).start()
        next_report = t0 + 60
        try:
            while any(p.poll() is None for p in pops) and time.monotonic() < t0 + seconds + 90:
                time.sleep(1)
                if time.monotonic() >= next_report:
                    next_report += 60
                    rss = sampler.series[-1][1] / 1024 if sampler.series else 0
                    print(f"  {int(time.monotonic() - t0):>4} s  gateway RSS {rss:.0f} MB  fds {fd_count(gw.pid)}  "
                          f"faults so far {chaos.count}  active {sorted(chaos.fault_end)}", flush=True)
            report = collect_load(pops, 120)
        finally:
            chaos.stop()
            mock_clear(mock_url)
        sampler.stop()
        import httpx
        state = httpx.get(f"http://127.0.0.1:{admin_port}/admin/state", timeout=10,
                          headers={"Authorization": f"Bearer {admin_token}"}).json()
        mock_stats = httpx.get(f"{mock_url}/_mock/stats", timeout=10).json()
        procs.stop(gw)    # SIGTERM: the gateway flushes its request log
        del mock
    return _Soak(t0, sampler, report, chaos, state, mock_stats)


def _log_figures(db: Path) -> tuple[int, int, dict]:
    """(request rows, failover events, outcome counts) from the gateway's request log."""
    try:
        with sqlite3.connect(db) as conn:
            log_rows = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
            failovers = conn.execute("SELECT count(*) FROM events WHERE kind = 'failover'").fetchone()[0]
            outcomes = dict(conn.execute("SELECT outcome, count(*) FROM requests GROUP BY outcome").fetchall())
    except sqlite3.Error as e:
        log_rows, failovers, outcomes = -1, -1, {"error": str(e)}
    return log_rows, failovers, outcomes


def _print_minutes(series: list[tuple[float, float, int]], run: _Soak, seconds: float) -> None:
    """One line per minute: gateway memory and fds, client answers and errors, faults switched on."""
    print()
    print("per minute (gateway):  minute | RSS MB (median) | fds min-max | client ok | client errors"
          " | faults switched on")
    tl = run.report.get("timeline", {})
    wall0 = min((int(k) for k in tl), default=0)
    for m in range(int(seconds // 60) + (1 if seconds % 60 else 0)):
        win = [s for s in series if m * 60 <= s[0] < (m + 1) * 60]
        ok = sum(v[0] for k, v in tl.items() if m * 60 <= int(k) - wall0 < (m + 1) * 60)
        err = sum(v[1] for k, v in tl.items() if m * 60 <= int(k) - wall0 < (m + 1) * 60)
        nf = sum(1 for _, mono, d in run.chaos.log if not d.endswith(": ok") and m * 60 <= mono - run.t0 < (m + 1) * 60)
        rss_m = statistics.median(s[1] for s in win) if win else float("nan")
        fd_v = [s[2] for s in win if s[2] >= 0]
        print(f"{'':22}{m + 1:>6} | {rss_m:>15.1f} | {min(fd_v, default=-1):>5}-{max(fd_v, default=-1):<5} | "
              f"{ok:>9} | {err:>13} | {nf:>4}")


def _print_summary(run: _Soak, series: list[tuple[float, float, int]], warmup: float,
                   log: tuple[int, int, dict]) -> int:
    """Errors, memory growth, fds, the request log and latency; the verdict (the exit status)."""
    report, chaos, mock_stats = run.report, run.chaos, run.mock_stats
    log_rows, failovers, outcomes = log
    after = [s for s in series if s[0] >= warmup]
    base_win = [s[1] for s in after if s[0] < warmup + 15] or [s[1] for s in after[:1]]
    end_win = [s[1] for s in series if s[0] >= series[-1][0] - 30] if series else []
    base = statistics.median(base_win) if base_win else float("nan")
    end = statistics.median(end_win) if end_win else float("nan")
    peak_after = max((s[1] for s in after), default=float("nan"))
    growth = (end / base - 1) * 100 if base else float("nan")
    fds_after = [s[2] for s in after if s[2] >= 0]
    print()
    errors = report["errors"]
    print(f"requests sent {report['requests']}, answered {report['ok']}, client-visible errors {errors} "
          f"(target 0) {dict(report['error_kinds']) or ''}")
    for s in report["error_samples"]:
        print(f"    {s}")
    if errors:
        print("  faults switched around those times:")
        err_times = {s.split()[0] for s in report["error_samples"]}
        for ts, _, d in chaos.log:
            hhmmss = time.strftime("%H:%M:%S", time.localtime(ts))
            if any(abs(_secs(hhmmss) - _secs(e)) <= 20 for e in err_times):
                print(f"    {hhmmss} {d}")
    print(f"faults switched on: {chaos.count} ({len(chaos.log)} switches incl. off); control API errors: "
          f"{len(chaos.errors)}; mock saw {mock_stats.get('total')} requests, faults applied "
          f"{sum(mock_stats.get('faults', {}).values())}")
    print(f"gateway RSS: {base:.1f} MB after warm-up ({warmup:.0f} s), {end:.1f} MB at the end, peak after warm-up "
          f"{peak_after:.1f} MB -> growth {growth:+.1f}% (target <= 10%)")
    print(f"gateway open fds after warm-up: min {min(fds_after, default=-1)}, max {max(fds_after, default=-1)}, "
          f"at the end {fds_after[-1] if fds_after else -1}")
    print(f"request log: {log_rows} rows for {report['requests']} requests sent (outcomes {outcomes}); "
          f"{failovers} failover events; store {run.state.get('store')}")
    print(f"latency: p50 {report['p50']:.1f} ms, p99 {report['p99']:.1f} ms, max {report['max']:.1f} ms "
          f"(streams: time to first token p50 {report['ttft_p50'] or float('nan'):.1f} ms, "
          f"p99 {report['ttft_p99'] or float('nan'):.1f} ms)")
    for e in chaos.errors:
        print(f"  chaos: {e}")
    ok = errors == 0 and growth <= 10 and not chaos.errors
    print("RESULT:", "PASS" if ok else "FAIL", "(zero client errors, memory growth <= 10%, fault schedule ran)")
    return 0 if ok else 1


def _secs(hhmmss: str) -> int:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return h * 3600 + m * 60 + s


if __name__ == "__main__":
    sys.exit(main())
