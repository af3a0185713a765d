"""One target in depth (enter on a tile), like `describe` in k9s.

Live figures come from the dashboard's state; everything over time comes from
the gateway's store through `GET /admin/targets/{id}?window=`: total latency
and time to first token per bucket (with axis values), attempts and failures,
failures by class, recent failed attempts, breaker transitions, the target's
event history and the routes it serves. `1`/`2`/`3` pick 5 min, 1 h or 24 h.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui import fmt
from tui.client import AdminError, AdminUnreachable
from tui.widgets.chart import chart
from tui.widgets.events import describe
from tui.widgets.tile import TargetTile
from tui.widgets.topbar import TopBar

if TYPE_CHECKING:
    from tui.app import PatchbayApp

WINDOWS = ("5m", "1h", "24h")


class TargetLoaded(Message):
    def __init__(self, data: dict[str, Any] | None, problem: str = "") -> None:
        super().__init__()
        self.data, self.problem = data, problem


class TargetScreen(Screen):
    """Per-target view; esc back to the dashboard, h its request history."""

    BINDINGS = [
        Binding("1", "window('5m')", "5 min", id="target.w5m", tooltip="Charts over the last 5 minutes"),
        Binding("2", "window('1h')", "1 h", id="target.w1h", tooltip="Charts over the last hour"),
        Binding("3", "window('24h')", "24 h", id="target.w24h", tooltip="Charts over the last 24 hours"),
        Binding("h", "history", "History", id="target.history",
                tooltip="Requests that tried this target (any attempt)"),
        Binding("g", "reload", "Reload", show=False, id="target.reload", tooltip="Read the store again"),
        Binding("j", "scroll(1)", "Down", show=False, id="target.down"),
        Binding("k", "scroll(-1)", "Up", show=False, id="target.up"),
        Binding("escape", "back", "Back", id="target.back"),
    ]

    def __init__(self, target_id: str, window: str = "1h") -> None:
        super().__init__()
        self.target_id = target_id
        self.window = window
        self.data: dict[str, Any] | None = None
        self._problem = ""
        self.loads = 0            # answers painted (bench/tui_bench.py waits on it)
        self.last_fetch_ms: float | None = None
        self.last_paint_ms: float | None = None

    @property
    def papp(self) -> PatchbayApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        bar = TopBar(self.papp.admin_url, id="topbar")
        bar.view = f"target {self.target_id}"
        yield bar
        with VerticalScroll(id="target-body"):
            yield Static(Text(f"loading {self.target_id}…", style="dim"), id="target-now")
            yield Static("", id="target-charts")
            yield Static("", id="target-failures")
            yield Static("", id="target-history")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#target-charts").border_title = "Over time"
        self.query_one("#target-failures").border_title = "Failures"
        self.query_one("#target-history").border_title = "Breaker and state history"
        self.fetch()

    @work(exclusive=True, group="target", exit_on_error=False)
    async def fetch(self) -> None:
        t0 = time.perf_counter()
        try:
            data = await self.papp.client.target(self.target_id, self.window)
            self.last_fetch_ms = (time.perf_counter() - t0) * 1000
        except AdminError as exc:
            self.post_message(TargetLoaded(None, f"gateway refused: {exc.message}"))
        except AdminUnreachable as exc:
            self.post_message(TargetLoaded(None, f"cannot reach the gateway: {exc}"))
        else:
            self.post_message(TargetLoaded(data))

    @on(TargetLoaded)
    def _loaded(self, msg: TargetLoaded) -> None:
        t0 = time.perf_counter()
        self.data, self._problem = msg.data, msg.problem
        self._paint()
        self.last_paint_ms = (time.perf_counter() - t0) * 1000
        self.loads += 1

    def on_resize(self) -> None:
        if self.data is not None:
            self._paint()

    def _paint(self) -> None:
        if self.data is None:
            self.query_one("#target-now", Static).update(Text(self._problem, style="bold red"))
            return
        width = max(40, (self.size.width or 80) - 4)
        now = self.papp.clock()
        self.query_one("#target-now", Static).update(fmt.mono(render_now(self.data, now)))
        low = self.app.get_css_variables().get("success", "green")
        high = self.app.get_css_variables().get("warning", "yellow")
        from textual.color import Color
        self.query_one("#target-charts", Static).update(fmt.mono(render_charts(
            self.data, self.window, width, Color.parse(low), Color.parse(high), tall=self.size.height >= 40)))
        self.query_one("#target-failures", Static).update(fmt.mono(render_failures(self.data, width)))
        self.query_one("#target-history", Static).update(fmt.mono(render_history(self.data, width)))

    def action_window(self, window: str) -> None:
        if window in WINDOWS:
            self.window = window
            self.fetch()

    def action_reload(self) -> None:
        self.fetch()

    def action_history(self) -> None:
        self.papp.open_history(target=self.target_id)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_scroll(self, delta: int) -> None:
        self.query_one("#target-body", VerticalScroll).scroll_relative(y=delta * 3, animate=False)


def render_now(d: dict[str, Any], now: float) -> Text:
    """The live figures, the routes it serves and why it is off (if it is)."""
    from tui.model import TargetInfo
    raw = d.get("target") or {}
    t = TargetInfo.from_json(raw)
    out = Text()
    out.append_text(TargetTile._head_text(t))
    out.append("\n")
    out.append_text(TargetTile._lat_text(t))
    out.append("  (last 5 min; total = request start to last byte, ttft = to the first token)\n", style="dim")
    out.append(f"{fmt.rpm(t.rate)} rpm now, {fmt.rpm(t.rpm)} over the last minute · in flight "
               f"{raw.get('inflight', 0)} · breaker {t.breaker}", style="")
    if raw.get("breaker_retry_in_s") is not None:
        out.append(f" (trial in {fmt.duration(raw['breaker_retry_in_s'])})", style="yellow")
    out.append("\n")
    if t.disabled:
        out.append_text(TargetTile._foot_text(t, now))
        out.append("\n")
    if t.last_error:
        out.append("last error ", style="dim")
        out.append(fmt.ago(t.last_error_ts, now) + " ", style="dim")
        out.append(" ".join(t.last_error.split()) + "\n", style="red")
    routes = d.get("routes") or []
    out.append("routes ", style="dim")
    if not routes:
        out.append("none", style="dim")
    for i, r in enumerate(routes):
        out.append(" · " if i else "", style="dim")
        out.append(f"{r['name']} #{r['position']} of {r['of']}", style="bold")
        serving = r.get("serving")
        out.append(" serving" if serving == t.id else f" (serving: {serving or 'nothing'})",
                   style="green" if serving == t.id else "dim")
    fault = raw.get("fault")
    if fault:
        out.append(f"\n⚑ drill {fault.get('drill_id')} injecting {fault.get('spec')}", style="bold magenta")
    return out


def render_charts(d: dict[str, Any], window: str, width: int, low: Any, high: Any, tall: bool = False) -> Text:
    s = d.get("series") or {}
    pts = s.get("points") or []
    since, step = float(s.get("since") or 0), float(s.get("step_s") or 60)
    out = Text()
    out.append("window ", style="dim")
    for w in WINDOWS:
        out.append(f" {w} ", style="bold reverse" if w == window else "dim")
    out.append(f"   (1/2/3; {step:g}s per bar, from the request log)\n", style="dim")
    h = 5 if tall else 3
    for title, key in (("total latency p50 (request start to last byte)", "p50_ms"),
                       ("time to first token p50 (streams)", "ttft_p50_ms")):
        values = [p.get(key) for p in pts]
        peak95 = max((p.get(key.replace("p50", "p95")) or 0 for p in pts), default=0)
        out.append(title, style="bold")
        out.append(f"   p95 peak {fmt.ms(peak95) if peak95 else fmt.DASH}\n", style="dim")
        if not any(values):
            out.append("  no answered requests in this window\n", style="dim")
            continue
        for line in chart(values, since, step, width, h, low, high):
            out.append_text(line)
            out.append("\n")
    attempts = sum(p.get("attempts", 0) for p in pts)
    failed = sum(p.get("failed", 0) for p in pts)
    out.append("attempts ", style="bold")
    out.append(f"{attempts}, failed {failed}", style="red" if failed else "")
    out.append("\n")
    if failed:
        fail_vals: list[float | None] = [float(p["failed"]) if p.get("failed") else None for p in pts]
        for line in chart(fail_vals, since, step, width, 2, high, high, unit="n"):
            out.append_text(line)
            out.append("\n")
    return out


def render_failures(d: dict[str, Any], width: int) -> Text:
    s = d.get("series") or {}
    out = Text()
    by_class = s.get("errors_by_class") or {}
    out.append("by class ", style="dim")
    if not by_class:
        out.append("none in this window", style="dim")
    for i, (cls, n) in enumerate(by_class.items()):
        out.append(" · " if i else "", style="dim")
        out.append(f"{cls} {n}", style="red")
    for a in d.get("failed_attempts") or []:
        out.append("\n")
        out.append(fmt.date_time(a.get("ts"))[5:], style="dim")
        status = a.get("http_status")
        out.append(f" {a.get('outcome')}{f' {status}' if status else ''}", style="red")
        out.append(f" {fmt.ms(a.get('latency_ms'))} ", style="dim")
        rid = str(a.get("request_id") or "")
        room = max(10, width - 40 - len(rid))
        out.append(fmt.clip(a.get("error") or "", room))
        out.append(f"  {rid}", style="dim")
    return out


def render_history(d: dict[str, Any], width: int) -> Text:
    out = Text()
    brk = d.get("breaker_events") or []
    out.append("breaker ", style="bold")
    if not brk:
        out.append("no transitions recorded", style="dim")
    for ev in brk[:8]:
        det = ev.get("detail") or {}
        out.append("\n  ")
        out.append(fmt.date_time(ev.get("ts"))[5:], style="dim")
        out.append(f" {det.get('from')} → {det.get('to')}", style="bold red" if det.get("to") == "open" else "green")
        if det.get("reason"):
            out.append(" " + fmt.clip(det["reason"], max(10, width - 40)), style="dim")
    out.append("\nevents", style="bold")
    for ev in d.get("events") or []:
        kind = str(ev.get("kind") or "")
        out.append("\n  ")
        out.append(fmt.date_time(ev.get("ts"))[5:], style="dim")
        out.append(f" {kind:<8} ", style=fmt.EVENT_STYLE.get(kind, "bold"))
        out.append(fmt.clip(describe(kind, ev), max(10, width - 30)))
    return out
