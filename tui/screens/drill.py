"""Failover drills: the form that starts one, and the live view / report list.

A drill is the operator rehearsing an outage on purpose, so the view answers
"is it working?" while it runs (countdown, reroutes, errors, the target's
breaker) and "how well?" after (the gateway's report), and keeps old reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static

from tui import fmt
from tui.client import AdminError, AdminUnreachable
from tui.widgets.confirm import ConfirmModal
from tui.widgets.topbar import TopBar

if TYPE_CHECKING:
    from tui.app import PatchbayApp

# Every fault the gateway injects (README "Drills"); error and latency take a number.
FAULTS = [("error:<status>", "error"), ("timeout", "timeout"), ("hang", "hang"),
          ("latency:<ms>", "latency"), ("stream_cut", "stream_cut")]


def report_lines(d: dict[str, Any]) -> list[tuple[str, str]]:
    """The gateway's own report rows (one wording for CLI and panel), warnings first."""
    report = d.get("report") or {}
    out = [("warning", str(w)) for w in report.get("warnings") or ()]
    out += [(str(label), str(value)) for label, value in d.get("report_rows") or ()]
    return out


def drill_duration(d: dict[str, Any]) -> float | None:
    for k in ("duration", "duration_s"):
        if isinstance(d.get(k), (int, float)):
            return float(d[k])
    params = d.get("params")
    if isinstance(params, dict) and isinstance(params.get("duration"), (int, float)):
        return float(params["duration"])
    return None


def drill_started(d: dict[str, Any]) -> float | None:
    for k in ("started", "start", "started_at", "ts"):
        if isinstance(d.get(k), (int, float)):
            return float(d[k])
    return None


