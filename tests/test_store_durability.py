"""The store under failure: read-only, unwritable, locked and full databases, and process kills.

None of these may crash or block the caller; each must show in `stats()` and,
once the database is usable again, the held rows must land.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from store import History, RequestRow, Store

ROOT = Path(__file__).resolve().parents[1]


def req(i: int, ts: float | None = None, **kw) -> RequestRow:
    base = dict(id=f"req_{i:016x}", ts=ts if ts is not None else time.time(), route="chat", stream=False,
                outcome="ok", http_status=200, final_target="openai/gpt-4.1")
    base.update(kw)
    return RequestRow(**base)


def count(path: Path | str, table: str = "requests") -> int:
    with sqlite3.connect(path) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def wait_for(pred, timeout: float = 10.0) -> bool:
    """Poll a condition (state, not timing, is what the tests assert)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _make_readonly(path: Path) -> bool:
    """Make a file unwritable even for root (immutable flag); False when this system cannot."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return True
    chattr = shutil.which("chattr")
    if not chattr:
        return False
    return subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0


def _undo_readonly(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def test_read_only_database_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    first = Store(str(path)).start()
    first.put(req(0))
    assert first.close()
    if not _make_readonly(path):
        pytest.skip("cannot make a file read-only here")
    try:
        store = Store(str(path), retry_max=50).start()
        results = [store.put(req(i)) for i in range(1, 301)]
        assert all(results)                          # accepted without blocking the caller
        assert wait_for(lambda: store.stats()["ok"] is False)
        assert wait_for(lambda: store.stats()["rows_not_written"] >= 250)
        s = store.stats()
        assert "readonly" in s["last_error"] or "unable to open" in s["last_error"], s["last_error"]
        assert s["written"] == 0
        assert store.close(timeout=10) is False
        assert store.stats()["rows_not_written"] == 300
    finally:
        _undo_readonly(path)
    assert count(path) == 1


@pytest.mark.parametrize("where", ["missing_dir", "parent_is_file"])
def test_unwritable_location_is_reported_not_raised(tmp_path: Path, where: str) -> None:
    if where == "missing_dir":
        path = tmp_path / "no" / "such" / "dir" / "log.db"
    else:
        (tmp_path / "afile").write_text("x")
        path = tmp_path / "afile" / "log.db"
    store = Store(str(path)).start()                 # does not raise
    assert store.stats()["ok"] is False and "unable to open" in store.stats()["last_error"]
    assert all(store.put(req(i)) for i in range(100))
    assert store.close(timeout=10) is False
    s = store.stats()
    assert s["rows_not_written"] == 100 and s["written"] == 0
    with History(str(path)) as h:                    # the read side copes too
        assert h.list_requests() == ([], None)


def test_locked_database_holds_rows_and_writes_them_after(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path), retry_backoff=(0.05, 0.2)).start()
    store.put(req(0))
    assert store.flush()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")               # another process holding the write lock
    try:
        for i in range(1, 1001):
            assert store.put(req(i))
        assert wait_for(lambda: store.stats()["ok"] is False)
        assert store.flush(timeout=5) is False        # cannot flush into a locked file, and says so
        s = store.stats()
        assert "locked" in s["last_error"] and s["rows_given_up"] == 0 and s["queued"] >= 1000
        # held rows count as not written while the database fails: that is what an operator must see
        assert s["rows_held"] >= 1000 and s["rows_not_written"] == s["rows_held"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert wait_for(lambda: store.stats()["ok"] is True and store.stats()["queued"] == 0)
    assert store.close()
    assert count(path) == 1001
    assert store.stats()["rows_not_written"] == 0
    with History(str(path)) as h:
        ev = h.list_events(kind="store")
    assert ev and ev[0]["detail"]["state"] == "recovered" and "locked" in ev[0]["detail"]["last_error"]


def test_retry_buffer_is_bounded_while_failing(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = Store(str(path), retry_max=100, retry_backoff=(0.05, 0.2)).start()
    assert store.flush()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(1000):
            store.put(req(i))
        assert wait_for(lambda: store.stats()["rows_given_up"] == 900)
        s = store.stats()
        assert s["queued"] == 100 and s["rows_held"] == 100 and s["rows_not_written"] == 1000
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.close()
    assert count(path) == 100                        # the newest 100 were kept
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT min(id) FROM requests").fetchone()[0] == f"req_{900:016x}"


CHILD_FULL = textwrap.dedent("""
    import json, resource, signal, sys, time
    from store import Store, RequestRow
    path = sys.argv[1]
    s = Store(path).start()
    s.put(RequestRow(id='req_first', ts=1.0, route='c', stream=False, outcome='ok', http_status=200))
    s.close()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # get EFBIG from write(), like a full disk
    limit = 2 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    store = Store(path, retry_max=1000, retry_backoff=(0.05, 0.2)).start()
    body = 'x' * 1000
    accepted = 0
    for i in range(3000):
        accepted += store.put(RequestRow(id=f'req_{i:08d}', ts=2.0 + i, route='c', stream=False, outcome='ok',
                                         http_status=200, request_body=body))
        if i % 100 == 0:
            time.sleep(0.01)
    ok_seen = store.stats()['ok']
    deadline = time.monotonic() + 10
    while store.stats()['ok'] and time.monotonic() < deadline:
        time.sleep(0.02)
    failing = store.stats()
    store.close(timeout=5)
    print(json.dumps({'accepted': accepted, 'failing': failing, 'final': store.stats()}))
