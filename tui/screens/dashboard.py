"""The dashboard: target tiles, route panel and event feed, live.

The screen owns no I/O: the app feeds it `GatewayState` snapshots and events,
and it turns key presses into requests the app carries out, so what the
widgets show always comes from the gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, ScrollableContainer, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui import fmt
from tui.model import GatewayState, TargetInfo
from tui.widgets.events import EventFeed
from tui.widgets.routes import RoutePanel
from tui.widgets.tile import TargetTile
from tui.widgets.topbar import TopBar

if TYPE_CHECKING:
    from tui.app import PatchbayApp

TILE_MIN_WIDTH = 36
TILE_MIN_HEIGHT = 6      # border + state, latency, one sparkline row, breaker/error
TILE_MAX_HEIGHT = 11     # up to six sparkline rows when the terminal is tall
TILE_SHORT_HEIGHT = 5    # under 30 rows: state, latency, breaker/error (the target view has the charts)
WIDE_AT = 130


class TileGrid(ScrollableContainer, can_focus=False):
    """Grid of tiles whose column count follows the terminal width."""

    def on_resize(self, event: Resize) -> None:
        self.reflow()

    def say_hidden_soon(self) -> None:
        """After a scroll (which may animate), name what is out of sight again."""
        self.call_after_refresh(self._say_hidden)
        self.set_timer(0.4, self._say_hidden)

    def reflow(self) -> None:
        """Columns follow the width; spare height makes taller tiles (taller sparklines)."""
        width = self.scrollable_content_region.width or self.size.width
        n = len(self.children) or 1
        cols = max(1, min(n, width // TILE_MIN_WIDTH))
        if self.styles.grid_size_columns != cols:
            self.styles.grid_size_columns = cols
        rows = -(-n // cols)
        min_h = TILE_SHORT_HEIGHT if self.screen.has_class("-short") else TILE_MIN_HEIGHT
        height = self.size.height or min_h * rows
        tile_h = max(min_h, min(TILE_MAX_HEIGHT, height // rows))
        if self._tile_height != tile_h:
            self._tile_height = tile_h
            self.styles.grid_rows = str(tile_h)
            for tile in self.children:
                tile.styles.height = tile_h
        self.screen.call_after_refresh(self._say_hidden)

    def _say_hidden(self) -> None:
        """Name the tiles scrolled out of sight (a short terminal cannot show them all)."""
        try:
            more = self.screen.query_one("#tiles-more", Static)
        except Exception:
            return
        top, bottom = self.scroll_y, self.scroll_y + self.scrollable_content_region.height
        tiles = list(self.query(TargetTile))
        above = [t for t in tiles if t.virtual_region.y + 1 < top]
        below = [t for t in tiles if t.virtual_region.bottom - 1 > bottom]
        more.display = bool(above or below)
        if above or below:
            txt = Text(no_wrap=True, overflow="ellipsis")
            for arrow, group in (("▲", above), ("▼", below)):
                if not group:
                    continue
                if txt.plain:
                    txt.append("  ")
                txt.append(f"{arrow} {len(group)} {'above' if arrow == '▲' else 'below'} (j/k): ", style="bold")
                for i, tile in enumerate(group):
                    sym, style = fmt.state_style(tile.target.state)
                    txt.append(" · " if i else "", style="dim")
                    txt.append(f"{sym} ", style=style)
                    txt.append(tile.target_id)
            more.update(fmt.mono(txt))

    _tile_height = 0


class DashboardScreen(Screen):
    """Live overview; the app's default screen."""

    AUTO_FOCUS = ""          # focus goes to the first tile once tiles exist, not the route panel

    BINDINGS = [
        Binding("j,down", "tile(1)", "Next tile", show=False, id="dash.next"),
        Binding("k,up", "tile(-1)", "Prev tile", show=False, id="dash.prev"),
        Binding("right", "tile(1)", "Next tile", show=False, id="dash.right"),
        Binding("left", "tile(-1)", "Prev tile", show=False, id="dash.left"),
        Binding("enter", "target_view", "Target", id="dash.target_view",
                tooltip="The selected target in depth: latency and TTFT over time, errors, breaker, routes"),
        Binding("o", "focus_routes", "Order", show=False, id="dash.order",
                tooltip="Go to the route panel to reorder fallback targets"),
        Binding("d", "disable_target", "Disable", id="dash.disable",
                tooltip="Disable the selected target (y/n, shows its traffic, optional reason)"),
        Binding("v", "disable_vendor", "Vendor", show=False, id="dash.disable_vendor",
                tooltip="Disable every target of the selected tile's vendor (y/n)"),
        Binding("e", "enable_target", "Enable", show=False, id="dash.enable",
                tooltip="Enable the selected target again"),
        Binding("E", "enable_vendor", "Enable vendor", show=False, id="dash.enable_vendor",
                tooltip="Enable every target of the selected tile's vendor"),
        Binding("R", "reconnect", "Retry now", id="dash.reconnect",
                tooltip="Retry the gateway now (when offline)"),
    ]

    def __init__(self) -> None:
        super().__init__(id="dashboard")
        self._state = GatewayState()
        self._selected: str | None = None
        self._tile_ids: tuple[str, ...] = ()
        self._routes_shape: tuple[int, ...] = ()

    @property
    def papp(self) -> PatchbayApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        # One grid, two arrangements (app.tcss): narrow puts the tiles over routes | events;
        # wide (>= WIDE_AT columns) puts tiles over events on the left and routes down the right.
        yield TopBar(self.papp.admin_url, id="topbar")
        with Container(id="dash-main"):
            with Vertical(id="tiles-box"):
                yield TileGrid(id="tiles")
                yield Static("", id="tiles-more")
            routes = RoutePanel(id="routes")
            routes.border_title = "Routes  ▶ = serving"
            yield routes
            feed = EventFeed(id="events")
            feed.border_title = "Events"
            yield feed
        with Vertical(id="offline"):
            yield Static(id="offline-text")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(RoutePanel).set_readonly(self.papp.readonly)
        if self._state.targets or self._state.routes:
            return                     # the first state beat our mount: keep showing it
        self.query_one("#dash-main").display = False
        last = self.papp.last_connection
        if last is not None and not last.connected:   # the worker was quicker than our mount
            self.show_disconnected(last.problem, last.auth, last.retry_in, last.attempt, last.http)
        else:
            self._show_offline(Text("Connecting to " + self.papp.admin_url + " …", style="bold"))

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE_AT, "-wide")
        self.set_class(event.size.height < 30, "-short")
        self._size_tiles_row()

    def _size_tiles_row(self) -> None:
        """Wide: the tiles take the height they need (up to 60%), the event feed the rest."""
        if not self.has_class("-wide"):
            # the routes and events get the rows the routes need (7-12), the tiles the rest
            lines = sum(1 + len(r.order) for r in self._state.routes) or 4
            side = max(7, min(12, lines + 2))
            self.query_one("#dash-main").styles.grid_rows = f"1fr {side}"
            return
        grid = self.query_one(TileGrid)
        width = max(TILE_MIN_WIDTH, self.size.width - 60)
        n = max(1, len(self._tile_ids))
        cols = max(1, min(n, width // TILE_MIN_WIDTH))
        rows = -(-n // cols)
        avail = max(TILE_MIN_HEIGHT, int((self.size.height - 2) * 0.6))
        tile_h = max(TILE_MIN_HEIGHT, min(TILE_MAX_HEIGHT, avail // rows))
        want = min(avail, rows * tile_h)
        self.query_one("#dash-main").styles.grid_rows = f"{want} 1fr"
        grid._tile_height = 0

    # -- feeding -------------------------------------------------------------

    def apply_state(self, state: GatewayState, now: float) -> None:
        self._state = state
        self.query_one("#dash-main").display = True
        self.query_one("#offline").display = False
        ids = tuple(t.id for t in state.targets)
        grid = self.query_one(TileGrid)
        if ids != self._tile_ids:
            first = not self._tile_ids
            self._tile_ids = ids
            focused = self.focused
            grid.remove_children()
            grid.mount_all([TargetTile(t, now) for t in state.targets])
            grid._tile_height = 0
            self._size_tiles_row()
            grid.reflow()
            if self._selected not in ids:
                self._selected = ids[0] if ids else None
            if focused is None or isinstance(focused, TargetTile) or first:
                self.call_after_refresh(self._focus_selected)
        else:
            for tile, t in zip(grid.query(TargetTile), state.targets):
                tile.update_target(t, now)
        routes_shape = tuple(len(r.order) for r in state.routes)
        if routes_shape != self._routes_shape:
            self._routes_shape = routes_shape
            self._size_tiles_row()
        self.query_one(RoutePanel).update_state(state)
        self.query_one(TopBar).show(state=state, connected=True)

    def tick(self, now: float) -> None:
        """Refresh the time-relative text (\"12s ago\") without new data."""
        for tile in self.query(TargetTile):
            tile.update_target(tile.target, now)

    def add_event(self, kind: str, data: dict[str, Any]) -> None:
        self.query_one(EventFeed).add(kind, data)

    def replace_events(self, events: list[dict[str, Any]]) -> None:
        """Start the feed over from stored events (oldest first), as on attach or reconnect."""
        feed = self.query_one(EventFeed)
        feed.reset()
        for ev in events:
            feed.add(str(ev.get("kind") or "event"), ev)

    def show_disconnected(self, problem: str, auth: bool, retry_in: float, attempt: int,
                          http: bool = False) -> None:
        t = Text(justify="center")
        if http:
            t.append("Something answered, but not as a Patchbay admin API\n\n", style="bold yellow")
            t.append(f"{self.papp.admin_url} answered: {problem}\n\n")
            t.append("Point --admin-url at the gateway's admin listener (admin_listen),\n"
                     "not at the client API (listen).\n", style="dim")
        elif auth:
            t.append("The gateway refused the admin token\n\n", style="bold yellow")
            t.append(f"{self.papp.admin_url} answered: {problem}\n\n")
            t.append("Set PATCHBAY_ADMIN_TOKEN to the gateway's admin token and restart,\n"
                     "or fix the token on the gateway; retrying meanwhile.\n", style="dim")
        else:
            t.append("Cannot reach the gateway\n\n", style="bold yellow")
            t.append(f"{self.papp.admin_url}\n", style="bold")
            t.append(f"{problem}\n\n", style="dim")
            t.append("Check that `patchbay serve` runs there and that --admin-url\n"
                     "points at its admin listener (admin_listen, not listen).\n", style="dim")
        t.append(f"\nRetrying in {retry_in:.0f}s (attempt {attempt}).", style="")
        t.append("  R: retry now   q: quit", style="bold")
        self._show_offline(t)
        self.query_one(TopBar).show(connected=False)

    def _show_offline(self, text: Text) -> None:
        self.query_one("#offline-text", Static).update(fmt.mono(text))
        self.query_one("#offline").display = True
        self.query_one("#dash-main").display = False

    # -- selection -----------------------------------------------------------

    def _focus_selected(self) -> None:
        for tile in self.query(TargetTile):
            if tile.target_id == self._selected:
                tile.focus(scroll_visible=True)
                self.query_one(TileGrid).say_hidden_soon()
                return

    def on_descendant_focus(self, event: Any) -> None:
        w = event.widget
        if isinstance(w, TargetTile):
            self._selected = w.target_id

    @on(RoutePanel.CursorMoved)
    def _route_cursor(self, event: RoutePanel.CursorMoved) -> None:
        if event.target:
            self._selected = event.target

    @on(RoutePanel.ApplyRequested)
    def _apply_order(self, event: RoutePanel.ApplyRequested) -> None:
        self.papp.ask_order(event.route, event.old, event.new)

    def current_target(self) -> TargetInfo | None:
        if isinstance(self.focused, RoutePanel):
            row = self.focused.current
            if row is not None:
                return self._state.target(row.target)
        if self._selected:
            return self._state.target(self._selected)
        return self._state.targets[0] if self._state.targets else None

    # -- actions -------------------------------------------------------------

    def action_tile(self, delta: int) -> None:
        tiles = list(self.query(TargetTile))
        if not tiles:
            return
        ids = [t.target_id for t in tiles]
        i = ids.index(self._selected) if self._selected in ids else -delta
        self._selected = ids[(i + delta) % len(ids)]
        self._focus_selected()

    def action_focus_routes(self) -> None:
        panel = self.query_one(RoutePanel)
        t = self.current_target()
        if t is not None:
            for r in self._state.routes:
                if t.id in r.order:
                    panel.select_route(r.name)
                    for i, row in enumerate(panel._rows):
                        if row.route == r.name and row.target == t.id:
                            panel.cursor = i
                    break
        panel.focus()

    def action_target_view(self) -> None:
        t = self.current_target()
        if t is not None:
            self.papp.open_target(t.id)

    def action_disable_target(self) -> None:
        t = self.current_target()
        if t is not None:
            self.papp.ask_disable_target(t)

    def action_disable_vendor(self) -> None:
        t = self.current_target()
        if t is not None:
            self.papp.ask_disable_vendor(t.vendor)

    def action_enable_target(self) -> None:
        t = self.current_target()
        if t is not None:
            self.papp.do_enable_target(t)

    def action_enable_vendor(self) -> None:
        t = self.current_target()
        if t is not None:
            self.papp.do_enable_vendor(t.vendor)

    def action_reconnect(self) -> None:
        self.papp.reconnect_now()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.papp.readonly and action in ("disable_target", "disable_vendor",
                                             "enable_target", "enable_vendor", "focus_routes"):
            return False
        if action == "reconnect":
            return not self.papp.connected
        if action in ("disable_target", "disable_vendor", "enable_target", "enable_vendor",
                      "focus_routes", "target_view", "tile"):
            return bool(self._state.targets) and self.papp.connected is not False
        return True
