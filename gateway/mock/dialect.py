"""The seam between the mock's fault engine and one vendor's wire format.

The engine (server.py) owns timing and faults; a dialect only turns requests
into a :class:`Call` and replies/errors into bytes in its vendor's format. A
stream is rendered as a list of events, each marked as framing, a token or
the terminal marker, so cut/stall/malformed/no_done work the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.mock.content import Reply

FRAME, UNIT, TERMINAL = 0, 1, 2


class BadRequest(Exception):
    """The request is wrong the way the vendor would say so (rendered by the dialect)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code


@dataclass(slots=True)
class Call:
    """One parsed chat request and the reply the mock will give."""

    model: str
    stream: bool
    reply: Reply
    include_usage: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ErrorReply:
    status: int
    body: bytes
    headers: dict[str, str] | None = None


class Dialect:
    """Base class; one subclass per vendor wire format."""

    name = ""
    content_type_stream = "text/event-stream"
    # error_event defaults per dialect (OpenAI in-band error, Anthropic event: error, Google error chunk)

    def check_key(self, headers: Mapping[str, str], query: Mapping[str, str],
                  keys: frozenset[str]) -> ErrorReply | None:
        raise NotImplementedError

    def parse_chat(self, body: Any, path_model: str | None, query: Mapping[str, str],
                   headers: Mapping[str, str], forced_tokens: int | None) -> Call:
        raise NotImplementedError

    def render(self, call: Call) -> bytes:
        raise NotImplementedError

    def stream_events(self, call: Call) -> list[tuple[bytes, int]]:
        raise NotImplementedError

    def error(self, kind: str, status: int | None, *, model: str, message: str | None = None,
              error_type: str | None = None, retry_after: float | None = None) -> ErrorReply:
        """kind: error | context_length | content_policy | auth | billing | bad_request."""
        raise NotImplementedError

    def bad_request(self, exc: BadRequest, model: str) -> ErrorReply:
        return self.error("bad_request", exc.status, model=model, message=exc.message)

    def error_event(self, model: str, error_type: str | None, message: str | None) -> bytes:
        raise NotImplementedError

    def malformed_event(self) -> bytes:
        raise NotImplementedError

    def models_body(self, models: list[str]) -> bytes:
        raise NotImplementedError

    def model_body(self, model: str) -> bytes:
        raise NotImplementedError

    def refuse(self, call: Call) -> None:
        """Turn the reply into the vendor's 200-with-refusal (used when policy_is_error is False)."""
        r = call.reply
        r.tokens = []
        r.tool_name = r.tool_args = None
        r.tool_fragments = None
        r.reasoning = None
        r.finish = "refusal"

    # True when the vendor answers a content-policy problem with an HTTP error
    # (OpenAI); False when it answers 200 with a refusal/safety finish reason.
    policy_is_error = True


def retry_after_header(retry_after: float | None) -> dict[str, str] | None:
    if retry_after is None:
        return None
    ra = int(retry_after) if float(retry_after).is_integer() else retry_after
    return {"retry-after": str(ra)}


def text_of(content: Any) -> str:
    """Text of an OpenAI/Anthropic message content (string or list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
                elif part.get("type") == "tool_result":
                    out.append(text_of(part.get("content")))
        return " ".join(out)
    return ""
