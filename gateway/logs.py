"""Log output: text for people (the default), one JSON object per line for log collectors.

The request id of the request being handled travels in a context variable set
by the data plane, so any log line written while handling it (a vendor answer
nobody foresaw, an internal error) names the request it was about without
every call site passing it along. Log records may also carry `request_id`
explicitly (`extra={"request_id": ...}`).
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

#: the id of the client request this task is handling (None outside a request)
REQUEST_ID: ContextVar[str | None] = ContextVar("patchbay_request_id", default=None)

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger for a command; calling it again replaces what it set before.

    Like `logging.basicConfig`, it leaves alone a root logger that someone else
    configured (a host application, a test harness).
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}; got {fmt!r}")
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_patchbay", False)]:
        root.removeHandler(h)
    if not root.handlers:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
        handler._patchbay = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per admin call is noise on a terminal
