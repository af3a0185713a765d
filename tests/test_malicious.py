"""Malicious and broken clients against a real `patchbay serve` process.

Each attack runs from raw sockets in this process while a well-behaved client in
its own thread keeps sending chat requests through the same gateway. What is
asserted:

- liveness: every normal request completes, each within 5 s (a generous bound:
  the point is "not stalled behind the attacker", not speed);
- the attacker gets a 4xx (never a 500) or is disconnected;
- nothing crashes: the process is still up afterwards, /healthz answers, and its
  log has no traceback;
- nothing is held forever: headers that never finish are cut off by
  `server.keepalive_timeout` and bodies that never finish get a 408 after
  `server.read_timeout` (both set low here so the test can watch them fire).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from gateway.mock.server import MockVendorThread
from tests.conftest import base_config
from tests.serve_proc import ServeProcess, write_config

LIVENESS_S = 5.0
READ_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "are you still there?"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One gateway process for the module: attacks must not leave it unable to serve the next one."""
    tmp = tmp_path_factory.mktemp("malicious")
    with MockVendorThread() as vendor:
        raw = base_config(vendor.url, tmp)
        raw["server"].update(read_timeout=READ_TIMEOUT, keepalive_timeout=KEEPALIVE_TIMEOUT)
        raw["store"]["log_bodies"] = True       # the request body is re-encoded for the log: exercise it
        gw = ServeProcess(write_config(tmp / "patchbay.toml", raw), env={"PATCHBAY_ADMIN_TOKEN": "m-token"})
        gw.start()
        try:
            yield gw
        finally:
            rc = gw.stop()
            assert rc == 0, gw.stderr()


