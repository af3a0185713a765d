"""5,000 concurrent streams through one Patchbay process: none dropped, added time to first token, memory.

Starts the fake vendors (one token every --token-ms, --tokens tokens per
answer) and one `patchbay serve` process (request logging on) on 127.0.0.1,
then opens --streams streaming requests at once (spread over --ramp seconds,
fewer than one stream's length, so all are open together) from
--loadgen-procs load generator processes (aiohttp + uvloop), first straight
to the fake vendor, then through Patchbay, measured the same way. Prints:
streams completed / dropped, the peak number open at once, time to first
token p50/p99 direct vs through Patchbay and the added p99 (target < 5 ms),
and the gateway's peak RSS (target < 600 MB), fds and CPU time.

    python bench/streams.py [--streams 5000] [--token-ms 50] [--tokens 40] [--ramp 1.0]
                            [--loadgen-procs 2] [--profile out.txt]

--profile records the gateway with py-spy during the Patchbay run and
prints where its time goes (self time per function). Every run is bounded
(stream timeout 120 s); every process is stopped by process group at the end,
also on errors and Ctrl-C. The fd limit is raised (soft to hard) in every
process this script starts.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    LoadSpec,
    Procs,
    RssSampler,
    chat_body,
    cpu_seconds,
    fmt,
    free_port,
    listen_overflows,
    machine_line,
    raise_nofile,
    run_load,
    sched_wait,
    start_mock,
    start_patchbay,
)

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"

[store]
path = "{db}"

[prober]
enabled = false

[vendors.mock]
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/openai/v1"

[[routes]]
name = "chat"
targets = [{{ vendor = "mock", model = "gpt-4.1" }}, {{ vendor = "mock", model = "gpt-4.1-mini" }}]
"""


def run(url: str, model: str, args: argparse.Namespace) -> dict:
    spec = LoadSpec(url=url, bodies=[(chat_body(model, stream=True), True)], concurrency=args.streams,
                    seconds=args.ramp + 5, mode="once", ramp=args.ramp, timeout=120,
                    expect_tokens=args.tokens, raw=True)
    before = listen_overflows()
    r = run_load(spec, processes=args.loadgen_procs)
    r["listen_overflows"] = listen_overflows() - before
    return r


# Where a sample's time goes: the first rule (leaf to root) whose marker is in a frame wins.
PROFILE_BUCKETS = [
    ("store writer thread (SQLite, off the event loop)", ("store/", "threading.py")),
    ("socket writes to clients and vendors (aiohttp StreamWriter -> send)", ("http_writer.py",)),
    ("SSE parse + decode of vendor chunks", ("gateway/vendors/sse.py", "vendors/openai.py", "stream_decoder")),
    ("re-encoding chunks for the client", ("_ChunkWriter",)),
    ("asyncio timeouts (per read)", ("asyncio/timeouts.py",)),
    ("opening vendor connections", ("aiohappyeyeballs", "connector.py")),
    ("reading vendor responses (aiohttp client protocol)", ("client_proto.py", "client_reqrep.py",
                                                            "aiohttp/streams.py")),
    ("serving client requests (aiohttp server protocol)", ("web_protocol.py", "web_request.py",
                                                           "web_response.py")),
    ("upstream HTTP client (gateway/vendors/http*.py)", ("gateway/vendors/http",)),
    ("router / server / runtime (gateway code)", ("gateway/",)),
    ("event loop itself (uvloop: epoll, recv, callbacks)", ("Runner.run",)),
]


