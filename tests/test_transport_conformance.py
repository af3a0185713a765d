"""Transport conformance of the lean upstream client (gateway/vendors/http.py), against byte-scripted upstreams.

DESIGN.md keeps the lean client only while these pass. Each upstream here is a
raw asyncio server that, per connection and per request, writes exactly the
packets a test scripts (with short sleeps where splitting matters) and records
what it received, so tests can assert both what the client did with odd
answers and what it sent (Host, absolute-form targets, Proxy-Authorization,
that a request was NOT re-sent...).
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import inspect
import socket
import ssl
import struct
import time
import zlib

import pytest

from gateway.vendors.http import Pool
from gateway.vendors.http_errors import (
    ConnectFailed,
    ConnectionLost,
    InvalidHeader,
    ProtocolError,
    ResponseTooLarge,
    UpstreamError,
)
from gateway.vendors.http_proxy import _NoProxy

pytestmark = pytest.mark.timeout(20)

RESET = "reset"   # abort with an RST (SO_LINGER 0)
CLOSE = "close"   # close gracefully (FIN)


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Stream:
    """A script item: write `total` bytes of body in `chunk`-sized writes, counting what went out."""

    def __init__(self, total: int, chunk: int = 1 << 16):
        self.total, self.chunk = total, chunk


class Upstream:
    """A byte-scripted HTTP upstream: connection i plays scripts[i], one answer per request read.

    An answer is a list of items: bytes (one write), float (a sleep), RESET, CLOSE, Stream, or an
    asyncio.Event (wait until the test sets it: ordering without timing assumptions).
    When a connection's answers run out, it stays open, reading, until the client closes it.
    """

    def __init__(self, *scripts: list[list], ssl_ctx: ssl.SSLContext | None = None):
        self.scripts = list(scripts)
        self.ssl_ctx = ssl_ctx
        self.connections = 0
        self.requests: list[tuple[int, bytes, bytes]] = []   # (connection, head, body)
        self.sent = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> Upstream:
        self.server = await asyncio.start_server(self._serve, host, 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/x", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.ssl_ctx else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def heads(self) -> list[bytes]:
        return [h for _, h, _ in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        idx = self.connections
        self.connections += 1
        answers = list(self.scripts[idx]) if idx < len(self.scripts) else []
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append((idx, head, body))
                if not answers:
                    continue
                for item in answers.pop(0):
                    if isinstance(item, bytes):
                        writer.write(item)
                        self.sent += len(item)
                        await writer.drain()
                    elif isinstance(item, float):
                        await asyncio.sleep(item)
                    elif isinstance(item, asyncio.Event):
                        await item.wait()
                    elif isinstance(item, Stream):
                        blob = b"x" * item.chunk
                        left = item.total
                        while left > 0:
                            writer.write(blob[:left])
                            self.sent += min(left, item.chunk)
                            left -= item.chunk
                            await writer.drain()
                    elif item == RESET:
                        sock = writer.get_extra_info("socket")
                        if sock is not None:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        writer.transport.abort()
                        return
                    elif item == CLOSE:
                        writer.close()
                        return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def upstream():
    started: list[Upstream] = []

    async def make(*scripts, ssl_ctx=None, host="127.0.0.1") -> Upstream:
        up = await Upstream(*scripts, ssl_ctx=ssl_ctx).start(host)
        started.append(up)
        return up
    yield make
    for up in started:
        await up.stop()


@pytest.fixture
async def pool():
    p = Pool(connect_timeout=2, env={})
    yield p
    await p.close()


async def until(cond, timeout: float = 5.0) -> None:
    """Wait for a condition instead of sleeping a fixed time (a loaded 2-core machine is slow)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout:g}s"
        await asyncio.sleep(0.005)


async def get(pool: Pool, url: str, **kw) -> tuple[int, bytes]:
    resp = await pool.request("GET", url, {}, None, **kw)
    return resp.status, await resp.read()


# ---------------------------------------------------------------------------------------------- 1xx

async def test_100_continue_before_the_final_response_is_skipped(upstream, pool):
    up = await upstream([[b"HTTP/1.1 100 Continue\r\n\r\n", 0.03, ok(b"final")]])
    resp = await pool.request("POST", up.url(), {}, b"{}")
    assert resp.status == 200 and await resp.read() == b"final"


async def test_103_early_hints_with_headers_is_skipped_and_its_headers_dropped(upstream, pool):
    up = await upstream([[b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 0.03, ok(b"final")]])
    resp = await pool.request("POST", up.url(), {}, b"{}")
    assert resp.status == 200 and "link" not in resp.headers and await resp.read() == b"final"


