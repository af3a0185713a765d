"""A vendor's SSE stream as deltas (`OpenStream`), and what the router keeps of a relayed stream (`StreamState`).

Neither writes to a client: the door encodes the deltas in its own format.
"""

from __future__ import annotations

import asyncio
import time

from gateway.runtime import Target
from gateway.vendors.base import StreamDelta, VendorError, scrub
from gateway.vendors.http_conn import Response
from gateway.vendors.http_errors import ProtocolError, UpstreamError
from gateway.vendors.sse import EventTooLarge, SSEParser


class OpenStream:
    """A vendor stream, read one network read at a time."""

    __slots__ = ("resp", "parser", "decoder", "target", "pending", "cut_after_first", "started", "error", "eof",
                 "registry", "waited_s")

    def __init__(self, resp: Response, target: Target, cut_after_first: bool, max_event_bytes: int,
                 registry: set[OpenStream]):
        self.registry = registry      # the router's open streams, cut all at once on shutdown
        registry.add(self)
        self.resp = resp
        self.parser = SSEParser(max_event_bytes)
        self.decoder = target.adapter.stream_decoder()
        self.target = target
        self.pending: list[StreamDelta] = []
        self.cut_after_first = cut_after_first
        self.started = time.perf_counter()
        self.error: VendorError | None = None
        self.eof = False
        self.waited_s = 0.0           # time blocked on the vendor's network reads

    async def read(self, timeout: float) -> list[StreamDelta] | None:
        """Deltas from the next network read; None at end of body.

        An in-band error event raises VendorError, but only after the deltas
        that arrived before it in the same read have been returned.
        """
        if self.error is not None:
            raise self.error
        if self.eof:
            return None
        t = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                chunk = await self.resp.read_chunk()
        finally:
            self.waited_s += time.perf_counter() - t
        try:
            if not chunk:
                self.eof = True
                events = self.parser.flush()
                if not events:
                    return None
            else:
                events = self.parser.feed(chunk)
        except EventTooLarge as e:
            self.resp.close()
            raise ProtocolError(str(e)) from None
        out: list[StreamDelta] = []
        feed = self.decoder.feed
        for ev, data in events:
            try:
                out.extend(feed(ev, data))
            except VendorError as e:
                scrub(e, self.target.secrets)
                if not out:
                    raise
                self.error = e
                break
        return out

    async def drain(self) -> None:
        """After the vendor's terminal event, read the end of the body so the connection is reused."""
        if self.eof:
            return
        try:
            async with asyncio.timeout(0.05):
                while await self.resp.read_chunk():
                    pass
            self.eof = True
        except (TimeoutError, UpstreamError):
            pass  # close() drops the connection instead

    def close(self) -> None:
        self.resp.close()
        self.registry.discard(self)


def with_total(u: dict) -> dict:
    if "total_tokens" in u:
        return u
    return {**u, "total_tokens": (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0)}


class StreamState:
    """What the router needs to know of what a client was sent: the text (for a prefill continuation),
    whether the answer finished, tool calls (cannot be continued), usage per answering target."""

    __slots__ = ("text", "finished", "usage", "usage_by_target", "tool_calls_seen", "malformed")

    def __init__(self) -> None:
        self.text = ""
        self.finished = False
        self.usage: dict | None = None
        self.usage_by_target: list[tuple[Target, dict]] = []
        self.tool_calls_seen = False
        self.malformed = 0

    def absorb(self, deltas: list[StreamDelta], target: Target | None) -> list[StreamDelta]:
        """Take note of a batch; return it without events the client must not see (malformed content)."""
        kept: list[StreamDelta] = []
        for d in deltas:
            if d.usage is not None:
                self.usage = with_total(d.usage)
                if target is not None:
                    self.usage_by_target.append((target, self.usage))
            delta = d.delta
            if delta:
                c = delta.get("content")
                if c is not None and not isinstance(c, str):
                    self.malformed += 1   # one malformed event: skipped and counted
                    continue
                if c:
                    self.text += c
                if delta.get("tool_calls"):
                    self.tool_calls_seen = True
            if d.finish_reason:
                self.finished = True
            kept.append(d)
        return kept

    def total_usage(self) -> dict | None:
        """Tokens of every attempt that streamed to this client (after a continuation, both)."""
        if len(self.usage_by_target) < 2:
            return self.usage
        pt = sum(u.get("prompt_tokens") or 0 for _, u in self.usage_by_target)
        ct = sum(u.get("completion_tokens") or 0 for _, u in self.usage_by_target)
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    def total_cost(self) -> float | None:
        costs = [c for c in (t.cost(u) for t, u in self.usage_by_target) if c is not None]
        return sum(costs) if costs else None
