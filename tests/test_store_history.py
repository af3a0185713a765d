"""History queries over real SQLite files: keyset pages, filters, free text, detail, CLI table."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import pytest

from store import AttemptRow, BadCursor, EventRow, History, RequestRow, Store, format_history_table, history_main

ROUTES = ["chat", "chat-fast", "embed"]
TARGETS = ["openai/gpt-4.1", "anthropic/claude-sonnet", "gemini/gemini-2.0-flash", "deepseek/deepseek-chat"]
OUTCOMES = ["ok", "ok", "ok", "fallback", "error", "client_error", "cut"]
ERRORS = ["upstream returned 503 Service Unavailable", "no first byte within 10s", "connection refused",
          "stream cut after 12 tokens", "rate limited: retry after 30s"]


def make_rows(n: int, seed: int = 7, t0: float = 1_700_000_000.0) -> list[RequestRow]:
    """n requests over n seconds with deterministic routes/targets/outcomes; some share a timestamp."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        outcome = rnd.choice(OUTCOMES)
        err = rnd.choice(ERRORS) if outcome in ("error", "fallback", "cut") else None
        ts = t0 + (i // 3)                       # three rows per timestamp: ties broken by id
        rows.append(RequestRow(
            id=f"req_{rnd.getrandbits(64):016x}", ts=ts, route=rnd.choice(ROUTES), stream=rnd.random() < 0.5,
            outcome=outcome, http_status=200 if outcome in ("ok", "fallback") else 503,
            final_target=rnd.choice(TARGETS), attempts=rnd.randint(1, 3), latency_ms=rnd.uniform(50, 2000),
            prompt_tokens=rnd.randint(1, 500), completion_tokens=rnd.randint(1, 500), cost=rnd.uniform(0, 0.01),
            error_class="server_error" if err else None, error_message=err,
        ))
    return rows


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[RequestRow]]:
    path = str(tmp_path_factory.mktemp("hist") / "log.db")
    rows = make_rows(12_000)
    store = Store(path).start()
    for r in rows:
        assert store.put(r)
    assert store.close(timeout=60)
    return path, rows


def expected(rows: list[RequestRow], pred=lambda r: True) -> list[str]:
    return [r.id for r in sorted((r for r in rows if pred(r)), key=lambda r: (r.ts, r.id), reverse=True)]


def page_all(h: History, limit: int, **filters) -> list[str]:
    ids, cursor, pages = [], None, 0
    while True:
        rows, cursor = h.list_requests(limit=limit, cursor=cursor, **filters)
        assert len(rows) <= limit
        ids.extend(r["id"] for r in rows)
        pages += 1
        if cursor is None:
            break
        assert len(rows) == limit
        assert pages < 10_000
    return ids


def test_keyset_pages_visit_every_row_once_in_order(big) -> None:
    path, rows = big
    with History(path) as h:
        ids = page_all(h, 97)
    assert len(ids) == len(rows) == len(set(ids))
    assert ids == expected(rows)


@pytest.mark.parametrize("filters,pred", [
    ({"route": "embed"}, lambda r: r.route == "embed"),
    ({"target": "gemini/gemini-2.0-flash"}, lambda r: r.final_target == "gemini/gemini-2.0-flash"),
    ({"outcome": "cut"}, lambda r: r.outcome == "cut"),
    ({"outcome": ["error", "cut"]}, lambda r: r.outcome in ("error", "cut")),
    ({"route": "chat", "outcome": "fallback"}, lambda r: r.route == "chat" and r.outcome == "fallback"),
    ({"since": 1_700_000_000.0 + 1000, "until": 1_700_000_000.0 + 2500},
     lambda r: 1_700_001_000.0 <= r.ts < 1_700_002_500.0),
    ({"target": "openai/gpt-4.1", "since": 1_700_000_000.0 + 3000},
     lambda r: r.final_target == "openai/gpt-4.1" and r.ts >= 1_700_003_000.0),
])
def test_filters_page_exactly_the_matching_rows(big, filters, pred) -> None:
    path, rows = big
    with History(path) as h:
        ids = page_all(h, 250, **filters)
        assert ids == expected(rows, pred)
        countable = {"route", "target", "outcome", "since", "until"}
        if set(filters) <= countable and not isinstance(filters.get("outcome"), list):
            assert h.count_requests(**filters) == len(ids)


@pytest.mark.parametrize("q,pred", [
    ("refused", lambda r: "refused" in (r.error_message or "")),                 # few matches: FTS, sorted
    ("503", lambda r: "503" in (r.error_message or "")),
    ("s", lambda r: "s" in (r.error_message or "").lower() or "s" in (r.error_class or "")
     or "s" in r.route or "s" in (r.final_target or "")),                         # short: scan path
    ("ANTHROPIC", lambda r: "anthropic" in (r.final_target or "")),               # a target, any case
    ("fast", lambda r: "fast" in r.route),                                        # a route
    ("error", lambda r: "error" in (r.error_class or "") or "error" in (r.error_message or "")),  # dense: walk
    ("nothing-like-this", lambda r: False),
])
def test_free_text_search(big, q, pred) -> None:
    path, rows = big
    with History(path) as h:
        assert page_all(h, 200, q=q) == expected(rows, pred)


