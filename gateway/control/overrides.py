"""Operator overrides: route order and disabled targets, kept beside the config.

The config file is the operator's own (comments, layout, review history), so
the gateway never rewrites it. Changes made at run time through the admin API
land in `patchbay.overrides.toml` next to it, written with tomli-w and an
atomic replace, and are applied on the next start. A file someone broke by
hand must never stop the gateway: it is reported in the log and in
`/admin/state` (`overrides.ok = false`) and the config alone is used; the
broken file is kept aside (`.bad`) before the next change overwrites it.

File format::

    # Written by Patchbay on operator changes; safe to edit while the gateway is stopped.
    [routes.chat]
    order = ["deepseek/deepseek-chat", "openai/gpt-4.1"]

    [disabled."openai/gpt-4.1"]
    reason = "vendor incident 1234"
    by = "127.0.0.1 (alice)"
    at = 1764093000.0

    [disabled_vendors.deepseek]          # a whole vendor, kept apart from its targets' own disables
    reason = "billing hold"
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from gateway.runtime import Disable, Runtime

log = logging.getLogger("patchbay.overrides")

HEADER = ("# Patchbay operator overrides: written by the gateway on every change made through the\n"
          "# admin API, CLI or TUI, and applied at start. Edit only while the gateway is stopped.\n")


class OverridesError(Exception):
    """The overrides file exists but cannot be used as a whole."""


def load_file(path: str) -> dict[str, Any] | None:
    """Parsed overrides, None when there is no file; raises OverridesError for a broken one."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as e:
        raise OverridesError(f"not valid TOML: {e}") from None
    except OSError as e:
        raise OverridesError(f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise OverridesError(f"not UTF-8 text: {e}") from None
    return raw


def apply_overrides(runtime: Runtime) -> dict[str, Any]:
    """Apply the overrides file to a fresh runtime; never raises.

    Entries naming routes or targets the config no longer has are skipped
    with a warning (the config changed since); an order that no longer lists
    exactly the route's targets keeps the listed ones first, in their saved
    order, and appends the rest in config order.
    """
    path = runtime.config.overrides_path
    status: dict[str, Any] = {"ok": True, "path": path, "error": None, "warnings": [], "loaded": False}
    runtime.overrides_status = status
    try:
        raw = load_file(path)
    except OverridesError as e:
        status.update(ok=False, error=f"{path}: {e}; using the config alone")
        log.error("overrides file %s is broken and was ignored: %s", path, e)
        return status
    if raw is None:
        return status
    warnings: list[str] = status["warnings"]

    def warn(msg: str) -> None:
        warnings.append(msg)
        log.warning("overrides file %s: %s", path, msg)

    for key in sorted(set(raw) - {"routes", "disabled", "disabled_vendors"}):
        warn(f"unknown key {key!r} ignored (expected routes, disabled, disabled_vendors)")
    routes = raw.get("routes", {})
    if not isinstance(routes, dict):
        warn("'routes' must be a table; ignored")
        routes = {}
    for name, entry in routes.items():
        r = runtime.routes.get(name)
        if r is None:
            warn(f"routes.{name}: no such route in the config; ignored")
            continue
        order = entry.get("order") if isinstance(entry, dict) else None
        if not isinstance(order, list) or not all(isinstance(x, str) for x in order):
            warn(f"routes.{name}.order must be a list of target ids; ignored")
            continue
        known = [t for t in dict.fromkeys(order) if t in r.order]
        unknown = [t for t in order if t not in r.order]
        if unknown:
            warn(f"routes.{name}.order: {', '.join(unknown)} not in this route; skipped")
        rest = [t for t in r.order if t not in known]
        if rest and known:
            warn(f"routes.{name}.order does not list {', '.join(rest)}; appended in config order")
        if known:
            runtime.set_order(name, known)   # the listed ones first, the rest in config order
    disabled = raw.get("disabled", {})
    if not isinstance(disabled, dict):
        warn("'disabled' must be a table; ignored")
        disabled = {}
    for tid, entry in disabled.items():
        t = runtime.targets.get(tid)
        if t is None:
            warn(f"disabled.{tid}: no such target in the config; ignored")
            continue
        entry = entry if isinstance(entry, dict) else {}
        runtime.set_disabled(t, True, *_disable_fields(entry))
    vendors = raw.get("disabled_vendors", {})
    if not isinstance(vendors, dict):
        warn("'disabled_vendors' must be a table; ignored")
        vendors = {}
    for vendor, entry in vendors.items():
        if vendor not in runtime.config.vendors:
            warn(f"disabled_vendors.{vendor}: no such vendor in the config; ignored")
            continue
        runtime.set_vendor_disabled(vendor, True, *_disable_fields(entry if isinstance(entry, dict) else {}))
    status["loaded"] = True
    n_routes = sum(1 for r in runtime.routes.values() if r.order != runtime.config_order(r.name))
    n_dis = sum(1 for t in runtime.targets.values() if t.disabled)
    log.info("overrides applied from %s: %d route order(s), %d disabled target(s)", path, n_routes, n_dis)
    return status


def _disable_fields(entry: dict[str, Any]) -> tuple[str | None, str | None, float | None]:
    """(reason, by, at) of a file entry, each None when missing or of the wrong type."""
    reason, by, at = entry.get("reason"), entry.get("by"), entry.get("at")
    return (reason if isinstance(reason, str) else None, by if isinstance(by, str) else None,
            float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None)


def _entry(d: Disable) -> dict[str, Any]:
    entry: dict[str, Any] = {"reason": d.reason or ""}
    if d.by:
        entry["by"] = d.by
    entry["at"] = round(d.at, 3)
    return entry


def current(runtime: Runtime) -> dict[str, Any]:
    """What differs from the config now, as the file's dict."""
    out: dict[str, Any] = {}
    routes = {r.name: {"order": list(r.order)} for r in runtime.routes.values()
              if r.order != runtime.config_order(r.name)}
    if routes:
        out["routes"] = routes
    disabled = {t.id: _entry(t.own_disable) for t in runtime.targets.values() if t.own_disable is not None}
    if disabled:
        out["disabled"] = disabled
    vendors = {v: _entry(d) for v, d in runtime.vendor_disables.items()}
    if vendors:
        out["disabled_vendors"] = vendors
    return out


def save(runtime: Runtime) -> str:
    """Write the current overrides atomically; returns the path.

    Temp file in the same directory, fsync, os.replace, then fsync the
    directory: a crash leaves either the old file or the new one, never half.
    A file that was broken at start is kept as `<name>.bad` first, so the
    operator's hand edits are not silently lost.
    """
    path = runtime.config.overrides_path
    st = runtime.overrides_status
    if not st.get("ok", True) and os.path.exists(path) and not st.get("backed_up"):
        bad = f"{path}.bad"
        try:
            os.replace(path, bad)
            st["backed_up"] = bad
            log.warning("broken overrides file moved to %s before writing the new one", bad)
        except OSError as e:  # pragma: no cover - odd filesystems
            log.warning("could not keep the broken overrides file aside: %s", e)
    data = current(runtime)
    text = HEADER + "\n" + tomli_w.dumps(data)
    directory = str(Path(path).resolve().parent)
    fd, tmp = tempfile.mkstemp(prefix=".patchbay.overrides.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass
    st.update(ok=True, error=None, saved_at=time.time())
    return path
