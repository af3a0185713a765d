"""The declaration of `patchbay.toml`: every key, its type, default, check and doc.

Each TOML key is a field of a frozen dataclass, with its type (the annotation),
default, constraint (`check`) and one-line doc (`key(...)`). This module holds
only that declaration and the per-key checks, so adding a key is one edit here;
reading a file against it (the walker, the checks across keys, warnings, the
key reference for the README test) lives in gateway/config_load.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

VENDOR_KINDS = ("openai", "anthropic", "gemini")
PROBER_MODES = ("models", "completion")
DEFAULT_MAX_BODY = 4 * 1024 * 1024


class _Ctx(NamedTuple):
    """What checks may look at beyond the value: the config file, the environment, the vendors."""

    path: str
    env: Any
    vendor_names: frozenset


# A check returns None (fine), a reason, or [(sub key, reason), ...] for problems inside the value.
Check = Callable[[Any, _Ctx], "str | list[tuple[str, str]] | None"]


def key(default: Any = MISSING, doc: str = "", *, check: Check | None = None,
        load: Callable[[Any, _Ctx], Any] | None = None, factory: Callable[[], Any] | None = None,
        toml: bool = True, derive: Callable[[dict, _Ctx], Any] | None = None, from_key: bool = False,
        array_by: str | None = None, repr: bool = True, compare: bool = True) -> Any:
    """Declare one config key: default (none = required), one-line doc, check, load-time conversion.

    toml=False: not a key of the file (set by `derive(values, ctx)`, or from the table's own key
    when `from_key`). array_by="name": written as an array of tables, held as a dict by that key.
    """
    meta = {"doc": doc, "check": check, "load": load, "toml": toml, "derive": derive,
            "from_key": from_key, "array_by": array_by}
    if factory is not None:
        return field(default_factory=factory, metadata=meta, repr=repr, compare=compare)
    return field(default=default, metadata=meta, repr=repr, compare=compare)


# --- checks -----------------------------------------------------------------

def _positive(v: float, ctx: _Ctx) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float, ctx: _Ctx) -> str | None:
    return None if v >= 0 else "must be 0 or greater"


def _at_least_one(v: int, ctx: _Ctx) -> str | None:
    return None if v >= 1 else "must be at least 1"


def _not_blank(v: str, ctx: _Ctx) -> str | None:
    return None if v.strip() else "must not be empty"


def _hostport(v: str, ctx: _Ctx) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"must be HOST:PORT, got {v!r}"
    return None


def split_hostport(v: str) -> tuple[str, int]:
    host, _, port = v.rpartition(":")
    return host.strip("[]"), int(port)


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(v: str, ctx: _Ctx) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"
    return check


def _url(v: str, ctx: _Ctx) -> str | None:
    return None if v.startswith(("http://", "https://")) else f"must start with http:// or https://, got {v!r}"


def _tname(v: Any) -> str:
    """A TOML value's type as the file's author would call it."""
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table",
            list: "array"}.get(type(v), type(v).__name__)


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _header_problem(name: str, value: Any) -> str | None:
    """Why a configured header cannot be sent as it is (RFC 9110 field syntax), or None."""
    if not name or not set(name) <= _TOKEN_CHARS:
        return "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    if not isinstance(value, str):
        return f"must be a string, got {_tname(value)}"
    if any(ch in value for ch in "\r\n\0"):
        return "must not contain a line break or NUL (it would inject headers into every request)"
    if value != value.strip(" \t"):
        return "must not start or end with spaces"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "must be Latin-1 text (HTTP header values cannot carry other characters)"
    return None


def _headers(v: dict, ctx: _Ctx) -> list[tuple[str, str]]:
    out = []
    for name, value in v.items():
        problem = _header_problem(name, value)
        if problem:
            out.append((name if name and set(name) <= _TOKEN_CHARS else repr(name), problem))
    return out


def _proxy_url(v: str, ctx: _Ctx) -> str | None:
    if v == "":
        return None   # explicit: connect directly, whatever the environment says
    from urllib.parse import urlsplit

    try:
        u = urlsplit(v)
        u.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        return f"is not a valid proxy URL ({e})"
    if u.scheme != "http" or not u.hostname:
        return 'must be an http:// proxy URL like "http://proxy.internal:3128" (or "" for a direct connection)'
    return None


def _resolve(config_path: str, p: str) -> str:
    """A path from the config, relative to the config file's folder."""
    return p if os.path.isabs(p) else str(Path(config_path).resolve().parent / p)


