"""Load and validate `patchbay.toml`.

A bad config is refused at start with the file, the key path and what is
wrong, because an operator editing TOML at 3 a.m. needs to be told exactly
which line to fix. Every problem found is reported, not just the first.

The config is declared once, below: each TOML key is a field of a frozen
dataclass, with its type (the annotation), default, constraint (`check`) and
one-line doc (`key(...)`). The loader walks that declaration, `check-config`
uses the loader, and `reference()` lists it for the README test. Only the
checks that span several keys (a route's vendors, duplicate targets, ...) are
written out in `parse_config`.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

VENDOR_KINDS = ("openai", "anthropic", "gemini")
PROBER_MODES = ("models", "completion")
DEFAULT_MAX_BODY = 4 * 1024 * 1024


class ConfigError(Exception):
    """One or more problems in a config file; `problems` holds (key path, reason)."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.path}: {len(self.problems)} problem(s) in config"]
        for key, reason in self.problems:
            lines.append(f"  {self.path}: {key or '(top level)'}: {reason}")
        return "\n".join(lines)


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


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(v: str, ctx: _Ctx) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"
    return check


def _url(v: str, ctx: _Ctx) -> str | None:
    return None if v.startswith(("http://", "https://")) else f"must start with http:// or https://, got {v!r}"


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


# --- the walker -----------------------------------------------------------------

class Key(NamedTuple):
    """One declared TOML key: `reference()` lists these."""

    path: str          # e.g. "server.listen", "vendors.*.kind", "routes[].targets[].model"
    type: str          # "a string", "a number", ...
    required: bool
    default: Any       # None when required or when leaving the key out means "not set"
    doc: str


_BAD = object()
_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          dict: "a table", tuple: "an array"}


def _tname(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table",
            list: "array"}.get(type(v), type(v).__name__)


_HINTS: dict[type, dict[str, Any]] = {}


def _toml_fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """{key: (dataclass field, type)} for the fields of cls that are keys in the file."""
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: (f, _unoptional(hints[f.name])) for f in fields(cls)}
    return {n: ft for n, ft in _HINTS[cls].items() if ft[0].metadata["toml"]}


def _unoptional(tp: Any) -> Any:
    """`str | None` -> str: TOML has no null, so an optional key is one that may be left out."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp


def _is_dataclass_type(tp: Any) -> TypeGuard[type]:
    """`is_dataclass` for a field's type: a declared type is a class, never an instance."""
    return is_dataclass(tp)


def _is_table(tp: Any) -> bool:
    return is_dataclass(tp) or typing.get_origin(tp) is dict


def _type_words(tp: Any) -> str:
    if is_dataclass(tp):
        return "a table"
    return _WORDS.get(typing.get_origin(tp) or tp, str(tp))


def _default(f: Any) -> tuple[bool, Any]:
    """(required, default) of a field."""
    if f.default_factory is not MISSING:
        return False, f.default_factory()
    return f.default is MISSING, None if f.default is MISSING else f.default


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _quote(name: str) -> str:
    """A table key as written in TOML: bare when it can be, else quoted."""
    import json

    bare = name and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in name)
    return name if bare else json.dumps(name, ensure_ascii=False)


