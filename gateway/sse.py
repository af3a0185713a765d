"""Incremental server-sent-events parser shared by every vendor adapter.

Vendors split events across TCP reads arbitrarily; this buffers bytes and
yields complete (event, data) pairs per the SSE spec (multi-line data joined
with newlines, comments ignored, CRLF or LF line ends).
"""

from __future__ import annotations


class SSEParser:
    __slots__ = ("_buf", "_event", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        buf = self._buf + chunk if self._buf else chunk
        out: list[tuple[str | None, str]] = []
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    out.append((self._event, "\n".join(self._data)))
                self._event = None
                self._data = []
                continue
            if line[:1] == b":":
                continue
            field, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data.append(value.decode("utf-8", "replace"))
            elif field == b"event":
                self._event = value.decode("utf-8", "replace")
        self._buf = buf[start:]
        return out

    def flush(self) -> list[tuple[str | None, str]]:
        """End of body: a final event without its blank line still counts."""
        out = self.feed(b"\n\n") if self._buf else []
        if self._data:
            out.append((self._event, "\n".join(self._data)))
            self._data = []
        return out
