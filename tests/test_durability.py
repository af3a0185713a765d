"""Durability of a whole gateway process: signals, hard kills, a failing database, overrides writes.

`tests/test_store*.py` prove the store on its own; these run `patchbay serve -c FILE`
as a child process on 127.0.0.1 against fake vendors and judge it only from the
outside: what clients were told, what is in the SQLite file after the process is
gone, what the admin API and /healthz say.

Bounds asserted, and why they are robust:
- SIGTERM: every request a client got a 2xx for has its row (zero loss; the stop
  path waits for in-flight handlers, then flushes the writer).
- SIGKILL: `PRAGMA integrity_check` is "ok" and rows lost <= 500 = the writer's
  `batch_rows`, i.e. at most the one batch that was queued or being committed.
  At this test's request rate (a few hundred to a few thousand per second on two
  cores) the ~100 ms batch window holds well under 500 rows, so the assertion has
  slack for a slow machine without being vacuous (a writer that lost its queue on
  every kill, or committed only at exit, would fail it).
- A database root cannot write: chmod does not stop root, so the cases use what
  does: a file that is not a database, the immutable flag (chattr +i) and a full
  disk (a tiny tmpfs, filled up after the gateway started). The last two skip
  where the machine cannot do them.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from gateway.mock.server import MockVendorThread
from tests.conftest import base_config
from tests.serve_proc import ROOT, ServeProcess, write_config

ADMIN_TOKEN = "durability-admin-token"
BATCH_ROWS = 500          # store.writer.Store default batch_rows: the most one kill may lose
BODY = {"model": "chat", "messages": [{"role": "user", "content": "durability check"}]}


@pytest.fixture
def vendor():
    """Fake vendors on their own loop and thread, so the test's loop only drives clients."""
    with MockVendorThread() as m:
        yield m


def serve(tmp_path: Path, vendor_url: str, mutate=None, name: str = "patchbay") -> ServeProcess:
    raw = base_config(vendor_url, tmp_path)
    if mutate:
        mutate(raw)
    cfg = write_config(tmp_path / f"{name}.toml", raw)
    return ServeProcess(cfg, env={"PATCHBAY_ADMIN_TOKEN": ADMIN_TOKEN})