async def test_several_1xx_split_across_packets_are_skipped(upstream, pool):
    up = await upstream([[b"HTTP/1.1 100 Con", 0.02, b"tinue\r\n", 0.02, b"\r\nHTTP/1.1 103 Early Hints\r\nLi",
                          0.02, b"nk: <x>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n", 0.02, ok(b"final")]])
    assert await get(pool, up.url()) == (200, b"final")


async def test_1xx_and_final_response_in_one_packet(upstream, pool):
    up = await upstream([[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + ok(b"final")]])
    assert await get(pool, up.url()) == (200, b"final")


async def test_no_cross_talk_after_a_1xx_the_next_request_gets_its_own_answer(upstream, pool):
    up = await upstream([[b"HTTP/1.1 100 Continue\r\n\r\n", 0.05, ok(b"first")], [ok(b"second")]])
    assert await get(pool, up.url()) == (200, b"first")
    assert await get(pool, up.url()) == (200, b"second")
    assert up.connections == 1  # the keep-alive connection stayed in sync


async def test_101_switching_protocols_never_asked_for_is_a_protocol_error(upstream, pool):
    up = await upstream([[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n" + ok()]])
    with pytest.raises(ProtocolError, match="101"):
        await get(pool, up.url())
    await asyncio.sleep(0.01)
    assert pool.stats() == {"open": 0, "idle": 0}


# ---------------------------------------------------------------------------------------------- bodies

async def test_content_length_body_and_keep_alive(upstream, pool):
    up = await upstream([[ok(b"one", b"X-A: 1\r\n")], [ok(b"two")]])
    resp = await pool.request("POST", up.url("/v1/chat?x=1"), {"Content-Type": "application/json"}, b'{"a":1}')
    assert resp.headers["x-a"] == "1" and await resp.read() == b"one"
    assert await get(pool, up.url()) == (200, b"two")
    assert up.connections == 1
    head, body = up.requests[0][1], up.requests[0][2]
    assert head.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\n") and body == b'{"a":1}'
    assert b"\r\nContent-Length: 7\r\n" in head and b"\r\nAccept-Encoding: identity\r\n" in head
    assert b"\r\nHost: 127.0.0.1:%d\r\n" % up.port in head


async def test_chunked_body_with_extensions_and_trailers(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=val\r\nhello\r\n",
                          0.02, b"6;x\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"], [ok(b"next")]])
    resp = await pool.request("GET", up.url(), {}, None)
    assert await resp.read() == b"hello world" and "x-trailer" not in resp.headers
    assert await get(pool, up.url()) == (200, b"next") and up.connections == 1


async def test_close_delimited_body(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ", 0.02, b"the end", CLOSE]])
    assert await get(pool, up.url()) == (200, b"until the end")
    await asyncio.sleep(0.01)
    assert pool.stats()["idle"] == 0


async def test_truncated_content_length_body_raises_and_connection_is_not_reused(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a little", 0.02, CLOSE]])
    resp = await pool.request("GET", up.url(), {}, None)
    with pytest.raises(ConnectionLost) as ei:
        await resp.read()
    assert not ei.value.before_headers
    resp.release()
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_truncated_chunked_body_raises_and_connection_is_not_reused(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 0.02, CLOSE]])
    resp = await pool.request("GET", up.url(), {}, None)
    with pytest.raises(ConnectionLost) as ei:
        await resp.read()
    assert not ei.value.before_headers
    resp.release()
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_over_long_body_poisons_the_connection(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA-BYTES"], [ok(b"WRONG")]],
                        [[ok(b"second")]])
    assert await get(pool, up.url()) == (200, b"ok")
    assert await get(pool, up.url()) == (200, b"second")
    assert up.connections == 2


async def test_pipelined_second_response_in_the_same_packet_poisons_the_connection(upstream, pool):
    up = await upstream([[ok(b"first") + ok(b"WRONG")], [ok(b"WRONG")]], [[ok(b"second")]])
    assert await get(pool, up.url()) == (200, b"first")
    assert await get(pool, up.url()) == (200, b"second")
    assert up.connections == 2


async def test_garbage_right_after_a_response_poisons_the_connection(upstream, pool):
    up = await upstream([[ok(b"first"), b"\x00garbage"], [ok(b"WRONG")]], [[ok(b"second")]])
    resp = await pool.request("GET", up.url(), {}, None)
    await until(lambda: resp._conn.closed)  # the garbage arrived (before the caller reads and releases)
    assert await resp.read() == b"first"
    assert await get(pool, up.url()) == (200, b"second")
    assert up.connections == 2


async def test_bytes_sent_to_an_idle_pooled_connection_poison_it(upstream, pool):
    idle = asyncio.Event()
    up = await upstream([[ok(b"first"), idle, ok(b"unsolicited")], [ok(b"WRONG")]], [[ok(b"second")]])
    assert await get(pool, up.url()) == (200, b"first")
    assert pool.stats() == {"open": 1, "idle": 1}
    idle.set()                                      # now the vendor sends to the idle connection
    await until(lambda: pool.stats()["open"] == 0)  # poisoned
    assert await get(pool, up.url()) == (200, b"second")
    assert up.connections == 2


async def test_204_has_no_body_and_connection_is_reused(upstream, pool):
    up = await upstream([[b"HTTP/1.1 204 No Content\r\n\r\n"], [ok(b"next")]])
    assert await get(pool, up.url()) == (204, b"")
    assert await get(pool, up.url()) == (200, b"next") and up.connections == 1


async def test_malformed_status_line_is_a_protocol_error(upstream, pool):
    up = await upstream([[b"HTTP/1.1 2x0 OK\r\n\r\n"]])
    with pytest.raises(ProtocolError, match="malformed") as ei:
        await get(pool, up.url())
    assert ei.value.before_headers


# ---------------------------------------------------------------------------------------------- limits

async def test_oversized_header_block_in_one_packet_is_a_protocol_error(upstream):
    up = await upstream([[b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 2000 + b"\r\nContent-Length: 2\r\n\r\nok"]])
    p = Pool(env={}, header_limit=1024)
    with pytest.raises(ProtocolError, match="header block exceeds 1024") as ei:
        await get(p, up.url())
    assert ei.value.before_headers and p.stats() == {"open": 0, "idle": 0}
    await p.close()


async def test_oversized_header_block_over_many_packets_is_a_protocol_error(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\n"] + [b"X-Fill: " + b"b" * 8000 + b"\r\n", 0.001] * 12])
    with pytest.raises(ProtocolError, match="header block exceeds 65536"):
        await get(pool, up.url())


async def test_many_small_header_fields_are_stopped_at_the_limit(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\n" + b"a: b\r\n" * 40_000 + b"Content-Length: 0\r\n\r\n"]])
    with pytest.raises(ProtocolError, match="header block exceeds"):
        await get(pool, up.url())


async def test_skipped_1xx_blocks_count_towards_the_header_limit(upstream):
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: " + b"l" * 300 + b"\r\n\r\n"
    up = await upstream([[interim, 0.01, interim, 0.01, interim, 0.01, interim, 0.01, ok()]])
    p = Pool(env={}, header_limit=1024)
    with pytest.raises(ProtocolError, match="header block exceeds"):
        await get(p, up.url())
    await p.close()


async def test_body_over_the_limit_raises_promptly_without_buffering_it(upstream, pool):
    total = 40 << 20
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total, Stream(total)]])
    t0 = time.perf_counter()
    resp = await pool.request("GET", up.url(), {}, None, body_limit=1 << 20)
    with pytest.raises(ResponseTooLarge, match="exceeds the limit of 1048576"):
        await resp.read()
    assert time.perf_counter() - t0 < 5
    await asyncio.sleep(0.05)
    # the server could only push the limit plus what the sockets' buffers hold, never the 40 MB
    assert up.sent < 16 << 20, up.sent
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_body_limit_none_lets_a_long_stream_through(upstream, pool):
    total = 3 << 20
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total, Stream(total)]])
    resp = await pool.request("GET", up.url(), {}, None, body_limit=None)
    assert len(await resp.read()) == total


