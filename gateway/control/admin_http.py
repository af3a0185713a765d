"""The admin API's HTTP conventions: JSON answers, the one error type, query parameters.

Every admin endpoint answers JSON in the same shape (errors as OpenAI-style
`{"error": {...}}` bodies) and reads its query parameters by the same rules (a
bad value is a 400 naming the parameter, never a 500 from the database); the
CLI parses times with the same `parse_time`. The handlers are in
gateway/control/admin.py.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

#: a relative time or a window length: 15m, 2h, 1d, 30s
REL_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")


class AdminHTTPError(Exception):
    """An admin request the API refuses: raised by handlers, answered by the middleware as `json_error`."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def json_error(status: int, message: str, code: str | None = None, param: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    etype = {401: "authentication_error", 404: "not_found_error", 409: "conflict_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


def json_ok(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS),
                        content_type="application/json")


def parse_time(value: str | None, name: str) -> float | None:
    """Epoch seconds, ISO 8601 (UTC unless an offset is given) or a relative '15m' / '2h' / '1d' ago."""
    if value is None or value == "":
        return None
    v = value.strip()
    try:
        return float(v)
    except ValueError:
        pass
    m = REL_TIME.match(v.lower())
    if m:
        n, unit = float(m.group(1)), m.group(2)
        return time.time() - n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise AdminHTTPError(400, f"'{name}' must be epoch seconds, ISO 8601 time or a relative time like "
                                  f"15m, 2h, 1d; got {value[:40]!r}", "invalid_value", name) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def list_param(value: str | None) -> list[str] | None:
    """A comma-separated query parameter as a list (absent or blank: None, no filter)."""
    if value is None or not value.strip():
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def flag_param(value: str | None, name: str) -> bool:
    """A yes/no query parameter: 1/true/yes or 0/false/no (absent: no)."""
    if value is None:
        return False
    v = value.strip().lower()
    if v in ("", "0", "false", "no"):
        return False
    if v in ("1", "true", "yes"):
        return True
    raise AdminHTTPError(400, f"'{name}' must be 1 or 0; got {value[:20]!r}", "invalid_value", name)


def int_param(q: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer query parameter within [lo, hi], or a 400 naming it (never a 500 from the database)."""
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AdminHTTPError(400, f"{name!r} must be an integer {lo}-{hi}.", "invalid_type", name) from None
    if not lo <= value <= hi:
        raise AdminHTTPError(400, f"{name!r} must be between {lo} and {hi}.", "invalid_value", name)
    return value