def test_free_text_combines_with_filters_and_ids(big) -> None:
    path, rows = big
    with History(path) as h:
        got = page_all(h, 100, q="cut after", route="chat", outcome="cut")
        assert got == expected(rows, lambda r: r.route == "chat" and r.outcome == "cut"
                               and "cut after" in (r.error_message or ""))
        one = rows[1234]
        found, cursor = h.list_requests(q=one.id)
        assert [r["id"] for r in found] == [one.id] and cursor is None


def test_cursor_is_stable_while_new_rows_arrive(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    rows = make_rows(3000)
    store = Store(path).start()
    for r in rows:
        store.put(r)
    assert store.flush()
    seen: list[str] = []
    with History(path) as h:
        cursor = None
        extra = make_rows(600, seed=99, t0=rows[-1].ts + 10)        # newer than anything paged
        for k in range(1000):
            page, cursor = h.list_requests(limit=100, cursor=cursor)
            seen.extend(r["id"] for r in page)
            for r in extra[k * 50:(k + 1) * 50]:
                store.put(r)
            assert store.flush()
            if cursor is None:
                break
    store.close()
    assert seen == expected(rows)
    with History(path) as h:
        first, _ = h.list_requests(limit=5)
        assert [r["id"] for r in first] == expected(extra)[:5]


def test_bad_cursor_is_a_clear_error(big) -> None:
    path, _ = big
    with History(path) as h:
        with pytest.raises(BadCursor):
            h.list_requests(cursor="not-a-cursor!")


def test_missing_database_reads_empty(tmp_path: Path) -> None:
    with History(str(tmp_path / "nothing.db")) as h:
        assert h.list_requests() == ([], None)
        assert h.get_request("req_x") is None
        assert h.list_events() == [] and h.list_drills() == [] and h.count_requests() == 0


def test_events_and_summary(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    store = Store(path).start()
    t = time.time()
    for i in range(20):
        ok = i % 4 != 0
        rid = f"req_{i:016x}"
        store.put(RequestRow(id=rid, ts=t - 100 + i, route="chat", stream=False, outcome="ok" if ok else "fallback",
                             http_status=200, final_target="anthropic/claude" if not ok else "openai/gpt-4.1",
                             cost=0.01))
        if not ok:
            store.put(AttemptRow(request_id=rid, n=1, target="openai/gpt-4.1", ts=t - 100 + i, latency_ms=5.0,
                                 outcome="server_error", http_status=503))
        store.put(AttemptRow(request_id=rid, n=2 if not ok else 1, target="anthropic/claude" if not ok
                             else "openai/gpt-4.1", ts=t - 100 + i, latency_ms=float(100 + i), outcome="ok"))
        store.put(EventRow(ts=t - 100 + i, kind="probe" if i % 2 else "breaker", target="openai/gpt-4.1",
                           detail={"i": i}))
    assert store.close()
    with History(path) as h:
        ev = h.list_events(limit=5)
        assert [e["detail"]["i"] for e in ev] == [19, 18, 17, 16, 15]
        nxt = h.list_events(limit=5, before_id=ev[-1]["id"])
        assert [e["detail"]["i"] for e in nxt] == [14, 13, 12, 11, 10]
        assert [e["detail"]["i"] for e in h.list_events(kind="breaker", limit=3)] == [18, 16, 14]
        assert len(h.list_events(since=t - 100 + 15)) == 5
        s = h.summary(since=t - 1000)
        assert s["openai/gpt-4.1"]["attempts"] == 20 and s["openai/gpt-4.1"]["errors"] == 5
        assert s["openai/gpt-4.1"]["requests"] == 15 and s["anthropic/claude"]["requests"] == 5
        assert s["anthropic/claude"]["cost"] == pytest.approx(0.05)
        ok_lat = sorted(float(100 + i) for i in range(20) if i % 4 != 0)
        assert s["openai/gpt-4.1"]["p50_ms"] == ok_lat[round(0.5 * (len(ok_lat) - 1))]
        assert h.facets() == {"routes": ["chat"], "targets": ["anthropic/claude", "openai/gpt-4.1"],
                              "outcomes": ["fallback", "ok"]}


def test_history_table_and_cli(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    store = Store(path).start()
    store.put(RequestRow(id="req_000000000001aa", ts=1_700_000_000.0, route="chat", stream=True, outcome="fallback",
                         http_status=200, final_target="anthropic/claude", attempts=2, failovers=1, latency_ms=812.0,
                         ttft_ms=301.0, prompt_tokens=12, completion_tokens=40, cost=0.00123))
    store.put(RequestRow(id="req_000000000002bb", ts=1_700_000_060.0, route="chat", stream=False, outcome="error",
                         http_status=503, final_target=None, attempts=3, latency_ms=15000.0,
                         error_class="server_error", error_message="every target failed: " + "x" * 200))
    assert store.close()

    out, err = io.StringIO(), io.StringIO()
    assert history_main(path, limit=10, out=out, err=err) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:4] == ["time", "(UTC)", "route", "target"]
    assert "2023-11-14 22:14:20" in lines[2] and "error" in lines[2] and "15.0s" in lines[2] and "…" in lines[2]
    assert "2023-11-14 22:13:20" in lines[3] and "anthropic/claude" in lines[3] and "12/40" in lines[3]
    assert "$0.0012" in lines[3] and "2 (1 fo)" in lines[3] and "301ms" in lines[3]

    out = io.StringIO()
    assert history_main(path, limit=1, outcome="fallback", out=out, err=err) == 0
    assert "anthropic/claude" in out.getvalue() and "every target" not in out.getvalue()

    out = io.StringIO()
    assert history_main(path, limit=1, out=out, err=err) == 0
    assert "use --limit" in out.getvalue()

    out = io.StringIO()
    assert history_main(path, route="nope", out=out, err=err) == 0
    assert "no requests recorded matching" in out.getvalue()

    err = io.StringIO()
    assert history_main(str(tmp_path / "missing.db"), out=io.StringIO(), err=err) == 1
    assert "no request log" in err.getvalue()
    assert format_history_table([]).count("\n") == 1


def test_reads_from_many_threads_while_writing(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    path = str(tmp_path / "log.db")
    rows = make_rows(6000)
    store = Store(path, batch_interval=0.01).start()
    h = History(path)

    def reader(k: int) -> int:
        pages = 0
        for _ in range(40):
            page, _ = h.list_requests(limit=50, route=ROUTES[k % 3] if k % 2 else None)
            keys = [(r["ts"], r["id"]) for r in page]
            assert keys == sorted(keys, reverse=True)
            if page:
                assert h.get_request(page[0]["id"]) is not None
            pages += 1
        return pages

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(reader, k) for k in range(6)]
        for r in rows:
            store.put(r)
        assert sum(f.result(timeout=60) for f in futures) == 240
    assert store.close()
    assert h.count_requests() == 6000
    h.close()


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["always-walk-index", "always-fetch-and-sort"])
@pytest.mark.parametrize("q,filters", [
    ("503", {}), ("refused", {"route": "chat"}), ("error", {"outcome": "cut"}),
    ("cut after", {"target": ["openai/gpt-4.1", "gemini/gemini-2.0-flash"]}),
    ("SERVER", {"since": 1_700_000_000.0 + 500, "until": 1_700_000_000.0 + 3000}),
    ("ut", {"route": "embed"}),
])
def test_both_search_strategies_agree(big, monkeypatch, threshold, q, filters) -> None:
    import store.history_sql as sh
    monkeypatch.setattr(sh, "_SPARSE_MATCHES", threshold)
    path, rows = big

    def pred(r: RequestRow) -> bool:
        for key, col in (("route", "route"), ("target", "final_target"), ("outcome", "outcome")):
            want = filters.get(key)
            if want is not None and getattr(r, col) not in ([want] if isinstance(want, str) else want):
                return False
        if "since" in filters and not filters["since"] <= r.ts < filters["until"]:
            return False
        n = q.lower()
        return (n in (r.error_message or "").lower() or n in (r.error_class or "").lower()
                or n in r.route.lower() or n in (r.final_target or "").lower())

    with History(path) as h:
        assert page_all(h, 60, q=q, **filters) == expected(rows, pred)


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[RequestRow], dict[str, list[AttemptRow]]]:
    """3,000 requests with attempt chains: some fail over from one target to another."""
    path = str(tmp_path_factory.mktemp("chains") / "log.db")
    rnd = random.Random(11)
    rows, attempts = [], {}
    t0 = 1_700_000_000.0
    for i in range(3000):
        ts = t0 + i // 2
        rid = f"req_{rnd.getrandbits(64):016x}"
        tried = rnd.sample(TARGETS, rnd.choice([1, 1, 1, 2, 3]))
        chain = []
        for n, tgt in enumerate(tried, 1):
            last = n == len(tried)
            chain.append(AttemptRow(rid, n, tgt, ts + n * 0.5, 100.0, "ok" if last else "server_error",
                                    200 if last else 503, None if last else f"{tgt} answered 503 overloaded #{i}"))
        rows.append(RequestRow(id=rid, ts=ts, route="chat", stream=False, outcome="ok", http_status=200,
                               final_target=tried[-1], attempts=len(chain), failovers=len(chain) - 1,
                               latency_ms=100.0 * len(chain)))
        attempts[rid] = chain
    store = Store(path).start()
    for r in rows:
        assert store.put(r)
        for a in attempts[r.id]:
            assert store.put(a)
    assert store.close(timeout=60)
    return path, rows, attempts


