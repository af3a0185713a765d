"""One request in full: its numbers, its attempt chain as a timeline, its events.

The timeline answers the on-call question "what happened to this request":
which target each attempt went to, when it started relative to the request,
how long it took and what went wrong, drawn to one time scale.
"""

from __future__ import annotations

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
from tui.widgets.events import describe
from tui.widgets.topbar import TopBar

if TYPE_CHECKING:
    from tui.app import PatchbayApp


class DetailLoaded(Message):
    def __init__(self, data: dict[str, Any] | None, problem: str = "") -> None:
        super().__init__()
        self.data, self.problem = data, problem


def render_summary(d: dict[str, Any], width: int = 80) -> Text:
    """Six short lines at most, so the attempt chain fits below it even at 80x24."""
    t = Text()
    outcome = str(d.get("outcome") or "?")
    t.append(f"{d.get('id')}  ", style="bold")
    t.append(f"{outcome.upper()} {d.get('http_status') or ''}".strip(),
             style="bold " + fmt.OUTCOME_STYLE.get(outcome, ""))
    if d.get("drill_id"):
        t.append(f"  ⚑ drill {d['drill_id']}", style="magenta")

    def line(*pairs: tuple[str, str]) -> None:
        t.append("\n")
        for i, (label, value) in enumerate(pairs):
            if i:
                t.append(" · ", style="dim")
            if label:
                t.append(f"{label} ", style="dim")
            t.append(value)

    line(("", fmt.date_time(d.get("ts"))), ("route", str(d.get("route") or fmt.DASH)),
         ("", "streaming" if d.get("stream") else "not streaming"))
    answered = str(d.get("final_target") or fmt.DASH)
    model = d.get("model")
    line(("answered by", answered + (f" (model {model})" if model and
                                      not answered.endswith("/" + str(model)) else "")))
    line(("attempts", f"{_n_attempts(d)} ({d.get('failovers') or 0} failover)"),
         ("latency", fmt.ms(d.get("latency_ms"))), ("first token", fmt.ms(d.get("ttft_ms"))))
    line(("tokens in/out", fmt.tokens(d.get("prompt_tokens"), d.get("completion_tokens"))),
         ("cost", fmt.money(d.get("cost")) if d.get("cost") is not None else fmt.DASH))
    if d.get("error_class") or d.get("error_message"):
        t.append("\nerror ", style="dim")
        t.append(f"{d.get('error_class') or ''} {d.get('error_message') or ''}".strip(),
                 style="red")
    if d.get("skipped_open"):
        t.append("\nskipped ", style="dim")
        t.append(", ".join(str(d["skipped_open"]).split(",")), style="yellow")
        t.append(" (breaker open: passed over without a try)", style="dim")
    return t


def render_bodies(d: dict[str, Any], width: int) -> Text | None:
    """Request and answer bodies, stored only with `[store] log_bodies = true`."""
    req, ans = d.get("request_body"), d.get("response_body")
    if req is None and ans is None:
        return None
    t = Text()
    for label, body in (("request", req), ("answer", ans)):
        t.append(f"{label}\n", style="bold")
        text = str(body) if body is not None else "(not stored)"
        try:
            import json
            text = json.dumps(json.loads(text), indent=1, ensure_ascii=False)
        except (ValueError, TypeError):
            pass
        lines = text.splitlines() or [""]
        for line in lines[:60]:
            t.append(fmt.clip(line, max(20, width)) + "\n", style="" if body is not None else "dim")
        if len(lines) > 60:
            t.append(f"… {len(lines) - 60} more lines\n", style="dim")
    return t


def copy_request_id(app: Any, request_id: str) -> None:
    """Clipboard through the terminal (OSC 52, works over SSH), and the id in a notice to read off."""
    app.copy_to_clipboard(request_id)
    app.notify(f"{request_id} copied to the clipboard", timeout=6)


def _n_attempts(d: dict[str, Any]) -> int:
    a = d.get("attempts")
    return len(a) if isinstance(a, list) else int(a or 0)


