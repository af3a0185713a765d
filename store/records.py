"""Rows the gateway hands to the store: plain dataclasses, no SQLite here.

The gateway builds these on the request path and puts them on the writer's
queue; the writer thread turns them into rows. Keeping them free of I/O lets
the engine and tests construct them cheaply.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

_PROCESS_SALT = os.urandom(3).hex()
_COUNTER = itertools.count()


def new_id(prefix: str = "req") -> str:
    """Sortable, unique id: millisecond time, a per-process salt, then a counter.

    No syscall per id (this runs on every request); the salt keeps ids from
    two gateway processes writing one database apart.
    """
    return f"{prefix}_{int(time.time() * 1000):012x}{_PROCESS_SALT}{next(_COUNTER) & 0xFFFFFF:06x}"


@dataclass(slots=True)
class RequestRow:
    id: str
    ts: float                      # epoch seconds when the request arrived
    route: str                     # the route (or target id) the client named
    stream: bool
    outcome: str                   # ok | fallback | error | client_error | cut
    http_status: int
    client_key_id: str | None = None   # a hash prefix of the key, never the key
    final_target: str | None = None
    model: str | None = None           # the model that answered
    attempts: int = 0
    failovers: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    overhead_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    error_class: str | None = None
    error_message: str | None = None
    drill_id: str | None = None
    skipped_open: str | None = None    # targets passed over because their breaker was open, comma-separated
    api: str = "chat"                  # the door: chat | responses | messages | embeddings | completions
    dropped: str | None = None         # what translation left out for the answering target, comma-separated
    request_body: str | None = None    # only when [store] log_bodies = true
    response_body: str | None = None


@dataclass(slots=True)
class AttemptRow:
    request_id: str
    n: int                         # 1-based order within the request
    target: str
    ts: float                      # start, epoch seconds
    latency_ms: float
    outcome: str                   # ok or an ErrorClass value
    http_status: int | None = None
    error: str | None = None
    continuation: bool = False     # a mid-stream continuation (prefill) attempt
    drill_id: str | None = None
    dropped: str | None = None     # what translation left out for this target, comma-separated


@dataclass(slots=True)
class EventRow:
    ts: float
    kind: str                      # failover | breaker | probe | operator | drill | store
    target: str | None = None
    route: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


@dataclass(slots=True)
class DrillRow:
    id: str
    target: str
    fault: str
    params: dict[str, Any]
    started: float
    ended: float | None = None
    state: str = "running"         # running | done | cancelled
    report: dict[str, Any] | None = None