def test_target_filter_finds_requests_that_failed_over_away_from_it(chains) -> None:
    """Issue 12: a target filter matches any attempt on it, keyset pages included."""
    path, rows, attempts = chains
    tried = lambda r, t: any(a.target == t for a in attempts[r.id])  # noqa: E731
    with History(path) as h:
        ids = page_all(h, 50, target="openai/gpt-4.1")
        assert ids == expected(rows, lambda r: tried(r, "openai/gpt-4.1"))
        assert any(r.final_target != "openai/gpt-4.1" for r in rows if r.id in set(ids))
        ids = page_all(h, 40, target=["openai/gpt-4.1", "deepseek/deepseek-chat"], failover=True,
                       since=1_700_000_000.0 + 300)
        assert ids == expected(rows, lambda r: (tried(r, "openai/gpt-4.1") or tried(r, "deepseek/deepseek-chat"))
                               and r.failovers > 0 and r.ts >= 1_700_000_300.0)


def test_failover_filter_and_search_over_every_attempts_error(chains) -> None:
    path, rows, attempts = chains
    with History(path) as h:
        assert page_all(h, 100, failover=True) == expected(rows, lambda r: r.failovers > 0)
        # the final error of these requests is empty: only an attempt's error says "#1234"
        got = page_all(h, 10, q="overloaded #1234")
        assert got == expected(rows, lambda r: any("overloaded #1234" in (a.error or "") for a in attempts[r.id]))
        assert got
        got = page_all(h, 30, q="anthropic/claude-sonnet answered", target="gemini/gemini-2.0-flash")
        assert got == expected(rows, lambda r: any(a.target == "gemini/gemini-2.0-flash" for a in attempts[r.id])
                               and any("anthropic/claude-sonnet answered" in (a.error or "")
                                       for a in attempts[r.id]))


