"""Operator commands against a running gateway's admin API (`patchbay status`, `order`, ...).

The CLI is how an operator steers a gateway from a shell or a script when the
panel is not at hand. It talks through the same client as the panel
(`tui.client.SyncAdminClient`, a blocking face of `AdminClient`), prints a plain
table or one clear line, and exits non-zero on any failure with the client's
words and exit code: 2 when the gateway cannot be reached, 3 when the token is
refused, 1 for anything else. The token comes only from `PATCHBAY_ADMIN_TOKEN`
(never a flag, so it does not land in shell history or `ps`). `gateway/cli.py`
imports this module lazily; the gateway itself never does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tui.client import TOKEN_ENV, AdminProblem, SyncAdminClient


def _run(args: argparse.Namespace, fn: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    api = SyncAdminClient(getattr(args, "admin_url", None), os.environ.get(TOKEN_ENV, ""))
    try:
        return int(fn(api, args, out) or 0)
    except AdminProblem as e:
        print(f"patchbay: {e.explain()}", file=err)
        return e.exit_code
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
    """A drill and its report in the gateway's own rows (`report_rows`, one wording for CLI and panel)."""
    r = d.get("report") or {}
    lines = [f"drill {d['id']}: {d['fault']} on {d['target']} for {d.get('duration')}s -> {d['state']}"]
    if not r:
        return lines[0] + "\n  (no report yet)"
    lines += [f"  warning: {w}" for w in r.get("warnings") or ()]
    rows = [(str(k), str(v)) for k, v in d.get("report_rows") or ()]
    w = max((len(k) for k, _ in rows), default=0)
    lines += [f"  {k.ljust(w)}  {v}" for k, v in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- commands

def _status(api: SyncAdminClient, args: argparse.Namespace, out: TextIO) -> int:
    st = api.state()
    if getattr(args, "json", False):
        print(json.dumps(st, indent=2, sort_keys=True), file=out)
        return 0
    print(format_status(st), file=out)
    return 0


def _order(api: SyncAdminClient, args: argparse.Namespace, out: TextIO) -> int:
    r = api.set_order(args.route, list(args.targets))
    print(f"route {r['name']}: {' > '.join(r['order'])}  (serving {r.get('serving') or 'nothing'})", file=out)
    if r.get("persisted") is False:
        print(f"warning: not saved to the overrides file: {r.get('persist_error')}", file=out)
    return 0


def _toggle(api: SyncAdminClient, args: argparse.Namespace, out: TextIO, action: str) -> int:
    what = args.what
    reason = getattr(args, "reason", "") or ""
    if "/" in what:
        r = api.disable_target(what, reason) if action == "disable" else api.enable_target(what)
        t = r["target"]
        print(f"{t['id']}: {t['state']}" + (f" ({t['disabled_reason']})" if t.get("disabled_reason") else "")
              + ("" if r.get("changed") else " (no change)"), file=out)
        if action == "enable" and t.get("vendor_disabled"):
            print(f"  still off: its vendor {t['vendor']} is disabled ({disable_words(t['vendor_disabled'])}); "
                  f"`patchbay enable {t['vendor']}` turns the vendor back on", file=out)
    else:
        r = api.disable_vendor(what, reason) if action == "disable" else api.enable_vendor(what)
        print(f"vendor {r['vendor']}: {action}d, {len(r['targets'])} target(s): "
              + ", ".join(t["id"] for t in r["targets"]), file=out)
        for t in r["targets"]:
            if action == "enable" and t.get("target_disabled"):
                print(f"  still off: {t['id']} is disabled by itself ({disable_words(t['target_disabled'])}); "
                      f"`patchbay enable {t['id']}` turns it back on", file=out)
    if r.get("persisted") is False:
        print(f"warning: not saved to the overrides file: {r.get('persist_error')}", file=out)
    return 0


def _drill(api: SyncAdminClient, args: argparse.Namespace, out: TextIO) -> int:
    d = api.start_drill(args.target, args.fault, args.duration, getattr(args, "traffic", 0) or None)
    did = d["id"]
    print(f"drill {did} started: {d['fault']} on {d['target']} for {d['duration']:g}s"
          + (f", {d['traffic']:g} synthetic requests/s" if d.get("traffic") else ""), file=out)
    poll = getattr(args, "poll", 0.5) or 0.5
    last_state = "running"
    try:
        while True:
            time.sleep(poll)
            d = api.get_drill(did)
            if d["state"] != last_state:
                last_state = d["state"]
                print(f"drill {did}: {last_state}; waiting for the target to come back...", file=out)
            rep = d.get("report") or {}
            if d["state"] != "running" and rep and rep.get("recovery") != "watching":
                break
    except KeyboardInterrupt:
        print(f"\ncancelling drill {did}...", file=out)
        d = api.cancel_drill(did)
    print(format_report(d), file=out)
    return 0


def _history(api: SyncAdminClient, args: argparse.Namespace, out: TextIO, params: dict[str, str],
             write: Callable[..., None]) -> int:
    page = api.requests(params, limit=args.limit)
    write(page.get("requests") or [], page.get("next_cursor"), args.format, bool(params), out)
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


def history_remote(args: argparse.Namespace, params: dict[str, str], write: Callable[..., None]) -> int:
    """`patchbay history` over the admin API. `params` (the filters as query parameters) and `write`
    (table / JSON / CSV) are the store's, shared with `history -c`, and handed in by gateway/cli.py
    so the panel's package never imports the store."""
    return _run(args, lambda api, a, out: _history(api, a, out, params, write))