@dataclass
class Load:
    """Clients hammering the gateway until told to stop; keeps the request id of every 2xx."""

    url: str
    workers: int = 16
    ok_ids: list[str] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def _worker(self, n: int, session: aiohttp.ClientSession) -> None:
        stream = n % 4 == 0          # a quarter of the clients stream
        body = {**BODY, "stream": stream}
        while not self._stop.is_set():
            try:
                async with session.post(f"{self.url}/v1/chat/completions", json=body) as r:
                    data = await r.read()
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                    complete = b"data: [DONE]" in data if stream else bool(data)
                    if 200 <= r.status < 300 and complete:
                        self.ok_ids.append(r.headers["x-request-id"])
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                self.errors += 1
                await asyncio.sleep(0.01)    # the gateway is going away: do not spin

    async def start(self) -> Load:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        self._session = session
        self._tasks = [asyncio.create_task(self._worker(i, session)) for i in range(self.workers)]
        return self

    async def until(self, n_ok: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while len(self.ok_ids) < n_ok:
            assert time.monotonic() < end, f"only {len(self.ok_ids)} ok responses; statuses {self.statuses}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()


def request_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as c:
        return {r[0] for r in c.execute("SELECT id FROM requests")}


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as c:
        return c.execute("PRAGMA integrity_check").fetchone()[0]


async def get_json(url: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers=headers) as r:
            return r.status, await r.json()


async def chat_n(url: str, n: int) -> list[int]:
    async with aiohttp.ClientSession() as s:
        out = []
        for _ in range(n):
            async with s.post(f"{url}/v1/chat/completions", json=BODY) as r:
                await r.read()
                out.append(r.status)
        return out


# --------------------------------------------------------------------------- signals


async def test_sigterm_during_load_loses_no_log_rows(tmp_path: Path, vendor) -> None:
    gw = serve(tmp_path, vendor.url).start()
    db = tmp_path / "patchbay.db"
    load = await Load(gw.url).start()
    try:
        await load.until(400)
        gw.signal(signal.SIGTERM)                       # while 16 clients are mid-request
        rc = await asyncio.to_thread(gw.wait, 30)
    finally:
        await load.stop()
        gw.kill()
    assert rc == 0, gw.stderr()
    ok = set(load.ok_ids)
    assert len(ok) == len(load.ok_ids) >= 400
    missing = ok - request_ids(db)
    assert not missing, f"{len(missing)} of {len(ok)} answered requests have no log row"
    assert "Traceback" not in gw.stderr(), gw.stderr()


async def test_sigkill_during_load_keeps_the_database_intact_and_loses_at_most_one_batch(
        tmp_path: Path, vendor) -> None:
    db = tmp_path / "patchbay.db"
    gw = serve(tmp_path, vendor.url).start()
    load = await Load(gw.url).start()
    try:
        await load.until(600)
        gw.signal(signal.SIGKILL)
        rc = await asyncio.to_thread(gw.wait, 30)
    finally:
        await load.stop()
        gw.kill()
    assert rc == -signal.SIGKILL
    assert integrity(db) == "ok"
    ok = set(load.ok_ids)
    have = request_ids(db)
    lost = ok - have
    print(f"sigkill: {len(ok)} answered, {len(lost)} rows lost")
    assert len(ok) >= 600
    assert len(lost) <= BATCH_ROWS, f"lost {len(lost)} of {len(ok)} rows to a kill (one batch is <= {BATCH_ROWS})"
    assert len(have & ok) >= len(ok) - BATCH_ROWS > 0

    # The killed gateway's database is usable as it is: a new process appends to it.
    gw2 = serve(tmp_path, vendor.url, name="again").start()
    try:
        assert await chat_n(gw2.url, 5) == [200] * 5
    finally:
        assert gw2.stop() == 0
    assert len(request_ids(db)) == len(have) + 5
    assert integrity(db) == "ok"


# --------------------------------------------------------------------------- failing database


def _not_a_database(db: Path) -> None:
    db.write_bytes(b"this is not an SQLite database, whoever you are\n" * 2048)


def _immutable(db: Path) -> None:
    con = sqlite3.connect(db)            # a real, healthy log first
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE placeholder (x)")
    con.commit()
    con.close()
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag (chattr +i)")


def _undo_immutable(db: Path) -> None:
    chattr = shutil.which("chattr")
    if chattr and db.exists():
        subprocess.run([chattr, "-i", str(db)], capture_output=True)


async def _assert_serving_with_failing_store(gw: ServeProcess, n: int) -> dict:
    """n requests all succeed, and the admin API and /healthz both say the log is failing."""
    assert await chat_n(gw.url, n) == [200] * n
    deadline = time.monotonic() + 10
    while True:
        status, state = await get_json(f"{gw.admin_url}/admin/state", ADMIN_TOKEN)
        assert status == 200
        store = state["store"]
        held = store["rows_not_written"] + (store.get("queued") or 0)
        if not store["ok"] and held >= n:
            break
        assert time.monotonic() < deadline, f"store never reported failing with {n} rows held: {store}"
        await asyncio.sleep(0.05)
    assert store["last_error"]
    hstatus, health = await get_json(f"{gw.url}/healthz")
    assert hstatus == 503
    assert health["ok"] is False and health["store"]["ok"] is False
    return store


@pytest.mark.parametrize("breakage", ["not_a_database", "immutable"])
async def test_unwritable_database_keeps_traffic_flowing_and_is_reported(
        tmp_path: Path, vendor, breakage: str) -> None:
    db = tmp_path / "patchbay.db"
    try:
        {"not_a_database": _not_a_database, "immutable": _immutable}[breakage](db)
        gw = serve(tmp_path, vendor.url).start()
        try:
            await _assert_serving_with_failing_store(gw, 30)
        finally:
            rc = gw.stop()
        assert rc == 0, gw.stderr()                     # a clean stop, not a hang or a crash
        log = gw.stderr()
        assert "Traceback" not in log, log
        # the stop says how many rows the log could not keep
        assert "rows could not be written" in log, log
    finally:
        _undo_immutable(db)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """An 8 MiB tmpfs: a disk that can really fill up, for root too. Skips where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte; returns the filler file to delete later."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * size) > 0:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def test_full_disk_keeps_traffic_flowing_is_reported_then_recovers(tmp_path: Path, vendor, tiny_disk) -> None:
    db = tiny_disk / "patchbay.db"

    def on_tiny_disk(raw: dict) -> None:
        raw["store"]["path"] = str(db)

    gw = serve(tmp_path, vendor.url, on_tiny_disk).start()
    try:
        assert await chat_n(gw.url, 3) == [200] * 3      # healthy first, rows on disk
        deadline = time.monotonic() + 5
        while len(request_ids(db)) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        filler = _fill(tiny_disk)
        # enough rows that the WAL must grow past what the full disk allows
        store = await _assert_serving_with_failing_store(gw, 300)
        assert "full" in store["last_error"].lower() or "disk" in store["last_error"].lower(), store
        filler.unlink()                                 # the operator frees space
        deadline = time.monotonic() + 20
        while True:
            _, state = await get_json(f"{gw.admin_url}/admin/state", ADMIN_TOKEN)
            if state["store"]["ok"] and not state["store"]["queued"]:
                break
            assert time.monotonic() < deadline, state["store"]
            await asyncio.sleep(0.1)
        hstatus, _ = await get_json(f"{gw.url}/healthz")
        assert hstatus == 200
    finally:
        rc = gw.stop()
    assert rc == 0, gw.stderr()
    assert len(request_ids(db)) == 303                 # rows held while the disk was full all landed
    assert integrity(db) == "ok"


# --------------------------------------------------------------------------- overrides file

_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from gateway.config_load import load_config
    from gateway.runtime import Runtime
    from gateway.control import overrides

    cfg = load_config(sys.argv[2], env={})
    rt = Runtime(cfg)
    ids = list(rt.targets)
    route = rt.routes["chat"]
    n = 0
    print("ready", flush=True)
    while True:
        n += 1
        for i, tid in enumerate(ids):   # a big file every time: every target, with a long reason naming the write
            rt.set_disabled(rt.targets[tid], True, f"write {n} target {i} " + "x" * 400, "test")
        route.order = list(reversed(route.order))
        overrides.save(rt)
""")


