"""What a door is: the seam between the shared listener (`doors/server.py`) and one inbound dialect.

The listener does what every dialect shares (client keys, body size and read
time, JSON, model resolution, drill marks, the request id); a door turns its
client's JSON into a `Parsed` request for the router, writes the router's
answer back in its own format, and renders every error its clients can get
the way their SDK expects it. Adding a dialect is one module with these three
things and one line in `doors/server.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web
    from multidict import CIMultiDictProxy

    from gateway.routing.call import Call, ClientError
    from gateway.routing.router import Router


@dataclass(slots=True)
class Parsed:
    """A client's request, validated: the model it named and the router's (OpenAI chat-shaped) body."""

    model: str
    body: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)   # what the door needs again when it answers


class Door(Protocol):
    """One inbound dialect. `api` names it in the request log: chat | responses | messages | embeddings |
    completions."""

    api: str

    def parse(self, body: Any, headers: CIMultiDictProxy[str]) -> Parsed:
        """The request the router gets; raise ClientError for one no vendor should see."""
        ...

    def error_body(self, ce: ClientError) -> bytes:
        """An error in the client's own format."""
        ...

    async def serve(self, router: Router, call: Call, request: web.Request) -> web.StreamResponse:
        """Answer the call (whole or streamed), record it, and return the response."""
        ...
