"""A vendor that writes exactly the bytes a test scripts, for transport edge cases behind a real gateway.

No HTTP framework would send an interim 1xx before every answer, an endless
SSE line or a body trickled a byte at a time; this raw asyncio server does
what the test's `script(request)` returns, on a keep-alive connection, and
records every request it received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 1 << 16


@dataclass
class Received:
    line: str                   # the request line, e.g. "POST /v1/chat/completions HTTP/1.1"
    headers: dict[str, str]     # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# A script answers one request: bytes to write, or an async callable given the writer (to trickle),
# or None to close the connection without answering.
Script = Callable[[Received], "bytes | Callable[[asyncio.StreamWriter], Awaitable[None]] | None"]


@dataclass
class ScriptedVendor:
    script: Script
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task] = field(default_factory=set)

    async def start(self, host: str = "127.0.0.1") -> ScriptedVendor:
        self._server = await asyncio.start_server(self._serve, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for h in lines[1:]:
                    if ":" in h:
                        k, _, v = h.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                req = Received(lines[0], headers, body)
                self.received.append(req)
                answer = self.script(req)
                if answer is None:
                    return
                if isinstance(answer, bytes):
                    writer.write(answer)
                    await writer.drain()
                else:
                    await answer(writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


def http_json(obj: Any, status: str = "200 OK", extra: str = "") -> bytes:
    body = json.dumps(obj).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


def completion(text: str, model: str = "m") -> dict:
    return {"id": "x", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


def chunk(delta: dict, finish: str | None = None) -> bytes:
    return ("data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            + "\n\n").encode()
