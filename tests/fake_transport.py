"""A byte-scripted vendor under the real Pool and llhttp parser, with no sockets.

`FakePool` is the gateway's own `Pool` with one change: `_connect` attaches
the real `_Conn` protocol to a `FakeTransport` instead of a TCP socket. When
the pool writes a request, the transport parses it, records it, takes the
next scripted reply for that URL and feeds its bytes to `conn.data_received`
one packet per loop iteration, with optional delays, silences, resets and
EOFs. Everything above the transport (keep-alive reuse, framing, limits, the
router's timers) is the production code.

    fake = FakePool()
    fake.script("http://openai.test/v1/chat/completions", [error(503), ok_json(completion("hi"))])
    router = Router(runtime, fake)

A reply is a list of steps: bytes (one packet), `Delay(s)`, `SILENCE` (send
nothing more; the connection stays open), `RESET` (connection lost with
ConnectionResetError), `EOF` (the vendor closes cleanly) or, as the only
step, `REFUSE` (ConnectFailed when connecting: nothing is sent).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.vendors.http import Pool, _Route
from gateway.vendors.http_conn import _Conn
from gateway.vendors.http_errors import ConnectFailed
from tests.scripted_vendor import chunk, completion


@dataclass(frozen=True)
class Delay:
    seconds: float


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


SILENCE = _Marker("SILENCE")
RESET = _Marker("RESET")
EOF = _Marker("EOF")
REFUSE = _Marker("REFUSE")

Step = bytes | Delay | _Marker
Reply = bytes | _Marker | list[Step]


@dataclass
class Sent:
    """One request as the vendor would have received it."""

    url: str
    method: str
    path: str
    headers: dict[str, str]      # names lower-cased
    body: bytes
    at: float = 0.0              # loop.time() when it was written

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeVendorLog:
    requests: list[Sent] = field(default_factory=list)   # what was written to a fake connection
    refused: list[str] = field(default_factory=list)     # URLs whose connect was refused (nothing sent)
    attempts: list[str] = field(default_factory=list)    # every URL tried, refused or sent, in order


class FakeTransport(asyncio.Transport):
    """What `_Conn` sees instead of a socket."""

    def __init__(self, pool: FakePool, conn: _Conn, scheme: str):
        super().__init__()
        self.pool = pool
        self.conn = conn
        self.scheme = scheme
        self.closing = False
        self.handle: asyncio.Handle | None = None
        self.loop = asyncio.get_running_loop()

    # --- what the pool and _Conn call
    def write(self, data: bytes) -> None:
        if self.closing:
            return
        sent = _parse_request(data, self.scheme)
        q = self.pool._scripts.get(sent.url)
        if q and q[0] == [REFUSE]:
            # a refused connect scripted while a pooled connection is idle: that connection turns out dead
            # on this write (nothing reached the vendor), so the pool connects afresh and is refused
            self._lose(None)
            return
        sent.at = self.loop.time()
        self.pool.log.requests.append(sent)
        self.pool.log.attempts.append(sent.url)
        steps = self.pool._next_reply(sent.url)
        self._schedule(steps, 0, 0.0)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    # --- playing a reply
    def _schedule(self, steps: list[Step], i: int, delay: float) -> None:
        if delay > 0:
            self.handle = self.loop.call_later(delay, self._step, steps, i)
        else:
            self.handle = self.loop.call_soon(self._step, steps, i)

    def _step(self, steps: list[Step], i: int) -> None:
        self.handle = None
        if self.closing or i >= len(steps):
            return
        s = steps[i]
        if isinstance(s, Delay):
            self._schedule(steps, i + 1, s.seconds)
            return
        if s is SILENCE:
            return
        if s is RESET:
            self._lose(ConnectionResetError("connection reset by fake vendor"))
            return
        if s is EOF:
            if not self.conn.eof_received():
                self._lose(None)
            return
        if s is REFUSE:
            raise AssertionError("REFUSE must be a reply's only step")
        assert isinstance(s, bytes), s
        self.conn.data_received(s)
        self._schedule(steps, i + 1, 0.0)

    def _lose(self, exc: Exception | None) -> None:
        if self.closing:
            return
        self.closing = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.pool.closed += 1
        self.loop.call_soon(self.conn.connection_lost, exc)


class FakePool(Pool):
    """The real Pool; connections are fake transports playing scripted replies per URL."""

    def __init__(self, connect_timeout: float = 1.0, **kw: Any):
        kw.setdefault("env", {})    # no proxies from the environment
        super().__init__(connect_timeout, **kw)
        self._scripts: dict[str, deque[list[Step]]] = {}
        self._url: str | None = None
        self.log = FakeVendorLog()
        self.connections = 0
        self.closed = 0
        self.unscripted: list[str] = []

    @classmethod
    def for_config(cls, cfg: Any) -> FakePool:
        """With the configured limits, as `gateway.routing.router.pool_for` builds the real one."""
        up = cfg.upstream
        return cls(cfg.timeouts.connect, header_limit=up.max_header_bytes, body_limit=up.max_body_bytes)

    def script(self, url: str, replies: Iterable[Reply]) -> FakePool:
        """Queue replies for `url` (scheme://host[:port]/path), answered in order."""
        q = self._scripts.setdefault(url, deque())
        for r in replies:
            q.append(_steps(r))
        return self

    def left(self, url: str) -> int:
        return len(self._scripts.get(url, ()))

    @property
    def requests(self) -> list[Sent]:
        return self.log.requests

    def sent_to(self, url: str) -> list[Sent]:
        return [r for r in self.log.requests if r.url == url]

    def _next_reply(self, url: str) -> list[Step]:
        q = self._scripts.get(url)
        if not q:
            self.unscripted.append(url)
            body = json.dumps({"error": {"message": f"fake transport: nothing scripted for {url}"}}).encode()
            return [head(599, {"content-type": "application/json"}, body) + body]
        return q.popleft()

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None, **kw: Any):  # type: ignore[override]
        self._url = url
        return await super().request(method, url, headers, body, **kw)

    async def _connect(self, r: _Route) -> _Conn:
        url = self._url or ""
        q = self._scripts.get(url)
        if q and q[0] == [REFUSE]:
            q.popleft()
            self.log.refused.append(url)
            self.log.attempts.append(url)
            raise ConnectFailed(f"cannot connect to {r.where}: Connection refused")
        conn = _Conn(r.key, self)
        self.connections += 1
        conn.connection_made(FakeTransport(self, conn, r.key[0]))
        self._all.add(conn)
        return conn


