"""The TUI's only door into a gateway: the admin API over httpx.

The TUI never imports the gateway, so the same panel can watch a demo on this
machine or a production box over SSH. Every failure of the transport is turned
into one of three exceptions the screens know how to show calmly:
`AdminUnreachable` (nothing answers), `AdminAuthError` (the token is refused)
and `AdminError` (the gateway answered but said no, with its own message).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_ADMIN_URL = "http://127.0.0.1:4001"


class AdminError(Exception):
    """The gateway answered with an error; `message` is the gateway's own words."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class AdminAuthError(AdminError):
    """401/403: the admin token is missing or wrong (the token is never echoed)."""


class AdminUnreachable(Exception):
    """No HTTP answer at all: refused, DNS, timeout, connection dropped."""


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One server-sent event: `event` is the name (state, failover, ...), `data` parsed JSON."""

    event: str
    data: Any


@dataclass(frozen=True, slots=True)
class HistoryFilters:
    """Filters for `GET /admin/requests`; empty strings and None are left out of the query."""

    route: str = ""
    target: str = ""
    outcome: str = ""
    since: str = ""
    until: str = ""
    q: str = ""
    failover: bool = False     # only requests that failed over

    def params(self) -> dict[str, str]:
        return {k: v for k, v in (
            ("route", self.route), ("target", self.target), ("outcome", self.outcome),
            ("since", self.since), ("until", self.until), ("q", self.q),
            ("failover", "1" if self.failover else ""),
        ) if v}

    def is_empty(self) -> bool:
        return not self.params()


def _error_message(resp: httpx.Response) -> str:
    """Pull a human message out of whatever error body the gateway sent."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip()
        return text[:300] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("message"))
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail") or json.dumps(err)
        if err:
            return str(err)[:300]
        if body.get("detail"):
            return str(body["detail"])[:300]
    return json.dumps(body)[:300]


def _transport_problem(exc: httpx.TransportError) -> str:
    """Words an operator can act on, instead of an exception class name."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "no answer within the connect timeout (firewall, wrong host, or the box is down)"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "name" in text and ("resolve" in text or "known" in text):
            return f"the host name does not resolve ({exc})"
        return "connection refused: nothing is listening there"
    if isinstance(exc, httpx.ReadTimeout):
        return "the gateway accepted the connection but stopped answering"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "the connection dropped (the gateway restarted or a proxy cut it)"
    return f"{type(exc).__name__}: {exc or 'no answer'}"


def _tid(target_id: str) -> str:
    """Target ids hold a slash (`vendor/model`): percent-encode it for the path."""
    return quote(target_id, safe="")


class AdminClient:
    """Async client for the gateway's admin API; one instance per TUI.

    Methods return the JSON the gateway answered (dicts, as DESIGN.md shapes
    them) so the TUI always shows the gateway's answer, never a local guess.
    """

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 5.0,
                 operator: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "patchbay-tui"}
        if operator:  # recorded by the gateway in operator events ("who")
            headers["X-Patchbay-Operator"] = operator
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ---------------------------------------------------------

    async def _call(self, method: str, path: str, *, json_body: Any = None,
                    params: Mapping[str, Any] | None = None) -> Any:
        try:
            resp = await self._http.request(method, path, json=json_body, params=params)
        except httpx.TransportError as exc:  # connect, read, timeouts, protocol
            raise AdminUnreachable(_transport_problem(exc)) from None
        if resp.status_code in (401, 403):
            raise AdminAuthError(resp.status_code, _error_message(resp))
        if resp.status_code >= 400:
            raise AdminError(resp.status_code, _error_message(resp))
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            raise AdminError(resp.status_code, "gateway sent a body that is not JSON") from None

    # -- reads ------------------------------------------------------------

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "/admin/state")

    async def events(self) -> AsyncIterator[SSEMessage]:
        """Yield server-sent events until the gateway closes the stream.

        A read timeout longer than the gateway's ~1 s state cadence turns a
        silent, half-dead connection into `AdminUnreachable` instead of a hang.
        """
        timeout = httpx.Timeout(self._timeout, connect=min(self._timeout, 3.0), read=15.0)
        try:
            async with self._http.stream("GET", "/admin/events", timeout=timeout,
                                         headers={"Accept": "text/event-stream"}) as resp:
                if resp.status_code in (401, 403):
                    await resp.aread()
                    raise AdminAuthError(resp.status_code, _error_message(resp))
                if resp.status_code >= 400:
                    await resp.aread()
                    raise AdminError(resp.status_code, _error_message(resp))
                event = "message"
                data: list[str] = []
                async for line in resp.aiter_lines():
                    if not line:
                        if data:
                            raw = "\n".join(data)
                            try:
                                payload = json.loads(raw)
                            except ValueError:
                                payload = raw
                            yield SSEMessage(event, payload)
                        event, data = "message", []
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    if value.startswith(" "):
                        value = value[1:]
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
        except httpx.TransportError as exc:
            raise AdminUnreachable(_transport_problem(exc)) from None

    async def requests(self, filters: HistoryFilters | Mapping[str, str] | None = None,
                       cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        """One keyset page of history: `{"requests": [...], "next_cursor": str | None}`."""
        if isinstance(filters, HistoryFilters):
            params: dict[str, Any] = filters.params()
        else:
            params = {k: v for k, v in (filters or {}).items() if v}
        params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        return await self._call("GET", "/admin/requests", params=params)

    async def request(self, request_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/admin/requests/{quote(request_id, safe='')}")

    async def target(self, target_id: str, window: str = "1h") -> dict[str, Any]:
        """One target in depth: live figures, routes, and series / failures over `window` from the store."""
        return await self._call("GET", f"/admin/targets/{_tid(target_id)}", params={"window": window})

    async def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest discrete events from the store, newest first (for a panel that just attached)."""
        body = await self._call("GET", "/admin/events/recent", params={"limit": limit})
        return list(body.get("events", [])) if isinstance(body, dict) else []

    async def list_drills(self) -> list[dict[str, Any]]:
        body = await self._call("GET", "/admin/drills")
        return list(body.get("drills", [])) if isinstance(body, dict) else list(body)

    async def get_drill(self, drill_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/admin/drills/{quote(drill_id, safe='')}")

    # -- changes ----------------------------------------------------------

    async def set_order(self, route: str, ids: list[str]) -> dict[str, Any]:
        return await self._call("POST", f"/admin/routes/{quote(route, safe='')}/order",
                                json_body={"order": list(ids)})

    async def disable_target(self, target_id: str, reason: str = "") -> dict[str, Any]:
        return await self._call("POST", f"/admin/targets/{_tid(target_id)}/disable",
                                json_body={"reason": reason})

    async def enable_target(self, target_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/admin/targets/{_tid(target_id)}/enable", json_body={})

    async def disable_vendor(self, vendor: str, reason: str = "") -> dict[str, Any]:
        return await self._call("POST", f"/admin/vendors/{quote(vendor, safe='')}/disable",
                                json_body={"reason": reason})

    async def enable_vendor(self, vendor: str) -> dict[str, Any]:
        return await self._call("POST", f"/admin/vendors/{quote(vendor, safe='')}/enable",
                                json_body={})

    async def start_drill(self, target: str, fault: str, duration: float,
                          traffic: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"target": target, "fault": fault, "duration": duration}
        if traffic:
            body["traffic"] = traffic
        return await self._call("POST", "/admin/drills", json_body=body)

    async def cancel_drill(self, drill_id: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/admin/drills/{quote(drill_id, safe='')}")