""")


def test_full_disk_is_reported_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    out = subprocess.run([sys.executable, "-c", CHILD_FULL, str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=90)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["accepted"] == 3000
    assert res["failing"]["ok"] is False and res["failing"]["last_error"]
    final = res["final"]
    # some batches fit before the file hit its limit; the rest were counted, none vanished silently
    assert 0 < final["written"] < 3000 and final["rows_not_written"] > 0
    # every accepted row is either written or counted (the store's own "recovered" events
    # -- a retry can succeed after the WAL is checkpointed -- are rows too)
    assert final["written"] + final["rows_not_written"] >= 3000
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = c.execute("SELECT count(*) FROM requests").fetchone()[0]
        events = c.execute("SELECT count(*) FROM events").fetchone()[0]
    assert n + events == 1 + final["written"]


CHILD_WRITER = textwrap.dedent("""
    import signal, sys, time
    from store import Store, RequestRow, AttemptRow
    path = sys.argv[1]
    store = Store(path, batch_interval=0.02).start()
    stop = False
    def on_term(signum, frame):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    accepted = 0
    i = 0
    last = time.monotonic()
    while not stop and i < 2_000_000:
        rid = f'req_{i:010d}'
        accepted += store.put(RequestRow(id=rid, ts=1e9 + i, route='chat', stream=False, outcome='error',
                                         http_status=503, error_message=f'upstream failure number {i}'))
        accepted += store.put(AttemptRow(request_id=rid, n=1, target='t', ts=1e9 + i, latency_ms=1.0, outcome='x'))
        i += 1
        if i % 200 == 0:
            time.sleep(0.002)
        if time.monotonic() - last > 0.05:
            print('written', store.stats()['written'], flush=True)
            last = time.monotonic()
    store.close(timeout=30)
    print('accepted', accepted, 'written', store.stats()['written'], 'lost', store.stats()['rows_not_written'],
          flush=True)
""")


# the child is stopped once this many rows are committed: dozens of batches in, with more in flight
KILL_AFTER_ROWS = 5_000


def _run_child(path: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD_WRITER, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    written = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("written"):
            written = int(line.split()[1])
            if written >= KILL_AFTER_ROWS:
                break
    return proc, written


def test_sigkill_during_writes_leaves_an_intact_database(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    proc, reported = _run_child(path)
    try:
        assert reported >= KILL_AFTER_ROWS, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        c.execute("INSERT INTO requests_fts(requests_fts) VALUES ('integrity-check')")
        total = sum(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("requests", "attempts", "events"))
    # everything the writer had reported as committed before the kill survived it
    assert total >= reported
    # and the file is still usable by a new writer
    store = Store(str(path)).start()
    store.put(req(10**9))
    assert store.close()


def test_sigterm_during_writes_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    proc, _ = _run_child(path)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    final = [line for line in out.splitlines() if line.startswith("accepted")]
    assert final, err
    _, accepted, _, written, _, lost = final[-1].split()
    # `written` also counts the writer's own `store` events (e.g. a report of rows dropped
    # while the queue was full): every accepted row plus those events, nothing lost.
    events = count(path, "events")
    assert int(lost) == 0 and int(written) == int(accepted) + events
    assert count(path, "requests") + count(path, "attempts") == int(accepted)


def test_process_exit_without_close_still_flushes(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    code = textwrap.dedent("""
        import sys
        from store import Store, RequestRow
        s = Store(sys.argv[1], batch_interval=5.0).start()     # nothing would be written for 5 s
        for i in range(3000):
            s.put(RequestRow(id=f'req_{i:08d}', ts=1.0 + i, route='c', stream=False, outcome='ok', http_status=200))
        # exits here without close()
    """)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert count(path) == 3000
