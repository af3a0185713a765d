"""History query latency on a 1,000,000-request log (issue 4 target: < 50 ms each).

    python bench/store_queries.py [--rows 1000000] [--db PATH] [--keep] [--repeat 15]

Builds a log through the store's own insert path (`Sink.write`, the statements
the writer thread uses, indexes and FTS triggers included): 30 days of
requests in time order with realistic routes, targets and outcomes, about one
attempt per request and a few events. Then it times each history query the
admin API and `patchbay history` make, warm (median and worst of --repeat runs)
and cold (first call on a fresh connection), and prints one table.

Bounded: row count is fixed, generation is chunked (memory stays flat), and
with --db PATH --keep a second run reuses the file instead of rebuilding it.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store import AttemptRow, EventRow, History, RequestRow, encode_cursor  # noqa: E402
from store.sink import Sink  # noqa: E402

ROUTES = [("chat", 0.70), ("chat-fast", 0.15), ("summarise", 0.10), ("embed-fallback", 0.04), ("batch", 0.01)]
TARGETS = ["openai/gpt-4.1", "anthropic/claude-sonnet-4-20250514", "deepseek/deepseek-chat",
           "gemini/gemini-2.0-flash", "openai/gpt-4.1-mini", "groq/llama-3.3-70b", "openrouter/qwen-2.5",
           "vllm/local-mixtral"]
OUTCOMES = [("ok", 0.930), ("fallback", 0.040), ("error", 0.020), ("client_error", 0.005), ("cut", 0.005)]
ERRORS = [
    ("server_error", "upstream returned 503 Service Unavailable"),
    ("server_error", "upstream returned 502 Bad Gateway"),
    ("overloaded", "529 overloaded_error: Overloaded"),
    ("timeout", "no first byte within 10s"),
    ("timeout", "stream idle for more than 15s"),
    ("rate_limited", "429 rate limited: Retry-After 30s exceeds retry_after_max"),
    ("connect", "connection refused (111) to api.example.com:443"),
    ("auth", "401 invalid x-api-key"),
    ("context_length", "400 context_length_exceeded: maximum context length is 128000 tokens"),
    ("cut", "stream cut after 37 tokens; no prefill target"),
]


def _pick(rnd: random.Random, weighted: list[tuple[str, float]]) -> str:
    x = rnd.random()
    acc = 0.0
    for value, w in weighted:
        acc += w
        if x < acc:
            return value
    return weighted[-1][0]


def build(path: str, rows: int, seed: int = 1, days: float = 30) -> float:
    """Write `rows` requests (+attempts, events) over the last `days` through Sink.write; seconds taken."""
    rnd = random.Random(seed)
    sink = Sink(path)
    sink.open()
    sink.conn.execute("PRAGMA synchronous=OFF")   # bulk load only; the writer itself runs NORMAL
    end = time.time()
    start = end - days * 86400
    step = (end - start) / rows
    t0 = time.perf_counter()
    chunk: list = []
    ts = start
    for i in range(rows):
        ts += step * rnd.uniform(0.5, 1.5)
        outcome = _pick(rnd, OUTCOMES)
        route = _pick(rnd, ROUTES)
        first = rnd.choice(TARGETS[:4])
        rid = f"req_{int(ts * 1000):012x}{rnd.getrandbits(40):010x}"
        err_class = err_msg = None
        final = first
        attempts = 1
        if outcome != "ok":
            err_class, err_msg = rnd.choice(ERRORS)
        if outcome == "fallback":
            final = rnd.choice([t for t in TARGETS if t != first])
            attempts = 2
        elif outcome in ("error", "client_error"):
            final = None if outcome == "error" else first
        latency = rnd.lognormvariate(6.2, 0.6)
        chunk.append(RequestRow(
            id=rid, ts=ts, route=route, stream=rnd.random() < 0.6, outcome=outcome,
            http_status={"ok": 200, "fallback": 200, "error": 503, "client_error": 400, "cut": 200}[outcome],
            client_key_id=f"k_{rnd.getrandbits(16):04x}", final_target=final, model=final and final.split("/")[1],
            attempts=attempts, failovers=attempts - 1, latency_ms=latency, ttft_ms=latency * 0.3,
            overhead_ms=0.3, prompt_tokens=rnd.randint(20, 4000), completion_tokens=rnd.randint(1, 800),
            cost=rnd.uniform(0, 0.02), error_class=err_class, error_message=err_msg,
        ))
        chunk.append(AttemptRow(request_id=rid, n=1, target=first, ts=ts, latency_ms=latency,
                                outcome="ok" if attempts == 1 and outcome == "ok" else (err_class or "ok"),
                                http_status=200 if outcome == "ok" else 503, error=err_msg))
        if attempts == 2:
            chunk.append(AttemptRow(request_id=rid, n=2, target=final, ts=ts + 0.05, latency_ms=latency,
                                    outcome="ok", http_status=200))
            chunk.append(EventRow(ts=ts, kind="failover", target=first, route=route, request_id=rid,
                                  detail={"from": first, "to": final, "reason": err_class}))
        if len(chunk) >= 20_000:
            sink.write(chunk)
            chunk = []
    if chunk:
        sink.write(chunk)
    sink.analyze()          # what the writer does every prune_interval
    sink.close()
    return time.perf_counter() - t0



def ensure_log_days(path: str, rows: int, days: float) -> float | None:
    """ensure_log for a log spread over the last `days` (reused only while its newest row is recent)."""
    if os.path.exists(path):
        try:
            with sqlite3.connect(path) as c:
                have, newest = c.execute("SELECT count(*), max(ts) FROM requests").fetchone()
            if have == rows and newest and time.time() - newest < 3600:
                return None
        except sqlite3.Error:
            pass
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return build(path, rows, days=days)


def ensure_log(path: str, rows: int) -> float | None:
    """Reuse `path` if it already holds exactly `rows` requests, else rebuild it; seconds spent building."""
    have = 0
    if os.path.exists(path):
        try:
            with sqlite3.connect(path) as c:
                have = c.execute("SELECT count(*) FROM requests").fetchone()[0]
        except sqlite3.Error:
            have = 0
    if have == rows:
        return None
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return build(path, rows)

def writer_figures(n: int = 200_000) -> None:
    """What logging costs the gateway: put() time per row, and how fast the writer thread drains."""
    from store import Store
    tmp = tempfile.mkdtemp(prefix="patchbay-writer-")
    path = os.path.join(tmp, "w.db")
    t = time.time()
    rows = []
    for i in range(n):
        rid = f"req_{i:016x}"
        rows.append(RequestRow(id=rid, ts=t + i * 1e-4, route="chat", stream=False, outcome="ok", http_status=200,
                               final_target="openai/gpt-4.1", attempts=1, latency_ms=12.0, prompt_tokens=10,
                               completion_tokens=20, cost=0.0001))
        rows.append(AttemptRow(request_id=rid, n=1, target="openai/gpt-4.1", ts=t, latency_ms=12.0, outcome="ok"))
    store = Store(path, queue_max=len(rows)).start()    # room for the whole burst: measure the drain rate
    t0 = time.perf_counter()
    for r in rows:
        store.put(r)
    put_s = time.perf_counter() - t0
    store.close(timeout=120)
    total_s = time.perf_counter() - t0
    s = store.stats()
    print(f"writer: {len(rows):,} puts, put() {put_s / len(rows) * 1e6:.2f} us/row on the caller; "
          f"all committed after {total_s:.2f}s ({len(rows) / total_s:,.0f} rows/s, {s['batches']} transactions, "
          f"dropped {s['queue_dropped']}, not written {s['rows_not_written']})")
    for f in os.listdir(tmp):
        os.remove(os.path.join(tmp, f))
    os.rmdir(tmp)


def timed(fn, repeat: int) -> tuple[float, float, float, object]:
    """(cold ms, median ms, max ms, last result): cold is the first call on a fresh History."""
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times[0], statistics.median(times[1:] or times), max(times[1:] or times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", help="database file (default: a temporary file, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep (and on later runs reuse) --db")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()

    writer_figures()
    path, tmpdir = _log_for(args.db, args.rows)
    newest, some, cases = _list_cases(path, args.rows)
    results = _run(path, newest, some, cases, args.repeat)
    _print_results(results, args.repeat)
    if tmpdir and not args.keep:
        for f in os.listdir(tmpdir):
            os.remove(os.path.join(tmpdir, f))
        os.rmdir(tmpdir)
    return 0


def _log_for(db: str | None, rows: int) -> tuple[str, str | None]:
    """(database path, temporary folder or None): `db`, or a temporary one, holding a log of `rows` requests."""
    tmpdir = None
    path = db
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="patchbay-bench-")
        path = os.path.join(tmpdir, "bench.db")
    secs = ensure_log(path, rows)
    if secs is not None:
        with sqlite3.connect(path) as c:
            n_att = c.execute("SELECT count(*) FROM attempts").fetchone()[0]
        print(f"built {rows:,} requests + {n_att:,} attempts in {secs:.1f}s "
              f"({(rows + n_att) / secs:,.0f} rows/s through Sink.write)")
    else:
        print(f"reusing {path} ({rows:,} requests)")
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    print(f"database: {size / 1e6:,.0f} MB")
    return path, tmpdir


def _list_cases(path: str, rows: int) -> tuple[float, str, list[tuple[str, dict]]]:
    """(newest ts, a request id, the list_requests cases): filters and cursors the history view uses."""
    with sqlite3.connect(path) as c:
        newest = c.execute("SELECT ts FROM requests ORDER BY ts DESC LIMIT 1").fetchone()[0]
        mid = c.execute("SELECT ts, id FROM requests ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?",
                        (rows // 2,)).fetchone()
        deep = c.execute("SELECT ts, id FROM requests ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?",
                         (rows - 100,)).fetchone()
        some = c.execute("SELECT id FROM requests WHERE outcome = 'fallback' ORDER BY ts DESC LIMIT 1 OFFSET 77"
                         ).fetchone()[0]
        err_target_ts = c.execute("SELECT ts, id FROM requests WHERE outcome='error' ORDER BY ts DESC, id DESC "
                                  "LIMIT 1 OFFSET ?", (rows // 200,)).fetchone()
    mid_cursor = encode_cursor(*mid)
    deep_cursor = encode_cursor(*deep)

    cases = [
        ("first page (50)", dict()),
        ("page at row 500,000 via cursor", dict(cursor=mid_cursor)),
        ("page at row ~1,000,000 via cursor", dict(cursor=deep_cursor)),
        ("route=chat-fast", dict(route="chat-fast")),
        ("route=batch (1%)", dict(route="batch")),
        ("target=gemini/gemini-2.0-flash", dict(target="gemini/gemini-2.0-flash")),
        ("target=groq/llama-3.3-70b (rare)", dict(target="groq/llama-3.3-70b")),
        ("outcome=error (2%)", dict(outcome="error")),
        ("outcome=cut (0.5%)", dict(outcome="cut")),
        ("outcome=error|cut|fallback", dict(outcome=["error", "cut", "fallback"])),
        ("outcome=error, deep cursor", dict(outcome="error", cursor=encode_cursor(*err_target_ts))),
        ("route=batch + outcome=cut", dict(route="batch", outcome="cut")),
        ("last hour", dict(since=newest - 3600)),
        ("a 1-hour window 15 days ago", dict(since=newest - 15 * 86400, until=newest - 15 * 86400 + 3600)),
        ("target + last day", dict(target="openai/gpt-4.1", since=newest - 86400)),
        ("q='claude' (a target)", dict(q="claude")),
        ("q='chat' (routes)", dict(q="chat")),
        ("q='refused' (error text)", dict(q="refused")),
        ("q='503' (error text)", dict(q="503")),
        ("q='context_length' (class)", dict(q="context_length")),
        ("q='x' (1 char: scan)", dict(q="x")),
        ("q='no such thing'", dict(q="no such thing")),
        ("q=<request id>", dict(q=some)),
        ("q='refused' + route=batch", dict(q="refused", route="batch")),
    ]
    return newest, some, cases


def _run(path: str, newest: float, some: str, cases: list[tuple[str, dict]],
         repeat: int) -> list[tuple[str, float, float, float, str]]:
    """(name, cold ms, median ms, max ms, result) of each list_requests case, then the other reads."""
    results = []
    history = History(path)
    for name, kw in cases:
        cold_h = History(path)
        t = time.perf_counter()
        cold_h.list_requests(limit=50, **kw)
        cold = (time.perf_counter() - t) * 1000
        cold_h.close()
        _, med, worst, (rows, cur) = timed(lambda kw=kw: history.list_requests(limit=50, **kw), repeat)
        results.append((f"list_requests {name}", cold, med, worst, f"{len(rows)} rows{' +more' if cur else ''}"))

    for name, fn in [
        ("get_request (with attempts, events)", lambda: history.get_request(some)),
        ("list_events (50)", lambda: history.list_events(limit=50)),
        ("list_events kind=failover since 1 h", lambda: history.list_events(kind="failover", since=newest - 3600)),
        ("summary(last 15 min)", lambda: history.summary(since=newest - 900)),
        ("summary(last hour)", lambda: history.summary(since=newest - 3600)),
        ("count_requests outcome=error", lambda: history.count_requests(outcome="error")),
        ("count_requests last hour", lambda: history.count_requests(since=newest - 3600)),
        ("count_requests (all, capped 100k)", lambda: history.count_requests(cap=100_000)),
        ("count_requests (all) [info: full index count]", lambda: history.count_requests()),
        ("facets", lambda: history.facets()),
    ]:
        cold, med, worst, res = timed(fn, repeat)
        info = f"{len(res)} items" if isinstance(res, (list, dict)) else str(res)
        results.append((name, cold, med, worst, info))
    history.close()
    return results


def _print_results(results: list[tuple[str, float, float, float, str]], repeat: int) -> None:
    """The table, each query over 50 ms (median) flagged, and the count under it."""
    w = max(len(r[0]) for r in results)
    print(f"\n{'query':<{w}}  {'cold ms':>8}  {'median ms':>9}  {'max ms':>7}  result")
    print("-" * (w + 45))
    over = []
    targeted = [r for r in results if "[info" not in r[0]]
    for name, cold, med, worst, info in results:
        flag = "" if med < 50 or "[info" in name else "  <-- over 50 ms"
        if flag:
            over.append(name)
        print(f"{name:<{w}}  {cold:8.2f}  {med:9.2f}  {worst:7.2f}  {info}{flag}")
    print(f"\n{len(targeted) - len(over)}/{len(targeted)} history queries under 50 ms "
          f"(median of {repeat - 1} warm runs; [info] rows are not history-view queries)")


if __name__ == "__main__":
    raise SystemExit(main())