async def test_default_body_limit_comes_from_the_pool(upstream):
    up = await upstream([[ok(b"y" * 5000)]])
    p = Pool(env={}, body_limit=4096)
    resp = await p.request("GET", up.url(), {}, None)
    with pytest.raises(ResponseTooLarge):
        await resp.read()
    await p.close()


# ---------------------------------------------------------------------------------------------- encodings

async def test_gzip_never_asked_for_is_decoded_transparently(upstream, pool):
    text = b"hello gzip " * 500
    gz = gzip.compress(text)
    half = len(gz) // 2
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + b"%x\r\n%s\r\n" % (half, gz[:half]), 0.02,
                          b"%x\r\n%s\r\n0\r\n\r\n" % (len(gz) - half, gz[half:])], [ok(b"next")]])
    resp = await pool.request("GET", up.url(), {}, None)
    assert "content-encoding" not in resp.headers
    assert await resp.read() == text
    assert b"Accept-Encoding: identity" in up.heads[0]
    assert await get(pool, up.url()) == (200, b"next") and up.connections == 1


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_deflate_is_decoded(upstream, pool, wbits):
    c = zlib.compressobj(wbits=wbits)
    data = c.compress(b"deflated " * 100) + c.flush()
    up = await upstream([[ok(data, b"Content-Encoding: deflate\r\n")]])
    assert await get(pool, up.url()) == (200, b"deflated " * 100)


_BOMB: list[bytes] = []


