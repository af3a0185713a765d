"""The store writer against real SQLite files: every row kind, batching, flush on close,
bounded queue, schema versioning and retention."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store import SCHEMA_VERSION, AttemptRow, DrillRow, EventRow, History, RequestRow, Store, new_id
from store.schema import SchemaError, ensure_schema


def req(i: int, ts: float, **kw) -> RequestRow:
    base = dict(id=f"req_{i:016x}", ts=ts, route="chat", stream=bool(i % 2), outcome="ok", http_status=200,
                final_target="openai/gpt-4.1", model="gpt-4.1", attempts=1, latency_ms=10.0 + i % 7)
    base.update(kw)
    return RequestRow(**base)


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_every_row_kind_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path)).start()
    t = time.time()
    r = RequestRow(id=new_id(), ts=t, route="chat", stream=True, outcome="fallback", http_status=200,
                   client_key_id="k_3fa9", final_target="anthropic/claude", model="claude", attempts=2,
                   failovers=1, latency_ms=812.5, ttft_ms=301.25, overhead_ms=0.4, prompt_tokens=12,
                   completion_tokens=40, cost=0.00123, error_class=None, error_message=None, drill_id="drl_1",
                   request_body='{"messages": []}', response_body="hello")
    a1 = AttemptRow(request_id=r.id, n=1, target="openai/gpt-4.1", ts=t, latency_ms=50.0, outcome="server_error",
                    http_status=503, error="upstream 503", drill_id="drl_1")
    a2 = AttemptRow(request_id=r.id, n=2, target="anthropic/claude", ts=t + 0.05, latency_ms=760.0, outcome="ok",
                    http_status=200, continuation=True)
    ev = EventRow(ts=t + 0.01, kind="failover", target="openai/gpt-4.1", route="chat",
                  detail={"from": "openai/gpt-4.1", "to": "anthropic/claude", "reason": "503"}, request_id=r.id)
    d = DrillRow(id="drl_1", target="openai/gpt-4.1", fault="error:503", params={"duration": 30}, started=t)
    for row in (a2, ev, r, a1, d):           # order of arrival does not matter
        assert store.put(row) is True
    assert store.close() is True

    h = History(str(path))
    got = h.get_request(r.id)
    assert got is not None
    for name in ("route", "outcome", "client_key_id", "final_target", "model", "failovers", "latency_ms", "ttft_ms",
                 "overhead_ms", "prompt_tokens", "completion_tokens", "cost", "drill_id", "request_body",
                 "response_body", "http_status"):
        assert got[name] == getattr(r, name), name
    assert got["stream"] is True
    assert got["attempt_count"] == 2
    assert [a["n"] for a in got["attempts"]] == [1, 2]
    assert got["attempts"][0]["http_status"] == 503 and got["attempts"][0]["error"] == "upstream 503"
    assert got["attempts"][1]["continuation"] is True and got["attempts"][0]["continuation"] is False
    assert [e["kind"] for e in got["events"]] == ["failover"]
    assert got["events"][0]["detail"] == {"from": "openai/gpt-4.1", "to": "anthropic/claude", "reason": "503"}

    drill = h.get_drill("drl_1")
    assert drill is not None and drill["params"] == {"duration": 30} and drill["report"] is None
    assert drill["state"] == "running"
    events = h.list_events(kind="failover")
    assert len(events) == 1 and events[0]["request_id"] == r.id
    h.close()


def test_drill_is_upserted_with_its_report(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    store = Store(path).start()
    t = time.time()
    store.put(DrillRow(id="drl_9", target="openai/gpt-4.1", fault="timeout", params={"duration": 5}, started=t))
    assert store.flush()
    with History(path) as h:
        assert h.get_drill("drl_9")["state"] == "running"
    report = {"time_to_detect_s": 0.42, "requests_rerouted": 17, "client_errors": 0}
    store.put(DrillRow(id="drl_9", target="openai/gpt-4.1", fault="timeout", params={"duration": 5}, started=t,
                       ended=t + 5, state="done", report=report))
    assert store.close()
    with History(path) as h:
        drills = h.list_drills()
        assert len(drills) == 1
        assert drills[0]["state"] == "done" and drills[0]["report"] == report and drills[0]["ended"] == t + 5


def test_rows_are_committed_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path), batch_rows=500).start()
    t = time.time()
    for i in range(5000):
        store.put(req(i, t + i))
    assert store.close()
    stats = store.stats()
    assert stats["written"] == 5000
    # 5000 rows went in far fewer transactions than rows: at most one per batch_rows,
    # plus the batches cut short by the 100 ms timer while the loop was still putting.
    assert 10 <= stats["batches"] <= 200
    assert count(path, "requests") == 5000


def test_close_flushes_a_burst_of_20000(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path)).start()
    t = time.time()
    accepted = 0
    for i in range(20_000):
        accepted += store.put(req(i, t + i * 0.001))
    assert accepted == 20_000
    assert store.close(timeout=60) is True
    s = store.stats()
    assert s["rows_not_written"] == 0 and s["queue_dropped"] == 0 and s["queued"] == 0
    assert count(path, "requests") == 20_000
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path), queue_max=10)          # not started: nothing drains the queue
    t = time.time()
    results = [store.put(req(i, t + i)) for i in range(25)]
    assert results == [True] * 10 + [False] * 15
    s = store.stats()
    assert s["queue_dropped"] == 15 and s["queued"] == 10
    store.start()
    assert store.close() is True
    assert count(path, "requests") == 10
    # once the queue recovered, the drop was recorded as a `store` event
    with History(str(path)) as h:
        ev = h.list_events(kind="store")
    assert len(ev) == 1 and ev[0]["detail"]["dropped"] == 15


def test_bad_row_is_rejected_alone(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path)).start()
    t = time.time()
    store.put(req(1, t))
    store.put(req(2, t, route=None))                       # NOT NULL route: SQLite refuses this one row
    store.put(req(3, t, latency_ms=object()))              # cannot be bound at all
    store.put("not a row")                                  # type: ignore[arg-type]
    store.put(req(4, t))
    assert store.close() is True
    s = store.stats()
    assert s["rows_not_written"] == 3 and s["rejected"] == 3 and "rejected" in (s["last_error"] or "")
    assert s["ok"] is True
    assert count(path, "requests") == 2


def test_schema_version_and_added_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert ensure_schema(conn) == SCHEMA_VERSION
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # a column dropped from the file (as if made before a field was added to records.py) comes back
    conn.execute("ALTER TABLE requests DROP COLUMN overhead_ms")
    ensure_schema(conn)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
    assert "overhead_ms" in cols
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(requests)")}
    assert {"requests_ts", "requests_route_ts", "requests_target_ts", "requests_outcome_ts"} <= indexes
    # a file from a newer Patchbay is refused, not written into
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError):
        ensure_schema(conn)
    conn.close()

    store = Store(str(path)).start()
    store.put(req(1, time.time()))
    store.close(timeout=2)
    s = store.stats()
    assert s["ok"] is False and "newer" in s["last_error"] and s["rows_not_written"] == 1


def test_retention_prunes_old_rows_only(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path), retention_days=1, prune_chunk=100).start()
    now = time.time()
    old, new = now - 3 * 86400, now - 3600
    for i in range(450):
        ts = old + i if i < 300 else new + i
        r = req(i, ts)
        store.put(r)
        store.put(AttemptRow(request_id=r.id, n=1, target="openai/gpt-4.1", ts=ts, latency_ms=5.0, outcome="ok"))
        store.put(EventRow(ts=ts, kind="probe", target="openai/gpt-4.1", detail={"ok": True}))
    assert store.flush()
    pruned = store.prune_now()
    assert pruned == 900
    assert store.close()
    assert count(path, "requests") == 150 and count(path, "attempts") == 150 and count(path, "events") == 150
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT min(ts) FROM requests").fetchone()[0] >= new
    assert store.stats()["pruned"] == 900


def test_retention_keeps_fts_consistent(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path), retention_days=1).start()
    now = time.time()
    store.put(req(1, now - 5 * 86400, outcome="error", error_class="timeout", error_message="vendor went silent"))
    store.put(req(2, now, outcome="error", error_class="timeout", error_message="vendor went silent again"))
    assert store.flush()
    store.prune_now()
    store.close()
    with sqlite3.connect(path) as c:
        c.execute("INSERT INTO requests_fts(requests_fts) VALUES ('integrity-check')")
    with History(str(path)) as h:
        rows, _ = h.list_requests(q="silent")
    assert [r["id"] for r in rows] == [req(2, now).id]


def test_store_imports_neither_textual_nor_aiohttp() -> None:
    code = ("import sys, store, store.writer, store.history, store.cli, store.schema; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('textual','aiohttp')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stdout + out.stderr


def test_memory_store_is_readable_through_its_history() -> None:
    store = Store(":memory:").start()
    t = time.time()
    for i in range(30):
        store.put(req(i, t + i))
    assert store.flush()
    h = store.history()
    rows, cursor = h.list_requests(limit=20)
    assert [r["id"] for r in rows] == [req(i, 0).id for i in range(29, 9, -1)] and cursor
    assert store.stats()["ok"] is True
    h.close()
    assert store.close()


def test_writer_prunes_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path), retention_days=2, prune_interval=0.05).start()
    now = time.time()
    for i in range(40):
        store.put(req(i, now - 10 * 86400 + i if i < 25 else now - i))
    deadline = time.monotonic() + 20
    while store.stats()["pruned"] < 25 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.close()
    assert store.stats()["pruned"] == 25
    assert count(path, "requests") == 15