def summarize_pyspy(raw: Path, top: int = 15) -> str:
    """Where the gateway's time goes, from py-spy's collapsed stacks (``--format raw``)."""
    self_t: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        if "Condition.wait" in frames[-1] or "Event.wait" in frames[-1]:
            idle += count   # the store writer thread asleep between batches: py-spy counts it, we do not
            continue
        total += count
        self_t[frames[-1]] += count
        for frame in reversed(frames):
            hit = next((name for name, marks in PROFILE_BUCKETS if any(m in frame for m in marks)), None)
            if hit:
                buckets[hit] += count
                break
        else:
            buckets["other"] += count
    if not total:
        return "py-spy recorded no samples"
    out = [f"py-spy: {total} busy samples of the gateway (all threads; {idle} samples of the store writer "
           "thread waiting for rows left out); time by kind:"]
    for name, c in buckets.most_common():
        out.append(f"  {100 * c / total:5.1f}%  {name}")
    out.append(f"self time, top {top} functions:")
    for f, c in self_t.most_common(top):
        out.append(f"  {100 * c / total:5.1f}%  {f}")
    return "\n".join(out)


def describe(name: str, r: dict, args: argparse.Namespace) -> str:
    dropped = args.streams - r["ok"]
    kinds = ", ".join(f"{k}: {v}" for k, v in r["error_kinds"].items()) or "none"
    return (f"{name:<9} completed {r['ok']}/{args.streams} (dropped {dropped}; errors {kinds}); "
            f"peak in flight {r['peak_inflight']}, streaming (headers received) {r['peak_open']}; "
            f"TTFT p50 {fmt(r['ttft_p50'], 2)} ms p99 {fmt(r['ttft_p99'], 2)} ms "
            f"max {fmt(r['ttft_max'], 2)} ms; stream time p50 {fmt(r['p50'] / 1000 if r['p50'] else None, 2)} s "
            f"p99 {fmt(r['p99'] / 1000 if r['p99'] else None, 2)} s; {r['tokens']} tokens; "
            f"listen-queue overflows (machine-wide) {r['listen_overflows']}"
            + "".join(f"\n    {s}" for s in r["error_samples"][:3]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=5000)
    ap.add_argument("--token-ms", type=float, default=50.0, help="fake vendor's delay between tokens")
    ap.add_argument("--tokens", type=int, default=40, help="tokens per answer")
    ap.add_argument("--ramp", type=float, default=1.0, help="open all streams within this many seconds")
    ap.add_argument("--loadgen-procs", type=int, default=2, help="load generator processes")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy the gateway; write the summary here")
    ap.add_argument("--skip-direct", action="store_true", help="only the Patchbay run")
    args = ap.parse_args()
    soft, hard = raise_nofile()
    if args.ramp >= args.tokens * args.token_ms / 1000:
        print("warning: --ramp is not shorter than one stream, so not all streams will be open at once",
              file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="patchbay-streams-"))
    print(f"# Patchbay {args.streams} concurrent streams — {machine_line()} — fd limit {soft}/{hard}", flush=True)
    print(f"# fake vendor: {args.tokens} tokens, one every {args.token_ms:g} ms; streams opened over {args.ramp:g} s "
          f"by {args.loadgen_procs} load generator processes (aiohttp + uvloop); request logging on", flush=True)
    try:
        with Procs(tmp) as procs:
            mock_port, port, admin_port = free_port(), free_port(), free_port()
            start_mock(procs, mock_port, token_interval_ms=args.token_ms, tokens=args.tokens)
            cfg = tmp / "patchbay.toml"
            cfg.write_text(CONFIG.format(port=port, admin_port=admin_port, mock_port=mock_port, db=tmp / "s.db"))
            gw = start_patchbay(procs, cfg, port)
            direct_url = f"http://127.0.0.1:{mock_port}/openai/v1/chat/completions"
            via_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            # warm-up: a few streams each way (imports, pools)
            run_load(LoadSpec(url=direct_url, bodies=[(chat_body("gpt-4.1", stream=True), True)], concurrency=20,
                              seconds=2, mode="once", timeout=30))
            run_load(LoadSpec(url=via_url, bodies=[(chat_body("chat", stream=True), True)], concurrency=20,
                              seconds=2, mode="once", timeout=30))
            direct = None
            if not args.skip_direct:
                direct = run(direct_url, "gpt-4.1", args)
                print(describe("direct", direct, args), flush=True)
                time.sleep(2)
            idle_kb = _idle_kb(gw.pid)
            raw = tmp / "pyspy.txt"
            spy = _pyspy_start(gw.pid, raw) if args.profile else None
            cpu0, wait0, t0 = cpu_seconds(gw.pid), sched_wait(gw.pid), time.perf_counter()
            with RssSampler(gw.pid, interval=0.1) as sampler:
                via = run(via_url, "chat", args)
            cpu, wait, wall = cpu_seconds(gw.pid) - cpu0, sched_wait(gw.pid) - wait0, time.perf_counter() - t0
            print(describe("patchbay", via, args), flush=True)
            if spy is not None:
                _pyspy_finish(spy, raw, args.profile)
            peak_mb = sampler.peak_kb / 1024
            peak_fds = max((s[2] for s in sampler.series), default=-1)
    except KeyboardInterrupt:
        print("interrupted: every process was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    dropped = _summary(args, direct, via, idle_kb, peak_mb, peak_fds, (cpu, wait, wall))
    return 0 if dropped == 0 else 1


def _idle_kb(pid: int) -> int:
    """The gateway's resident memory (KB) over a second of rest."""
    rss0 = RssSampler(pid, interval=0.5)
    rss0.start()
    time.sleep(1)
    idle_kb = rss0.peak_kb
    rss0.stop()
    return idle_kb


def _pyspy_start(pid: int, raw: Path) -> subprocess.Popen:
    spy_exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy_exe, "record", "--format", "raw", "-r", "50", "-o", str(raw),
                             "-d", "600",   # stopped with SIGINT when the run ends
                             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pyspy_finish(spy: subprocess.Popen, raw: Path, out: Path) -> None:
    """Stop py-spy; write and print where the gateway's time went."""
    spy.send_signal(2)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)
    text = summarize_pyspy(raw) if raw.exists() else "py-spy wrote nothing (needs ptrace rights)"
    out.write_text(text + "\n")
    print(text)


