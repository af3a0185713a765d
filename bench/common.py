"""Shared pieces of the bench/ scripts: ports, processes, load generators, memory and fd sampling.

Why one module: every benchmark starts the fake vendors and a gateway as
separate processes on 127.0.0.1, drives them with a bounded load, samples
their memory from /proc and must stop everything it started (by PID or
process group) even when a run fails. Doing that once keeps the figures of
overhead.py, peers.py, streams.py and soak.py comparable.

The streaming-capable load generator lives here too and runs in its own
process (``python bench/common.py loadgen '<json spec>' report.json``), so it never
shares an event loop with the benchmark driver. It is bounded by
``seconds`` and ``max_requests`` and writes one JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
BODY = json.dumps({"model": "MODEL", "messages": [{"role": "user", "content": "Say hello in five words."}]})


def chat_body(model: str, *, stream: bool = False, content: str = "Say hello in five words.") -> str:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something answers HTTP at url (any status); fail early if proc died."""
    import httpx
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"bench: the process for {url} exited with {proc.returncode} before it came up")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up within {timeout}s")


def raise_nofile(want: int | None = None) -> tuple[int, int]:
    """Raise this process's soft fd limit toward the hard limit (best effort); return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(want, hard) if hard != resource.RLIM_INFINITY else want
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _child_setup() -> None:
    """preexec_fn: a child gets a raised fd limit (inherited across exec)."""
    raise_nofile()


def machine_line() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {os.cpu_count()} cores, {mem_gb:.0f} GiB — "
            f"Python {sys.version.split()[0]} — load average {load}")


# ----------------------------------------------------------------------------- processes

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, n: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


class Procs:
    """Processes a benchmark started; each in its own session (process group) so stop() gets its children too.

    Use as a context manager: everything is stopped on exit, also on errors and Ctrl-C
    (SIGTERM to the bench is turned into KeyboardInterrupt so the same path runs).
    """

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []

    def start(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
              log: bool = True) -> Proc:
        logpath = self.logdir / f"{name}.log" if log else None
        out = open(logpath, "wb") if logpath else subprocess.DEVNULL
        try:
            popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup)
        finally:
            if logpath:
                out.close()  # type: ignore[union-attr]
        p = Proc(name, popen, logpath)
        self.procs.append(p)
        return p

    def stop(self, p: Proc, timeout: float = 15.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL the group."""
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # children that outlive the leader (uvicorn workers, node helpers) still carry the group id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            self.stop(p)

    def __enter__(self) -> Procs:
        self._old = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGTERM, self._old)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# ----------------------------------------------------------------------- /proc sampling

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def group_pids(pgid: int) -> list[int]:
    """PIDs whose process group is pgid (a benchmark's child and everything it spawned)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


def rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its own, not its children's)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rfind(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def sched_wait(pid: int) -> float:
    """Seconds this process spent runnable but waiting for a CPU (/proc/PID/schedstat), a starvation gauge."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def listen_overflows() -> int:
    """Machine-wide count of connections dropped because a listen queue was full (TcpExt ListenOverflows).

    A dropped SYN costs the client a 1 s (then 3 s, 7 s...) retransmit, which shows up as
    time to first token; benchmarks print the delta so such stalls are not blamed on the code.
    """
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            d = dict(zip(head.split()[1:], vals.split()[1:]))
            return int(d.get("ListenOverflows", -1))
    return -1


class RssSampler:
    """Samples the summed RSS of a process group (and its fd count) in a thread until stopped.

    The group is re-listed every few samples so workers spawned later are counted.
    """

    def __init__(self, pgid: int, interval: float = 0.25) -> None:
        self.pgid = pgid
        self.interval = interval
        self.peak_kb = 0
        self.series: list[tuple[float, int, int]] = []   # (monotonic, rss KiB, fds of the leader)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pgid}", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        pids: list[int] = []
        n = 0
        while not self._stop.is_set():
            if n % 8 == 0:
                pids = group_pids(self.pgid) or [self.pgid]
            n += 1
            total = sum(rss_kb(p) for p in pids)
            if total:
                self.peak_kb = max(self.peak_kb, total)
                self.series.append((time.monotonic(), total, fd_count(self.pgid)))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak_kb

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------- fake vendors

