"""CPU cost of the per-request observers, in process: metrics, and spans when tracing is on.

Runs `Metrics.observe` and `Tracing.observe` (the calls Router._record makes
once per finished request) on realistic rows: a plain answer (one attempt) and
a failed-over one (three attempts). Tracing exports to a local OTLP/HTTP
receiver (a thread in this process that reads and discards the bodies, so its
own cost is not counted beyond the socket reads); the figure includes the
batch processor's encoding and export, measured as process CPU time.

    python bench/observe.py [--requests 20000] [--repeat 3]

Each figure is the cheapest of --repeat runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config_load import parse_config  # noqa: E402
from gateway.control.metrics import Metrics  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402
from store.records import AttemptRow, RequestRow  # noqa: E402

RAW = {
    "store": {"path": ":memory:"},
    "vendors": {"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                "deepseek": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "routes": [{"name": "chat", "targets": [{"vendor": "openai", "model": "gpt-4.1"},
                                            {"vendor": "deepseek", "model": "deepseek-chat"}]}],
    "prices": {"openai/gpt-4.1": {"input": 2.0, "output": 8.0}},
}


def calls(n: int, failover: bool) -> list[tuple[RequestRow, SimpleNamespace]]:
    out = []
    now = time.time()
    for i in range(n):
        rid = f"req_{i:012x}"
        if failover:
            atts = [AttemptRow(rid, 1, "openai/gpt-4.1", now, 3.0, "server", 503, "HTTP 503"),
                    AttemptRow(rid, 2, "openai/gpt-4.1", now + 0.004, 3.0, "server", 503, "HTTP 503"),
                    AttemptRow(rid, 3, "deepseek/deepseek-chat", now + 0.008, 40.0, "ok", 200)]
            row = RequestRow(rid, now, "chat", False, "ok", 200, final_target="deepseek/deepseek-chat",
                             model="deepseek-chat", attempts=3, failovers=1, latency_ms=49.0, prompt_tokens=12,
                             completion_tokens=30, cost=None)
        else:
            atts = [AttemptRow(rid, 1, "openai/gpt-4.1", now, 40.0, "ok", 200)]
            row = RequestRow(rid, now, "chat", False, "ok", 200, final_target="openai/gpt-4.1", model="gpt-4.1",
                             attempts=1, latency_ms=41.0, prompt_tokens=12, completion_tokens=30, cost=0.00026)
        out.append((row, SimpleNamespace(attempts=atts, trace_headers=None)))
    return out


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as a collector: one connection (and thread) for every export
    spans_bytes = 0

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("content-length", 0))
        _Sink.spans_bytes += len(self.rfile.read(n))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a: object) -> None:
        pass


def measure(fn, work, flush=None) -> float:
    t0 = time.process_time()
    for row, call in work:
        fn(row, call)
    if flush is not None:
        flush()
    return (time.process_time() - t0) / len(work) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure, the cheapest is kept")
    args = ap.parse_args()
    rt = Runtime(parse_config(RAW, "bench.toml", {}))
    print(f"# per-request observer cost, in process, {args.requests} requests per case — "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    m = Metrics(rt)
    measure(m.observe, calls(1000, False))  # resolve label children once
    for failover in (False, True):
        us = min(measure(m.observe, calls(args.requests, failover)) for _ in range(args.repeat))
        print(f"metrics  {'failover (3 attempts)' if failover else 'plain (1 attempt)':<22} {us:7.2f} us/request")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    from gateway.control.tracing import BATCH_SIZE, Tracing
    for sampled in ("1.0", "0.1"):
        if sampled == "1.0":   # the default sampler (parentbased_always_on): every request here is sampled
            os.environ.pop("OTEL_TRACES_SAMPLER", None)
            os.environ.pop("OTEL_TRACES_SAMPLER_ARG", None)
        else:
            os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            os.environ["OTEL_TRACES_SAMPLER_ARG"] = sampled
        os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(8 * args.requests)   # measure cost, not drops
        os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = str(BATCH_SIZE)   # the gateway's default batch
        tr = Tracing(rt, f"http://127.0.0.1:{srv.server_address[1]}/v1/traces", {})
        for failover in (False, True):
            # include the batch processor's encoding and export
            us = min(measure(tr.observe, calls(args.requests, failover), lambda: tr.provider.force_flush(60_000))
                     for _ in range(args.repeat))
            print(f"tracing  {'failover (3 attempts)' if failover else 'plain (1 attempt)':<22} {us:7.2f} us/request"
                  f"  (sampling {sampled}, spans built, encoded and sent over OTLP/HTTP)")
        tr.shutdown()
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
