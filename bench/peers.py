"""Patchbay against the gateways people use: direct, Patchbay, LiteLLM proxy, Portkey gateway.

One run on 127.0.0.1: the fake vendors (``python -m gateway.mock``) and each
system as its own process, every system configured with the same two-target
fallback route (primary ``gpt-4.1`` then secondary ``gpt-4.1-mini``, both on
the fake vendor's OpenAI dialect, no retries on the same target). Workloads:

  non-stream c=1      one client, back to back
  non-stream c=32     32 clients
  stream c=32         32 streaming clients; time to first token and tokens/s
                      (mock: one token every --token-ms, --tokens tokens)
  failover c=32       non-streaming; the primary answers 503 for the middle
                      half of the run (switched on and off over the mock's
                      control API mid-run)

and prints one table: throughput, p50/p99 (and the latency added over going
direct), client-visible errors, peak RSS of the system's processes (sampled
from /proc over the whole process group), and ratios to Patchbay.

    python bench/peers.py [--seconds 8] [--systems direct patchbay litellm portkey]
                          [--loadgen auto|wrk|python] [--cache ~/.cache/patchbay-bench]

LiteLLM is installed on first use into CACHE/litellm-venv (``pip install
'litellm[proxy]'``), Portkey into CACHE/portkey (``npm install
@portkey-ai/gateway``; run with ``node``). When one cannot be installed or
started, the reason is printed and the run goes on with the others. Every
measurement is bounded in time; every process is stopped by process group,
also on errors and Ctrl-C. Nothing here reaches beyond 127.0.0.1 at run time
(LiteLLM's cost-map download and telemetry are switched off).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    LoadSpec,
    Procs,
    RssSampler,
    chat_body,
    fmt,
    free_port,
    machine_line,
    mock_clear,
    mock_config,
    mock_fault,
    python_env,
    run_load,
    run_wrk,
    start_mock,
    start_patchbay,
    wait_http,
)

PRIMARY, SECONDARY = "gpt-4.1", "gpt-4.1-mini"
CLIENT_KEY = "sk-bench-client-0123456789abcdef0123456789abcdef"   # loopback-only benchmark key
VENDOR_KEY = "sk-bench-vendor"                                       # the fake vendor accepts anything


class Unavailable(Exception):
    """A peer that could not be installed or started; the run goes on without it."""


@dataclass
class System:
    name: str
    url: str = ""
    model: str = "chat"
    headers: dict[str, str] = field(default_factory=dict)
    pgid: int | None = None
    note: str = ""


# ------------------------------------------------------------------------------- setups

PATCHBAY_CFG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
client_keys_env = "PATCHBAY_CLIENT_KEYS"

[store]
path = "{db}"

[prober]
enabled = false

[retry]
max_attempts_per_target = 1

[vendors.mock]
kind = "openai"
base_url = "{base}"
api_key_env = "BENCH_VENDOR_KEY"

[[routes]]
name = "chat"
targets = [{{ vendor = "mock", model = "{primary}" }}, {{ vendor = "mock", model = "{secondary}" }}]
"""


def setup_patchbay(procs: Procs, tmp: Path, base: str, args: argparse.Namespace) -> System:
    port, admin = free_port(), free_port()
    cfg = tmp / "patchbay.toml"
    cfg.write_text(PATCHBAY_CFG.format(port=port, admin_port=admin, db=tmp / "patchbay.db", base=base,
                                       primary=PRIMARY, secondary=SECONDARY))
    env = {**python_env(), "PATCHBAY_CLIENT_KEYS": CLIENT_KEY, "BENCH_VENDOR_KEY": VENDOR_KEY}
    p = start_patchbay(procs, cfg, port, env=env)
    return System("patchbay", f"http://127.0.0.1:{port}/v1/chat/completions",
                  headers={"Authorization": f"Bearer {CLIENT_KEY}"}, pgid=p.pid,
                  note="1 process, request log to SQLite on")


LITELLM_CFG = """
model_list:
  - model_name: chat
    litellm_params:
      model: openai/{primary}
      api_base: {base}
      api_key: {vendor_key}
  - model_name: chat-secondary
    litellm_params:
      model: openai/{secondary}
      api_base: {base}
      api_key: {vendor_key}
litellm_settings:
  telemetry: false
  num_retries: 0
  request_timeout: 30
  callbacks: []
  success_callback: []
  failure_callback: []
router_settings:
  num_retries: 0
  fallbacks: [{{"chat": ["chat-secondary"]}}]
general_settings:
  master_key: {master_key}
  disable_spend_logs: true
"""


