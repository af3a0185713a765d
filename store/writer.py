"""The request log writer: one thread, batched commits, never in the gateway's way.

The gateway calls `Store.put(row)` on its request path. `put` only appends to a
bounded deque (no lock, no I/O, no waiting): when the deque is full the row is
counted as dropped and `put` returns False, so a slow or broken disk can never
stall traffic or grow memory without bound. One writer thread wakes every
`batch_interval` seconds (or as soon as `batch_rows` rows are waiting) and
commits what it finds in transactions of at most `batch_rows` rows.

When SQLite fails (read-only file, disk full, locked by someone else, a missing
directory) the writer keeps the unwritten rows in a bounded retry buffer and
tries again with backoff; rows that overflow that buffer are counted in
`rows_not_written`. `stats()` reports all of it for `/admin/state` and
`/healthz`. A row that SQLite rejects on its own (bad value) is isolated with
savepoints so it cannot poison the rows around it.

The statements themselves (plain sqlite3 `executemany`, sqlite-utils builds the
schema) are in store/sink.py; this module is the thread, the queue and the
retry policy around them.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .records import AttemptRow, DrillRow, EventRow, RequestRow
from .sink import ENV_ERRORS, ROW_ERRORS, Sink

if TYPE_CHECKING:  # pragma: no cover
    from .history import History

Row = RequestRow | AttemptRow | EventRow | DrillRow


class Store:
    """Bounded, non-blocking request log writer. Start once, `put` from anywhere, `close` on stop.

    batch_interval: longest a row waits before its batch is committed (seconds).
    batch_rows:     most rows in one transaction; a full batch wakes the writer early.
    queue_max:      rows waiting for the writer; beyond it `put` drops and counts.
    retry_max:      rows held for retry while the database is failing; beyond it the
                    oldest are given up and counted in `rows_not_written`.
    retention_days: requests, attempts and events older than this are pruned by the
                    writer every `prune_interval` seconds (None or 0 keeps everything).
    """

    def __init__(
        self,
        path: str,
        batch_interval: float = 0.1,
        batch_rows: int = 500,
        queue_max: int = 100_000,
        retry_max: int | None = None,
        retention_days: float | None = None,
        prune_interval: float = 600.0,
        prune_chunk: int = 5000,
        retry_backoff: tuple[float, float] = (0.2, 5.0),
    ):
        if path == ":memory:":
            # a named shared-cache memory database, so `history()` can read what the writer wrote
            path = f"file:patchbay-mem-{os.getpid()}-{id(self):x}?mode=memory&cache=shared"
        self.path = path
        self.batch_interval = batch_interval
        self.batch_rows = max(1, int(batch_rows))
        self.queue_max = max(1, int(queue_max))
        self.retry_max = self.queue_max if retry_max is None else max(0, int(retry_max))
        self.retention_days = retention_days
        self.prune_interval = prune_interval
        self.prune_chunk = prune_chunk
        self._backoff_min, self._backoff_max = retry_backoff

        self._queue: collections.deque[Any] = collections.deque()
        self._pending: collections.deque[Any] = collections.deque()   # taken from the queue, not yet committed
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._drop_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._sink = Sink(path)

        # counters (written by the writer thread; read anywhere)
        self._ok = True
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._written = 0
        self._batches = 0
        self._rows_not_written = 0
        self._rejected = 0
        self._queue_dropped = 0          # total, for stats
        self._dropped_unreported = 0     # since the last `store` event
        self._pruned = 0
        self._next_retry = 0.0
        self._backoff = self._backoff_min
        self._prune_requests: list[threading.Event] = []
        self._atexit: Callable[[], None] | None = None

    # ----------------------------------------------------------------- producer side

    def put(self, row: Row) -> bool:
        """Queue a row for writing; never blocks. False when the row was dropped (queue full or closed)."""
        q = self._queue
        if len(q) >= self.queue_max or self._closed:
            with self._drop_lock:
                if self._closed:
                    self._rows_not_written += 1
                else:
                    self._queue_dropped += 1
                    self._dropped_unreported += 1
            return False
        q.append(row)
        if len(q) >= self.batch_rows and not self._wake.is_set():
            self._wake.set()
        return True

    def history(self) -> History:
        """A History reading this store's database (works for ":memory:" stores too)."""
        from .history import History
        return History(self.path)

    def stats(self) -> dict[str, Any]:
        """Health of the log for /admin/state and /healthz (cheap; safe from any thread)."""
        held = len(self._pending)
        return {
            "ok": self._ok,
            # Rows given up, plus (while the database is failing) rows held for a retry: an operator
            # asking "how much of the log is missing right now" needs both.
            "rows_not_written": self._rows_not_written + (held if not self._ok else 0),
            "rows_given_up": self._rows_not_written,
            "rows_held": held if not self._ok else 0,
            "queue_dropped": self._queue_dropped,
            "queued": len(self._queue) + len(self._pending),
            "last_error": self._last_error,
            "written": self._written,
            "batches": self._batches,
            "rejected": self._rejected,
            "pruned": self._pruned,
            "failing_since": self._failing_since,
            "path": self.path,
        }

    # ----------------------------------------------------------------- lifecycle

    def start(self, open_timeout: float = 2.0) -> Store:
        """Start the writer thread. Never raises for a bad database: that shows in `stats()`.

        Waits up to `open_timeout` for the first open so the schema exists before
        readers look, without letting a stuck disk hold up the gateway's start.
        """
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="patchbay-store-writer", daemon=True)
        self._thread.start()
        # a process that exits without close() still flushes (bounded), instead of the
        # daemon thread dying with the queue in memory
        self._atexit = _close_at_exit(self)
        atexit.register(self._atexit)
        self._opened.wait(open_timeout)
        return self

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every row put before this call is committed. True if that happened within
        `timeout`; False on timeout or while the database is failing (the rows stay held for retry)."""
        if self._thread is None or not self._thread.is_alive():
            return not self._queue and not self._pending
        done = threading.Event()
        with self._flush_lock:
            self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout) and self._ok

    def close(self, timeout: float = 10.0) -> bool:
        """Stop accepting rows, write everything queued, stop the thread.

        Returns True when the writer stopped with nothing left over and the
        database healthy; False when the database was failing or `timeout` hit.
        Rows that could not be written are counted in `rows_not_written` (rows
        SQLite itself refused are also counted, in `rejected`).
        """
        self._closed = True
        self._stopping = True
        self._wake.set()
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                with self._drop_lock:
                    self._last_error = self._last_error or "close timed out"
                return False
        else:
            lost = len(self._queue)
            self._queue.clear()
            self._rows_not_written += lost
            return lost == 0
        return self._ok and not self._queue and not self._pending

    # ----------------------------------------------------------------- writer thread

    def _run(self) -> None:
        self._try_open()
        self._opened.set()
        next_prune = time.monotonic() + min(60.0, self.prune_interval)
        try:
            while True:
                if not self._stopping:
                    timeout = self.batch_interval
                    if not self._ok:
                        timeout = max(0.01, min(self.batch_interval, self._next_retry - time.monotonic()))
                    self._wake.wait(timeout)
                    self._wake.clear()
                with self._flush_lock:
                    waiters, self._flush_waiters = self._flush_waiters, []
                stopping = self._stopping
                try:
                    self._cycle()
                except Exception as exc:    # a bug here must not kill the writer: report, back off, go on
                    self._fail(exc)
                    self._sink.close()
                if waiters and not self._pending:
                    # everything queued before the flush request has been taken and written
                    for w in waiters:
                        w.set()
                elif waiters:
                    if stopping or not self._ok:
                        for w in waiters:   # failing: flush cannot succeed now; report via stats
                            w.set()
                    else:
                        with self._flush_lock:
                            self._flush_waiters.extend(waiters)
                if stopping:
                    if self._queue or (self._pending and self._ok):
                        continue        # keep draining until empty
                    # one last attempt for rows held while failing, then give up on them
                    if self._pending:
                        self._retry_now()
                        self._cycle()
                        if self._ok:
                            continue    # it worked: drain what is left (the recovery event)
                    self._give_up(len(self._pending) + len(self._queue))
                    break
                with self._flush_lock:
                    prune_requests, self._prune_requests = self._prune_requests, []
                if prune_requests:
                    if self._ok:
                        self._prune(budget=None)
                        self._analyze()
                    for done in prune_requests:
                        done.set()
                elif self._ok and time.monotonic() >= next_prune:
                    self._prune(budget=2.0)
                    self._analyze()
                    next_prune = time.monotonic() + self.prune_interval
        finally:
            with self._flush_lock:
                waiters = self._flush_waiters + self._prune_requests
                self._flush_waiters, self._prune_requests = [], []
            for w in waiters:
                w.set()
            self._sink.close()

    def _try_open(self) -> bool:
        try:
            self._sink.open()
        except Exception as exc:  # never let the writer die: report and retry
            self._fail(exc)
            return False
        return True

    def _retry_now(self) -> None:
        self._next_retry = 0.0

    def _cycle(self) -> None:
        """Move queued rows to pending, then commit pending in batches (or hold them while failing)."""
        q, pending = self._queue, self._pending
        while q:
            try:
                pending.append(q.popleft())
            except IndexError:
                break
        self._report_drops()
        if not self._ok and time.monotonic() < self._next_retry:
            self._trim_pending()
            return
        if self._sink.conn is None and not self._try_open():
            self._trim_pending()
            return
        while pending:
            n = min(self.batch_rows, len(pending))
            batch = list(itertools.islice(pending, n))
            try:
                self._sink.write(batch)
            except ROW_ERRORS:
                if not self._write_careful(batch):
                    break
            except ENV_ERRORS as exc:
                self._fail(exc)
                self._sink.close()
                break
            except Exception as exc:  # unknown: treat as environmental, keep the rows
                self._fail(exc)
                self._sink.close()
                break
            else:
                self._written += n
                self._batches += 1
            for _ in range(n):
                pending.popleft()
            if not self._ok:
                self._recovered()
        # Rows that arrived meanwhile wait for the next cycle (woken at once if a full
        # batch is waiting), so flush and prune requests are served even under overload.
        if len(q) >= self.batch_rows:
            self._wake.set()
        self._trim_pending()

    def _write_careful(self, batch: list[Any]) -> bool:
        """Isolate rows SQLite refuses; False when the database itself failed meanwhile."""
        try:
            written, rejected = self._sink.write_careful(batch)
        except Exception as exc:
            self._fail(exc)
            self._sink.close()
            return False
        self._written += written
        self._batches += 1
        if rejected:
            self._rejected += len(rejected)
            self._rows_not_written += len(rejected)
            self._last_error = f"row rejected: {rejected[-1][1]}"
        return True

    def _trim_pending(self) -> None:
        over = len(self._pending) - self.retry_max
        if over > 0 and not self._ok:
            for _ in range(over):
                self._pending.popleft()
            self._rows_not_written += over

    def _give_up(self, n: int) -> None:
        if n:
            self._pending.clear()
            self._queue.clear()
            self._rows_not_written += n

    def _fail(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._ok:
            self._failing_since = time.time()
            self._backoff = self._backoff_min
        else:
            self._backoff = min(self._backoff_max, self._backoff * 2)
        self._ok = False
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._next_retry = now + self._backoff

    def _recovered(self) -> None:
        since = self._failing_since
        self._ok = True
        self._failing_since = None
        self._backoff = self._backoff_min
        self._queue.append(EventRow(
            ts=time.time(), kind="store",
            detail={"state": "recovered", "failing_seconds": round(time.time() - since, 3) if since else None,
                    "rows_not_written": self._rows_not_written, "last_error": self._last_error},
        ))
        self._last_error = None

    def _report_drops(self) -> None:
        """Once the queue has room again, record how many rows were dropped while it was full."""
        if self._dropped_unreported and len(self._queue) < self.queue_max // 2:
            with self._drop_lock:
                n, self._dropped_unreported = self._dropped_unreported, 0
            self._pending.append(EventRow(
                ts=time.time(), kind="store",
                detail={"dropped": n, "queue_dropped_total": self._queue_dropped, "queue_max": self.queue_max},
            ))

    def _prune(self, budget: float | None) -> None:
        """Delete rows past retention in short transactions; `budget` caps the seconds spent now."""
        if not self.retention_days or self._sink.conn is None:
            return
        cutoff = time.time() - float(self.retention_days) * 86400.0
        started = time.monotonic()
        try:
            while True:
                n = self._sink.prune(cutoff, self.prune_chunk)
                self._pruned += n
                if n == 0:
                    break
                if self._queue:          # let live rows through between chunks
                    self._cycle()
                    if self._sink.conn is None:
                        return
                if self._stopping or (budget is not None and time.monotonic() - started > budget):
                    break
        except Exception as exc:
            self._fail(exc)
            self._sink.close()

    def _analyze(self) -> None:
        """Refresh planner statistics so combined filters (route + outcome) pick the selective index."""
        try:
            if self._sink.conn is not None:
                self._sink.analyze()
        except Exception as exc:
            self._fail(exc)
            self._sink.close()

    def prune_now(self, timeout: float = 60.0) -> int:
        """Run a full retention pass in the writer thread now (operators and tests); returns rows pruned."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("store writer is not running")
        before = self._pruned
        done = threading.Event()
        with self._flush_lock:
            self._prune_requests.append(done)
        self._wake.set()
        done.wait(timeout)
        return self._pruned - before


def _close_at_exit(store: Store) -> Callable[[], None]:
    ref = weakref.ref(store)

    def close() -> None:
        s = ref()
        if s is not None:
            s.close(timeout=5.0)
    return close


__all__ = ["Store", "Row"]