def _readable_file(v: str, ctx: _Ctx) -> str | None:
    full = _resolve(ctx.path, v)
    if not os.path.isfile(full):
        return f"file not found: {full!r}"
    if not os.access(full, os.R_OK):
        return f"file is not readable: {full!r}"
    return None


def _env_is_set(v: str, ctx: _Ctx) -> str | None:
    if v and not ctx.env.get(v):
        return f"environment variable {v} is not set (it holds this vendor's API key)"
    return None


def _known_vendor(v: str, ctx: _Ctx) -> str | None:
    if v in ctx.vendor_names:
        return None
    return f"unknown vendor {v!r} (vendors: {', '.join(sorted(ctx.vendor_names)) or 'none defined'})"


def _beside_config(v: str, ctx: _Ctx) -> str:
    return _resolve(ctx.path, v)


def _store_path(v: str, ctx: _Ctx) -> str:
    return v if v == ":memory:" else _resolve(ctx.path, v)


def _api_key(values: dict, ctx: _Ctx) -> str | None:
    env_name = values.get("api_key_env")
    return (ctx.env.get(env_name) or None) if env_name else None


# --- the declaration ----------------------------------------------------------

@dataclass(frozen=True)
class ServerConfig:
    listen: str = key("127.0.0.1:4000", "OpenAI-compatible API (HOST:PORT)", check=_hostport)
    admin_listen: str = key("127.0.0.1:4001", "admin API: keep it on loopback or behind SSH", check=_hostport)
    client_keys_env: str | None = key("PATCHBAY_CLIENT_KEYS",
                                      "variable with the comma-separated bearer keys clients must send")
    admin_token_env: str = key("PATCHBAY_ADMIN_TOKEN",
                               "variable with the admin token; the admin API is off when it is empty")
    max_body_bytes: int = key(DEFAULT_MAX_BODY, "larger request bodies get 413", check=_at_least_one)
    # Slow-client guards (slowloris): trickling clients cannot hold connections for good.
    read_timeout: float = key(30.0, "seconds a request body may take to arrive after its headers (else 408)",
                              check=_positive)
    keepalive_timeout: float = key(75.0, "seconds for a request's headers, and idle between requests",
                                   check=_positive)
    log_format: str = key("text", '"text" for people, "json" (one object per line) for log collectors',
                          check=_one_of(("text", "json")))


@dataclass(frozen=True)
class StoreConfig:
    path: str = key("patchbay.db", 'SQLite file, relative to the config file (or ":memory:")', load=_store_path)
    retention_days: float = key(30.0, "days of request history kept", check=_positive)
    log_bodies: bool = key(False, "store prompts and answers (only when true)")


@dataclass(frozen=True)
class Timeouts:
    connect: float = key(3.0, "seconds to open a connection to a vendor", check=_positive)
    first_byte: float = key(10.0, "seconds to response headers (non-stream) / first token (stream)", check=_positive)
    idle: float = key(15.0, "longest silence between stream chunks or body reads", check=_positive)
    total: float = key(120.0, "whole request, all attempts together", check=_positive)


@dataclass(frozen=True)
class RetryConfig:
    max_attempts_per_target: int = key(2, "attempts on one target before failing over", check=_at_least_one)
    backoff_base: float = key(0.25, "seconds before the first retry, doubling after", check=_non_negative)
    backoff_max: float = key(4.0, "longest wait between retries", check=_non_negative)
    retry_after_max: float = key(10.0, "a longer Retry-After fails over instead of waiting", check=_non_negative)


@dataclass(frozen=True)
class BreakerConfig:
    failures_to_open: int = key(3, "consecutive failures that open a target's breaker", check=_at_least_one)
    cooldown: float = key(15.0, "open -> one trial after this many seconds", check=_positive)


@dataclass(frozen=True)
class ProberConfig:
    interval: float = key(15.0, "seconds between health probes of each target", check=_positive)
    mode: str = key("models", '"models" (unbilled list call) or "completion" (max_tokens=1)',
                    check=_one_of(PROBER_MODES))
    enabled: bool = key(True, "probe targets in the background")