def _run_install(cmd: list[str], log: Path, timeout: float, cwd: Path | None = None) -> None:
    with open(log, "ab") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise Unavailable(f"`{' '.join(cmd)}` took longer than {timeout:.0f}s (see {log})") from None
        except OSError as e:
            raise Unavailable(f"`{' '.join(cmd)}` could not run: {e}") from None
    if rc != 0:
        lines = [ln[:300] for ln in log.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]
        tail = "\n    ".join(lines[-6:])
        raise Unavailable(f"`{' '.join(cmd)}` failed ({rc}); last lines of {log}:\n    {tail}")


def install_litellm(cache: Path, spec: str) -> Path:
    venv = cache / "litellm-venv"
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "litellm-install.log"
    print(f"  installing {spec} into {venv} (first run only; log {log}) ...", flush=True)
    _run_install([sys.executable, "-m", "venv", str(venv)], log, 120)
    _run_install([str(venv / "bin" / "pip"), "install", "-q", spec], log, 1200)
    if not exe.exists():
        raise Unavailable(f"pip installed {spec} but {exe} is missing")
    return exe


def setup_litellm(procs: Procs, tmp: Path, base: str, args: argparse.Namespace) -> System:
    exe = install_litellm(args.cache, args.litellm_spec)
    port = free_port()
    master = "sk-bench-master-" + os.urandom(16).hex()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(LITELLM_CFG.format(primary=PRIMARY, secondary=SECONDARY, base=base, vendor_key=VENDOR_KEY,
                                      master_key=master))
    env = {**os.environ,
           "LITELLM_LOG": "ERROR",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True",    # no model-cost download at import
           "LITELLM_TELEMETRY": "False",
           "DISABLE_ADMIN_UI": "True",
           "NO_DOCS": "True",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DO_NOT_TRACK": "1"}
    for k in ("DATABASE_URL", "LITELLM_MASTER_KEY", "OPENAI_API_KEY", "PYTHONPATH"):
        env.pop(k, None)
    p = procs.start("litellm", [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
                    env=env, cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120, proc=p.popen)
    except SystemExit as e:
        raise Unavailable(f"LiteLLM proxy did not come up: {e}\n{p.tail()}") from None
    version = ""
    with_pip = args.cache / "litellm-venv" / "bin" / "pip"
    try:
        out = subprocess.run([str(with_pip), "show", "litellm"], capture_output=True, text=True, timeout=60).stdout
        version = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Version:")), "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return System("litellm", f"http://127.0.0.1:{port}/v1/chat/completions",
                  headers={"Authorization": f"Bearer {master}"}, pgid=p.pid,
                  note=f"litellm {version}, 1 uvicorn worker (default), master key set")


# @hono/node-server newer than 1.13 hands Portkey a fetch Response whose headers are immutable, and
# every streamed answer then fails with "TypeError: immutable" (Portkey-AI/gateway issue 1389);
# 1.13.8 is the last release that copies the headers.
PORTKEY_PACKAGE = {"name": "patchbay-bench-portkey", "private": True,
                   "dependencies": {"@portkey-ai/gateway": "^1.15.2"},
                   "overrides": {"@hono/node-server": "1.13.8"}}


def install_portkey(cache: Path) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Unavailable("node and npm are not on PATH (apt-get install nodejs npm)")
    d = cache / "portkey"
    script = d / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    pkg = json.dumps(PORTKEY_PACKAGE, indent=1)
    if script.exists() and (d / "package.json").exists() and (d / "package.json").read_text() == pkg:
        return script
    d.mkdir(parents=True, exist_ok=True)
    (d / "package.json").write_text(pkg)
    log = cache / "portkey-install.log"
    print(f"  installing @portkey-ai/gateway into {d} (first run only; log {log}) ...", flush=True)
    _run_install(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], log, 900, cwd=d)
    if not script.exists():
        raise Unavailable(f"npm installed @portkey-ai/gateway but {script} is missing")
    return script


def setup_portkey(procs: Procs, tmp: Path, base: str, args: argparse.Namespace) -> System:
    script = install_portkey(args.cache)
    port = free_port()
    env = {**os.environ, "NODE_ENV": "production"}
    p = procs.start("portkey", ["node", str(script), f"--port={port}", "--headless"], env=env,
                    cwd=args.cache / "portkey")
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout=60, proc=p.popen)
    except SystemExit as e:
        raise Unavailable(f"Portkey gateway did not come up: {e}\n{p.tail()}") from None
    target = {"provider": "openai", "api_key": VENDOR_KEY, "custom_host": base}
    config = {"strategy": {"mode": "fallback"},
              "targets": [{**target, "override_params": {"model": PRIMARY}},
                          {**target, "override_params": {"model": SECONDARY}}]}
    version = json.loads((script.parents[1] / "package.json").read_text()).get("version", "")
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return System("portkey", f"http://127.0.0.1:{port}/v1/chat/completions",
                  headers={"x-portkey-config": json.dumps(config, separators=(",", ":"))}, pgid=p.pid,
                  note=f"@portkey-ai/gateway {version}, node {node}, 1 process")


