"""Fault switches and request counters of the fake vendors.

Faults live here, apart from the wire formats, so every dialect obeys the same
switches: a test sets ``cut:3`` on a model and the OpenAI, Anthropic and Gemini
dialects all drop the connection after three tokens, each in its own format.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

# Every fault the mock knows, with the name of its numeric argument (if any).
FAULT_ARGS: dict[str, str | None] = {
    "ok": None,
    "latency": "ms",
    "error": "status",
    "context_length": None,
    "content_policy": None,
    "auth": None,
    "billing": None,
    "reset": None,
    "hang": None,
    "slow_first_token": "ms",
    "cut": "n",
    "stall": "n",
    "malformed": "n",
    "no_done": None,
    "error_event": "n",
    "flap": "seconds",
}

STREAM_ONLY = frozenset({"slow_first_token", "cut", "stall", "malformed", "no_done", "error_event"})
DIALECTS = ("openai", "deepseek", "anthropic", "gemini")
SCOPES = ("all", "chat", "models")


class FaultError(ValueError):
    """A fault specification the control API refuses (reported as HTTP 400)."""


@dataclass(slots=True)
class Fault:
    """One switch: what to do to requests for a model (or ``*``) in a dialect (or ``*``)."""

    fault: str = "ok"
    model: str = "*"
    dialect: str = "*"
    scope: str = "all"                 # all | chat | models (the list/probe endpoints)
    status: int | None = None          # error: HTTP status
    retry_after: float | None = None   # Retry-After header (and Gemini RetryInfo) in seconds
    times: int | None = None           # apply to the next K requests only, then back to ok
    ms: float | None = None            # latency / slow_first_token delay
    n: int | None = None               # cut / stall / malformed / error_event: after N tokens
    seconds: float | None = None       # flap: how long the target is down
    message: str | None = None         # error: override the message
    error_type: str | None = None      # error / error_event: override the vendor's error type
    latency_ms: float | None = None    # extra delay before any fault takes effect
    interval_ms: float | None = None   # delay between stream tokens for these requests
    tokens: int | None = None          # force the answer to this many tokens (words)
    until: float | None = field(default=None, repr=False)  # flap: monotonic end of the outage

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "until"}
        if self.until is not None:
            out["down_for"] = round(max(0.0, self.until - time.monotonic()), 3)
        return out


def _num(value: Any, name: str, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FaultError(f"{name} must be a number")
    try:
        out = kind(float(value)) if kind is int else float(value)
    except ValueError:
        raise FaultError(f"{name} must be a number, got {value!r}") from None
    if out < 0:
        raise FaultError(f"{name} must not be negative")
    return out


_INT_FIELDS = ("status", "times", "n", "tokens")
_FLOAT_FIELDS = ("retry_after", "ms", "seconds", "latency_ms", "interval_ms")


def parse_fault(spec: dict[str, Any]) -> Fault:
    """Build a Fault from the control API's JSON (``"fault": "cut:3"`` shorthand accepted)."""
    if not isinstance(spec, dict):
        raise FaultError("fault spec must be a JSON object")
    spec = dict(spec)
    raw = spec.pop("fault", "ok")
    if not isinstance(raw, str) or not raw:
        raise FaultError("fault must be a string such as 'error:503' or 'cut:3'")
    name, _, arg = raw.partition(":")
    name = name.strip().lower().replace("-", "_")
    if name not in FAULT_ARGS:
        raise FaultError(f"unknown fault {name!r}; known: {', '.join(FAULT_ARGS)}")
    argname = FAULT_ARGS[name]
    if arg:
        if argname is None:
            raise FaultError(f"fault {name!r} takes no argument")
        spec.setdefault(argname, arg)
    f = Fault(fault=name)
    for key, value in spec.items():
        if key in _INT_FIELDS:
            setattr(f, key, _num(value, key, int))
        elif key in _FLOAT_FIELDS:
            setattr(f, key, _num(value, key, float))
        elif key in ("model", "dialect", "scope", "message", "error_type"):
            if not isinstance(value, str) or not value:
                raise FaultError(f"{key} must be a non-empty string")
            setattr(f, key, value)
        elif key == "type":  # natural alias in error specs
            if not isinstance(value, str):
                raise FaultError("type must be a string")
            f.error_type = value
        else:
            raise FaultError(f"unknown key {key!r}")
    if f.dialect != "*" and f.dialect not in DIALECTS:
        raise FaultError(f"dialect must be '*' or one of {', '.join(DIALECTS)}")
    if f.scope not in SCOPES:
        raise FaultError(f"scope must be one of {', '.join(SCOPES)}")
    if name == "error":
        if f.status is None:
            raise FaultError("error needs a status, e.g. 'error:503' or \"status\": 503")
        if not 400 <= f.status <= 599:
            raise FaultError("error status must be 400..599")
    if name in ("latency", "slow_first_token") and f.ms is None:
        raise FaultError(f"{name} needs ms, e.g. '{name}:200'")
    if name in ("cut", "stall") and f.n is None:
        raise FaultError(f"{name} needs n (tokens before it happens), e.g. '{name}:3'")
    if name == "flap":
        if f.seconds is None:
            raise FaultError("flap needs seconds, e.g. 'flap:5'")
        f.until = time.monotonic() + f.seconds
    if f.times is not None and f.times < 1:
        raise FaultError("times must be >= 1")
    return f