class DrillForm(ModalScreen[dict | None]):
    """Target, fault, duration, synthetic traffic; returns the drill spec or None."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="drillform.cancel"),
        Binding("ctrl+s", "submit", "Start", id="drillform.submit",
                tooltip="Start (asks y/n first)"),
    ]

    def __init__(self, targets: list[str], target: str | None, values: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._targets = targets
        self._target = target if target in targets else (targets[0] if targets else None)
        self._values = values or {}   # a spec to start from (the form reopened after "n")

    def compose(self) -> ComposeResult:
        with Vertical(id="drill-form") as box:
            box.border_title = "New failover drill"
            with Horizontal(classes="form-row"):
                yield Label("Target", classes="form-label")
                yield Select([(t, t) for t in self._targets], value=self._target or Select.NULL,
                             allow_blank=False, id="df-target", compact=True)
            v = self._values
            kind, _, arg = str(v.get("fault") or "error:503").partition(":")
            with Horizontal(classes="form-row"):
                yield Label("Fault", classes="form-label")
                yield Select(FAULTS, value=kind, allow_blank=False, id="df-fault", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("Status", classes="form-label", id="df-arg-label")
                yield Input(arg or ("503" if kind == "error" else "2000"), id="df-arg", compact=True,
                            type="integer", disabled=kind not in ("error", "latency"))
            with Horizontal(classes="form-row"):
                yield Label("Duration s", classes="form-label")
                yield Input(f"{v.get('duration', 30):g}", id="df-duration", compact=True, type="number")
            with Horizontal(classes="form-row"):
                yield Label("Traffic rps", classes="form-label")
                yield Input(f"{v.get('traffic', 0):g}", id="df-traffic", compact=True, type="number",
                            placeholder="synthetic requests/s, 0 = live only")
            yield Static("", id="df-error")
            with Horizontal(id="df-buttons"):
                yield Button("Start… (ctrl+s)", id="df-start", variant="warning", compact=True)
                yield Button("Cancel (esc)", id="df-cancel", compact=True)

    def on_mount(self) -> None:
        tune = getattr(self.app, "tune_inputs", None)
        if tune is not None:
            tune(self)
        if not self._targets:
            self.query_one("#df-error", Static).update(
                Text("No targets known yet: is the gateway connected?", style="red"))
        self.query_one("#df-target", Select).focus()

    @on(Select.Changed, "#df-fault")
    def _fault(self, event: Select.Changed) -> None:
        arg = self.query_one("#df-arg", Input)
        label = self.query_one("#df-arg-label", Label)
        arg.disabled = event.value not in ("error", "latency")
        if event.value == "error":
            label.update("Status")
            if not arg.value or int(arg.value or 0) < 400:
                arg.value = "503"
        elif event.value == "latency":
            label.update("Latency ms")
            if not arg.value or 400 <= int(arg.value or 0) < 600:
                arg.value = "2000"
        else:
            label.update("(none)")

    def spec(self) -> dict[str, Any]:
        """Validated drill spec; raises ValueError with a message for the operator."""
        target = self.query_one("#df-target", Select).value
        if target is Select.NULL or not target:
            raise ValueError("pick a target")
        fault = str(self.query_one("#df-fault", Select).value)
        arg = self.query_one("#df-arg", Input).value.strip()
        if fault == "error":
            if not arg.isdigit() or not 400 <= int(arg) <= 599:
                raise ValueError("error needs an HTTP status 400-599 (503, 429 with Retry-After, 500…)")
            fault = f"error:{int(arg)}"
        elif fault == "latency":
            if not arg.isdigit() or int(arg) <= 0:
                raise ValueError("latency needs a positive number of milliseconds")
            fault = f"latency:{int(arg)}"
        try:
            duration = float(self.query_one("#df-duration", Input).value or "0")
        except ValueError:
            raise ValueError("duration is a number of seconds") from None
        if not 1 <= duration <= 3600:
            raise ValueError("duration must be between 1 and 3600 seconds")
        try:
            traffic = float(self.query_one("#df-traffic", Input).value or "0")
        except ValueError:
            raise ValueError("traffic is requests per second") from None
        if not 0 <= traffic <= 1000:
            raise ValueError("traffic must be between 0 and 1000 requests/s")
        spec: dict[str, Any] = {"target": str(target), "fault": fault,
                                "duration": int(duration) if duration.is_integer() else duration}
        if traffic:
            spec["traffic"] = int(traffic) if traffic.is_integer() else traffic
        return spec

    def action_submit(self) -> None:
        try:
            spec = self.spec()
        except ValueError as exc:
            self.query_one("#df-error", Static).update(Text(str(exc), style="bold red"))
            return
        self.dismiss(spec)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "df-start":
            self.action_submit()
        else:
            self.action_cancel()


class DrillsLoaded(Message):
    def __init__(self, drills: list[dict[str, Any]] | None, detail: dict[str, Any] | None,
                 problem: str = "", live: dict[str, int] | None = None) -> None:
        super().__init__()
        self.drills, self.detail, self.problem, self.live = drills, detail, problem, live


def live_counts(target: str, rows: list[dict[str, Any]], gateway_live: dict[str, Any] | None = None
                ) -> dict[str, int]:
    """Requests marked with the drill so far: how many, rerouted, seen as errors by clients.

    Gateways count these themselves as requests finish (`live` in the drill, by the same rules as
    the report); for an older gateway the screen falls back to counting a page of history.
    """
    if gateway_live:
        return {"requests": int(gateway_live.get("requests") or 0),
                "rerouted": int(gateway_live.get("rerouted") or 0),
                "client errors": int(gateway_live.get("client_errors") or 0),
                "failed attempts": int(gateway_live.get("failed_attempts") or 0)}
    return {
        "requests": len(rows),
        "rerouted": sum(1 for r in rows if r.get("final_target") not in (None, target)
                        and r.get("outcome") in ("ok", "fallback")),
        "client errors": sum(1 for r in rows if r.get("outcome") in ("error", "cut")),
        "failed attempts": sum(max(0, int(r.get("attempts") or 0) - 1) for r in rows),
    }


class DrillTable(DataTable):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="drills.down"),
        Binding("k", "cursor_up", "Up", show=False, id="drills.up"),
    ]


class DrillScreen(Screen):
    """Past and running drills; the selected one live (countdown) or its report."""

    AUTO_FOCUS = "#drill-list"

    BINDINGS = [
        Binding("c", "cancel_drill", "Stop drill", id="drills.cancel",
                tooltip="Stop the selected running drill now (y/n)"),
        Binding("N", "new_drill", "New drill", id="drills.new",
                tooltip="New drill"),
        Binding("escape", "back", "Back", id="drills.back"),
    ]

    def __init__(self, focus_id: str | None = None) -> None:
        super().__init__()
        self.focus_id = focus_id
        self.drills: list[dict[str, Any]] = []
        self.detail: dict[str, Any] | None = None
        self._problem = ""
        self._keys: list[str] = []
        self.live: dict[str, int] | None = None
        self._fetched_at = 0.0

    @property
    def papp(self) -> PatchbayApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        bar = TopBar(self.papp.admin_url, id="topbar")
        bar.view = "drills"
        yield bar
        with Container(id="drill-main"):
            table = DrillTable(id="drill-list", cursor_type="row", zebra_stripes=True)
            table.border_title = "Drills"
            yield table
            with VerticalScroll(id="drill-detail") as box:
                box.border_title = "Drill"
                yield Static(Text("loading drills…", style="dim"), id="drill-view")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one(DrillTable)
        for label, w in (("started", 8), ("target", 24), ("fault", 11), ("state", 9)):
            table.add_column(label, width=w, key=label)
        self.fetch()
        self.set_interval(1.0, self._tick)

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 130, "-wide")

    def select(self, drill_id: str) -> None:
        self.focus_id = drill_id
        self.fetch()

    def _selected_id(self) -> str | None:
        if self.focus_id:
            return self.focus_id
        table = self.query_one(DrillTable)
        if 0 <= table.cursor_row < len(self._keys):
            return self._keys[table.cursor_row]
        return None

    def _tick(self) -> None:
        running = any(d.get("state") == "running" for d in self.drills)
        if running or self._settling(self.detail):
            self.fetch()
            self._render_detail()

    @staticmethod
    def _settling(d: dict[str, Any] | None) -> bool:
        """Still changing: running, report not written yet, or recovery still being watched."""
        if not d:
            return False
        if d.get("state") == "running":
            return True
        report = d.get("report")
        if report is None:
            return d.get("state") == "done"
        return isinstance(report, dict) and report.get("recovery") == "watching"

    @work(exclusive=True, group="drills", exit_on_error=False)
    async def fetch(self) -> None:
        client = self.papp.client
        try:
            drills = await client.list_drills()
            sel = self._selected_id() or (str(drills[0].get("id")) if drills else None)
            detail = await client.get_drill(sel) if sel else None
            live = None
            if detail and detail.get("state") == "running":
                if isinstance(detail.get("live"), dict):
                    live = live_counts(str(detail.get("target")), [], detail["live"])
                else:
                    page = await client.requests({"drill_id": str(detail.get("id"))}, limit=1000)
                    live = live_counts(str(detail.get("target")), page.get("requests") or [])
        except AdminError as exc:
            self.post_message(DrillsLoaded(None, None, f"gateway refused: {exc.message}"))
        except AdminUnreachable as exc:
            self.post_message(DrillsLoaded(None, None, f"cannot reach the gateway: {exc}"))
        else:
            self.post_message(DrillsLoaded(drills, detail, live=live))

    @on(DrillsLoaded)
    def _loaded(self, msg: DrillsLoaded) -> None:
        if msg.drills is None:
            self._problem = msg.problem
            self._render_detail()
            return
        self._problem = ""
        drills = sorted(msg.drills, key=lambda d: drill_started(d) or 0, reverse=True)
        self.drills = drills
        table = self.query_one(DrillTable)
        keys = [str(d.get("id")) for d in drills]
        if keys != self._keys:
            self._keys = keys
            cur = self.focus_id or (keys[table.cursor_row] if 0 <= table.cursor_row < len(keys)
                                    else None)
            table.clear()
            for d in drills:
                table.add_row(*self._cells(d), key=str(d.get("id")))
            if cur in keys:
                table.move_cursor(row=keys.index(cur), animate=False)
        else:
            for d in drills:
                table.update_cell(str(d.get("id")), "state", self._state_cell(d))
        if msg.detail is not None:
            self.detail = msg.detail
            self._fetched_at = self.papp.clock()
        self.live = msg.live
        self._render_detail()
        self.refresh_bindings()

    def _cells(self, d: dict[str, Any]) -> list[Any]:
        return [fmt.clock_time(drill_started(d)), Text(str(d.get("target", "")),
                no_wrap=True, overflow="ellipsis"), str(d.get("fault", "")),
                self._state_cell(d)]

    @staticmethod
    def _state_cell(d: dict[str, Any]) -> Text:
        state = str(d.get("state", "?"))
        return fmt.mono(Text(state, style={"running": "bold magenta", "done": "green",
                                           "cancelled": "yellow"}.get(state, "")))

    @on(DataTable.RowHighlighted)
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key else None
        if key and key != (self.detail or {}).get("id"):
            self.focus_id = None
            self.detail = next((d for d in self.drills if str(d.get("id")) == key), None)
            self._render_detail()
            self.fetch()
        elif self.focus_id and key != self.focus_id:
            self.focus_id = None

    def _render_detail(self) -> None:
        view = self.query_one("#drill-view", Static)
        if self._problem:
            view.update(Text(self._problem, style="bold red"))
            return
        d = self.detail
        if d is None:
            view.update(Text("No drills yet." + ("" if self.papp.readonly else
                             "  Press D (or N here) to start one."), style="dim"))
            return
        view.update(fmt.mono(self.render_drill(d)))

    def render_drill(self, d: dict[str, Any]) -> Text:
        now = self.papp.clock()
        t = Text()
        state = str(d.get("state", "?"))
        t.append(f"{d.get('id')}  ", style="bold")
        t.append(state.upper(), style=self._state_cell(d).style)
        t.append("\n")
        t.append(f"{'target':>10} ", style="dim")
        t.append(f"{d.get('target')}\n", style="bold")
        t.append(f"{'fault':>10} ", style="dim")
        t.append(f"{d.get('fault')}\n")
        started, dur = drill_started(d), drill_duration(d)
        t.append(f"{'started':>10} ", style="dim")
        t.append(f"{fmt.date_time(started)}")
        if dur is not None:
            t.append(f"  for {fmt.duration(dur)}")
        traffic = d.get("traffic") or (d.get("params") or {}).get("traffic")
        if traffic:
            t.append(f"  with {traffic} req/s synthetic traffic")
        t.append("\n\n")
        if state == "running":
            if started is not None and dur is not None:
                if isinstance(d.get("remaining_s"), (int, float)):  # gateway's clock, not ours
                    left = float(d["remaining_s"]) - (now - self._fetched_at)
                else:
                    left = started + dur - now
                t.append("  ⏱ ", style="bold magenta")
                t.append(f"{fmt.duration(max(0.0, left))} left" if left > 0
                         else "ending…", style="bold magenta")
                done = 0 if dur <= 0 else min(1.0, max(0.0, 1 - left / dur))
                bar = 30
                t.append("  [" + "█" * int(done * bar) + "·" * (bar - int(done * bar)) + "]\n")
            for label, value in (self.live or {}).items():
                t.append(f"  {label:>22}  ", style="dim")
                style = "bold red" if label == "client errors" and value else "bold"
                t.append(f"{value}\n", style=style)
            syn = d.get("synthetic")
            if isinstance(syn, dict) and syn.get("sent"):
                t.append(f"  {'synthetic traffic':>22}  ", style="dim")
                t.append(f"{syn.get('sent', 0)} sent, {syn.get('ok', 0)} ok, "
                         f"{syn.get('failed', 0)} failed\n")
            target = self.papp.state.target(str(d.get("target")))
            if target is not None:
                sym, style = fmt.state_style(target.state)
                t.append(f"\n  {'target now':>22}  ", style="dim")
                t.append(f"{sym} {target.state}", style=style)
                t.append(f"  breaker {target.breaker}  {fmt.rpm(target.rate)} rpm"
                         f"  ok {fmt.pct(target.success_rate)}\n")
            for r in self.papp.state.routes:
                if str(d.get("target")) in r.order:
                    t.append(f"  {'route ' + r.name:>22}  ", style="dim")
                    t.append(f"serving {r.serving or fmt.DASH}\n",
                             style="green" if r.serving != d.get("target") else "yellow")
            if not self.papp.readonly:
                t.append("\n  c stops the drill now", style="dim")
            return t
        report = d.get("report")
        if isinstance(report, dict) and report:
            t.append("Report\n", style="bold underline")
            for label, line in report_lines(d):
                if label == "warning":
                    t.append(f"  ⚠ {line}\n", style="bold yellow")
                    continue
                t.append(f"  {label:>24}  ", style="dim")
                t.append(line + "\n", style="bold")
        elif state == "done":
            t.append("Report pending: the gateway is computing it…", style="dim")
        else:
            t.append("No report (the drill was stopped before it produced one).", style="dim")
        if isinstance(report, dict) and report.get("recovery") == "watching":
            t.append("\n  watching the target recover; time back to normal follows", style="dim")
        return t

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_new_drill(self) -> None:
        self.papp.action_drill_form(None)

    def action_cancel_drill(self) -> None:
        d = self.detail
        if d is None or d.get("state") != "running" or self.papp.readonly:
            self.notify("No running drill selected.", timeout=3)
            return
        drill_id = str(d.get("id"))
        modal = ConfirmModal("Stop drill", Text(f"Stop drill {drill_id} on {d.get('target')} "
                                                f"now?\n\nThe fault is removed at once.",
                                                style="bold"), yes_label="Stop")

        def answered(yes: bool | None) -> None:
            if yes:
                self.papp.run_change(f"Stop drill {drill_id}",
                                     lambda: self.papp.client.cancel_drill(drill_id),
                                     after=self.fetch)

        self.app.push_screen(modal, answered)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("cancel_drill", "new_drill") and self.papp.readonly:
            return False
        if action == "cancel_drill":
            return bool(self.detail and self.detail.get("state") == "running")
        return True