SETUPS: dict[str, Callable[[Procs, Path, str, argparse.Namespace], System]] = {
    "patchbay": setup_patchbay, "litellm": setup_litellm, "portkey": setup_portkey}


# ----------------------------------------------------------------------------- workloads

@dataclass
class Row:
    system: str
    workload: str
    rps: float | None = None
    p50: float | None = None
    p99: float | None = None
    errors: int = 0
    requests: int = 0
    tok_s: float | None = None
    peak_mb: float | None = None
    detail: str = ""


def nonstream(sys_: System, conns: int, seconds: float, use_wrk: bool,
              during: Callable[[], None] | None = None) -> dict:
    """A non-streaming run; `during` runs in this thread while the load runs (fault switching)."""
    body = chat_body(sys_.model)
    result: dict[str, Any] = {}

    def go() -> None:
        try:
            if use_wrk:
                result.update(run_wrk(sys_.url, body, conns, seconds, headers=sys_.headers))
            else:
                r = run_load(LoadSpec(url=sys_.url, bodies=[(body, False)], concurrency=conns, seconds=seconds,
                                      headers=sys_.headers, timeout=30))
                result.update(rps=r["rps"], p50=r["p50"], p99=r["p99"], errors=r["errors"],
                              requests=r["requests"], error_kinds=r["error_kinds"])
        except BaseException as e:  # reported by the caller
            result["exception"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    if during is not None:
        during()
    t.join(seconds + 120)
    if "exception" in result:
        raise result["exception"]
    if t.is_alive() or "rps" not in result:
        raise RuntimeError("load generator did not finish")
    return result


def stream(sys_: System, conns: int, seconds: float, tokens: int) -> dict:
    return run_load(LoadSpec(url=sys_.url, bodies=[(chat_body(sys_.model, stream=True), True)], concurrency=conns,
                             seconds=seconds, headers=sys_.headers, timeout=60, expect_tokens=tokens))


def run_system(sys_: System, args: argparse.Namespace, mock_url: str, use_wrk: bool) -> list[Row]:
    rows: list[Row] = []
    sampler = RssSampler(sys_.pgid).start() if sys_.pgid else None
    try:
        nonstream(sys_, 4, 1.0, use_wrk)   # warm-up: pools, caches, lazy imports (not measured)
        for conns in (1, 32):
            r = nonstream(sys_, conns, args.seconds, use_wrk)
            rows.append(Row(sys_.name, f"non-stream c={conns}", r["rps"], r["p50"], r["p99"], r["errors"],
                            r.get("requests", 0)))
        mock_config(mock_url, token_interval_ms=args.token_ms, tokens=args.tokens)
        try:
            r = stream(sys_, 32, args.seconds, args.tokens)
        finally:
            mock_config(mock_url, token_interval_ms=0, tokens=None)
        rows.append(Row(sys_.name, "stream c=32 (TTFT)", r["rps"], r["ttft_p50"], r["ttft_p99"], r["errors"],
                        r["requests"], r["tokens_per_s"],
                        detail=", ".join(f"{k}: {v}" for k, v in r["error_kinds"].items())))

        fo_seconds = args.seconds * 2

        def faults() -> None:
            time.sleep(fo_seconds / 4)
            mock_fault(mock_url, model=PRIMARY, fault="error", status=503)
            time.sleep(fo_seconds / 2)
            mock_fault(mock_url, model=PRIMARY, fault="ok")

        try:
            r = nonstream(sys_, 32, fo_seconds, use_wrk, during=faults)
        finally:
            mock_clear(mock_url)
        rows.append(Row(sys_.name, "failover c=32", r["rps"], r["p50"], r["p99"], r["errors"], r.get("requests", 0)))
    finally:
        if sampler is not None:
            peak = sampler.stop() / 1024
            for row in rows:
                row.peak_mb = peak
    return rows


# --------------------------------------------------------------------------------- report

def print_table(rows: list[Row], notes: dict[str, str], skipped: dict[str, str], args: argparse.Namespace,
                use_wrk: bool, mock_mb: float | None) -> None:
    direct = {r.workload: r for r in rows if r.system == "direct"}
    pb = {r.workload: r for r in rows if r.system == "patchbay"}

    def added(r: Row, pct: str) -> float | None:
        base = direct.get(r.workload if not r.workload.startswith("failover") else "non-stream c=32")
        v, b = getattr(r, pct), getattr(base, pct) if base else None
        return None if v is None or b is None or r.system == "direct" else v - b

    def ratio(a: float | None, b: float | None) -> str:
        if a is None or b is None or b <= 0:
            return "-"
        return f"{a / b:.2f}x"

    hdr = (f"{'system':<9} {'workload':<19} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
           f"{'tok/s':>7} {'errors':>11} {'peak RSS MB':>11} | {'req/s/PB':>8} {'p50/PB':>7} {'RSS/PB':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        a50, a99 = added(r, "p50"), added(r, "p99")
        base = pb.get(r.workload)
        err = f"{r.errors}/{r.requests}" if r.requests else str(r.errors)
        print(f"{r.system:<9} {r.workload:<19} {fmt(r.rps, 0):>8} {fmt(r.p50, 2):>8} {fmt(r.p99, 2):>8} "
              f"{fmt(a50, 2):>8} {fmt(a99, 2):>8} {fmt(r.tok_s, 0):>7} {err:>11} "
              f"{fmt(r.peak_mb if r.system != 'direct' else mock_mb, 0):>11} | "
              f"{ratio(r.rps, base.rps if base else None):>8} "
              f"{ratio(r.p50, base.p50 if base else None):>7} "
              f"{ratio(r.peak_mb, base.peak_mb if base else None) if r.system != 'direct' else '-':>6}")
        if r.detail:
            print(f"{'':<29}errors: {r.detail}")
    print()
    print("Columns: p50/p99 = request latency (stream rows: time to first token); +p50/+p99 = added over direct in the")
    print("same workload (failover rows: over direct non-stream c=32, the healthy baseline; the direct failover row")
    print("shows what clients see with no gateway); errors = client-visible errors / requests (non-200, bad body,")
    print("stream without [DONE], error event or wrong token count); peak RSS = all processes of the system's process")
    print("group, sampled from /proc every 0.25 s over all its workloads (direct row: the fake vendor);")
    print("x/PB = ratio to Patchbay in the same workload (req/s: higher is better; p50 and RSS: lower is better).")
    print(f"Non-stream load: {'wrk (1 thread)' if use_wrk else 'python/aiohttp load generator'}; stream load: "
          f"python/aiohttp load generator; mock stream: {args.tokens} tokens, one every {args.token_ms:g} ms; "
          f"failover: {args.seconds * 2:g} s run, primary {PRIMARY} answers 503 from 1/4 to 3/4 of it.")
    for name, note in notes.items():
        print(f"  {name}: {note}")
    for name, why in skipped.items():
        print(f"  {name}: SKIPPED — {why}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each measurement (failover: twice this)")
    ap.add_argument("--systems", nargs="+", default=["direct", "patchbay", "litellm", "portkey"],
                    choices=["direct", "patchbay", "litellm", "portkey"])
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                    help="non-streaming load generator (streams always use the python one)")
    ap.add_argument("--token-ms", type=float, default=5.0, help="mock delay between stream tokens")
    ap.add_argument("--tokens", type=int, default=20, help="tokens per streamed answer")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "patchbay-bench",
                    help="where LiteLLM's venv and Portkey's node_modules are installed")
    ap.add_argument("--litellm-spec", default="litellm[proxy]", help="pip requirement for LiteLLM")
    args = ap.parse_args()
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)

    tmp = Path(tempfile.mkdtemp(prefix="patchbay-peers-"))
    rows: list[Row] = []
    notes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    print(f"# Patchbay peer benchmark — {machine_line()}", flush=True)
    try:
        with Procs(tmp) as procs:
            mock_port = free_port()
            mock = start_mock(procs, mock_port)
            mock_url = f"http://127.0.0.1:{mock_port}"
            base = f"{mock_url}/openai/v1"
            mock_sampler = RssSampler(mock.pid).start()
            for name in args.systems:
                print(f"- {name} ...", flush=True)
                try:
                    if name == "direct":
                        sys_ = System("direct", f"{base}/chat/completions", model=PRIMARY,
                                      headers={"Authorization": f"Bearer {VENDOR_KEY}"})
                    else:
                        sys_ = SETUPS[name](procs, tmp, base, args)
                except Unavailable as e:
                    skipped[name] = str(e)
                    print(f"  skipped: {e}", flush=True)
                    continue
                if sys_.note:
                    notes[name] = sys_.note
                try:
                    got = run_system(sys_, args, mock_url, use_wrk)
                except (RuntimeError, SystemExit, OSError) as e:
                    skipped[name] = f"failed during the run: {e}"
                    print(f"  failed: {e}", flush=True)
                    got = []
                finally:
                    for p in list(procs.procs):
                        if p.name == name:
                            procs.stop(p)
                rows.extend(got)
                for r in got:
                    print(f"  {r.workload:<19} {fmt(r.rps, 0):>7} req/s  p50 {fmt(r.p50, 2)} ms  p99 {fmt(r.p99, 2)} ms"
                          f"  errors {r.errors}", flush=True)
            mock_mb = mock_sampler.stop() / 1024
    except KeyboardInterrupt:
        print("interrupted: every process was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print_table(rows, notes, skipped, args, use_wrk, mock_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
