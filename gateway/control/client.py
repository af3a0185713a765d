"""Operator commands against a running gateway's admin API (`patchbay status`, `order`, ...).

The CLI is how an operator steers a gateway from a shell or a script when the
TUI is not at hand, so every command talks to the same admin API, prints a
plain table or one clear line, and exits non-zero on any failure: 2 when the
gateway cannot be reached, 3 when the token is refused, 1 for anything the
gateway said no to. The token comes only from `PATCHBAY_ADMIN_TOKEN` (never a
flag, so it does not land in shell history or `ps`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from typing import Any, TextIO
from urllib.parse import quote

import httpx

DEFAULT_ADMIN_URL = "http://127.0.0.1:4001"
TOKEN_ENV = "PATCHBAY_ADMIN_TOKEN"
EXIT_ERROR, EXIT_UNREACHABLE, EXIT_AUTH = 1, 2, 3


class ControlError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def _operator() -> str:
    name = os.environ.get("PATCHBAY_OPERATOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user database
        return ""


class AdminAPI:
    """A small synchronous admin client with the CLI's error messages."""

    def __init__(self, url: str | None, token: str | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = admin_url(url)
        token = os.environ.get(TOKEN_ENV, "") if token is None else token
        headers = {"Accept": "application/json", "User-Agent": "patchbay-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        op = _operator()
        if op:
            headers["X-Patchbay-Operator"] = op
        self.has_token = bool(token)
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ControlError(f"cannot reach the admin API at {self.url} ({type(e).__name__}: {e or 'no answer'}). "
                               "Is the gateway running, and is --admin-url right?", EXIT_UNREACHABLE) from None
        if _is_api_listener(resp):
            raise ControlError(f"{self.url} is the gateway's client API (server.listen), not its admin API: "
                               "point --admin-url at the admin listener (server.admin_listen, "
                               f"default {DEFAULT_ADMIN_URL})")
        if resp.status_code == 401:
            hint = (f"{TOKEN_ENV} is not set" if not self.has_token
                    else f"the token in {TOKEN_ENV} is not the gateway's admin token")
            raise ControlError(f"the admin API at {self.url} refused the request: {hint}.", EXIT_AUTH)
        try:
            body = resp.json() if resp.content else {}
        except ValueError:
            raise ControlError(f"{self.url} answered HTTP {resp.status_code} with a body that is not JSON; "
                               "is --admin-url the admin listener (not the API listener)?") from None
        if resp.status_code >= 400:
            err = body.get("error") if isinstance(body, dict) else None
            msg = err.get("message") if isinstance(err, dict) else str(body)[:300]
            raise ControlError(f"HTTP {resp.status_code}: {msg}")
        return body


def admin_url(url: str | None) -> str:
    """The admin URL as given, with `http://` added when the scheme was left out (`127.0.0.1:4001`)."""
    url = (url or DEFAULT_ADMIN_URL).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def _is_api_listener(resp: httpx.Response) -> bool:
    """The client API answered (its 404 names /v1 paths; its 401 asks for a client key)."""
    if resp.status_code not in (401, 404):
        return False
    try:
        err = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    if not isinstance(err, dict):
        return False
    return err.get("code") == "invalid_api_key" or (
        err.get("code") == "unknown_url" and "/v1/" in str(err.get("message", "")))


def _run(args: argparse.Namespace, fn: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    api = AdminAPI(getattr(args, "admin_url", None))
    try:
        return int(fn(api, args, out) or 0)
    except ControlError as e:
        print(f"patchbay: {e}", file=err)
        return e.code
    except KeyboardInterrupt:
        print("patchbay: interrupted", file=err)
        return 130
    finally:
        api.close()


# ---------------------------------------------------------------- formatting

def _ms(v: Any) -> str:
    if v is None:
        return "-"
    if v >= 10_000:
        return f"{v / 1000:.1f}s"
    return f"{v:.0f}ms" if abs(v) >= 10 else f"{v:.1f}ms"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _ago(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                               for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


def disable_words(d: dict[str, Any]) -> str:
    """One disable as words: its reason, or who did it."""
    return d.get("reason") or (f"by {d['by']}" if d.get("by") else "no reason given")


def disabled_words(t: dict[str, Any]) -> str:
    """Why a target is off: its own disable and its vendor's, both when both hold."""
    parts = []
    if t.get("target_disabled"):
        parts.append(f"target: {disable_words(t['target_disabled'])}")
    if t.get("vendor_disabled"):
        parts.append(f"vendor {t.get('vendor', '')}: {disable_words(t['vendor_disabled'])}")
    return "; ".join(parts) or str(t.get("disabled_reason") or "disabled")


def format_status(st: dict[str, Any]) -> str:
    g = st.get("gateway", {})
    store = st.get("store", {})
    lines = [f"gateway {g.get('listen', '?')}  version {g.get('version', '?')}  up {_ago(g.get('uptime_s') or 0)}  "
             f"store {'ok' if store.get('ok', True) else 'FAILING: ' + str(store.get('last_error'))}"
             + (f"  rows not written {store['rows_not_written']}" if store.get("rows_not_written") else "")]
    ov = st.get("overrides") or {}
    if not ov.get("ok", True):
        lines.append(f"overrides: {ov.get('error')}")
    lines.append("")
    for r in st.get("routes", []):
        flag = " (operator order)" if r.get("overridden") else ""
        lines.append(f"route {r['name']}: {' > '.join(r['order'])}{flag}")
        lines.append(f"  serving: {r.get('serving') or 'NOTHING (every target disabled or open)'}")
    lines.append("")
    rows = []
    for t in st.get("targets", []):
        state = t.get("state", "?")
        if t.get("fault"):
            state += "*"
        last = disabled_words(t) if t.get("disabled") else t.get("last_error")
        last = " ".join(str(last or "-").split())
        probe = "~" if t.get("latency_source") == "probes" else ""
        rate = t.get("rpm_now", t.get("rpm")) or 0
        cost = f"{t.get('cost_per_hour') or 0:.2f}" if t.get("priced", True) else "no price"
        rows.append([t["id"], state, t.get("breaker", "?"), probe + _ms(t.get("p50_ms")), probe + _ms(t.get("p95_ms")),
                     _ms(t.get("ttft_p50_ms")), _ms(t.get("ttft_p95_ms")), _pct(t.get("success_rate")),
                     f"{rate:g}", cost, str(t.get("inflight", 0)), last[:60]])
    lines.append(table(["TARGET", "STATE", "BREAKER", "P50", "P95", "TTFT50", "TTFT95", "OK", "RPM", "$/H", "INFL",
                        "LAST ERROR / REASON"], rows, right={3, 4, 5, 6, 7, 8, 9, 10}))
    lines.append("(P50/P95: whole request, start to last byte; TTFT: start to first token of streams; "
                 "both over the last 5 min. RPM: the last 10 s.)")
    drills = st.get("drills") or []
    running = [d for d in drills if d.get("state") == "running"]
    if running:
        lines.append("")
        for d in running:
            lines.append(f"drill {d['id']}: {d['fault']} on {d['target']}, {d.get('remaining_s', 0):.0f}s left")
    if any(t.get("fault") for t in st.get("targets", [])):
        lines.append("(* a drill is injecting a fault into this target)")
    if any(t.get("latency_source") == "probes" for t in st.get("targets", [])):
        lines.append("(~ latency of health probes: the target has had no traffic)")
    return "\n".join(lines)


def format_report(d: dict[str, Any]) -> str:
    from gateway.control.drills import report_rows
    r = d.get("report") or {}
    lines = [f"drill {d['id']}: {d['fault']} on {d['target']} for {d.get('duration')}s -> {d['state']}"]
    if not r:
        return lines[0] + "\n  (no report yet)"
    lines += [f"  warning: {w}" for w in r.get("warnings") or ()]
    rows = d.get("report_rows") or report_rows(r)
    w = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(w)}  {v}" for k, v in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- commands

def _status(api: AdminAPI, args: argparse.Namespace, out: TextIO) -> int:
    st = api.call("GET", "/admin/state")
    if getattr(args, "json", False):
        print(json.dumps(st, indent=2, sort_keys=True), file=out)
        return 0
    print(format_status(st), file=out)
    return 0


def _order(api: AdminAPI, args: argparse.Namespace, out: TextIO) -> int:
    r = api.call("POST", f"/admin/routes/{quote(args.route, safe='')}/order", json={"order": list(args.targets)})
    print(f"route {r['name']}: {' > '.join(r['order'])}  (serving {r.get('serving') or 'nothing'})", file=out)
    if r.get("persisted") is False:
        print(f"warning: not saved to the overrides file: {r.get('persist_error')}", file=out)
    return 0


def _toggle(api: AdminAPI, args: argparse.Namespace, out: TextIO, action: str) -> int:
    what = args.what
    body = {"reason": getattr(args, "reason", "") or ""} if action == "disable" else {}
    if "/" in what:
        r = api.call("POST", f"/admin/targets/{quote(what, safe='')}/{action}", json=body)
        t = r["target"]
        print(f"{t['id']}: {t['state']}" + (f" ({t['disabled_reason']})" if t.get("disabled_reason") else "")
              + ("" if r.get("changed") else " (no change)"), file=out)
        if action == "enable" and t.get("vendor_disabled"):
            print(f"  still off: its vendor {t['vendor']} is disabled ({disable_words(t['vendor_disabled'])}); "
                  f"`patchbay enable {t['vendor']}` turns the vendor back on", file=out)
    else:
        r = api.call("POST", f"/admin/vendors/{quote(what, safe='')}/{action}", json=body)
        print(f"vendor {r['vendor']}: {action}d, {len(r['targets'])} target(s): "
              + ", ".join(t["id"] for t in r["targets"]), file=out)
        for t in r["targets"]:
            if action == "enable" and t.get("target_disabled"):
                print(f"  still off: {t['id']} is disabled by itself ({disable_words(t['target_disabled'])}); "
                      f"`patchbay enable {t['id']}` turns it back on", file=out)
    if r.get("persisted") is False:
        print(f"warning: not saved to the overrides file: {r.get('persist_error')}", file=out)
    return 0


def _drill(api: AdminAPI, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"target": args.target, "fault": args.fault, "duration": args.duration}
    if getattr(args, "traffic", 0):
        body["traffic"] = args.traffic
    d = api.call("POST", "/admin/drills", json=body)
    did = d["id"]
    print(f"drill {did} started: {d['fault']} on {d['target']} for {d['duration']:g}s"
          + (f", {d['traffic']:g} synthetic requests/s" if d.get("traffic") else ""), file=out)
    poll = getattr(args, "poll", 0.5) or 0.5
    last_state = "running"
    try:
        while True:
            time.sleep(poll)
            d = api.call("GET", f"/admin/drills/{quote(did, safe='')}")
            if d["state"] != last_state:
                last_state = d["state"]
                print(f"drill {did}: {last_state}; waiting for the target to come back...", file=out)
            rep = d.get("report") or {}
            if d["state"] != "running" and rep and rep.get("recovery") != "watching":
                break
    except KeyboardInterrupt:
        print(f"\ncancelling drill {did}...", file=out)
        d = api.call("DELETE", f"/admin/drills/{quote(did, safe='')}")
    print(format_report(d), file=out)
    return 0


def _history(api: AdminAPI, args: argparse.Namespace, out: TextIO) -> int:
    from store.cli import history_params, write_history
    params = history_params(args)
    page = api.call("GET", "/admin/requests", params={**params, "limit": args.limit})
    write_history(page.get("requests") or [], page.get("next_cursor"), args.format, bool(params), out)
    return 0


def status(args: argparse.Namespace) -> int:
    return _run(args, _status)


def order(args: argparse.Namespace) -> int:
    return _run(args, _order)


def disable(args: argparse.Namespace) -> int:
    return _run(args, lambda api, a, out: _toggle(api, a, out, "disable"))


def enable(args: argparse.Namespace) -> int:
    return _run(args, lambda api, a, out: _toggle(api, a, out, "enable"))


def drill(args: argparse.Namespace) -> int:
    return _run(args, _drill)


def history_remote(args: argparse.Namespace) -> int:
    return _run(args, _history)