class _Walker:
    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.problems: list[tuple[str, str]] = []
        self.position: dict[str, int] = {}   # [[array]] entry -> its index

    def add(self, key: str, reason: str) -> None:
        self.problems.append((key, reason))

    def table(self, cls: type, data: dict, path: str) -> dict[str, Any]:
        """Check `data` against the declaration of `cls`; return the good values by field name."""
        spec = _toml_fields(cls)
        for unknown in sorted(set(data) - set(spec), key=str):
            self.add(_join(path, str(unknown)), f"unknown key (expected one of: {', '.join(sorted(spec))})")
        out: dict[str, Any] = {}
        for name, (f, tp) in spec.items():
            kp = _join(path, name)
            if data.get(name) is None and _is_table(tp) and not f.metadata["array_by"]:
                data = {k: v for k, v in data.items() if k != name}   # None (from Python callers): left out
            if name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    self.add(kp, "is required")
                elif _is_dataclass_type(tp):   # a section left out: its defaults, loaded like written ones
                    out[name] = self.build(tp, {}, kp)
                elif f.metadata["load"] and f.default is not None and f.default is not MISSING:
                    out[name] = f.metadata["load"](f.default, self.ctx)
                continue
            value = self.value(tp, data[name], kp, f.metadata)
            if value is _BAD:
                continue
            check = f.metadata["check"]
            problem = check(value, self.ctx) if check else None
            if isinstance(problem, str):
                self.add(kp, problem)
                continue
            if problem:
                for sub, reason in problem:
                    self.add(f"{kp}.{sub}", reason)
                continue
            load = f.metadata["load"]
            out[name] = load(value, self.ctx) if load else value
        return out

    def build(self, cls: type, data: Any, path: str, table_key: str | None = None) -> Any:
        """A `cls` from one TOML table, or _BAD after recording why not."""
        if not isinstance(data, dict):
            example = getattr(cls, "__toml_example__", None)
            like = f" like {example}" if example else ""
            self.add(path, f"must be a table{like}, got {_tname(data)}")
            return _BAD
        before = len(self.problems)
        values = self.table(cls, data, path)
        for f in fields(cls):
            if f.metadata["from_key"]:
                values[f.name] = table_key
            elif f.metadata["derive"]:
                values[f.name] = f.metadata["derive"](values, self.ctx)
        return _BAD if len(self.problems) > before else cls(**values)

    def value(self, tp: Any, v: Any, kp: str, meta: Any) -> Any:
        origin = typing.get_origin(tp)
        if _is_dataclass_type(tp):
            return self.build(tp, v, kp)
        if origin is dict and is_dataclass(typing.get_args(tp)[1]):
            return self.tables(typing.get_args(tp)[1], v, kp, meta["array_by"])
        if origin is tuple:
            if not isinstance(v, list):
                self.add(kp, f"must be an array, got {_tname(v)}")
                return _BAD
            items = [self.value(typing.get_args(tp)[0], item, f"{kp}[{j}]", {}) for j, item in enumerate(v)]
            return _BAD if any(item is _BAD for item in items) else tuple(items)
        ok = (origin or tp) if tp is not float else (int, float)
        if not isinstance(v, ok) or (isinstance(v, bool) and tp is not bool):
            self.add(kp, f"must be {_type_words(tp)}, got {_tname(v)}")
            return _BAD
        return float(v) if tp is float else v

    def tables(self, cls: type, v: Any, kp: str, array_by: str | None) -> Any:
        """[section.NAME] tables, or [[section]] entries keyed by their `array_by` key, as a dict."""
        out: dict[str, Any] = {}
        if array_by is None:
            if not isinstance(v, dict):
                self.add(kp, f"must be a table, got {_tname(v)}")
                return _BAD
            for name, item in v.items():
                built = self.build(cls, item, f"{kp}.{_quote(name)}", table_key=name)
                if built is not _BAD:
                    out[name] = built
            return out
        if not isinstance(v, list):
            self.add(kp, f"must be an array of tables ([[{kp}]]), got {_tname(v)}")
            return _BAD
        for i, item in enumerate(v):
            built = self.build(cls, item, f"{kp}[{i}]")
            if built is _BAD:
                continue
            name = getattr(built, array_by)
            if name in out:
                self.add(f"{kp}[{i}].{array_by}", f"duplicate {kp.rstrip('s')} {array_by} {name!r}")
                continue
            out[name] = built
            self.position[name] = i
        return out


def reference(cls: type = Config, path: str = "") -> list[Key]:
    """Every key the file may hold, from the declaration (the README is tested against this)."""
    out: list[Key] = []
    for name, (f, tp) in _toml_fields(cls).items():
        kp = _join(path, name)
        if _is_dataclass_type(tp):
            out += reference(tp, kp)
        elif typing.get_origin(tp) is dict and is_dataclass(typing.get_args(tp)[1]):
            out += reference(typing.get_args(tp)[1], f"{kp}[]" if f.metadata["array_by"] else f"{kp}.*")
        elif typing.get_origin(tp) is tuple and is_dataclass(typing.get_args(tp)[0]):
            out.append(Key(kp, "an array of tables", *_default(f), f.metadata["doc"]))
            out += reference(typing.get_args(tp)[0], f"{kp}[]")
        else:
            out.append(Key(kp, _type_words(tp), *_default(f), f.metadata["doc"]))
    return out


# --- loading ------------------------------------------------------------------