async def test_gzip_bomb_is_stopped_at_the_body_limit(upstream, pool):
    if not _BOMB:
        c = zlib.compressobj(1, wbits=zlib.MAX_WBITS | 16)
        _BOMB.append(c.compress(b"\0" * (64 << 20)) + c.flush())  # 64 MiB of zeros in ~64 KiB
    bomb = _BOMB[0]
    assert len(bomb) < 1 << 20
    up = await upstream([[ok(bomb, b"Content-Encoding: gzip\r\n")]])
    resp = await pool.request("GET", up.url(), {}, None, body_limit=1 << 20)
    with pytest.raises(ResponseTooLarge):
        await resp.read()
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_corrupt_gzip_is_a_protocol_error(upstream, pool):
    up = await upstream([[ok(b"\x1f\x8b\x08\x00garbage-not-gzip", b"Content-Encoding: gzip\r\n")]])
    resp = await pool.request("GET", up.url(), {}, None)
    with pytest.raises(ProtocolError, match="corrupt"):
        await resp.read()


async def test_truncated_gzip_stream_is_a_protocol_error(upstream, pool):
    gz = gzip.compress(bytes(range(256)) * 64)
    up = await upstream([[ok(gz[: len(gz) // 2], b"Content-Encoding: gzip\r\n")]])
    resp = await pool.request("GET", up.url(), {}, None)
    with pytest.raises(ProtocolError, match="ends before"):
        await resp.read()
    assert pool.stats() == {"open": 0, "idle": 0}


@pytest.mark.parametrize("enc", ["br", "zstd", "gzip, br"])
async def test_unknown_encoding_fails_and_closes(upstream, pool, enc):
    up = await upstream([[ok(b"\x0b\x02\x80hello\x03", b"Content-Encoding: %s\r\n" % enc.encode())]])
    with pytest.raises(ProtocolError, match="Content-Encoding"):
        await get(pool, up.url())
    await asyncio.sleep(0.01)
    assert pool.stats() == {"open": 0, "idle": 0}


def _c(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _zlib(wbits: int, data: bytes) -> bytes:
    c = zlib.compressobj(wbits=wbits)
    return c.compress(data) + c.flush()


ENCODED = {"gzip": lambda d: gzip.compress(d), "deflate-zlib": lambda d: _zlib(zlib.MAX_WBITS, d),
           "deflate-raw": lambda d: _zlib(-zlib.MAX_WBITS, d)}


async def test_bytes_after_the_end_of_a_gzip_body_are_a_protocol_error_not_quadratic_cpu(upstream):
    # (the reviewer's test, on this file's byte-scripted upstream)
    gz = gzip.compress(b'{"ok":1}')
    junk = b"x" * 65536
    up = await upstream([[b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
                          + _c(gz)] + [_c(junk)] * 200 + [b"0\r\n\r\n"]])   # 12.5 MiB after the member ends
    p = Pool(env={}, body_limit=1 << 20)
    t0 = time.process_time()
    try:
        resp = await p.request("POST", up.url(), {}, b"{}")
        with pytest.raises(ProtocolError, match="after the end of its compressed body"):
            await resp.read()
        assert p.stats() == {"open": 0, "idle": 0}
    finally:
        await p.close()
    assert time.process_time() - t0 < 1.0


@pytest.mark.parametrize("enc", ENCODED)
@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("split", [False, True], ids=["same-packet", "later-packet"])
async def test_bytes_after_a_compressed_body_fail_it_and_the_connection_is_not_reused(upstream, pool, enc,
                                                                                      status, split):
    blob = ENCODED[enc](b"answer " * 50)
    name = "gzip" if enc == "gzip" else "deflate"
    head = b"HTTP/1.1 %d X\r\nContent-Encoding: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % (status, name.encode())
    body = [head + _c(blob), 0.02, _c(b"tail"), b"0\r\n\r\n"] if split else [head + _c(blob + b"tail") + b"0\r\n\r\n"]
    up = await upstream([body, [ok(b"WRONG")]], [[ok(b"next")]])
    resp = await pool.request("GET", up.url(), {}, None)
    assert resp.status == status
    with pytest.raises(ProtocolError, match="after the end of its compressed body") as ei:
        await resp.read()
    assert not ei.value.before_headers
    assert await get(pool, up.url()) == (200, b"next") and up.connections == 2


async def test_bytes_after_a_compressed_stream_body_fail_the_stream(upstream, pool):
    gz = gzip.compress(b"data: 1\n\n")
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + _c(gz), 0.02, _c(b"data: injected\n\n"), 0.02, b"0\r\n\r\n"]])
    resp = await pool.request("POST", up.url(), {}, b"{}", body_limit=None)
    seen = b""
    with pytest.raises(ProtocolError, match="after the end"):
        while chunk := await resp.read_chunk():
            seen += chunk
    assert b"injected" not in seen
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_a_compressed_body_followed_by_nothing_still_reuses_the_connection(upstream, pool):
    gz = gzip.compress(b"fine")
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + _c(gz[:5]), 0.01, _c(gz[5:]) + b"0\r\n\r\n"], [ok(b"next")]])
    assert await get(pool, up.url()) == (200, b"fine")
    assert await get(pool, up.url()) == (200, b"next") and up.connections == 1


