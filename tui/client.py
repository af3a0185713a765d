"""The one admin client: the panel's and the operator CLI's only door into a gateway.

Neither imports the gateway, so the same panel and commands can steer a demo on
this machine or a production box over SSH. `AdminClient` (async, httpx, SSE via
httpx-sse) is the one implementation; `SyncAdminClient` is a thin blocking face
over it for `patchbay status|order|disable|enable|drill|history`. Every failure
is turned into one of these exceptions, each with the words an operator can act
on (`explain()`) and the CLI's exit code (`exit_code`):

* `AdminUnreachable` (nothing answers; exit 2),
* `AdminAuthError` (the token is refused; exit 3),
* `AdminWrongListener` (something answered, but not as an admin API: the
  client API port, a non-JSON body; exit 1),
* `AdminError` (the gateway answered but said no, in its own words; exit 1).
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import inspect
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, aconnect_sse

DEFAULT_ADMIN_URL = "http://127.0.0.1:4001"
TOKEN_ENV = "PATCHBAY_ADMIN_TOKEN"
EXIT_ERROR, EXIT_UNREACHABLE, EXIT_AUTH = 1, 2, 3
EVENTS_READ_TIMEOUT = 15.0   # longer than the gateway's ~1 s state cadence


def admin_url(url: str | None) -> str:
    """The admin URL as given, with `http://` added when the scheme was left out (`127.0.0.1:4001`)."""
    url = (url or DEFAULT_ADMIN_URL).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def default_operator() -> str:
    """Who is at the keyboard, for the gateway's operator events: PATCHBAY_OPERATOR, else the login name."""
    name = os.environ.get("PATCHBAY_OPERATOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user database
        return ""


class AdminProblem(Exception):
    """Base of every admin-client failure."""

    exit_code = EXIT_ERROR

    def explain(self) -> str:
        """One line for an operator (the CLI prints it after `patchbay: `)."""
        return str(self)


class AdminError(AdminProblem):
    """The gateway answered with an error; `message` is the gateway's own words."""

    def __init__(self, status: int, message: str, url: str = ""):
        self.status = status
        self.message = message
        self.url = url
        super().__init__(f"{status}: {message}")

    def explain(self) -> str:
        return f"HTTP {self.status}: {self.message}"


class AdminAuthError(AdminError):
    """401/403: the admin token is missing or wrong (the token is never echoed).

    `message` says which (no token, or not the gateway's token); `gateway_message`
    keeps the gateway's own words.
    """

    exit_code = EXIT_AUTH

    def __init__(self, status: int, message: str, url: str = "", gateway_message: str = ""):
        super().__init__(status, message, url)
        self.gateway_message = gateway_message

    def explain(self) -> str:
        return f"the admin API at {self.url} refused the request: {self.message}."


class AdminWrongListener(AdminError):
    """Something answered, but not as a Patchbay admin API (the client API port, a body that is not JSON)."""

    def explain(self) -> str:
        return self.message


class AdminUnreachable(AdminProblem):
    """No HTTP answer at all: refused, DNS, timeout, connection dropped; `str()` is the problem in words."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, problem: str, url: str = ""):
        self.problem = problem
        self.url = url
        super().__init__(problem)

    def explain(self) -> str:
        return (f"cannot reach the admin API at {self.url} ({self.problem}). "
                "Is the gateway running, and is --admin-url right?")


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


def _is_api_listener(resp: httpx.Response) -> bool:
    """The client API answered (its 404 names /v1 paths; its 401 asks for a client key)."""
    if resp.status_code not in (401, 404):
        return False
    try:
        err = resp.json().get("error") or {}
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False
    if not isinstance(err, dict):
        return False
    return err.get("code") == "invalid_api_key" or (
        err.get("code") == "unknown_url" and "/v1/" in str(err.get("message", "")))


def _tid(target_id: str) -> str:
    """Target ids hold a slash (`vendor/model`): percent-encode it for the path."""
    return quote(target_id, safe="")


class AdminClient:
    """Async client for the gateway's admin API; one instance per panel or command.

    Methods return the JSON the gateway answered (dicts, as DESIGN.md shapes
    them) so the panel and the CLI always show the gateway's answer, never a
    local guess. `base_url` may leave out `http://`; `operator` (sent as
    X-Patchbay-Operator, recorded as "who") defaults to `default_operator()`.
    """

    def __init__(self, base_url: str | None, token: str | None, *, timeout: float = 5.0,
                 operator: str | None = None, user_agent: str = "patchbay-tui",
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = admin_url(base_url)
        self.has_token = bool(token)
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        operator = default_operator() if operator is None else operator
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

    def _unreachable(self, exc: httpx.TransportError) -> AdminUnreachable:
        return AdminUnreachable(_transport_problem(exc), self.base_url)

    def _not_json(self, status: int) -> AdminWrongListener:
        return AdminWrongListener(status, f"{self.base_url} answered HTTP {status} with a body that is not JSON; "
                                          "is --admin-url the admin listener (not the API listener)?", self.base_url)

    def _check(self, resp: httpx.Response) -> None:
        """Raise the one exception for an answer that is not a success (the body has been read)."""
        if _is_api_listener(resp):
            raise AdminWrongListener(
                resp.status_code,
                f"{self.base_url} is the gateway's client API (server.listen), not its admin API: "
                "point --admin-url at the admin listener (server.admin_listen, "
                f"default {DEFAULT_ADMIN_URL})", self.base_url)
        if resp.status_code in (401, 403):
            hint = (f"{TOKEN_ENV} is not set" if not self.has_token
                    else f"the token in {TOKEN_ENV} is not the gateway's admin token")
            raise AdminAuthError(resp.status_code, hint, self.base_url, _error_message(resp))
        if resp.status_code >= 400:
            try:
                if resp.content:
                    resp.json()
            except (ValueError, UnicodeDecodeError):
                raise self._not_json(resp.status_code) from None
            raise AdminError(resp.status_code, _error_message(resp), self.base_url)

    async def _call(self, method: str, path: str, *, json_body: Any = None,
                    params: Mapping[str, Any] | None = None) -> Any:
        try:
            resp = await self._http.request(method, path, json=json_body, params=params)
        except httpx.TransportError as exc:  # connect, read, timeouts, protocol
            raise self._unreachable(exc) from None
        self._check(resp)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except (ValueError, UnicodeDecodeError):
            raise self._not_json(resp.status_code) from None

    # -- reads ------------------------------------------------------------

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "/admin/state")

    async def events(self) -> AsyncIterator[SSEMessage]:
        """Yield server-sent events (parsed by httpx-sse) until the gateway closes the stream.

        A read timeout longer than the gateway's ~1 s state cadence turns a
        silent, half-dead connection into `AdminUnreachable` instead of a hang.
        """
        timeout = httpx.Timeout(self._timeout, connect=min(self._timeout, 3.0), read=EVENTS_READ_TIMEOUT)
        try:
            async with aconnect_sse(self._http, "GET", "/admin/events", timeout=timeout) as source:
                resp = source.response
                if resp.status_code >= 400:
                    await resp.aread()
                    self._check(resp)
                try:
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            continue
                        try:
                            payload = json.loads(sse.data)
                        except ValueError:
                            payload = sse.data
                        yield SSEMessage(sse.event, payload)
                except SSEError:    # answered, but not with an event stream
                    raise AdminWrongListener(
                        resp.status_code,
                        f"{self.base_url} answered /admin/events with "
                        f"{resp.headers.get('content-type') or 'no content type'}, not an event stream; "
                        "is --admin-url the admin listener (not the API listener)?", self.base_url) from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

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


class SyncAdminClient:
    """Blocking face of `AdminClient` for the operator CLI: the same requests and the same
    exceptions, each coroutine run to completion on one private event loop.

    `api.state()`, `api.set_order(...)`, ... are `AdminClient`'s methods; `events()`
    (a stream) is not offered. Close it (or use `with`) to release the loop.
    """

    def __init__(self, base_url: str | None, token: str | None, *, timeout: float = 10.0,
                 operator: str | None = None, user_agent: str = "patchbay-cli",
                 transport: httpx.AsyncBaseTransport | None = None):
        self._runner = asyncio.Runner()
        self._client = AdminClient(base_url, token, timeout=timeout, operator=operator,
                                   user_agent=user_agent, transport=transport)

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name) if not name.startswith("_") else None
        if name == "events" or not inspect.iscoroutinefunction(method):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

        @functools.wraps(method)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(method(*args, **kwargs))
        return blocking

    def close(self) -> None:
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncAdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