def _summary(args: argparse.Namespace, direct: dict | None, via: dict, idle_kb: float, peak_mb: float,
             peak_fds: int, cpu_wait_wall: tuple[float, float, float]) -> int:
    """The run's figures against the targets; returns the streams dropped."""
    cpu, wait, wall = cpu_wait_wall
    dropped = args.streams - via["ok"]
    print()
    print(f"streams through Patchbay: {via['ok']}/{args.streams} completed, {dropped} dropped, "
          f"peak {via['peak_inflight']} in flight at once ({via['peak_open']} of them past their first token)")
    if direct is not None:
        added = via["ttft_p99"] - direct["ttft_p99"]
        sane = direct["ok"] == args.streams and direct["listen_overflows"] == 0
        verdict = ("not measurable: the direct baseline itself dropped streams or overflowed listen queues, "
                   "so this machine cannot carry the load even without the gateway") if not sane else \
            "met" if added < 5 and dropped == 0 else "MISSED"
        print(f"time to first token p99: direct {fmt(direct['ttft_p99'], 2)} ms, through Patchbay "
              f"{fmt(via['ttft_p99'], 2)} ms -> added {added:+.2f} ms (target < 5 ms: {verdict})")
        print(f"time to first token p50: direct {fmt(direct['ttft_p50'], 2)} ms, through Patchbay "
              f"{fmt(via['ttft_p50'], 2)} ms -> added {via['ttft_p50'] - direct['ttft_p50']:+.2f} ms")
    print(f"gateway peak RSS {peak_mb:.0f} MB (idle before the run {idle_kb / 1024:.0f} MB; target < 600 MB: "
          f"{'met' if peak_mb < 600 else 'MISSED'}); peak open fds {peak_fds}")
    print(f"gateway CPU {cpu:.1f} s in a {wall:.1f} s run; runnable but waiting for a core {wait:.1f} s "
          f"(the machine's other load; load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    return dropped


if __name__ == "__main__":
    sys.exit(main())