def split_hostport(v: str) -> tuple[str, int]:
    host, _, port = v.rpartition(":")
    return host.strip("[]"), int(port)


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = str(path)
    environ: Mapping[str, str] = os.environ if env is None else env
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, [("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(path, [("", "is a directory, not a config file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"not valid TOML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [("", f"not UTF-8 text (TOML must be UTF-8): {exc}")]) from None
    except OSError as exc:
        raise ConfigError(path, [("", f"cannot read: {exc.strerror or exc}")]) from None
    return parse_config(raw, path, environ)


def parse_config(raw: dict, path: str, env: Mapping[str, str]) -> Config:
    vendor_tables = raw.get("vendors")
    w = _Walker(_Ctx(path, env, frozenset(vendor_tables) if isinstance(vendor_tables, dict) else frozenset()))
    values = w.table(Config, raw, "")

    # Checks across keys.
    if "vendors" not in raw:
        w.add("vendors", "at least one vendor is required")
    raw_routes = raw.get("routes", [])
    routes: dict[str, RouteConfig] = values.get("routes", {})
    if not routes and not any(k.startswith("routes") for k, _ in w.problems):
        w.add("routes", "at least one [[routes]] entry is required")
    for rname, route in routes.items():
        i = w.position[rname]
        seen: set[str] = set()
        for j, traw in enumerate(raw_routes[i]["targets"]):
            if isinstance(traw, dict) and isinstance(traw.get("vendor"), str) and isinstance(traw.get("model"), str):
                tid = f"{traw['vendor']}/{traw['model']}"
                if tid in seen:
                    w.add(f"routes[{i}].targets[{j}]", f"duplicate target {tid!r} in route {rname!r}")
                seen.add(tid)
    first_def: dict[str, tuple[str, TargetConfig]] = {}
    for rname, route in routes.items():
        for tc in route.targets:
            prev = first_def.setdefault(tc.id, (rname, tc))
            if prev[1] != tc:
                w.add(f"routes[{w.position[rname]}].targets",
                      f"target {tc.id!r} is defined differently in routes {prev[0]!r} and {rname!r} "
                      "(prefill / context_window must match: a target is one upstream with one health)")
    for name in sorted(set(routes) & set(first_def)):
        w.add("routes", f"route name {name!r} is also a target id; clients could not tell them apart")
    server: ServerConfig = values.get("server") or ServerConfig()
    if _same_listener(server.listen, server.admin_listen):
        w.add("server.admin_listen", f"must differ from server.listen ({server.listen}): the admin API "
                                     "needs its own port")
    for tid, praw in (raw.get("prices") or {}).items() if isinstance(raw.get("prices"), dict) else ():
        missing = [k for k in ("input", "output") if isinstance(praw, dict) and k not in praw]
        if missing:
            w.add(f"prices.{_quote(tid)}", f"needs {' and '.join(missing)} too (USD per million tokens, e.g. "
                                              "{ input = 2.0, output = 8.0 })")

    if w.problems:
        raise ConfigError(path, w.problems)
    return Config(path=path, warnings=_warnings(values, set(first_def), env), **values)


def _warnings(values: dict[str, Any], target_ids: set[str], env: Any) -> tuple[tuple[str, str], ...]:
    """What works but is likely a mistake: check-config and serve say so, one line each."""
    out: list[tuple[str, str]] = []
    for tid in values.get("prices", {}):
        if target_ids and tid not in target_ids:
            out.append((f"prices.{_quote(tid)}", f"no route has this target, so this price is never used "
                                                    f"(targets: {', '.join(sorted(target_ids))})"))
    server: ServerConfig = values.get("server") or ServerConfig()
    if split_hostport(server.admin_listen)[0] in ("0.0.0.0", "::", ""):
        out.append(("server.admin_listen", f"{server.admin_listen} accepts admin connections from every "
                                           "network; keep it on 127.0.0.1 and reach it over SSH"))
    if not env.get(server.admin_token_env):
        out.append(("server.admin_token_env", f"{server.admin_token_env} is not set: the admin API stays "
                                              "off, so the panel and operator commands cannot attach"))
    return tuple(out)


def _same_listener(a: str, b: str) -> bool:
    """Two host:port listeners that cannot both bind (same port on the same or a wildcard host)."""
    try:
        ha, pa = split_hostport(a)
        hb, pb = split_hostport(b)
    except ValueError:
        return False
    wild = ("0.0.0.0", "::", "")
    return pa == pb and pa != 0 and (ha == hb or ha in wild or hb in wild)
