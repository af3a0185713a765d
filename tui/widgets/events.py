"""Live feed of discrete gateway events: failovers, breakers, operator actions, drills.

Appending a line is the only work per event (no rebuild), and the log keeps a
bounded number of lines so a chatty gateway cannot grow the TUI's memory.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

from tui import fmt


def describe(kind: str, ev: dict[str, Any]) -> str:
    """One readable phrase for an event's detail, whatever keys the gateway sends."""
    d = ev.get("detail") or {}
    if not isinstance(d, dict):
        return str(d)
    target = ev.get("target") or d.get("target") or ""
    if kind == "failover":
        src = d.get("from") or target
        dst = d.get("to") or d.get("next") or "?"
        why = fmt.clip(d.get("reason") or d.get("error") or d.get("error_class") or "", 60)
        return f"{src} → {dst}" + (f" ({why})" if why else "")
    if kind == "breaker":
        old, new = d.get("from") or d.get("old"), d.get("to") or d.get("new") or d.get("state")
        return f"{target} breaker " + (f"{old} → {new}" if old else f"{new}")
    if kind == "operator":
        action = str(d.get("action") or "change").replace("_", " ")
        who = d.get("who") or d.get("by")
        subject = target or d.get("vendor") or d.get("route") or ev.get("route") or ""
        text = f"{action} {subject}".strip()
        if d.get("order"):
            text += " → " + ", ".join(map(str, d["order"]))
        if d.get("reason"):
            text += f" ({fmt.clip(d['reason'], 60)})"
        if who:
            text += f" by {who}"
        return text
    if kind == "drill":
        what = d.get("state") or d.get("phase") or d.get("action") or ""
        fault = d.get("fault") or ""
        text = " ".join(str(x) for x in (what, target, fault) if x)
        rep = d.get("report")
        if isinstance(rep, dict):
            if rep.get("requests_rerouted") is not None:
                text += f", {rep['requests_rerouted']} rerouted"
            if rep.get("client_visible_errors") is not None:
                text += f", {rep['client_visible_errors']} client errors"
        return text
    if kind == "probe":
        if "ok" in d:
            verdict = "probe ok" if d["ok"] else "probe failed"
            if d.get("state"):
                verdict += f", now {d['state']}"
            if not d["ok"] and d.get("error"):
                verdict += f" ({fmt.clip(d['error'], 50)})"
            return f"{target} {verdict}"
        return f"{target} {d.get('outcome') or d.get('result') or ''}".strip()
    parts = [target] if target else []
    parts += [f"{k}={v}" for k, v in list(d.items())[:4]]
    return " ".join(parts)


class EventFeed(RichLog):
    """Bounded, append-only log of events; newest at the bottom, one line each.

    Every event is one line cut to the feed's width (the whole text is in the
    request history and `GET /admin/events/recent`), so nothing wraps into an
    orphan line and a resize re-cuts every kept line to the new width. A
    drill or an outage produces the same failover for every request; repeats
    of the event just written update that line ("×12") instead of flooding.
    """

    MAX_ENTRIES = 400

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=self.MAX_ENTRIES, wrap=False, markup=False, highlight=False, min_width=20,
                         auto_scroll=True, **kwargs)
        self.count = 0
        self._entries: deque[list[Any]] = deque(maxlen=self.MAX_ENTRIES)   # [kind, event, key, repeat]
        self._width = 0

    def add(self, kind: str, ev: dict[str, Any]) -> None:
        desc = describe(kind, ev)
        route = ev.get("route") if kind == "failover" else None
        key = (kind, route, desc)
        last = self._entries[-1] if self._entries else None
        repeat = last is not None and last[2] == key
        if last is not None and repeat:
            last[3] += 1
            last[1] = ev
        else:
            self._entries.append([kind, ev, key, 1])
        self.count += 1
        if not self._size_known or not self._width:
            return              # the first resize writes every kept entry at the real width
        if repeat and self.lines:
            del self.lines[-1:]
            self._line_cache.clear()
        self.write(self._line(*self._entries[-1]), width=self._width)

    def _line(self, kind: str, ev: dict[str, Any], key: tuple, repeat: int) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(fmt.clock_time(ev.get("ts")), style="dim")
        line.append(" ")
        line.append(f"{kind:<8}", style=fmt.EVENT_STYLE.get(kind, "bold"))
        if key[1]:
            line.append(f" {key[1]}", style="bold")
        tail = f" ×{repeat}" if repeat > 1 else ""
        line.append(" " + key[2])
        width = self._width or 80
        if tail:
            line.truncate(max(10, width - len(tail)), overflow="ellipsis")
            line.append(tail, style="bold")
        line.truncate(max(10, width), overflow="ellipsis")
        return fmt.mono(line)

    def reset(self) -> None:
        self._entries.clear()
        self.clear()

    def on_resize(self, event: Resize) -> None:
        super().on_resize(event)
        width = self.scrollable_content_region.width
        if self._size_known and width and width != self._width:
            self._width = width
            self.clear()
            for entry in self._entries:
                self.write(self._line(*entry), width=width)