class NormalClient:
    """A polite client in its own thread (own connection pool, no shared event loop)."""

    def __init__(self, url: str):
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.post("/v1/chat/completions", json=CHAT)
                    if r.status_code != 200 or "Hello from" not in r.text:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                self.latencies.append(time.monotonic() - t0)
                self._stop.wait(0.05)

    def __enter__(self) -> NormalClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        # a few answers at least, even when the attack was over quickly
        deadline = time.monotonic() + 15
        while len(self.latencies) < 3 and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(60)

    def check(self, at_least: int = 3) -> None:
        assert not self.failures, self.failures[:5]
        assert len(self.latencies) >= at_least, f"the normal client got only {len(self.latencies)} answers"
        slow = [round(x, 2) for x in self.latencies if x > LIVENESS_S]
        assert not slow, f"normal requests stalled behind the attacker: {slow}"


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _read_response(reader: asyncio.StreamReader, timeout: float = 20) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length framed), or (0, b"") when closed first."""
    async with asyncio.timeout(timeout):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return 0, b""
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        body = await reader.readexactly(length) if length else b""
        return status, body


def assert_alive(gw: ServeProcess) -> None:
    assert gw.proc is not None and gw.proc.poll() is None, gw.stderr()
    r = httpx.get(f"{gw.url}/healthz", timeout=10)
    assert r.status_code == 200, r.text
    log = gw.stderr()
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]


# --------------------------------------------------------------------------- attacks


async def test_slowloris_headers_do_not_stall_others_and_are_cut_off(gateway: ServeProcess) -> None:
    host, port = _hostport(gateway.url)
    n = 150
    conns = [await asyncio.open_connection(host, port) for _ in range(n)]
    trickle = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    closed_at: dict[int, float] = {}
    t0 = time.monotonic()

    async def slow(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for b in trickle:                       # one byte every 100 ms until the server hangs up
            try:
                writer.write(bytes([b]))
                await writer.drain()
            except ConnectionError:
                break
            try:
                async with asyncio.timeout(0.1):
                    if await reader.read(4096) == b"" or reader.at_eof():
                        break
            except TimeoutError:
                pass
            except ConnectionError:
                break
            if time.monotonic() - t0 > 20:
                return                          # never cut off: the assertion below reports it
        closed_at[i] = time.monotonic() - t0
        writer.close()

    with NormalClient(gateway.url) as normal:
        await asyncio.gather(*(slow(i, r, w) for i, (r, w) in enumerate(conns)))
    normal.check()
    assert len(closed_at) == n, f"{n - len(closed_at)} slowloris connections were still open after 20 s"
    assert_alive(gateway)


async def test_a_body_that_never_ends_gets_408_and_does_not_stall_others(gateway: ServeProcess) -> None:
    host, port = _hostport(gateway.url)
    n = 20
    results: list[tuple[int, bytes]] = []

    async def never_ending() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n{\"model\": \"chat\", \"messages\": [")
        await writer.drain()
        response = asyncio.ensure_future(_read_response(reader))
        try:
            for _ in range(200):                 # up to 20 s of one byte per 100 ms
                if response.done():
                    break
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        results.append(await response)
        writer.close()

    with NormalClient(gateway.url) as normal:
        await asyncio.gather(*(never_ending() for _ in range(n)))
    normal.check()
    assert [s for s, _ in results] == [408] * n, results[:3]
    assert all(b'"error"' in body and b"request_timeout" in body for _, body in results)
    assert_alive(gateway)


def test_ten_thousand_pipelined_requests_on_one_connection(gateway: ServeProcess) -> None:
    host, port = _hostport(gateway.url)
    n = 10_000
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with NormalClient(gateway.url) as normal:
        with socket.create_connection((host, port), timeout=30) as s:
            sender = threading.Thread(target=s.sendall, args=(one * n,), daemon=True)
            sender.start()
            got = bytearray()
            seen = 0
            deadline = time.monotonic() + 60
            while seen < n and time.monotonic() < deadline:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
                seen = got.count(b"HTTP/1.1 ")
            sender.join(10)
    normal.check()
    assert got.count(b"HTTP/1.1 200 OK") == n
    assert_alive(gateway)


def test_thousands_of_tiny_bad_requests_get_4xx_on_one_keep_alive_connection(gateway: ServeProcess) -> None:
    """Keep-alive, one after another, each a different kind of junk: all 4xx, none 500."""
    bodies = [b"", b"{", b"[]", b'{"model": 1}', b'{"model": "chat"}', b'{"model": "nope", "messages": [{}]}',
              b'{"model": "chat", "messages": "x"}', b"null"]
    statuses: dict[int, int] = {}
    with NormalClient(gateway.url) as normal, httpx.Client(base_url=gateway.url, timeout=30) as c:
        for i in range(3_000):
            r = c.post("/v1/chat/completions", content=bodies[i % len(bodies)])
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    normal.check()
    assert statuses and all(400 <= s < 500 for s in statuses), statuses
    assert_alive(gateway)


@pytest.mark.parametrize("depth", [100_000, 900])
def test_huge_json_nesting_is_a_400(gateway: ServeProcess, depth: int) -> None:
    """100,000 nested arrays (past every parser's limit) and 900 (inside orjson's read limit, past its
    write limit: the body must still be refused as the client's 400, not crash re-encoding it)."""
    nested = b"[" * depth + b"]" * depth
    variants = [nested, b'{"model": "chat", "messages": [{"role": "user", "content": ' + nested + b"}]}",
                b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "metadata": '
                + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"]
    with NormalClient(gateway.url) as normal, httpx.Client(base_url=gateway.url, timeout=30) as c:
        for body in variants:
            for stream in (False, True):
                b = body if not stream or not body.startswith(b"{") else body[:-1] + b', "stream": true}'
                r = c.post("/v1/chat/completions", content=b, headers={"content-type": "application/json"})
                assert 400 <= r.status_code < 500, (depth, r.status_code, r.text[:300])
                assert r.json()["error"]["message"]
    normal.check()
    assert_alive(gateway)


def test_a_50_mb_body_is_refused_with_413(gateway: ServeProcess) -> None:
    big = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * (50 * 1024 * 1024) + b'"}]}'

    def chunks():
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    with NormalClient(gateway.url) as normal, httpx.Client(base_url=gateway.url, timeout=30) as c:
        # declared length: refused from the headers
        r = c.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text[:300]
        assert r.json()["error"]["code"] == "request_too_large"
        # chunked, no length: refused once the limit is crossed
        try:
            r = c.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text[:300]
        except httpx.WriteError:
            pass                                # the server hung up on the rest of the upload: also a refusal
    normal.check()
    assert_alive(gateway)


def test_all_attacks_at_once(gateway: ServeProcess) -> None:
    """Every attacker together for a few seconds; the polite client still gets every answer."""
    host, port = _hostport(gateway.url)
    stop = threading.Event()
    errors: list[str] = []

    def pipeline() -> None:
        try:
            with socket.create_connection((host, port), timeout=30) as s:
                s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
                got = b""
                while got.count(b"HTTP/1.1 ") < 2000 and not stop.is_set():
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    got += chunk
                if got.count(b"HTTP/1.1 200") != 2000:
                    errors.append(f"pipeline: {got.count(b'HTTP/1.1 200')} of 2000")
        except OSError as e:
            errors.append(f"pipeline: {e!r}")

    def slowloris() -> None:
        socks = [socket.create_connection((host, port), timeout=5) for _ in range(50)]
        try:
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 40:
                if stop.is_set():
                    break
                for s in socks:
                    try:
                        s.send(bytes([b]))
                    except OSError:
                        pass
                time.sleep(0.1)
        finally:
            for s in socks:
                s.close()

    def nesting() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/chat/completions", content=b"[" * 100_000 + b"]" * 100_000)
                if r.status_code != 400:
                    errors.append(f"nesting: {r.status_code}")
                    return

    with NormalClient(gateway.url) as normal:
        threads = [threading.Thread(target=f, daemon=True) for f in (pipeline, slowloris, nesting)]
        for t in threads:
            t.start()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    normal.check()
    assert_alive(gateway)
