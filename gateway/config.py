"""Load and validate `patchbay.toml`.

A bad config is refused at start with the file, the key path and what is
wrong, because an operator editing TOML at 3 a.m. needs to be told exactly
which line to fix. Every problem found is reported, not just the first.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:4000"
    admin_listen: str = "127.0.0.1:4001"
    client_keys_env: str | None = "PATCHBAY_CLIENT_KEYS"
    admin_token_env: str = "PATCHBAY_ADMIN_TOKEN"
    max_body_bytes: int = DEFAULT_MAX_BODY
    # Slow-client guards: a request's body must arrive within read_timeout of its headers, and a
    # connection must finish each request's headers within keepalive_timeout (also the idle
    # keep-alive limit), so trickling clients (slowloris) cannot hold connections for good.
    read_timeout: float = 30.0
    keepalive_timeout: float = 75.0


@dataclass(frozen=True)
class StoreConfig:
    path: str = "patchbay.db"
    retention_days: float = 30
    log_bodies: bool = False


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    first_byte: float = 10.0
    idle: float = 15.0
    total: float = 120.0


@dataclass(frozen=True)
class RetryConfig:
    max_attempts_per_target: int = 2
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    retry_after_max: float = 10.0


@dataclass(frozen=True)
class BreakerConfig:
    failures_to_open: int = 3
    cooldown: float = 15.0


@dataclass(frozen=True)
class ProberConfig:
    interval: float = 15.0
    mode: str = "models"
    enabled: bool = True


@dataclass(frozen=True)
class VendorConfig:
    name: str
    kind: str
    base_url: str
    api_key_env: str | None = None
    # Resolved from the environment at load; never printed (repr=False).
    api_key: str | None = field(default=None, repr=False, compare=False)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetConfig:
    vendor: str
    model: str
    prefill: bool = False
    context_window: int | None = None

    @property
    def id(self) -> str:
        return f"{self.vendor}/{self.model}"


@dataclass(frozen=True)
class RouteConfig:
    name: str
    targets: tuple[TargetConfig, ...]
    fallback_response: str | None = None


@dataclass(frozen=True)
class Price:
    input: float = 0.0
    output: float = 0.0


@dataclass(frozen=True)
class Config:
    path: str
    server: ServerConfig
    store: StoreConfig
    timeouts: Timeouts
    retry: RetryConfig
    breaker: BreakerConfig
    prober: ProberConfig
    vendors: dict[str, VendorConfig]
    routes: dict[str, RouteConfig]
    prices: dict[str, Price]
    # Things that work but are likely mistakes, as (key path, words); check-config and serve print them.
    warnings: tuple[tuple[str, str], ...] = ()

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


# --- validation -------------------------------------------------------------

_NUM = (int, float)


class _Checker:
    """Collects problems while walking the parsed TOML."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def add(self, key: str, reason: str) -> None:
        self.problems.append((key, reason))

    def table(self, data: Any, key: str) -> dict:
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.add(key, f"must be a table, got {_tname(data)}")
            return {}
        return data

    def section(self, data: dict, key: str, spec: dict[str, tuple], prefix: str = "") -> dict:
        """Check `data` against spec {name: (types, default, check)}; return values."""
        path = f"{prefix}{key}" if key else prefix.rstrip(".")
        for unknown in sorted(set(data) - set(spec)):
            self.add(f"{path}.{unknown}" if path else unknown,
                     f"unknown key (expected one of: {', '.join(sorted(spec))})")
        out = {}
        for name, (types, default, check) in spec.items():
            kp = f"{path}.{name}" if path else name
            if name not in data:
                out[name] = default
                continue
            value = data[name]
            if isinstance(value, bool) and bool not in _as_tuple(types):
                self.add(kp, f"must be {_type_words(types)}, got boolean")
                out[name] = default
                continue
            if not isinstance(value, types):
                self.add(kp, f"must be {_type_words(types)}, got {_tname(value)}")
                out[name] = default
                continue
            if check is not None:
                problem = check(value)
                if problem:
                    self.add(kp, problem)
                    out[name] = default
                    continue
            out[name] = value
        return out