def _steps(r: Reply) -> list[Step]:
    if isinstance(r, (bytes, _Marker)):
        return [r]
    return list(r)


def _parse_request(data: bytes, scheme: str) -> Sent:
    head_b, _, body = data.partition(b"\r\n\r\n")
    lines = head_b.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for h in lines[1:]:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    assert len(body) == n, f"request body is {len(body)} bytes, Content-Length says {n}"
    return Sent(f"{scheme}://{headers['host']}{target}", method, target, headers, body)


# ------------------------------------------------------------------ wire-format builders

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
           404: "Not Found", 422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded"}


def head(status: int, headers: dict[str, str], body: bytes | None = None) -> bytes:
    """A response header block; Content-Length from `body` when given (else the caller frames it)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ok_json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps(obj).encode()
    return head(status, {"content-type": "application/json", **(headers or {})}, body) + body


def error(status: int, message: str = "", *, code: str | None = None, etype: str | None = None,
          retry_after: str | float | None = None) -> bytes:
    """An OpenAI-style error answer (status + optional Retry-After)."""
    err: dict[str, Any] = {"message": message or f"HTTP {status}", "type": etype or "error", "code": code}
    h = {} if retry_after is None else {"retry-after": str(retry_after)}
    return ok_json({"error": err}, status, h)


def anthropic_error(status: int, etype: str, message: str) -> bytes:
    """Anthropic's error shape, e.g. anthropic_error(529, "overloaded_error", "Overloaded")."""
    return ok_json({"type": "error", "error": {"type": etype, "message": message}}, status)


def openai_answer(text: str, model: str = "m", prompt_tokens: int = 1, completion_tokens: int = 2) -> bytes:
    obj = completion(text, model)
    obj["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens}
    return ok_json(obj)


def anthropic_answer(text: str, input_tokens: int = 1, output_tokens: int = 2) -> bytes:
    return ok_json({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}})


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk frame."""
    return b"%x\r\n%s\r\n" % (len(data), data)


END = b"0\r\n\r\n"   # the last chunk: the body is complete
SSE_HEAD = head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"})


def openai_usage_chunk(prompt_tokens: int, completion_tokens: int) -> bytes:
    return ("data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                   "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                            "completion_tokens": completion_tokens,
                                                            "total_tokens": prompt_tokens + completion_tokens}})
            + "\n\n").encode()


def openai_sse(*texts: str, finish: bool = True, done: bool = True, end: bool = True,
               usage: tuple[int, int] | None = None) -> list[Step]:
    """An OpenAI chat stream: headers, a role chunk, one packet per text, finish, usage, [DONE], end of body."""
    steps: list[Step] = [SSE_HEAD, chunked(chunk({"role": "assistant", "content": ""}))]
    steps += [chunked(chunk({"content": t})) for t in texts]
    if finish:
        steps.append(chunked(chunk({}, "stop")))
    if usage is not None:
        steps.append(chunked(openai_usage_chunk(*usage)))
    if done:
        steps.append(chunked(b"data: [DONE]\n\n"))
    if end:
        steps.append(END)
    return steps


def sse_event(data: Any, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return ((f"event: {event}\n" if event else "") + f"data: {text}\n\n").encode()


def anthropic_sse(*texts: str, input_tokens: int = 1, output_tokens: int = 2) -> list[Step]:
    """An Anthropic Messages stream, one packet per event."""
    evs = [sse_event({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                            "model": "claude", "content": [],
                                                            "usage": {"input_tokens": input_tokens,
                                                                      "output_tokens": 0}}}, "message_start"),
           sse_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                     "content_block_start")]
    evs += [sse_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                      "content_block_delta") for t in texts]
    evs += [sse_event({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": output_tokens}}, "message_delta"),
            sse_event({"type": "message_stop"}, "message_stop")]
    return [SSE_HEAD, *[chunked(e) for e in evs], END]