def _valid_overrides(text: str, target_ids: set[str], route_ids: set[str]) -> None:
    """The file is complete TOML of one whole write: either nothing disabled or every target disabled."""
    assert text.startswith("# Patchbay operator overrides"), text[:200]
    data = tomllib.loads(text)
    disabled = data.get("disabled", {})
    assert set(disabled) in (set(), target_ids), sorted(disabled)
    if disabled:
        ns = {v["reason"].split()[1] for v in disabled.values()}
        assert len(ns) == 1 and all(v["reason"].endswith("x" * 400) for v in disabled.values())
    order = data.get("routes", {}).get("chat", {}).get("order")
    assert order is None or set(order) == route_ids


def test_overrides_file_is_never_half_written_when_the_writer_is_killed(tmp_path: Path) -> None:
    """kill -9 a process in the middle of thousands of overrides writes, several times: the file on disk is
    always one complete write (old or new), never a torn one."""
    n_targets = 60
    raw = base_config("http://127.0.0.1:9", tmp_path)
    raw["routes"] = [{"name": "chat", "targets": [{"vendor": "openai", "model": f"m{i}"} for i in range(n_targets)]}]
    raw["prices"] = {}
    cfg = write_config(tmp_path / "patchbay.toml", raw)
    path = tmp_path / "patchbay.overrides.toml"
    target_ids = {f"openai/m{i}" for i in range(n_targets)}
    rng = random.Random(6)
    sizes = set()
    for _ in range(6):
        path.unlink(missing_ok=True)                   # each writer must land its own first write
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(ROOT), str(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()
            deadline = time.monotonic() + 5
            while not path.exists():                   # at least one write landed
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.005)
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
        text = path.read_text()
        sizes.add(len(text))
        _valid_overrides(text, target_ids, target_ids)
    assert max(sizes) > 20_000, (sizes, text)           # the file was big enough for a torn write to show


async def test_overrides_written_through_the_admin_api_survive_kill_9(tmp_path: Path, vendor) -> None:
    """The gateway itself, killed while operators flip a vendor on and off: the file stays whole and the
    restarted gateway applies it."""
    path = tmp_path / "patchbay.overrides.toml"
    gw = serve(tmp_path, vendor.url).start()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    writes = 0
    try:
        async with aiohttp.ClientSession(headers=headers) as s:
            end = time.monotonic() + 0.6
            while time.monotonic() < end:
                action = "disable" if writes % 2 == 0 else "enable"
                async with s.post(f"{gw.admin_url}/admin/vendors/openai/{action}",
                                  json={"reason": "flip " * 50}) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["persisted"] is True
                writes += 1
            gw.signal(signal.SIGKILL)
            # keep writing until the process is gone, so the kill lands mid-stream of writes
            try:
                while True:
                    async with s.post(f"{gw.admin_url}/admin/vendors/openai/disable", json={}) as r:
                        await r.read()
            except aiohttp.ClientError:
                pass
        await asyncio.to_thread(gw.wait, 10)
    finally:
        gw.kill()
    assert writes > 10
    data = tomllib.loads(path.read_text())
    # a vendor disable is kept as such (not copied onto its targets' own entries)
    vendors = set(data.get("disabled_vendors", {}))
    assert vendors in (set(), {"openai"}) and not data.get("disabled")
    gw2 = serve(tmp_path, vendor.url, name="again").start()
    try:
        status, state = await get_json(f"{gw2.admin_url}/admin/state", ADMIN_TOKEN)
        assert status == 200 and state["overrides"]["ok"] is True, state["overrides"]
        disabled = {t["id"] for t in state["targets"] if t["disabled"]}
        assert disabled == {t["id"] for t in state["targets"] if t["vendor"] in vendors}
        assert all(t["vendor_disabled"] and not t["target_disabled"] for t in state["targets"] if t["disabled"])
    finally:
        assert gw2.stop() == 0
