"""`patchbay tui`: the Textual control panel attached to a gateway's admin API.

All I/O runs in `@work` workers that post messages; the UI thread only applies
snapshots to widgets already on screen. Live state arrives over SSE (with a
polling fallback when the stream is quiet) and is painted at most once per
`refresh` seconds, which keeps a 20-target dashboard at a few percent of a core.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen

from tui import fmt
from tui.client import (
    DEFAULT_ADMIN_URL,
    AdminAuthError,
    AdminClient,
    AdminError,
    AdminUnreachable,
    HistoryFilters,
    default_operator,
)
from tui.messages import ConnectionChanged, EventsBackfilled, GatewayEvent, StateReceived
from tui.model import GatewayState, TargetInfo
from tui.screens.dashboard import DashboardScreen
from tui.widgets.confirm import ConfirmModal
from tui.widgets.routes import RoutePanel
from tui.widgets.topbar import TopBar

# Every action that changes the gateway. `--readonly` refuses all of them:
# their bindings vanish from the footer and help, their palette commands are
# not offered, and a stray call is refused again here.
MODIFYING_ACTIONS = frozenset({
    "disable_target", "disable_vendor", "enable_target", "enable_vendor",
    "drill_form", "move", "apply", "cancel_drill", "new_drill",
})

RECONNECT_DELAYS = (1.0, 2.0, 3.0, 5.0)
BACKFILL_EVENTS = 50       # stored events shown when the panel (re)attaches


class PatchbayApp(App[int]):
    """Control panel; see `run_tui` for the command-line entry."""

    CSS_PATH = "app.tcss"
    TITLE = "Patchbay"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("h", "history", "History", id="app.history",
                tooltip="Request history (or : then history)"),
        Binding("D", "drill_form", "Drill", id="app.drill",
                tooltip="Start a failover drill: form, then y/n"),
        Binding("r", "drills", "Drills", show=False, id="app.drills",
                tooltip="Drills: running and past, with their reports"),
        Binding("p", "pause", "Pause", show=False, id="app.pause",
                tooltip="Pause / resume live updates"),
        Binding("colon", "command_palette", "Commands", show=False, id="app.palette",
                tooltip="Command palette: views and actions (also ctrl+p)"),
        Binding("question_mark", "help", "Help", id="app.help",
                tooltip="This help"),
        Binding("q", "quit", "Quit", id="app.quit",
                tooltip="Quit"),
    ]

    def __init__(self, admin_url: str = DEFAULT_ADMIN_URL, token: str | None = None,
                 readonly: bool = False, refresh: float = 1.0, *,
                 clock: Callable[[], float] = time.time,
                 live: bool = True, cursor_blink: bool = True,
                 transport: Any = None) -> None:
        super().__init__()
        self.admin_url = admin_url.rstrip("/")
        self.token = token
        self.readonly = readonly
        self.refresh_interval = max(0.1, float(refresh))
        self.clock = clock
        self.live = live
        self.cursor_blink = cursor_blink
        self.client = AdminClient(self.admin_url, token, operator=_operator_name(),
                                  transport=transport)
        self.state = GatewayState()
        self.connected: bool | None = None
        self.paused = False
        self.last_problem = ""
        self.last_connection: ConnectionChanged | None = None
        self._raw: dict[str, Any] = {}
        self._pending: GatewayState | None = None
        self._last_state_at = 0.0
        self._held_events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=400)
        self._wake = asyncio.Event()
        self.first_paint_at: float | None = None
        self._apply_now = False
        self._backfilled_to = 0.0

    # -- lifecycle -----------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return DashboardScreen()

    def _dashboard(self) -> DashboardScreen | None:
        """The dashboard, or None while the app starts or shuts down (no screens yet/left)."""
        try:
            stack = self.screen_stack
        except Exception:
            return None
        for s in stack:
            if isinstance(s, DashboardScreen):
                return s
        return None

    def on_mount(self) -> None:
        if _sixteen_colours():
            # Textual's default theme is RGB; squeezed into 16 colours its red turns
            # magenta and its orange red. The ANSI theme uses the terminal's own colours.
            self.theme = "ansi-dark"
        self._sync_topbar()
        if self.live:
            self.live_loop()
        self.set_interval(self.refresh_interval, self._tick)

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # -- background I/O --------------------------------------------------------

    @work(exclusive=True, group="live", exit_on_error=False)
    async def live_loop(self) -> None:
        """Keep one SSE stream open; on any failure say why and retry, forever."""
        attempt = 0
        while True:
            try:
                data = await self.client.state()
                attempt = 0
                self.post_message(ConnectionChanged(True))
                self.post_message(StateReceived(data))
                try:        # every event is in the store: show the recent ones, not an empty feed
                    recent = await self.client.recent_events(BACKFILL_EVENTS)
                except AdminError:
                    pass     # an older gateway without the endpoint: live events only
                else:
                    self.post_message(EventsBackfilled(list(reversed(recent))))
                async for msg in self.client.events():
                    if msg.event == "state" and isinstance(msg.data, dict):
                        self.post_message(StateReceived(msg.data))
                    elif isinstance(msg.data, dict):
                        self.post_message(GatewayEvent(msg.event, msg.data))
                problem, auth = "the gateway closed the event stream", False
                http = False
            except AdminAuthError as exc:
                problem, auth, http = f"HTTP {exc.status}: {exc.message}", True, False
            except AdminUnreachable as exc:
                problem, auth, http = str(exc), False, False
            except AdminError as exc:
                problem, auth, http = f"HTTP {exc.status}: {exc.message}", False, True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a surprise become a traceback
                problem, auth, http = f"{type(exc).__name__}: {exc}", False, False
            attempt += 1
            delay = RECONNECT_DELAYS[min(attempt - 1, len(RECONNECT_DELAYS) - 1)]
            self.post_message(ConnectionChanged(False, problem, auth, delay, attempt, http))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll_state(self) -> None:
        """Fallback when no SSE state arrived lately, and right after a change."""
        try:
            data = await self.client.state()
        except (AdminError, AdminUnreachable):
            return
        self.post_message(StateReceived(data))

    def reconnect_now(self) -> None:
        self._wake.set()

    # -- message handlers -------------------------------------------------------

    @on(StateReceived)
    def _on_state(self, message: StateReceived) -> None:
        data = message.data
        self._raw = {**self._raw, **data} if self._raw else dict(data)
        self._last_state_at = time.monotonic()
        state = GatewayState.from_json(self._raw)
        self.state = state
        if self.connected is False:
            self._pending = state          # painted once the link is back
        elif self.first_paint_at is None or self._apply_now:
            self._apply_now = False
            self._apply(state)
        else:
            self._pending = state

    @on(EventsBackfilled)
    def _on_backfill(self, message: EventsBackfilled) -> None:
        dash = self._dashboard()
        if dash is None:
            return
        dash.replace_events(message.events)
        self._backfilled_to = max((float(e.get("ts") or 0) for e in message.events), default=0.0)

    @on(GatewayEvent)
    def _on_event(self, message: GatewayEvent) -> None:
        if float(message.data.get("ts") or 0) <= self._backfilled_to:
            return          # already shown by the backfill
        if self.paused:
            self._held_events.append((message.kind, message.data))
            return
        dash = self._dashboard()
        if dash is not None:
            dash.add_event(message.kind, message.data)

    @on(ConnectionChanged)
    def _on_connection(self, message: ConnectionChanged) -> None:
        was = self.connected
        self.connected = message.connected
        self.last_connection = message
        if message.connected:
            self.last_problem = ""
            if was is False:
                self._apply_now = True          # replace the offline panel at once
                self.notify("Reconnected to the gateway.", timeout=3)
        else:
            self.last_problem = message.problem
            dash = self._dashboard()
            if dash is not None:
                dash.show_disconnected(message.problem, message.auth,
                                       message.retry_in, message.attempt, message.http)
        self._sync_topbar()
        self.refresh_bindings()

    def _apply(self, state: GatewayState) -> None:
        dash = self._dashboard()
        if dash is None:
            self._pending = state
            return
        try:
            dash.apply_state(state, self.clock())
        except NoMatches:            # not composed yet: the next tick paints it
            self._pending = state
            return
        self._pending = None
        if self.first_paint_at is None:
            self.first_paint_at = time.perf_counter()
        self._sync_topbar()

    def _tick(self) -> None:
        if self.paused or self.connected is False:
            return
        if self._pending is not None:
            self._apply(self._pending)
        elif self.connected and (dash := self._dashboard()) is not None:
            dash.tick(self.clock())
        stale = time.monotonic() - self._last_state_at > max(3.0, 2.5 * self.refresh_interval)
        if self.connected and self.live and stale:
            self.poll_state()

    def _sync_topbar(self) -> None:
        for screen in self.screen_stack:
            for bar in screen.query(TopBar):
                bar.show(state=self.state if self.state.targets or self.state.routes else None,
                         connected=self.connected, paused=self.paused, readonly=self.readonly)

    def on_screen_resume(self) -> None:
        self._sync_topbar()

    def tune_inputs(self, root: Any) -> None:
        """Apply app-wide input settings (cursor blink off for snapshots and slow links)."""
        from textual.widgets import Input
        if not self.cursor_blink:
            for inp in root.query(Input):
                inp.cursor_blink = False

    # -- readonly gate -----------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.readonly and action in MODIFYING_ACTIONS:
            return False
        if isinstance(self.screen, ModalScreen) and action in (
                "history", "drill_form", "drills", "pause", "help", "command_palette"):
            return False          # a question is open: answer it (or esc) first
        if action == "drill_form":
            return bool(self.state.targets) and self.connected is not False
        if action == "history" and type(self.screen).__name__ == "HistoryScreen":
            return False          # already there (and the footer has no room to spare at 80 columns)
        return True

    # -- app actions ---------------------------------------------------------------

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            dash = self._dashboard()
            while self._held_events and dash is not None:
                kind, data = self._held_events.popleft()
                dash.add_event(kind, data)
            if self._pending is not None:
                self._apply(self._pending)
        self.notify("Live updates paused (p to resume)." if self.paused
                    else "Live updates resumed.", timeout=2)
        self._sync_topbar()

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_history(self) -> None:
        self.open_history()

    def open_history(self, *, target: str = "", route: str = "") -> None:
        from tui.screens.history import HistoryScreen
        if isinstance(self.screen, HistoryScreen):
            return
        self.push_screen(HistoryScreen(HistoryFilters(route=route, target=target)))

    def open_target(self, target_id: str) -> None:
        from tui.screens.target import TargetScreen
        if isinstance(self.screen, TargetScreen):
            return
        self.push_screen(TargetScreen(target_id))

    def action_drills(self, drill_id: str | None = None) -> None:
        from tui.screens.drill import DrillScreen
        if isinstance(self.screen, DrillScreen):
            if drill_id:
                self.screen.select(drill_id)
            return
        self.push_screen(DrillScreen(focus_id=drill_id))

    def action_dashboard(self) -> None:
        while len(self.screen_stack) > 1 and not isinstance(self.screen, DashboardScreen):
            self.pop_screen()

    def action_drill_form(self, target: str | None = None) -> None:
        if self.readonly:
            return
        if target is None and isinstance(self.screen, DashboardScreen):
            t = self.screen.current_target()
            target = t.id if t else None
        self._drill_form([t.id for t in self.state.targets], target)

    def _drill_form(self, targets: list[str], target: str | None, values: dict[str, Any] | None = None) -> None:
        from tui.screens.drill import DrillForm

        def chosen(spec: dict[str, Any] | None) -> None:
            if spec:
                self.ask_drill(spec)

        self.push_screen(DrillForm(targets, target, values), chosen)

    # -- confirmations --------------------------------------------------------------

    def _routes_using(self, target_id: str) -> str:
        uses = []
        for r in self.state.routes:
            if target_id in r.order:
                pos = r.order.index(target_id) + 1
                mark = ", serving now" if r.serving == target_id else ""
                uses.append(f"{r.name} (#{pos} of {len(r.order)}{mark})")
        return ", ".join(uses) or "no route"

    def ask_disable_target(self, t: TargetInfo) -> None:
        if self.readonly:
            return
        if t.disabled:
            self.notify(f"{t.id} is already disabled; e enables it.", timeout=3)
            return
        body = Text()
        body.append(f"Disable {t.id}?\n\n", style="bold")
        body.append("Current traffic: ")
        body.append(f"{fmt.rpm(t.rate)} requests/min", style="bold")
        body.append(f", state {t.state}, p50 {fmt.ms(t.p50_ms)}\n")
        body.append(f"Routes: {self._routes_using(t.id)}\n\n")
        body.append("New requests skip it at once; requests in flight finish.", style="dim")
        modal = ConfirmModal("Disable target", body, ask_reason=True, yes_label="Disable")

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_change(f"Disable {t.id}",
                                lambda: self.client.disable_target(t.id, modal.reason))

        self.push_screen(modal, answered)

    def ask_disable_vendor(self, vendor: str) -> None:
        if self.readonly:
            return
        targets = [t for t in self.state.targets if t.vendor == vendor]
        total = sum(t.rate or 0 for t in targets)
        body = Text()
        body.append(f"Disable every target of vendor {vendor}?\n\n", style="bold")
        body.append("Current traffic: ")
        body.append(f"{fmt.rpm(total)} requests/min", style="bold")
        body.append(f" over {len(targets)} target(s):\n")
        for t in targets[:6]:
            body.append(f"  {t.id}  {fmt.rpm(t.rate)} rpm  {t.state}\n")
        if len(targets) > 6:
            body.append(f"  … and {len(targets) - 6} more\n")
        body.append("\nNew requests skip them at once; requests in flight finish.", style="dim")
        modal = ConfirmModal("Disable vendor", body, ask_reason=True, yes_label="Disable all")

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_change(f"Disable vendor {vendor}",
                                lambda: self.client.disable_vendor(vendor, modal.reason))

        self.push_screen(modal, answered)

    def do_enable_target(self, t: TargetInfo) -> None:
        if self.readonly:
            return
        if not t.disabled:
            self.notify(f"{t.id} is not disabled.", timeout=3)
            return
        self.run_change(f"Enable {t.id}", lambda: self.client.enable_target(t.id))

    def do_enable_vendor(self, vendor: str) -> None:
        if self.readonly:
            return
        self.run_change(f"Enable vendor {vendor}", lambda: self.client.enable_vendor(vendor))

    def ask_order(self, route: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        if self.readonly:
            return
        body = Text()
        body.append(f"Change the fallback order of route {route}?\n\n", style="bold")
        for i, tid in enumerate(new, 1):
            was = old.index(tid) + 1 if tid in old else None
            moved = was != i
            body.append(f"{i:>3}  ", style="bold" if moved else "dim")
            body.append(tid, style="bold yellow" if moved else "")
            if moved and was is not None:
                body.append(f"  (was {was})", style="yellow")
            body.append("\n")
        body.append("\nNew requests follow the new order at once.", style="dim")
        modal = ConfirmModal("Reorder route", body, yes_label="Apply", danger=False)

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_change(f"Order of {route}",
                                lambda: self.client.set_order(route, list(new)),
                                after=lambda: self._clear_draft(route))

        self.push_screen(modal, answered)

    def _clear_draft(self, route: str) -> None:
        dash = self._dashboard()
        if dash is not None:
            dash.query_one(RoutePanel).clear_draft(route)

    def ask_drill(self, spec: dict[str, Any]) -> None:
        if self.readonly:
            return
        t = self.state.target(spec["target"])
        body = Text()
        body.append("Start a failover drill?\n\n", style="bold")
        body.append(f"Target    {spec['target']}\n")
        body.append(f"Fault     {spec['fault']}\n")
        body.append(f"Duration  {fmt.duration(spec['duration'])}\n")
        traffic = spec.get("traffic")
        body.append(f"Traffic   {f'{traffic:g} synthetic req/s' if traffic else 'live only'}\n")
        if t is not None:
            body.append(f"Now       {fmt.rpm(t.rate)} rpm, {t.state}\n")
        body.append("\nThe gateway injects the fault for real: live requests to this target "
                    "will see it.", style="dim")
        modal = ConfirmModal("Start drill", body, yes_label="Start drill")

        def answered(yes: bool | None) -> None:
            if yes:
                self.start_drill(spec)
            else:            # "n" is "not like this": back to the form, everything kept
                self._drill_form([t.id for t in self.state.targets], spec["target"], spec)

        self.push_screen(modal, answered)

    @work(group="change", exit_on_error=False)
    async def start_drill(self, spec: dict[str, Any]) -> None:
        try:
            answer = await self.client.start_drill(spec["target"], spec["fault"],
                                                   spec["duration"], spec.get("traffic"))
        except (AdminError, AdminUnreachable) as exc:
            self.notify(f"Drill not started: {_why(exc)}", severity="error", timeout=8)
            return
        drill_id = str(answer.get("id", ""))
        self.notify(f"Drill {drill_id} started on {spec['target']}.", timeout=4)
        self.action_drills(drill_id)

    @work(group="change", exit_on_error=False)
    async def run_change(self, label: str, call: Callable[[], Awaitable[Any]],
                         after: Callable[[], None] | None = None) -> None:
        """Send one change; report the gateway's answer, then repaint from fresh state."""
        try:
            answer = await call()
        except (AdminError, AdminUnreachable) as exc:
            self.notify(f"{label}: {_why(exc)}", title="Gateway refused" if isinstance(
                exc, AdminError) else "No answer", severity="error", timeout=8)
            return
        self.notify(f"{label}: {_answer_summary(answer)}", title="Gateway answered", timeout=5)
        if after is not None:
            after()
        try:
            data = await self.client.state()
        except (AdminError, AdminUnreachable):
            return
        self._apply_now = True
        self.post_message(StateReceived(data))

    # -- command palette ---------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Dashboard", "Live tiles, routes and events", self.action_dashboard)
        yield SystemCommand("History", "Browse the request log (h)", self.action_history)
        yield SystemCommand("Drills", "Past and running drills with reports (r)",
                            self.action_drills)
        yield SystemCommand("Help", "Every key of every view (?); type 'disable' or a target "
                            "name here to find its commands", self.action_help)
        yield SystemCommand("Pause / resume live updates", "Freeze the dashboard (p)",
                            self.action_pause)
        yield SystemCommand("Reconnect now", "Retry the gateway immediately",
                            self.reconnect_now)
        for t in self.state.targets:
            yield SystemCommand(f"History of {t.id}", "Requests that tried this target",
                                lambda t=t: self.open_history(target=t.id), discover=False)
            yield SystemCommand(f"Target {t.id}", "Latency and TTFT over time, errors, breaker, routes",
                                lambda t=t: self.open_target(t.id), discover=False)
        if not self.readonly:
            yield SystemCommand("Start a drill…", "Inject a fault on a target (D)",
                                self.action_drill_form)
            for r in self.state.routes:
                yield SystemCommand(f"Reorder route {r.name}", "Focus the route panel (o)",
                                    lambda r=r: self._focus_route(r.name))
            for t in self.state.targets:
                if t.disabled:
                    yield SystemCommand(f"Enable target {t.id}", "Put it back in its routes",
                                        lambda t=t: self.do_enable_target(t), discover=False)
                else:
                    yield SystemCommand(f"Disable target {t.id}", "Asks y/n first",
                                        lambda t=t: self.ask_disable_target(t), discover=False)
            for v in self.state.vendors():
                yield SystemCommand(f"Disable vendor {v}", "Every target it serves; asks y/n",
                                    lambda v=v: self.ask_disable_vendor(v), discover=False)
                yield SystemCommand(f"Enable vendor {v}", "Every target it serves",
                                    lambda v=v: self.do_enable_vendor(v), discover=False)
        yield from super().get_system_commands(screen)

    def _focus_route(self, name: str) -> None:
        self.action_dashboard()
        dash = self._dashboard()
        if dash is None:
            return
        panel = dash.query_one(RoutePanel)
        panel.select_route(name)
        panel.focus()