# ---------------------------------------------------------------------------------------------- read after close

async def test_read_chunk_after_close_mid_body_raises_instead_of_a_clean_end(upstream, pool):
    up = await upstream([[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]])
    resp = await pool.request("GET", up.url(), {}, None)
    assert await resp.read_chunk() == b"abc"
    resp.close()
    with pytest.raises(ConnectionLost) as ei:
        await resp.read_chunk()
    assert not ei.value.before_headers
    with pytest.raises(ConnectionLost):
        await resp.read()


async def test_read_chunk_after_close_with_unread_body_raises(upstream, pool):
    up = await upstream([[ok(b"all of it")]])
    resp = await pool.request("GET", up.url(), {}, None)
    await until(lambda: resp._conn.complete)      # complete, but the caller has not read it
    resp.release()                                # (unread body: not pooled either)
    with pytest.raises(ConnectionLost):
        await resp.read_chunk()
    assert pool.stats()["idle"] == 0


async def test_read_chunk_after_a_complete_read_still_returns_the_end(upstream, pool):
    up = await upstream([[ok(b"one")], [ok(b"two")]])
    resp = await pool.request("GET", up.url(), {}, None)
    assert await resp.read() == b"one"            # released to the pool at the end
    assert await resp.read_chunk() == b""
    resp.release()
    resp.close()
    assert await resp.read_chunk() == b""
    other = await pool.request("GET", up.url(), {}, None)   # the same connection, someone else's answer
    assert await resp.read_chunk() == b"" and await other.read() == b"two" and up.connections == 1


# ---------------------------------------------------------------------------------------------- pool order

async def test_idle_connections_are_reused_oldest_first(upstream, pool):
    up = await upstream([[ok(b"a1")], [ok(b"a2")]], [[ok(b"b1")], [ok(b"b2")]])
    ra = await pool.request("GET", up.url(), {}, None)
    rb = await pool.request("GET", up.url(), {}, None)    # ra still busy: a second connection
    assert up.connections == 2
    assert await ra.read() == b"a1"                        # a goes idle first
    assert await rb.read() == b"b1"
    assert pool.stats() == {"open": 2, "idle": 2}
    assert await get(pool, up.url()) == (200, b"a2")      # FIFO: the oldest idle connection
    assert await get(pool, up.url()) == (200, b"b2")      # then b, while a rests


# ---------------------------------------------------------------------------------------------- resets

@pytest.mark.parametrize("packets,before_headers", [
    ([RESET], True),
    ([b"HTTP/1.1 20", 0.02, RESET], True),
    ([b"HTTP/1.1 200 OK\r\nContent-Le", 0.02, RESET], True),
    ([b"HTTP/1.1 100 Continue\r\n\r\n", 0.02, RESET], True),
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0.02, RESET], False),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", 0.02, RESET], False),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1", 0.02, CLOSE], False),
], ids=["before-any-byte", "mid-status-line", "mid-headers", "after-1xx", "mid-body", "mid-chunk",
        "fin-mid-chunk-size"])
async def test_reset_at_every_stage_is_connection_lost(upstream, pool, packets, before_headers):
    up = await upstream([packets])
    with pytest.raises(ConnectionLost) as ei:
        await get(pool, up.url())
    assert ei.value.before_headers is before_headers
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_stale_pooled_connection_closed_while_idle_is_not_used(upstream, pool):
    idle = asyncio.Event()
    up = await upstream([[ok(b"first"), idle, CLOSE]], [[ok(b"second")]])
    assert await get(pool, up.url()) == (200, b"first")
    assert pool.stats() == {"open": 1, "idle": 1}
    idle.set()                                      # the vendor closes the idle connection
    await until(lambda: pool.stats()["open"] == 0)
    assert await get(pool, up.url()) == (200, b"second")
    assert up.connections == 2 and len(up.requests) == 2


async def test_pooled_connection_reset_after_the_request_was_written_is_not_retried(upstream, pool):
    up = await upstream([[ok(b"first")], [RESET]])
    assert await get(pool, up.url()) == (200, b"first")
    with pytest.raises(ConnectionLost) as ei:
        await pool.request("POST", up.url(), {}, b'{"charge": 1}')
    assert ei.value.before_headers
    await asyncio.sleep(0.05)  # (a negative check: a slow machine can only hide a re-send, never fake one)
    assert len(up.requests) == 2 and up.connections == 1  # the POST was not sent again


# ---------------------------------------------------------------------------------------------- request headers