def render_timeline(d: dict[str, Any], width: int) -> Text:
    attempts = d.get("attempts") if isinstance(d.get("attempts"), list) else []
    t = Text()
    if not attempts:
        t.append("no attempts recorded (rejected before any vendor was tried)", style="dim")
        return t
    start = d.get("ts") or min(a.get("ts") or 0 for a in attempts)
    spans = []
    for a in attempts:
        off = max(0.0, (a.get("ts") or start) - start)
        lat = (a.get("latency_ms") or 0) / 1000
        spans.append((off, lat))
    total = max([o + length for o, length in spans] + [(d.get("latency_ms") or 0) / 1000, 0.001])
    bar_w = max(10, min(120, width - 6))
    for a, (off, lat) in zip(attempts, spans):
        ok = a.get("outcome") == "ok"
        style = "green" if ok else "red"
        t.append(f"#{a.get('n', '?')} ", style="bold")
        t.append(str(a.get("target")), style="bold")
        if a.get("continuation"):
            t.append("  continuation (prefill)", style="cyan")
        t.append(f"  +{fmt.secs(off)}  ", style="dim")
        t.append(fmt.ms(a.get("latency_ms")), style="bold")
        t.append("  ")
        status = a.get("http_status")
        t.append(f"{a.get('outcome')}{f' {status}' if status else ''}", style=style)
        t.append("\n")
        lo = int(off / total * bar_w)
        hi = max(lo + 1, int((off + lat) / total * bar_w))
        t.append("   │", style="dim")
        t.append(" " * lo)
        t.append("█" * (hi - lo), style=style)
        t.append(" " * max(0, bar_w - hi))
        t.append("│\n", style="dim")
        if a.get("error"):
            t.append("   └ ", style="dim")
            t.append(fmt.clip(a["error"], max(20, width - 6)) + "\n", style="red")
    end_label = fmt.secs(total)
    t.append(f"   0s{' ' * max(1, bar_w + 4 - 5 - len(end_label) + 1)}{end_label}", style="dim")
    return t


def render_events(d: dict[str, Any]) -> Text:
    t = Text()
    events = d.get("events") or []
    if not events:
        t.append("no events", style="dim")
    for ev in events:
        kind = str(ev.get("kind", "event"))
        t.append(fmt.clock_time(ev.get("ts")), style="dim")
        t.append(f" {kind:<8} ", style=fmt.EVENT_STYLE.get(kind, "bold"))
        t.append(describe(kind, ev) + "\n")
    return t


class DetailScreen(Screen):
    """A request with its attempt chain; esc goes back to the history page."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="detail.back"),
        Binding("c", "copy_id", "Copy id", id="detail.copy",
                tooltip="Copy the request id to the clipboard (OSC 52; also shown in a notice)"),
        Binding("j", "scroll(1)", "Down", show=False, id="detail.down"),
        Binding("k", "scroll(-1)", "Up", show=False, id="detail.up"),
    ]

    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.data: dict[str, Any] | None = None

    @property
    def papp(self) -> PatchbayApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        bar = TopBar(self.papp.admin_url, id="topbar")
        bar.view = f"request {self.request_id}"
        yield bar
        with VerticalScroll(id="detail-body"):
            yield Static(Text(f"loading {self.request_id}…", style="dim"), id="detail-summary")
            yield Static("", id="detail-timeline")
            yield Static("", id="detail-events")
            yield Static("", id="detail-bodies")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#detail-timeline").border_title = "Attempt chain"
        self.query_one("#detail-events").border_title = "Events"
        self.query_one("#detail-bodies").border_title = "Bodies (log_bodies = true)"
        self.query_one("#detail-bodies").display = False
        self.fetch()

    @work(exclusive=True, exit_on_error=False)
    async def fetch(self) -> None:
        try:
            data = await self.papp.client.request(self.request_id)
        except AdminError as exc:
            self.post_message(DetailLoaded(None, f"gateway refused: {exc.message}"))
        except AdminUnreachable as exc:
            self.post_message(DetailLoaded(None, f"cannot reach the gateway: {exc}"))
        else:
            self.post_message(DetailLoaded(data))

    @on(DetailLoaded)
    def _loaded(self, msg: DetailLoaded) -> None:
        if msg.data is None:
            self.query_one("#detail-summary", Static).update(Text(msg.problem, style="bold red"))
            return
        self.data = msg.data
        self._paint()

    def on_resize(self) -> None:
        if self.data is not None:
            self._paint()

    def _paint(self) -> None:
        assert self.data is not None
        width = max(30, (self.size.width or 80) - 6)
        self.query_one("#detail-summary", Static).update(
            fmt.mono(render_summary(self.data, width)))
        self.query_one("#detail-timeline", Static).update(
            fmt.mono(render_timeline(self.data, width)))
        self.query_one("#detail-events", Static).update(fmt.mono(render_events(self.data)))
        bodies = render_bodies(self.data, width)
        box = self.query_one("#detail-bodies", Static)
        box.display = bodies is not None
        if bodies is not None:
            box.update(bodies)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_copy_id(self) -> None:
        copy_request_id(self.app, self.request_id)

    def action_scroll(self, delta: int) -> None:
        body = self.query_one("#detail-body", VerticalScroll)
        body.scroll_relative(y=delta * 3, animate=False)
