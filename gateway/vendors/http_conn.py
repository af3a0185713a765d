"""One keep-alive HTTP/1.1 connection to a vendor, and the response read from it.

`_Conn` is the asyncio protocol that parses responses with llhttp (httptools),
enforces the header and body limits, decodes gzip/deflate and decides whether
the connection may be reused; `Response` is what a caller reads the body
through. Why the rules are as strict as they are: gateway/vendors/http.py.
The pool that owns these connections lives there too.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from gateway.vendors.http_errors import ConnectionLost, ProtocolError, ResponseTooLarge, UpstreamError

if TYPE_CHECKING:   # the pool creates connections; at run time this module never imports it
    from gateway.vendors.http import Pool

PAUSE_AT = 1 << 20        # stop reading from the vendor when this much body waits unread
STREAM_INFLATE_MAX = 8 << 20   # streams: one compressed packet may not inflate past this


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the reason is in _Conn.error or is 'trailing bytes')."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses responses with llhttp (httptools)."""

    def __init__(self, key: tuple, pool: Pool):
        self.key = key
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle = False
        self.idle_since = 0.0
        self.header_limit = pool.header_limit
        self.body_limit: int | None = None
        self.interim = False
        self.decoder: Any = None
        self.body: deque[bytes] = deque()
        self._reset()

    def _reset(self) -> None:
        # (interim and decoder are back to False/None whenever a response completes)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.cl_dropped = False     # a Content-Length we removed after decoding (see connection_lost)
        self.head_bytes = 0         # bytes fed while the final header block was incomplete
        self.head_size = 0          # header bytes counted field by field (covers the last packet)
        self.buffered = 0          # (self.body is empty here: only a fully read connection is reused)
        self.received = 0
        self.paused = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete or self.idle:
            self._poison()  # nothing may follow a response: it would reach the next caller
            return
        if not self.headers_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            if self.complete:
                self._poison()  # bytes after the response, in the same packet
                return
            if self.error is None:
                self.error = ProtocolError(f"vendor sent malformed HTTP ({e})", not self.headers_done)
            self._abort()
            self._wake()
            return
        if not self.headers_done and self.head_bytes > self.header_limit:
            self._fail(ProtocolError(f"vendor's response header block exceeds {self.header_limit} bytes"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._all.discard(self)
        if self.complete or self.error is not None or self.idle:
            pass
        elif self.headers_done and not self._framed():
            try:
                self._finish_decoding()
                self.complete = True  # a body delimited by the connection closing
            except _Stop:
                pass
        else:
            what = "before response headers" if not self.headers_done else "while reading the response"
            reason = f": {exc}" if exc else ""
            self.error = ConnectionLost(f"connection lost {what}{reason}", not self.headers_done)
        self._wake()

    def _framed(self) -> bool:
        """Content-Length or chunked; else the body is delimited by the connection closing."""
        h = self.headers
        return self.cl_dropped or "content-length" in h or "transfer-encoding" in h or self.status in (204, 304)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            raise _Stop  # a second response after the final one: poison (see data_received)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self.head_size = self.head_size + len(name) + len(value) + 4
        if size > self.header_limit:  # stop before a flood of small fields costs CPU
            self.error = ProtocolError(f"vendor's response header block exceeds {self.header_limit} bytes",
                                       not self.headers_done)
            raise _Stop
        if self.headers_done:
            return  # chunked trailers: not part of the response headers
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        prev = self.headers.get(key)
        self.headers[key] = f"{prev}, {val}" if prev is not None else val

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self.error = ProtocolError("vendor switched protocols (101) without being asked")
                raise _Stop
            self.interim = True  # 100 Continue, 103 Early Hints...: skipped (RFC 9110 15.2)
            self.headers = {}
            return
        h = self.headers
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        enc = h.get("content-encoding")
        if enc is not None:
            e = enc.strip().lower()
            if e in ("gzip", "x-gzip"):
                self.decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
            elif e == "deflate":
                self.decoder = _Deflate()
            elif e != "identity" and e != "":
                self.error = ProtocolError(
                    f"vendor sent Content-Encoding {enc.strip()[:40]!r}, which was not asked for "
                    "(Accept-Encoding: identity) and cannot be decoded")
                raise _Stop
            if self.decoder is not None:  # the body handed on is decoded: say so
                del h["content-encoding"]
                self.cl_dropped = h.pop("content-length", None) is not None
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.decoder is not None:
            body = self._decode(body)
            if not body:
                return
        self._add(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.decoder is not None:
            self._finish_decoding()
        self.complete = True
        self._wake()

    # body handling
    def _add(self, body: bytes) -> None:
        self.received += len(body)
        limit = self.body_limit
        if limit is not None and self.received > limit:
            self._too_large(limit)
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_AT and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def _too_large(self, limit: int) -> None:
        self.body.clear()  # raise at once, and free what waits unread
        self.buffered = 0
        self.error = ResponseTooLarge(f"vendor's response body exceeds the limit of {limit} bytes")
        raise _Stop

    def _decode(self, data: bytes) -> bytes:
        limit = self.body_limit
        # max_length: never inflate more than one byte past the limit, whatever the ratio; a stream
        # (no body limit) may not inflate one packet past STREAM_INFLATE_MAX either
        room = STREAM_INFLATE_MAX + 1 if limit is None else max(1, limit - self.received + 1)
        d = self.decoder
        if d.eof:  # (zlib would append these bytes to unused_data: quadratic copying, nothing decoded)
            self._after_end()
        try:
            out = d.decompress(data, room)
        except zlib.error as e:
            self.error = ProtocolError(f"vendor sent a corrupt compressed body ({e})", False)
            raise _Stop from None
        if d.eof and d.unused_data:
            self._after_end()
        if limit is None and len(out) > STREAM_INFLATE_MAX:
            self.error = ProtocolError(f"one compressed packet of the vendor's stream inflates past "
                                       f"{STREAM_INFLATE_MAX} bytes", False)
            raise _Stop
        return out

    def _after_end(self) -> None:
        """Bytes after the end of the compressed stream (in the same body): where does this body end?
        Not trustworthy; the connection is dropped."""
        self.body.clear()
        self.buffered = 0
        self.error = ProtocolError("vendor sent bytes after the end of its compressed body", False)
        raise _Stop

    def _finish_decoding(self) -> None:
        d = self.decoder
        if d is not None:
            self.decoder = None
            try:
                tail = d.flush()
            except zlib.error as e:
                self.error = ProtocolError(f"vendor sent a corrupt compressed body ({e})", False)
                raise _Stop from None
            if tail:
                self._add(tail)
            if not d.eof:
                self.error = ProtocolError("vendor's compressed body ends before the compressed stream does", False)
                raise _Stop

    # helpers
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._abort()
        self._wake()

    def _poison(self) -> None:
        """The connection can no longer be trusted; what was already parsed stays readable."""
        self.keep_alive = False
        self._abort()

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Deflate:
    """'deflate' as sent in the wild: zlib-wrapped (RFC 9110) or, by some servers, raw."""

    def __init__(self) -> None:
        self.d = zlib.decompressobj(zlib.MAX_WBITS)
        self.started = False

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if not self.started:
            self.started = True
            try:
                return self.d.decompress(data, max_length)
            except zlib.error:
                self.d = zlib.decompressobj(-zlib.MAX_WBITS)
        return self.d.decompress(data, max_length)

    def flush(self) -> bytes:
        return self.d.flush()

    @property
    def eof(self) -> bool:
        return self.d.eof

    @property
    def unused_data(self) -> bytes:
        return self.d.unused_data


class Response:
    """A vendor's response; headers are read, the body is read on demand."""

    __slots__ = ("_conn", "_done", "_ended", "_pool", "headers", "status")

    def __init__(self, conn: _Conn, pool: Pool):
        self._conn = conn
        self._pool = pool
        self.status = conn.status
        self.headers = conn.headers     # names lower-cased
        self._done = False
        self._ended = False             # the whole body was handed to the caller

    async def read_chunk(self) -> bytes:
        """The next piece of (decoded) body; b"" at the end. Raises ConnectionLost on a cut,
        ResponseTooLarge past the body limit, ProtocolError on corrupt framing or encoding.
        After release()/close(): b"" only if the whole body had been read; else ConnectionLost
        (a b"" would look like a clean end of a truncated body)."""
        if self._done:  # the connection may already serve someone else: never look at it
            if self._ended:
                return b""
            raise ConnectionLost("response was closed before its body was read to the end", False)
        c = self._conn
        while True:
            if c.body:
                chunk = c.body.popleft()
                c.buffered -= len(chunk)
                if c.paused and c.buffered < PAUSE_AT // 2 and c.transport is not None:
                    c.transport.resume_reading()
                    c.paused = False
                return chunk
            if c.complete:
                self._ended = True
                self.release()
                return b""
            if c.error is not None:
                raise c.error
            await c.wait()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (or its first `limit` bytes, then the connection is dropped)."""
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self.read_chunk()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                self.close()
                break
        data = b"".join(parts)
        return data if limit is None else data[:limit]

    def release(self) -> None:
        """Back to the pool if the exchange finished cleanly, else closed."""
        if self._done:
            return
        self._done = True
        c = self._conn
        if c.complete and not c.body and c.error is None:
            self._ended = True
        if c.complete and c.keep_alive and not c.closed and not c.body and c.error is None:
            self._pool._put_back(c)
        else:
            c._abort()

    def close(self) -> None:
        """Stop now (e.g. a cut stream or an abandoned body): the connection is not reused."""
        if not self._done:
            self._done = True
            c = self._conn
            if c.complete and not c.body and c.error is None:
                self._ended = True
            c._abort()