async def test_cr_lf_in_a_request_header_value_is_refused_before_any_byte(upstream, pool):
    up = await upstream([[ok()]])
    for headers in ({"X-A": "v\r\nX-Injected: 1"}, {"X-A": "v\nX"}, {"X-A": "v\0"}, {"X-B\r\nX-C": "v"}):
        with pytest.raises(InvalidHeader) as ei:
            await pool.request("POST", up.url(), headers, b"{}")
        assert isinstance(ei.value, ValueError) and isinstance(ei.value, ConnectFailed)
        assert "Injected" not in str(ei.value)  # the value (maybe a secret) is not echoed
    await asyncio.sleep(0.02)
    assert up.connections == 0 and up.requests == []


# ---------------------------------------------------------------------------------------------- IPv6

def test_host_header_brackets_ipv6_literals_on_the_default_port_and_others():
    p = Pool(env={})
    assert b"\r\nHost: [::1]\r\n" in p._route("http://[::1]/x", None, None).head
    assert b"\r\nHost: [::1]:8080\r\n" in p._route("http://[::1]:8080/x", None, None).head
    assert b"\r\nHost: [2001:db8::1]\r\n" in p._route("https://[2001:db8::1]/x", None, None).head
    assert b"\r\nHost: example.com\r\n" in p._route("https://example.com:443/x", None, None).head


async def test_ipv6_loopback_server_gets_a_bracketed_host(upstream, pool):
    try:
        up = await upstream([[ok(b"v6")]], host="::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine: {e}")
    assert await get(pool, f"http://[::1]:{up.port}/x") == (200, b"v6")
    assert b"\r\nHost: [::1]:%d\r\n" % up.port in up.heads[0]


# ---------------------------------------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("tls")
    ca_file = d / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def server_ctx(*names, **kw) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names, **kw).configure_cert(ctx)
        return ctx
    return server_ctx, str(ca_file)


async def test_tls_with_a_ca_file_works(upstream, pool, tls):
    server_ctx, ca_file = tls
    up = await upstream([[ok(b"secure")], [ok(b"again")]], ssl_ctx=server_ctx("localhost", "127.0.0.1"))
    assert await get(pool, up.url(), ca_file=ca_file) == (200, b"secure")
    assert await get(pool, up.url(), ca_file=ca_file) == (200, b"again") and up.connections == 1


async def test_tls_without_the_ca_fails_verification(upstream, pool, tls):
    server_ctx, _ = tls
    up = await upstream([[ok()]], ssl_ctx=server_ctx("127.0.0.1"))
    with pytest.raises(ConnectFailed, match="TLS verification of 127.0.0.1:.* failed"):
        await get(pool, up.url())


async def test_tls_wrong_host_name_is_connect_failed(upstream, pool, tls):
    server_ctx, ca_file = tls
    up = await upstream([[ok()]], ssl_ctx=server_ctx("vendor.example"))
    with pytest.raises(ConnectFailed, match="(?i)hostname mismatch"):
        await get(pool, up.url(host="localhost"), ca_file=ca_file)
    with pytest.raises(ConnectFailed, match="(?i)IP address mismatch"):
        await get(pool, up.url(), ca_file=ca_file)


async def test_tls_expired_certificate_is_connect_failed(upstream, pool, tls):
    server_ctx, ca_file = tls
    now = datetime.datetime.now(datetime.UTC)
    ctx = server_ctx("127.0.0.1", not_before=now - datetime.timedelta(days=30),
                     not_after=now - datetime.timedelta(days=1))
    up = await upstream([[ok()]], ssl_ctx=ctx)
    with pytest.raises(ConnectFailed, match="expired"):
        await get(pool, up.url(), ca_file=ca_file)


async def test_missing_ca_file_is_connect_failed(pool):
    with pytest.raises(ConnectFailed, match="cannot load CA bundle"):
        await get(pool, "https://127.0.0.1:9/x", ca_file="/nonexistent/ca.pem")


# ---------------------------------------------------------------------------------------------- proxies

class ConnectProxy:
    """A small CONNECT proxy that tunnels to 127.0.0.1 and records what it was asked."""

    def __init__(self, require_auth: bytes | None = None):
        self.require_auth = require_auth
        self.heads: list[bytes] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            if self.require_auth is not None and b"Proxy-Authorization: " + self.require_auth not in head:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            target = head.split(b" ")[1].decode()
            port = int(target.rsplit(":", 1)[1])
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

            async def pipe(r, w):
                try:
                    while data := await r.read(65536):
                        w.write(data)
                        await w.drain()
                except ConnectionError:
                    pass
                finally:
                    w.close()
            await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def connect_proxy():
    made: list[ConnectProxy] = []

    async def make(**kw) -> ConnectProxy:
        p = await ConnectProxy(**kw).start()
        made.append(p)
        return p
    yield make
    for p in made:
        await p.stop()