def test_rollups_give_the_same_chart_as_the_rows_and_backfill_rebuilds_them(tmp_path) -> None:
    """Issue 12 (per-target view): hour and day charts come from the writer's roll-ups; their counts
    equal the rows', their percentiles stay within a bin (5%), and a migration rebuilds them."""
    import sqlite3

    from store import rollups
    path = str(tmp_path / "r.db")
    rnd = random.Random(3)
    t0 = 1_700_000_400.0 - (1_700_000_400.0 % 600)
    rows, lat = [], []
    for i in range(4000):
        ts = t0 + i * 21.6                 # 24 h
        rid = f"req_{i:08x}"
        ok = i % 9 != 0
        ms = rnd.lognormvariate(6.0, 0.5)
        rows.append(RequestRow(id=rid, ts=ts, route="chat", stream=True, outcome="ok" if ok else "error",
                               http_status=200 if ok else 503, final_target="openai/gpt-4.1" if ok else None,
                               latency_ms=ms, ttft_ms=ms / 3))
        rows.append(AttemptRow(rid, 1, "openai/gpt-4.1", ts, ms, "ok" if ok else "server", 200 if ok else 503))
        if ok:
            lat.append((ts, ms))
    store = Store(path).start()
    for r in rows:
        assert store.put(r)
    assert store.close(timeout=60)
    with History(path) as h:
        day = h.target_series("openai/gpt-4.1", t0, t0 + 86400, buckets=72)
        hour = h.target_series("openai/gpt-4.1", t0 + 3600, t0 + 7200, buckets=60)
    assert day["resolution_s"] == 600 and hour["resolution_s"] == 60
    for s, since, step in ((day, t0, 1200), (hour, t0 + 3600, 60)):
        for i, p in enumerate(s["points"]):
            values = sorted(ms for ts, ms in lat if since + i * step <= ts < since + (i + 1) * step)
            assert p["n"] == len(values)
            if values:
                want = values[min(len(values) - 1, int(0.5 * len(values)))]
                assert abs(p["p50_ms"] - want) <= want * 0.05 and abs(p["ttft_p50_ms"] - want / 3) <= want / 3 * 0.06
    assert sum(p["failed"] for p in day["points"]) == day["errors_by_class"]["server"] == 4000 - len(lat)
    assert sum(p["attempts"] for p in day["points"]) == 4000
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT * FROM rollups ORDER BY 1, 2, 3, 4, 5").fetchall()
        conn.execute("DELETE FROM rollups")
        rollups.backfill(conn)
        assert conn.execute("SELECT * FROM rollups ORDER BY 1, 2, 3, 4, 5").fetchall() == before