def _as_tuple(t: Any) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def _type_words(types: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a table", list: "an array"}
    ts = _as_tuple(types)
    if set(ts) == {int, float}:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _tname(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table",
            list: "array"}.get(type(v), type(v).__name__)


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be 0 or greater"


def _at_least_one(v: int) -> str | None:
    return None if v >= 1 else "must be at least 1"


def _hostport(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"must be HOST:PORT, got {v!r}"
    return None


def _one_of(choices: tuple[str, ...]):
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"
    return check


def _url(v: str) -> str | None:
    return None if v.startswith(("http://", "https://")) else f"must start with http:// or https://, got {v!r}"


def split_hostport(v: str) -> tuple[str, int]:
    host, _, port = v.rpartition(":")
    return host.strip("[]"), int(port)


def load_config(path: str | os.PathLike, env: dict[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = str(path)
    env = os.environ if env is None else env
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
    return parse_config(raw, path, env)


def parse_config(raw: dict, path: str, env: dict[str, str] | os._Environ) -> Config:
    c = _Checker()
    top = {"server", "store", "timeouts", "retry", "breaker", "prober", "vendors", "routes", "prices"}
    for unknown in sorted(set(raw) - top):
        c.add(unknown, f"unknown key (expected one of: {', '.join(sorted(top))})")

    s = c.section(c.table(raw.get("server"), "server"), "server", {
        "listen": (str, ServerConfig.listen, _hostport),
        "admin_listen": (str, ServerConfig.admin_listen, _hostport),
        "client_keys_env": (str, ServerConfig.client_keys_env, None),
        "admin_token_env": (str, ServerConfig.admin_token_env, None),
        "max_body_bytes": (int, ServerConfig.max_body_bytes, _at_least_one),
        "read_timeout": (_NUM, ServerConfig.read_timeout, _positive),
        "keepalive_timeout": (_NUM, ServerConfig.keepalive_timeout, _positive),
    })
    server = ServerConfig(**s)

    st = c.section(c.table(raw.get("store"), "store"), "store", {
        "path": (str, StoreConfig.path, None),
        "retention_days": (_NUM, StoreConfig.retention_days, _positive),
        "log_bodies": (bool, StoreConfig.log_bodies, None),
    })
    store_path = st["path"]
    if store_path != ":memory:" and not os.path.isabs(store_path):
        store_path = str(Path(path).resolve().parent / store_path)
    store = StoreConfig(path=store_path, retention_days=float(st["retention_days"]),
                        log_bodies=st["log_bodies"])

    t = c.section(c.table(raw.get("timeouts"), "timeouts"), "timeouts", {
        name: (_NUM, getattr(Timeouts, name), _positive) for name in ("connect", "first_byte", "idle", "total")
    })
    timeouts = Timeouts(**{k: float(v) for k, v in t.items()})

    r = c.section(c.table(raw.get("retry"), "retry"), "retry", {
        "max_attempts_per_target": (int, RetryConfig.max_attempts_per_target, _at_least_one),
        "backoff_base": (_NUM, RetryConfig.backoff_base, _non_negative),
        "backoff_max": (_NUM, RetryConfig.backoff_max, _non_negative),
        "retry_after_max": (_NUM, RetryConfig.retry_after_max, _non_negative),
    })
    retry = RetryConfig(max_attempts_per_target=r["max_attempts_per_target"],
                        backoff_base=float(r["backoff_base"]), backoff_max=float(r["backoff_max"]),
                        retry_after_max=float(r["retry_after_max"]))

    b = c.section(c.table(raw.get("breaker"), "breaker"), "breaker", {
        "failures_to_open": (int, BreakerConfig.failures_to_open, _at_least_one),
        "cooldown": (_NUM, BreakerConfig.cooldown, _positive),
    })
    breaker = BreakerConfig(failures_to_open=b["failures_to_open"], cooldown=float(b["cooldown"]))

    p = c.section(c.table(raw.get("prober"), "prober"), "prober", {
        "interval": (_NUM, ProberConfig.interval, _positive),
        "mode": (str, ProberConfig.mode, _one_of(PROBER_MODES)),
        "enabled": (bool, ProberConfig.enabled, None),
    })
    prober = ProberConfig(interval=float(p["interval"]), mode=p["mode"], enabled=p["enabled"])

    vendors: dict[str, VendorConfig] = {}
    for name, vraw in c.table(raw.get("vendors"), "vendors").items():
        key = f"vendors.{name}"
        if not isinstance(vraw, dict):
            c.add(key, f"must be a table, got {_tname(vraw)}")
            continue
        n_before = len(c.problems)
        v = c.section(vraw, key, {
            "kind": (str, None, _one_of(VENDOR_KINDS)),
            "base_url": (str, None, _url),
            "api_key_env": (str, None, None),
            "headers": (dict, {}, None),
        })
        for req in ("kind", "base_url"):
            if req not in vraw:
                c.add(f"{key}.{req}", "is required")
        headers = v["headers"] or {}
        for hk, hv in headers.items():
            if not isinstance(hv, str):
                c.add(f"{key}.headers.{hk}", f"must be a string, got {_tname(hv)}")
        api_key = None
        if v["api_key_env"]:
            api_key = env.get(v["api_key_env"])
            if not api_key:
                c.add(f"{key}.api_key_env",
                      f"environment variable {v['api_key_env']} is not set (it holds this vendor's API key)")
        if len(c.problems) == n_before:
            vendors[name] = VendorConfig(name=name, kind=v["kind"], base_url=v["base_url"].rstrip("/"),
                                         api_key_env=v["api_key_env"], api_key=api_key,
                                         headers={str(k): str(x) for k, x in headers.items()})
    if not vendors and "vendors" not in raw:
        c.add("vendors", "at least one vendor is required")

    routes: dict[str, RouteConfig] = {}
    raw_routes = raw.get("routes", [])
    if not isinstance(raw_routes, list):
        c.add("routes", f"must be an array of tables ([[routes]]), got {_tname(raw_routes)}")
        raw_routes = []
    if not raw_routes and isinstance(raw.get("routes", []), list):
        c.add("routes", "at least one [[routes]] entry is required")
    vendor_names = set(c.table(raw.get("vendors"), "vendors"))
    for i, rraw in enumerate(raw_routes):
        key = f"routes[{i}]"
        if not isinstance(rraw, dict):
            c.add(key, f"must be a table, got {_tname(rraw)}")
            continue
        rv = c.section(rraw, key, {
            "name": (str, None, lambda v: None if v.strip() else "must not be empty"),
            "targets": (list, [], None),
            "fallback_response": (str, None, None),
        })
        name = rv["name"]
        if "name" not in rraw:
            c.add(f"{key}.name", "is required")
        elif name in routes:
            c.add(f"{key}.name", f"duplicate route name {name!r}")
        if not rv["targets"]:
            c.add(f"{key}.targets", "must list at least one target")
        targets: list[TargetConfig] = []
        seen: set[str] = set()
        for j, traw in enumerate(rv["targets"]):
            tkey = f"{key}.targets[{j}]"
            if not isinstance(traw, dict):
                c.add(tkey, f"must be a table like {{ vendor = \"openai\", model = \"gpt-4.1\" }}, got {_tname(traw)}")
                continue
            tv = c.section(traw, tkey, {
                "vendor": (str, None, None),
                "model": (str, None, lambda v: None if v.strip() else "must not be empty"),
                "prefill": (bool, False, None),
                "context_window": (int, None, _at_least_one),
            })
            if "vendor" not in traw or "model" not in traw:
                c.add(tkey, "needs both vendor and model")
                continue
            if tv["vendor"] not in vendor_names:
                known = ", ".join(sorted(vendor_names)) or "none defined"
                c.add(f"{tkey}.vendor", f"unknown vendor {tv['vendor']!r} (vendors: {known})")
                continue
            tc = TargetConfig(**tv)
            if tc.id in seen:
                c.add(tkey, f"duplicate target {tc.id!r} in route {name!r}")
                continue
            seen.add(tc.id)
            targets.append(tc)
        if name and name not in routes and targets:
            routes[name] = RouteConfig(name=name, targets=tuple(targets),
                                       fallback_response=rv["fallback_response"])

    prices: dict[str, Price] = {}
    for tid, praw in c.table(raw.get("prices"), "prices").items():
        pkey = f'prices."{tid}"'
        if not isinstance(praw, dict):
            c.add(pkey, f"must be a table like {{ input = 2.0, output = 8.0 }}, got {_tname(praw)}")
            continue
        missing = [k for k in ("input", "output") if k not in praw]
        if missing:
            c.add(pkey, f"needs {' and '.join(missing)} too (USD per million tokens, e.g. "
                        "{ input = 2.0, output = 8.0 })")
        pv = c.section(praw, pkey, {"input": (_NUM, 0.0, _non_negative), "output": (_NUM, 0.0, _non_negative)})
        prices[tid] = Price(input=float(pv["input"]), output=float(pv["output"]))

    first_def: dict[str, tuple[str, TargetConfig]] = {}
    for rname, route in routes.items():
        for tc in route.targets:
            prev = first_def.setdefault(tc.id, (rname, tc))
            if prev[1] != tc:
                c.add(f"routes[{list(routes).index(rname)}].targets",
                      f"target {tc.id!r} is defined differently in routes {prev[0]!r} and {rname!r} "
                      "(prefill / context_window must match: a target is one upstream with one health)")

    route_names = set(routes)
    all_ids = {t.id for r in routes.values() for t in r.targets}
    for name in route_names & all_ids:
        c.add("routes", f"route name {name!r} is also a target id; clients could not tell them apart")

    if _same_listener(server.listen, server.admin_listen):
        c.add("server.admin_listen", f"must differ from server.listen ({server.listen}): the admin API "
                                     "needs its own port")

    warnings: list[tuple[str, str]] = []
    for tid in prices:
        if tid not in all_ids and all_ids:
            warnings.append((f'prices."{tid}"', f"no route has this target, so this price is never used "
                                                f"(targets: {', '.join(sorted(all_ids))})"))
    admin_host = server.admin_listen.rpartition(":")[0].strip("[]")
    if admin_host in ("0.0.0.0", "::", ""):
        warnings.append(("server.admin_listen", f"{server.admin_listen} accepts admin connections from every "
                                                "network; keep it on 127.0.0.1 and reach it over SSH"))
    if not env.get(server.admin_token_env):
        warnings.append(("server.admin_token_env", f"{server.admin_token_env} is not set: the admin API stays "
                                                   "off, so the panel and operator commands cannot attach"))

    if c.problems:
        raise ConfigError(path, c.problems)
    return Config(path=path, server=server, store=store, timeouts=timeouts, retry=retry,
                  breaker=breaker, prober=prober, vendors=vendors, routes=routes, prices=prices,
                  warnings=tuple(warnings))


def _same_listener(a: str, b: str) -> bool:
    """Two host:port listeners that cannot both bind (same port on the same or a wildcard host)."""
    try:
        ha, pa = split_hostport(a)
        hb, pb = split_hostport(b)
    except ValueError:
        return False
    wild = ("0.0.0.0", "::", "")
    return pa == pb and pa != 0 and (ha == hb or ha in wild or hb in wild)