async def test_https_via_connect_proxy_from_env(upstream, connect_proxy, tls):
    server_ctx, ca_file = tls
    # the vendor's name is resolved by the proxy (which tunnels to 127.0.0.1), never by the client
    up = await upstream([[ok(b"tunnelled")], [ok(b"again")]], ssl_ctx=server_ctx("vendor.test"))
    px = await connect_proxy(require_auth=b"Basic dXNlcjpwQHNz")  # user:p@ss
    p = Pool(env={"HTTPS_PROXY": f"http://user:p%40ss@127.0.0.1:{px.port}", "NO_PROXY": "example.org"})
    url = f"https://vendor.test:{up.port}/v1/x"
    assert await get(p, url, ca_file=ca_file) == (200, b"tunnelled")
    assert await get(p, url, ca_file=ca_file) == (200, b"again")
    assert len(px.heads) == 1 and px.heads[0].startswith(b"CONNECT vendor.test:%d HTTP/1.1\r\n" % up.port)
    assert up.heads[0].startswith(b"GET /v1/x HTTP/1.1\r\n")  # origin form inside the tunnel
    assert b"Proxy-Authorization" not in up.heads[0]  # the proxy's credentials never reach the vendor
    await p.close()


async def test_https_via_per_request_proxy_ignores_env(upstream, connect_proxy, tls, unused_tcp_port):
    server_ctx, ca_file = tls
    up = await upstream([[ok(b"tunnelled")]], [[ok(b"direct")]], ssl_ctx=server_ctx("localhost"))
    px = await connect_proxy()
    p = Pool(env={"HTTPS_PROXY": f"http://127.0.0.1:{unused_tcp_port}"})  # a dead proxy in the env
    url = f"https://localhost:{up.port}/x"
    assert await get(p, url, ca_file=ca_file, proxy=f"http://127.0.0.1:{px.port}") == (200, b"tunnelled")
    assert len(px.heads) == 1
    assert await get(p, url, ca_file=ca_file, proxy="") == (200, b"direct")  # "" = direct
    assert up.connections == 2  # different routes never share a connection
    await p.close()


async def test_no_proxy_bypasses_the_env_proxy(upstream, unused_tcp_port):
    up = await upstream([[ok(b"direct")]])
    p = Pool(env={"HTTP_PROXY": f"http://127.0.0.1:{unused_tcp_port}", "NO_PROXY": "localhost, .example.com,127.0.0.1"})
    assert await get(p, up.url()) == (200, b"direct")
    await p.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "[::1]"])
def test_an_environment_proxy_never_applies_to_loopback(host):
    """A gateway beside a local model server (or its own drills) is not routed to a corporate proxy
    (as Go's net/http decides); a vendor's own `proxy =` still applies."""
    p = Pool(env={"HTTP_PROXY": "http://proxy.internal:3128", "HTTPS_PROXY": "http://proxy.internal:3128"})
    assert p._route(f"http://{host}:8000/v1", None, None).proxy is None
    assert p._route(f"https://{host}/v1", None, None).proxy is None
    assert p._route(f"http://{host}:8000/v1", "http://proxy.internal:3128", None).proxy is not None
    assert p._route("http://vendor.example/v1", None, None).proxy is not None


async def test_gzip_bomb_in_a_stream_is_stopped_per_packet(upstream, pool):
    """Streams have no body limit, but one compressed packet may not inflate without bound either."""
    bomb = gzip.compress(b"\0" * (64 << 20))
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bomb))
    up = await upstream([[head + bomb]])
    resp = await pool.request("GET", up.url(), {}, None, body_limit=None)
    with pytest.raises(ProtocolError, match="inflates past"):
        while await resp.read_chunk():
            pass


async def test_http_target_via_http_proxy_uses_absolute_form(upstream):
    proxy = await upstream([[ok(b"from proxy")]])
    p = Pool(env={"HTTP_PROXY": f"http://bob:hunter2@127.0.0.1:{proxy.port}"})
    resp = await p.request("POST", "http://vendor.invalid:8080/v1/chat?a=1", {"X-K": "v"}, b"{}")
    assert await resp.read() == b"from proxy"
    head = proxy.heads[0]
    assert head.startswith(b"POST http://vendor.invalid:8080/v1/chat?a=1 HTTP/1.1\r\n")
    assert b"\r\nHost: vendor.invalid:8080\r\n" in head
    assert b"\r\nProxy-Authorization: Basic Ym9iOmh1bnRlcjI=\r\n" in head
    await p.close()


async def test_proxy_407_is_connect_failed_without_the_password(upstream, connect_proxy, tls):
    server_ctx, ca_file = tls
    up = await upstream([[ok()]], ssl_ctx=server_ctx("localhost"))
    px = await connect_proxy(require_auth=b"Basic something-else")
    p = Pool(env={})
    with pytest.raises(ConnectFailed) as ei:
        await get(p, f"https://localhost:{up.port}/x", ca_file=ca_file,
                  proxy=f"http://alice:s3cr3t-pw@127.0.0.1:{px.port}")
    msg = str(ei.value)
    assert "407" in msg and f"127.0.0.1:{px.port}" in msg
    assert "s3cr3t-pw" not in msg and "alice" not in msg and "s3cr3t-pw" not in repr(ei.value.args)
    await p.close()


