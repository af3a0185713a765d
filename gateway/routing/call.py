"""One client request as the router sees it, and what the router hands back to the door.

Everything here is dialect-neutral: a door (the OpenAI chat codec today)
builds a `Call` from its client's request and renders an `Answer`, a
`LiveStream` or a `Failed` in its client's own format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gateway.runtime import Target
from gateway.vendors.base import ChatResult, VendorError
from store.records import AttemptRow


class ClientError(Exception):
    """An error the client gets back (status, message, type, code, param); the door renders it."""

    def __init__(self, status: int, message: str, etype: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.etype, self.code, self.param = status, message, etype, code, param
        self.headers = headers or {}


@dataclass(slots=True)
class Call:
    """One client request in flight."""

    id: str
    route: str
    targets: list[Target]
    fallback: str | None
    body: dict[str, Any]
    stream: bool
    include_usage: bool = False
    client_key_id: str | None = None
    drill_id: str | None = None
    t0: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    attempts: list[AttemptRow] = field(default_factory=list)
    waited_s: float = 0.0          # time blocked on vendors (network, backoff, injected faults), not our CPU
    failovers: int = 0
    errors: list[str] = field(default_factory=list)
    malformed: int = 0
    skipped_open: list[str] = field(default_factory=list)   # passed over: breaker open (request detail)
    trace_headers: dict[str, str] | None = None   # the client's traceparent/tracestate, only when tracing
    api: str = "chat"              # the door it came in by: chat | responses | messages | embeddings | completions
    extra: dict[str, Any] = field(default_factory=dict)   # the door's own notes, for its answer
    dropped: list[str] = field(default_factory=list)      # what a translation left out, named (x-patchbay-dropped)

    def overhead_ms(self) -> float:
        """Time the gateway spent on its own CPU: translation, parsing, policy, logging, the client's I/O."""
        return round(max(0.0, (time.perf_counter() - self.t0 - self.waited_s) * 1000), 3)

    def add_attempt(self, t: Target, ts: float, lat_ms: float, err: VendorError | None, status: int | None = None,
                    continuation: bool = False) -> None:
        """The attempt's row in the request log (and its line in the client's 'what each target said')."""
        if err is None:
            self.attempts.append(AttemptRow(self.id, len(self.attempts) + 1, t.id, ts, lat_ms, "ok", status or 200,
                                            None, continuation, self.drill_id, ",".join(self.dropped) or None))
            return
        self.attempts.append(AttemptRow(self.id, len(self.attempts) + 1, t.id, ts, lat_ms, err.cls.value,
                                        status if status is not None else err.status, err.message[:500],
                                        continuation, self.drill_id, ",".join(self.dropped) or None))
        self.errors.append(f"{t.id}: {err}")


@dataclass(slots=True)
class Answer:
    """A whole (non-streaming) answer from one target."""

    target: Target
    result: ChatResult
    cost: float | None = None      # computed once, from the answering attempt's usage


@dataclass(slots=True)
class Failed:
    """No answer: the client's own error came back from a vendor, or every target failed."""

    error: ClientError                 # what the client is told when there is no fallback
    cause: VendorError | None = None   # the last vendor failure (None: the client's request was at fault)
    fallback: str | None = None        # the route's static answer, when vendors failed and one is configured
    detail: str = ""                   # what each target said, for the request log

    @property
    def outcome(self) -> str:
        if self.fallback is not None:
            return "fallback"
        return "error" if self.error.status >= 500 else "client_error"

    @property
    def error_class(self) -> str | None:
        return self.cause.cls.value if self.cause is not None else self.error.code