@dataclass(frozen=True)
class UpstreamLimits:
    """What one vendor answer may cost the gateway; past a limit the attempt fails as a vendor fault."""

    max_header_bytes: int = key(64 * 1024, "response header block", check=_at_least_one)
    max_body_bytes: int = key(32 * 1024 * 1024, "one non-streaming answer", check=_at_least_one)
    max_event_bytes: int = key(1024 * 1024, "one server-sent-events line or event", check=_at_least_one)


@dataclass(frozen=True)
class VendorConfig:
    name: str = key(doc="the table's name, [vendors.NAME]", toml=False, from_key=True)
    kind: str = key(doc="API dialect: openai | anthropic | gemini", check=_one_of(VENDOR_KINDS))
    base_url: str = key(doc="API root, e.g. https://api.openai.com/v1", check=_url,
                        load=lambda v, ctx: v.rstrip("/"))
    api_key_env: str | None = key(None, "variable holding the API key; omit for keyless local servers",
                                  check=_env_is_set)
    # Resolved from the environment at load; never printed (repr=False).
    api_key: str | None = key(None, "from api_key_env", toml=False, derive=_api_key, repr=False, compare=False)
    headers: dict[str, str] = key(doc="extra request headers (checked: no line breaks)", factory=dict,
                                  check=_headers, load=lambda v, ctx: dict(v), repr=False)
    # None: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY from the environment; "": direct.
    proxy: str | None = key(None, 'http:// proxy URL; "" connects directly; unset: proxy variables',
                            check=_proxy_url, repr=False)
    ca_file: str | None = key(None, "PEM bundle to trust, relative to the config file",
                              check=_readable_file, load=_beside_config)


@dataclass(frozen=True)
class TargetConfig:
    __toml_example__ = '{ vendor = "openai", model = "gpt-4.1" }'

    vendor: str = key(doc="a [vendors.NAME]", check=_known_vendor)
    model: str = key(doc="the vendor's model name", check=_not_blank)
    prefill: bool = key(False, "it can continue another vendor's cut stream")
    context_window: int | None = key(None, "tokens; used only to pick a larger target after a context-length error",
                                     check=_at_least_one)

    @property
    def id(self) -> str:
        return f"{self.vendor}/{self.model}"


@dataclass(frozen=True)
class RouteConfig:
    name: str = key(doc='what clients send as "model"', check=_not_blank)
    targets: tuple[TargetConfig, ...] = key(
        doc='fallback order; a target\'s id is "vendor/model"',
        check=lambda v, ctx: None if v else "must list at least one target")
    fallback_response: str | None = key(None, "answer sent when every target failed")


@dataclass(frozen=True)
class Price:
    __toml_example__ = "{ input = 2.0, output = 8.0 }"

    input: float = key(0.0, "USD per million input tokens", check=_non_negative)
    output: float = key(0.0, "USD per million output tokens", check=_non_negative)


@dataclass(frozen=True)
class Config:
    path: str = key(doc="the config file", toml=False)
    server: ServerConfig = key(doc="listening sockets and client limits", factory=ServerConfig)
    store: StoreConfig = key(doc="request history", factory=StoreConfig)
    timeouts: Timeouts = key(doc="seconds", factory=Timeouts)
    retry: RetryConfig = key(doc="retries on one target", factory=RetryConfig)
    breaker: BreakerConfig = key(doc="per-target circuit breaker", factory=BreakerConfig)
    prober: ProberConfig = key(doc="background health probes", factory=ProberConfig)
    vendors: dict[str, VendorConfig] = key(doc="[vendors.NAME]: one upstream API each", factory=dict)
    routes: dict[str, RouteConfig] = key(doc="[[routes]]: a model name clients use, and its targets",
                                         factory=dict, array_by="name")
    prices: dict[str, Price] = key(doc='"vendor/model" = { input, output }, for cost columns', factory=dict)
    upstream: UpstreamLimits = key(doc="what one vendor answer may cost the gateway", factory=UpstreamLimits)
    # Things that work but are likely mistakes, as (key path, words); check-config and serve print them.
    warnings: tuple[tuple[str, str], ...] = key(doc="likely mistakes found at load", toml=False, factory=tuple)

    @property
    def overrides_path(self) -> str:
        return str(Path(self.path).with_name("patchbay.overrides.toml"))

    def targets(self) -> dict[str, TargetConfig]:
        """Every distinct target id across routes, first definition wins."""
        out: dict[str, TargetConfig] = {}
        for route in self.routes.values():
            for t in route.targets:
                out.setdefault(t.id, t)
        return out