def _sixteen_colours() -> bool:
    """A terminal that announces neither truecolor nor 256 colours (TERM=xterm, screen, linux)."""
    if os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return False
    term = os.environ.get("TERM", "")
    return bool(term) and term != "dumb" and not any(
        k in term for k in ("256", "truecolor", "direct", "kitty", "alacritty", "ghostty"))


def _operator_name() -> str | None:
    """Who is at the keyboard, for the gateway's operator events (never a secret): PATCHBAY_OPERATOR or
    the login name, as the operator CLI records it, marked as coming from the panel."""
    name = default_operator()
    return f"{name} via tui" if name else "tui"


def _why(exc: Exception) -> str:
    if isinstance(exc, AdminError):
        return f"{exc.message} (HTTP {exc.status})"
    return f"cannot reach the gateway ({exc})"


def _answer_summary(answer: Any) -> str:
    """Short words for the gateway's JSON answer (the operator sees what it said)."""
    if not isinstance(answer, dict) or not answer:
        return "ok"
    if "order" in answer and isinstance(answer["order"], list):
        return "order is now " + ", ".join(map(str, answer["order"]))
    bits = []
    for key in ("status", "state", "target", "vendor", "disabled", "targets", "reason"):
        if key in answer and answer[key] not in (None, "", []):
            val = answer[key]
            if isinstance(val, dict):          # a target document: its id and state, not all of it
                val = " ".join(str(val[k]) for k in ("id", "state") if val.get(k))
            if isinstance(val, list):
                val = ", ".join(str(x.get("id", x)) if isinstance(x, dict) else str(x)
                                for x in val)
            bits.append(f"{key} {val}")
    return "; ".join(bits) or "ok"


def run_tui(admin_url: str | None = None, token: str | None = None, readonly: bool = False,
            refresh: float = 1.0) -> int:
    """Entry for `patchbay tui`; returns a process exit code."""
    if token is None:
        token = os.environ.get("PATCHBAY_ADMIN_TOKEN")
    app = PatchbayApp(admin_url or DEFAULT_ADMIN_URL, token, readonly=readonly, refresh=refresh)
    app.run()
    return app.return_code or 0
