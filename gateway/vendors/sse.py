"""Incremental server-sent-events parser shared by every vendor adapter.

Vendors split events across TCP reads arbitrarily; this buffers bytes and
yields complete (event, data) pairs per the SSE spec (multi-line data joined
with newlines, comments ignored, CRLF or LF line ends).

Two guarantees matter more than the parsing itself, because the bytes come
from a vendor we do not control:
- linear cost: each byte is scanned for a line end once, however it is
  split across reads (an unfinished line is kept as a list of pieces, never
  re-joined and re-scanned on every read), so an endless line cannot turn
  into quadratic CPU on the gateway's only event loop;
- bounded memory: one line, or one event's accumulated data, longer than
  `max_event_bytes` raises `EventTooLarge`, which the router treats as a
  vendor fault for that attempt.
"""

from __future__ import annotations

DEFAULT_MAX_EVENT_BYTES = 1 << 20


class EventTooLarge(Exception):
    """A vendor sent an SSE line or event past the limit."""


class SSEParser:
    __slots__ = ("_parts", "_plen", "_event", "_data", "_dlen", "max_event")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._parts: list[bytes] = []   # pieces of the unfinished line (none contains b"\n")
        self._plen = 0
        self._event: str | None = None
        self._data: list[str] = []
        self._dlen = 0
        self.max_event = max_event_bytes

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        start = 0
        n = len(chunk)
        while start < n:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                rest = chunk[start:] if start else chunk
                self._plen += len(rest)
                if self._plen > self.max_event:
                    self._too_large()
                self._parts.append(rest)
                break
            line = chunk[start:nl]
            start = nl + 1
            if self._parts:
                self._parts.append(line)
                line = b"".join(self._parts)
                self._parts = []
                self._plen = 0
            if len(line) > self.max_event:
                self._too_large()
            self._line(line, out)
        return out

    def _line(self, line: bytes, out: list[tuple[str | None, str]]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                out.append((self._event, "\n".join(self._data)))
            self._event = None
            self._data = []
            self._dlen = 0
            return
        if line[:1] == b":":
            return
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._dlen += len(value) + 1
            if self._dlen > self.max_event:
                self._too_large()
            self._data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")

    def _too_large(self) -> None:
        self._parts = []
        self._plen = 0
        self._data = []
        self._dlen = 0
        raise EventTooLarge(f"vendor sent a stream event over {self.max_event} bytes")

    def flush(self) -> list[tuple[str | None, str]]:
        """End of body: a final event without its blank line still counts."""
        out = self.feed(b"\n\n") if self._parts else []
        if self._data:
            out.append((self._event, "\n".join(self._data)))
            self._data = []
            self._dlen = 0
        return out