def mock_post(mock_url: str, path: str, payload: Any) -> Any:
    import httpx
    r = httpx.post(f"{mock_url}{path}", json=payload, timeout=10)
    r.raise_for_status()
    return r.json()


def mock_fault(mock_url: str, **spec: Any) -> Any:
    """Switch a fault on the fake vendors (``fault="ok"`` switches it off for that model)."""
    return mock_post(mock_url, "/_mock/faults", spec)


def mock_clear(mock_url: str) -> None:
    import httpx
    httpx.delete(f"{mock_url}/_mock/faults", timeout=10).raise_for_status()


def mock_config(mock_url: str, token_interval_ms: float | None = None, tokens: int | None | str = "keep") -> Any:
    payload: dict[str, Any] = {}
    if token_interval_ms is not None:
        payload["token_interval_ms"] = token_interval_ms
    if tokens != "keep":
        payload["tokens"] = tokens
    return mock_post(mock_url, "/_mock/config", payload)


def python_env() -> dict[str, str]:
    """Environment for gateway and mock children: the project on PYTHONPATH, no client keys required."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PATCHBAY_CLIENT_KEYS", None)
    return env


def start_mock(procs: Procs, port: int, *, token_interval_ms: float = 0, tokens: int | None = None,
               name: str = "mock") -> Proc:
    cmd = [sys.executable, "-m", "gateway.mock", "--port", str(port)]
    if token_interval_ms:
        cmd += ["--token-interval-ms", str(token_interval_ms)]
    if tokens is not None:
        cmd += ["--tokens", str(tokens)]
    p = procs.start(name, cmd, env=python_env())
    wait_http(f"http://127.0.0.1:{port}/_mock/health", proc=p.popen)
    return p


def start_patchbay(procs: Procs, cfg: Path, port: int, *, env: dict[str, str] | None = None,
                   name: str = "patchbay") -> Proc:
    p = procs.start(name, [sys.executable, "-m", "gateway.cli", "serve", "-c", str(cfg), "--log-level", "error"],
                    env=env or python_env())
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=p.popen)
    return p


# ------------------------------------------------------------------------ load generators

WRK_LUA = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
{headers}
"""


def run_wrk(url: str, body: str, conns: int, seconds: float, headers: dict[str, str] | None = None) -> dict:
    extra = "\n".join(f"wrk.headers[{json.dumps(k)}] = [[{v}]]" for k, v in (headers or {}).items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_LUA.format(body=body, headers=extra))
        script = fh.name
    try:
        cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{max(1, round(seconds))}s", "--latency", "-s", script, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    finally:
        os.unlink(script)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise SystemExit(f"bench: wrk gave no figures for {url}:\n{out}")
    rps = float(m.group(1))
    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        val, unit = float(m.group(1)), m.group(2)
        return val / 1000 if unit == "us" else val * 1000 if unit == "s" else val
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else 0
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "errors": errors, "requests": total}


PY_LOADGEN = textwrap.dedent("""
    import asyncio, json, sys, time
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    import aiohttp
    url, body, conns, seconds = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), float(sys.argv[4])
    async def main():
        lat, errors = [], 0
        stop = time.perf_counter() + seconds
        conn = aiohttp.TCPConnector(limit=conns)
        async with aiohttp.ClientSession(connector=conn) as s:
            async def worker():
                nonlocal errors
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    async with s.post(url, data=body, headers={"content-type": "application/json"}) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                    lat.append((time.perf_counter() - t) * 1000)
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(conns)))
            wall = time.perf_counter() - t0
        lat.sort()
        print(json.dumps({"rps": len(lat) / wall, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)],
                          "errors": errors, "requests": len(lat)}))
    asyncio.run(main())
""")