async def test_dead_proxy_is_connect_failed_naming_it_without_credentials(unused_tcp_port):
    p = Pool(env={"HTTPS_PROXY": f"http://u:topsecret@127.0.0.1:{unused_tcp_port}"})
    with pytest.raises(ConnectFailed) as ei:
        await get(p, "https://vendor.invalid/x")
    assert f"via proxy http://127.0.0.1:{unused_tcp_port}" in str(ei.value) and "topsecret" not in str(ei.value)
    await p.close()


@pytest.mark.parametrize("proxy", ["socks5://127.0.0.1:1080", "socks5h://u:pw@h:1"])
async def test_unsupported_proxy_scheme_is_connect_failed(proxy):
    p = Pool(env={})
    with pytest.raises(ConnectFailed, match="not supported") as ei:
        await get(p, "https://vendor.invalid/x", proxy=proxy)
    assert "pw" not in str(ei.value)


@pytest.mark.parametrize("spec,host,port,bypass", [
    ("*", "api.vendor.com", 443, True),
    ("vendor.com", "api.vendor.com", 443, True),
    ("vendor.com", "vendor.com", 443, True),
    (".vendor.com", "api.vendor.com", 443, True),
    (".vendor.com", "vendor.com", 443, True),
    ("vendor.com", "notvendor.com", 443, False),
    ("vendor.com:8443", "api.vendor.com", 443, False),
    ("vendor.com:8443", "api.vendor.com", 8443, True),
    ("10.0.0.0/8", "10.1.2.3", 80, True),
    ("10.0.0.0/8", "11.1.2.3", 80, False),
    ("192.168.1.5", "192.168.1.5", 80, True),
    ("::1", "::1", 80, True),
    ("[::1]:8080", "::1", 8080, True),
    ("[::1]:8080", "::1", 80, False),
    ("fd00::/8", "fd12::5", 80, True),
    ("localhost, internal", "internal", 80, True),
    ("", "vendor.com", 443, False),
])
def test_no_proxy_matching(spec, host, port, bypass):
    assert _NoProxy(spec).bypass(host, port) is bypass


def test_proxy_env_selection_and_pool_keys():
    p = Pool(env={"HTTPS_PROXY": "http://s:1", "http_proxy": "http://h:2", "ALL_PROXY": "http://a:3"})
    assert p._route("https://v.com/x", None, None).proxy.label == "http://s:1"
    assert p._route("http://v.com/x", None, None).proxy.label == "http://h:2"
    q = Pool(env={"ALL_PROXY": "http://a:3"})
    assert q._route("https://v.com/x", None, None).proxy.label == "http://a:3"
    assert q._route("https://v.com/x", "", None).proxy is None
    keys = {q._route("https://v.com/x", px, ca).key for px in (None, "", "http://b:4") for ca in (None, "/ca.pem")}
    assert len(keys) == 6


async def test_all_errors_are_upstream_errors():
    for exc in (ConnectFailed, ConnectionLost, ProtocolError, ResponseTooLarge, InvalidHeader):
        assert issubclass(exc, UpstreamError)


# ---------------------------------------------------------------------------------------------- happy eyeballs

@pytest.mark.parametrize("native", [True, False], ids=["loop-happy-eyeballs", "own-race-for-uvloop"])
async def test_host_with_several_addresses_connects_to_the_one_that_answers(upstream, native, unused_tcp_port):
    loop = asyncio.get_running_loop()
    if native and "happy_eyeballs_delay" not in inspect.signature(loop.create_connection).parameters:
        pytest.skip("this event loop (uvloop?) has no native happy eyeballs")
    up = await upstream([[ok(b"raced")]])
    real = loop.getaddrinfo

    async def two_addresses(host, port, *a, **kw):
        if host != "vendor.test":
            return await real(host, port, *a, **kw)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", unused_tcp_port, 0, 0)),  # refused
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", up.port))]
    try:
        loop.getaddrinfo = two_addresses  # type: ignore[method-assign]
    except AttributeError:
        pytest.skip("this event loop's getaddrinfo cannot be patched")
    p = Pool(env={})
    p._he = native  # False: the path taken under uvloop, whose create_connection has no happy eyeballs
    try:
        assert await get(p, f"http://vendor.test:{up.port}/x") == (200, b"raced")
        assert b"\r\nHost: vendor.test:%d\r\n" % up.port in up.heads[0]
    finally:
        del loop.getaddrinfo
        await p.close()