class FaultTable:
    """Faults keyed by (dialect, model); lookups fall back to wildcards.

    Kept to plain dicts so the happy path (no faults set) costs one truthiness test.
    """

    __slots__ = ("_faults",)

    def __init__(self) -> None:
        self._faults: dict[tuple[str, str], Fault] = {}

    def __bool__(self) -> bool:
        return bool(self._faults)

    def set(self, fault: Fault) -> None:
        key = (fault.dialect, fault.model)
        if fault.fault == "ok":
            self._faults.pop(key, None)
        else:
            self._faults[key] = fault

    def clear(self, model: str | None = None, dialect: str | None = None) -> int:
        if model is None and dialect is None:
            n = len(self._faults)
            self._faults.clear()
            return n
        drop = [k for k in self._faults
                if (dialect is None or k[0] == dialect) and (model is None or k[1] == model)]
        for k in drop:
            del self._faults[k]
        return len(drop)

    def list(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self._faults.values()]

    def take(self, dialect: str, model: str, scope: str) -> Fault | None:
        """The fault for this request (consuming one of its ``times``), or None."""
        faults = self._faults
        keys: tuple[tuple[str, str], ...]
        if scope == "models" and model == "*":
            keys = ((dialect, "*"), ("*", "*"))
        else:
            keys = ((dialect, model), (dialect, "*"), ("*", model), ("*", "*"))
        for key in keys:
            f = faults.get(key)
            if f is None or (f.scope != "all" and f.scope != scope):
                continue
            if f.until is not None and time.monotonic() >= f.until:
                del faults[key]  # the flap is over: back to ok for good
                continue
            if f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    del faults[key]
            return f
        return None


class Stats:
    """Request counters the tests and drills compare against (no per-request logging)."""

    __slots__ = ("total", "chat", "paths", "faults")

    def __init__(self) -> None:
        self.reset()

    def count_path(self, key: str) -> None:
        self.total += 1
        self.paths[key] = self.paths.get(key, 0) + 1

    def count_chat(self, dialect: str, model: str) -> None:
        d = self.chat[dialect]
        d[model] = d.get(model, 0) + 1

    def count_fault(self, name: str) -> None:
        self.faults[name] = self.faults.get(name, 0) + 1

    def reset(self) -> None:
        self.total = 0
        self.chat: dict[str, dict[str, int]] = {d: {} for d in DIALECTS}
        self.paths: dict[str, int] = {}
        self.faults: dict[str, int] = {}

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total,
                "chat": {d: dict(m) for d, m in self.chat.items()},
                "paths": dict(self.paths),
                "faults": dict(self.faults)}