def run_py(url: str, body: str, conns: int, seconds: float) -> dict:
    """overhead.py's minimal non-streaming load generator (kept as it was measured with)."""
    out = subprocess.run([sys.executable, "-c", PY_LOADGEN, url, body, str(conns), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return json.loads(out)


# ------------------------------------------------ the streaming-capable load generator (own process)

@dataclass
class LoadSpec:
    """What one load generator process does; serialised to JSON on its command line.

    ``mode``: "loop" = each of ``concurrency`` workers sends requests back to back until
    ``seconds`` or ``max_requests``; "once" = each worker sends exactly one request
    (the 5,000-streams test). ``ramp``: workers start spread over this many seconds.
    ``bodies``: cycled per request: [body, stream] pairs. ``rate``: when > 0, requests are
    paced to this many per second over all workers (open-loop-ish, for the soak).
    """

    url: str
    bodies: list[tuple[str, bool]]
    concurrency: int = 1
    seconds: float = 10.0
    max_requests: int = 1_000_000
    headers: dict[str, str] = field(default_factory=dict)
    mode: str = "loop"
    ramp: float = 0.0
    timeout: float = 60.0
    expect_tokens: int | None = None     # a stream with another token count is an error ("short")
    raw: bool = False                    # include raw latency / ttft lists (to merge processes)
    rate: float = 0.0
    timeline: bool = False               # per-second ok/error counts and open-stream samples


def percentile(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    rank = math.ceil(p / 100 * len(sorted_vals))   # nearest-rank
    return sorted_vals[min(len(sorted_vals) - 1, max(0, rank - 1))]


def run_load(spec: LoadSpec, processes: int = 1, *, wait: bool = True) -> Any:
    """Run the load generator in `processes` child processes (splitting concurrency) and merge reports.

    With wait=False, returns the list of Popen objects; call collect_load() later.
    """
    pops = []
    for i in range(processes):
        share = spec.concurrency // processes + (1 if i < spec.concurrency % processes else 0)
        sub = LoadSpec(**{**spec.__dict__, "concurrency": share,
                          "max_requests": max(1, spec.max_requests // processes),
                          "rate": spec.rate / processes, "raw": spec.raw or processes > 1})
        fd, out = tempfile.mkstemp(prefix="patchbay-loadgen-", suffix=".json")
        os.close(fd)
        p = subprocess.Popen([sys.executable, str(BENCH / "common.py"), "loadgen", json.dumps(sub.__dict__), out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, preexec_fn=_child_setup)
        p.report_path = out  # type: ignore[attr-defined]
        pops.append(p)
    if not wait:
        return pops
    return collect_load(pops, spec.seconds + spec.timeout + 60)


def collect_load(pops: list[subprocess.Popen], timeout: float) -> dict:
    """Wait for load generator processes (bounded), read their reports, kill any straggler."""
    reports = []
    try:
        for p in pops:
            _, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise SystemExit(f"bench: load generator failed ({p.returncode}):\n{err[-3000:]}")
            reports.append(json.loads(Path(p.report_path).read_text()))  # type: ignore[attr-defined]
    finally:
        for p in pops:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
            with contextlib.suppress(OSError):
                os.unlink(p.report_path)  # type: ignore[attr-defined]
    return merge_reports(reports)


def merge_reports(reports: list[dict]) -> dict:
    if len(reports) == 1 and "lat" not in reports[0]:
        return reports[0]
    lat = sorted(x for r in reports for x in r.get("lat", []))
    ttft = sorted(x for r in reports for x in r.get("ttft", []))
    wall = max(r["wall"] for r in reports)
    out = {
        "requests": sum(r["requests"] for r in reports),
        "ok": sum(r["ok"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "error_kinds": {},
        "error_samples": [s for r in reports for s in r["error_samples"]][:20],
        "tokens": sum(r["tokens"] for r in reports),
        "wall": wall,
        "peak_open": 0,
    }
    for r in reports:
        for k, v in r["error_kinds"].items():
            out["error_kinds"][k] = out["error_kinds"].get(k, 0) + v
    out["rps"] = out["ok"] / wall if wall else 0.0
    out["tokens_per_s"] = out["tokens"] / wall if wall else 0.0
    out.update(_pcts(lat, ""))
    out.update(_pcts(ttft, "ttft_"))
    # open streams / requests in flight: sum the processes' samples per 50 ms bucket
    buckets: dict[int, list[int]] = {}
    for r in reports:
        for b, n, f in r.get("open_series", []):
            cur = buckets.setdefault(b, [0, 0])
            cur[0] += n
            cur[1] += f
    out["peak_open"] = max((v[0] for v in buckets.values()), default=max((r["peak_open"] for r in reports), default=0))
    out["peak_inflight"] = max((v[1] for v in buckets.values()),
                               default=max((r.get("peak_inflight", 0) for r in reports), default=0))
    if any("timeline" in r for r in reports):
        tl: dict[str, list[int]] = {}
        for r in reports:
            for sec, (ok, err) in r.get("timeline", {}).items():
                cur = tl.setdefault(sec, [0, 0])
                cur[0] += ok
                cur[1] += err
        out["timeline"] = tl
    out["lat"], out["ttft"] = lat, ttft
    return out


def _pcts(vals: list[float], prefix: str) -> dict[str, float]:
    return {f"{prefix}p50": percentile(vals, 50), f"{prefix}p90": percentile(vals, 90),
            f"{prefix}p99": percentile(vals, 99), f"{prefix}max": vals[-1] if vals else float("nan")}


_TOKEN_RE = re.compile(rb'"content": ?"(?!")')


async def _loadgen(spec: LoadSpec) -> dict:
    return await _LoadGen(spec).run()


class _LoadGen:
    """One load-generator process running a LoadSpec: its workers, their requests and the tallies."""

    def __init__(self, spec: LoadSpec) -> None:
        import aiohttp

        self.t_start = time.perf_counter()   # the clock starts as the spec is read, as it always did
        self.stop_at = self.t_start + spec.seconds
        self.next_slot = self.t_start
        self.spec = spec
        self.lat: list[float] = []
        self.ttft: list[float] = []
        self.kinds: dict[str, int] = {}
        self.samples: list[str] = []
        self.timeline: dict[int, list[int]] = {}
        self.counters = {"requests": 0, "ok": 0, "tokens": 0, "open": 0, "peak_open": 0, "inflight": 0,
                         "peak_inflight": 0}
        self.open_series: list[tuple[int, int, int]] = []   # (50 ms bucket, streams open, requests in flight)
        self.bodies = [(b.encode(), bool(s)) for b, s in spec.bodies]
        self.headers = {"content-type": "application/json", **spec.headers}
        self.timeout = aiohttp.ClientTimeout(total=spec.timeout)
        self.net_errors = (aiohttp.ClientError, OSError)
        self.pace = 1.0 / spec.rate if spec.rate > 0 else 0.0

    async def run(self) -> dict:
        import aiohttp

        spec = self.spec
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
        sampler = loop.create_task(self.sample_open())
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            await asyncio.wait_for(asyncio.gather(*(self.worker(session, i) for i in range(spec.concurrency))),
                                   spec.seconds + spec.timeout + 30)
        sampler.cancel()
        return self.report(time.perf_counter() - self.t_start)

    def report(self, wall: float) -> dict[str, Any]:
        spec, counters, lat, ttft = self.spec, self.counters, self.lat, self.ttft
        lat.sort()
        ttft.sort()
        report: dict[str, Any] = {
            "requests": counters["requests"], "ok": counters["ok"], "errors": sum(self.kinds.values()),
            "error_kinds": self.kinds, "error_samples": self.samples, "tokens": counters["tokens"], "wall": wall,
            "rps": counters["ok"] / wall, "tokens_per_s": counters["tokens"] / wall,
            "peak_open": counters["peak_open"], "peak_inflight": counters["peak_inflight"],
            **_pcts(lat, ""), **_pcts(ttft, "ttft_"),
        }
        if spec.raw:
            report["lat"], report["ttft"] = lat, ttft
            report["open_series"] = self.open_series
        if spec.timeline:
            report["timeline"] = {str(k): v for k, v in sorted(self.timeline.items())}
        return report

    def error(self, kind: str, detail: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.samples) < 10:
            self.samples.append(f"{time.strftime('%H:%M:%S')} {kind}: {detail[:300]}")
        if self.spec.timeline:
            self.timeline.setdefault(int(time.time()), [0, 0])[1] += 1

    async def worker(self, session: Any, idx: int) -> None:
        spec, counters = self.spec, self.counters
        if spec.ramp and spec.concurrency > 1:
            await asyncio.sleep(spec.ramp * idx / spec.concurrency)
        i = idx
        while True:
            now = time.perf_counter()
            if now >= self.stop_at or counters["requests"] >= spec.max_requests:
                return
            if self.pace:
                slot = self.next_slot = max(self.next_slot + self.pace, now)
                if slot > now:
                    await asyncio.sleep(slot - now)
                if time.perf_counter() >= self.stop_at:
                    return
            body, stream = self.bodies[i % len(self.bodies)]
            i += spec.concurrency
            await self.one(session, body, stream)
            if spec.mode == "once":
                return

    async def sample_open(self) -> None:
        while True:
            self.open_series.append((int(time.monotonic() * 20), self.counters["open"], self.counters["inflight"]))
            await asyncio.sleep(0.05)

    async def one(self, session: Any, body: bytes, stream: bool) -> None:
        counters = self.counters
        counters["inflight"] += 1
        counters["peak_inflight"] = max(counters["peak_inflight"], counters["inflight"])
        try:
            await self.request(session, body, stream)
        finally:
            counters["inflight"] -= 1

    async def request(self, session: Any, body: bytes, stream: bool) -> None:
        """One request: an answer that counts as ok is timed, anything else is an error of its kind."""
        spec, error = self.spec, self.error
        t0 = time.perf_counter()
        self.counters["requests"] += 1
        try:
            async with session.post(spec.url, data=body, headers=self.headers, timeout=self.timeout) as r:
                if not stream:
                    data = await r.read()
                    if r.status != 200:
                        error(f"http {r.status}", data.decode(errors="replace"))
                        return
                    if b'"choices"' not in data:
                        error("bad body", data.decode(errors="replace"))
                        return
                elif r.status != 200:
                    error(f"http {r.status}", (await r.read()).decode(errors="replace"))
                    return
                elif not await self.stream(r, t0):
                    return
        except TimeoutError:
            error("timeout", f"no complete answer within {spec.timeout}s")
            return
        except self.net_errors as e:
            error(type(e).__name__, str(e))
            return
        self.counters["ok"] += 1
        self.lat.append((time.perf_counter() - t0) * 1000)
        if spec.timeline:
            self.timeline.setdefault(int(time.time()), [0, 0])[0] += 1

    async def stream(self, r: Any, t0: float) -> bool:
        """Read a streamed answer to its end; True when it was whole (its time to first token noted)."""
        counters, spec = self.counters, self.spec
        counters["open"] += 1
        counters["peak_open"] = max(counters["peak_open"], counters["open"])
        try:
            tokens, first, done, err = await _read_sse(r)
        finally:
            counters["open"] -= 1
        counters["tokens"] += tokens
        if err:
            self.error("error event", err.decode(errors="replace"))
            return False
        if not done:
            self.error("no [DONE]", f"stream ended after {tokens} tokens without [DONE]")
            return False
        if spec.expect_tokens is not None and tokens != spec.expect_tokens:
            self.error("short", f"{tokens} tokens, expected {spec.expect_tokens}")
            return False
        if first:
            self.ttft.append((first - t0) * 1000)
        return True


async def _read_sse(r: Any) -> tuple[int, float, bool, bytes]:
    """(content tokens, time of the first one, saw [DONE], the first error event) of an SSE answer."""
    buf = b""
    tokens = 0
    first = 0.0
    done = False
    err = b""
    async for chunk in r.content.iter_any():
        buf += chunk
        end = buf.rfind(b"\n\n")
        if end < 0:
            continue
        events, buf = buf[:end], buf[end + 2:]
        n = len(_TOKEN_RE.findall(events))
        if n and not tokens:
            first = time.perf_counter()
        tokens += n
        if b"data: [DONE]" in events:
            done = True
        if b'data: {"error"' in events and not err:
            err = events[events.find(b'data: {"error"'):][:300]
    if buf.strip():
        if b"[DONE]" in buf:
            done = True
        if b'{"error"' in buf and not err:
            err = buf[:300]
    return tokens, first, done, err


def _loadgen_main(arg: str, out_path: str) -> None:
    raise_nofile()
    spec = LoadSpec(**json.loads(arg))
    spec.bodies = [tuple(b) for b in spec.bodies]  # type: ignore[misc]
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    report = asyncio.run(_loadgen(spec))
    # NaN is not JSON: the driver gets None
    Path(out_path).write_text(json.dumps({k: (None if isinstance(v, float) and v != v else v)
                                          for k, v in report.items()}))


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.{digits}f}"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "loadgen":
        _loadgen_main(sys.argv[2], sys.argv[3])
    else:
        print("usage: python bench/common.py loadgen '<LoadSpec JSON>' REPORT.json", file=sys.stderr)
        sys.exit(2)
