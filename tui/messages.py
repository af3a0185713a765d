"""Messages the background workers post to the UI thread of the app."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class StateReceived(Message):
    """A full `/admin/state` document arrived (poll or SSE `state` event)."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data


class GatewayEvent(Message):
    """A discrete SSE event: failover, breaker, operator, drill, probe."""

    def __init__(self, kind: str, data: dict[str, Any]) -> None:
        super().__init__()
        self.kind = kind
        self.data = data


class EventsBackfilled(Message):
    """The newest stored events, oldest first: what a panel attaching mid-incident has missed."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.events = events


class ConnectionChanged(Message):
    """The link to the gateway came up or went down; `problem` says why in words."""

    def __init__(self, connected: bool, problem: str = "", auth: bool = False,
                 retry_in: float = 0.0, attempt: int = 0, http: bool = False) -> None:
        super().__init__()
        self.http = http            # something answered, but not as a working admin API
        self.connected = connected
        self.problem = problem
        self.auth = auth
        self.retry_in = retry_in
        self.attempt = attempt
