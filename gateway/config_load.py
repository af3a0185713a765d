"""Read `patchbay.toml` against the declaration in gateway/config.py.

A bad config is refused at start with the file, the key path and what is
wrong, because an operator editing TOML at 3 a.m. needs to be told exactly
which line to fix. Every problem found is reported, not just the first.

The walker checks a file against the dataclasses of gateway/config.py, so the
loader, `check-config` and `reference()` (listed for the README test) all work
from that one declaration. Only the checks that span several keys (a route's
vendors, duplicate targets, ...) are written out here, in `parse_config`.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, NamedTuple, TypeGuard

from gateway.config import Config, RouteConfig, ServerConfig, TargetConfig, _Ctx, _tname, split_hostport


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
