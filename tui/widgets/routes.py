"""Route panel: each route's fallback order, the serving target, and reordering.

Moves are a local draft until the operator applies them (enter, then y/n); the
panel then drops the draft and shows the order the gateway answered with, so
what is on screen is the gateway's truth, never a local guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from tui import fmt
from tui.model import GatewayState, RouteInfo

_STATE_W = max(len(s) for s in fmt.STATE_STYLE)


@dataclass(frozen=True, slots=True)
class _Row:
    route: str
    index: int          # position in the (draft) order
    target: str


class RoutePanel(Widget, can_focus=True):
    """Focusable list of routes and their ordered targets with a row cursor."""

    BINDINGS = [
        Binding("j,down", "cursor(1)", "Next", show=False, id="routes.down"),
        Binding("k,up", "cursor(-1)", "Prev", show=False, id="routes.up"),
        Binding("K,ctrl+up", "move(-1)", "Move up", id="routes.move_up",
                tooltip="Move the target up in its route (draft)",
                group=Binding.Group("Move", compact=True)),
        Binding("J,ctrl+down", "move(1)", "Move down", id="routes.move_down",
                tooltip="Move the target down in its route (draft)",
                group=Binding.Group("Move", compact=True)),
        Binding("enter", "apply", "Apply", id="routes.apply",
                tooltip="Apply the draft order (y/n); the panel then shows the gateway's order"),
        Binding("escape", "discard", "Discard", id="routes.discard",
                tooltip="Discard the draft order"),
    ]

    cursor = reactive(0, always_update=True)

    class ApplyRequested(Message):
        """The operator wants `new` as `route`'s order (was `old`)."""

        def __init__(self, route: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
            super().__init__()
            self.route, self.old, self.new = route, old, new

    class CursorMoved(Message):
        def __init__(self, target: str | None) -> None:
            super().__init__()
            self.target = target

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state = GatewayState()
        self._drafts: dict[str, list[str]] = {}
        self._rows: list[_Row] = []
        self._readonly = False
        self._key: tuple | None = None

    # -- data ----------------------------------------------------------------

    def set_readonly(self, readonly: bool) -> None:
        self._readonly = readonly

    def update_state(self, state: GatewayState) -> None:
        key = (tuple((r.name, r.order, r.serving) for r in state.routes),
               tuple((t.id, t.state) for t in state.targets))
        if key == self._key:          # nothing the panel shows has changed: no repaint
            self._state = state
            return
        self._key = key
        old_rows = self._rows
        self._state = state
        for name, draft in list(self._drafts.items()):
            r = state.route(name)
            if r is None or set(r.order) != set(draft) or list(r.order) == draft:
                del self._drafts[name]
        self._rows = self._build_rows()
        if [(r.route, r.target) for r in old_rows] != [(r.route, r.target) for r in self._rows]:
            self.cursor = min(self.cursor, max(0, len(self._rows) - 1))
        self.refresh(layout=len(old_rows) != len(self._rows))

    def clear_draft(self, route: str) -> None:
        self._drafts.pop(route, None)
        self._rows = self._build_rows()
        self.refresh()
        self.refresh_bindings()

    def has_draft(self) -> bool:
        return bool(self._drafts)

    def order_of(self, route: RouteInfo) -> list[str]:
        return self._drafts.get(route.name, list(route.order))

    def _build_rows(self) -> list[_Row]:
        rows = []
        for r in self._state.routes:
            for i, t in enumerate(self.order_of(r)):
                rows.append(_Row(r.name, i, t))
        return rows

    @property
    def current(self) -> _Row | None:
        if 0 <= self.cursor < len(self._rows):
            return self._rows[self.cursor]
        return None

    def select_route(self, name: str) -> None:
        for i, row in enumerate(self._rows):
            if row.route == name:
                self.cursor = i
                return

    # -- actions -------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        if self._rows:
            self.cursor = (self.cursor + delta) % len(self._rows)
            self.post_message(self.CursorMoved(self._rows[self.cursor].target))

    def action_move(self, delta: int) -> None:
        row = self.current
        if row is None or self._readonly:
            return
        route = self._state.route(row.route)
        if route is None:
            return
        order = list(self.order_of(route))
        j = row.index + delta
        if not 0 <= j < len(order):
            self.app.bell()
            return
        order[row.index], order[j] = order[j], order[row.index]
        if tuple(order) == route.order:
            self._drafts.pop(route.name, None)
        else:
            self._drafts[route.name] = order
        self._rows = self._build_rows()
        self.cursor += delta
        self.refresh()
        self.refresh_bindings()

    def action_apply(self) -> None:
        row = self.current
        if row is None:
            return
        route = self._state.route(row.route)
        if route is None or route.name not in self._drafts:
            self.app.notify("Nothing to apply: move a target with K/J (ctrl+up/down) first.",
                            timeout=3)
            return
        self.post_message(self.ApplyRequested(route.name, route.order,
                                              tuple(self._drafts[route.name])))

    def action_discard(self) -> None:
        row = self.current
        if row is not None and row.route in self._drafts:
            self.clear_draft(row.route)
        else:
            self.screen.focus_next()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("move", "apply") and self._readonly:
            return False
        if action == "apply" and not self._drafts:
            return None
        if action == "discard" and not self._drafts:
            return False
        return True

    def watch_cursor(self, _: int) -> None:
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # -- render ---------------------------------------------------------------

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        if not self._state.routes:
            out.append("no routes yet", style="dim")
            return out
        width = max(10, self.content_region.width or 40)
        n = 0
        for ri, route in enumerate(self._state.routes):
            if ri:
                out.append("\n")
            out.append(route.name, style="bold")
            if route.name in self._drafts:
                note = "  ✎ unsaved: enter apply, esc undo"
                out.append(note if len(route.name) + len(note) <= width else "  ✎ enter/esc",
                           style="bold yellow")
            for i, tid in enumerate(self.order_of(route)):
                out.append("\n")
                t = self._state.target(tid)
                serving = tid == route.serving
                line = Text(no_wrap=True, overflow="ellipsis")
                line.append(f"{i + 1:>2} ")
                line.append("▶ " if serving else "  ", style="bold green")
                state = t.state if t else "unknown"
                sym, style = fmt.state_style(state)
                # The state column has one width whatever the state, so a target's name is cut
                # the same way whether it is healthy or misconfigured; narrow panels show the
                # symbol alone (the tiles carry the word).
                wide = width >= 56
                state_w = 2 + _STATE_W + len(" · serving") if wide else 2
                room = max(4, width - len(line.plain) - state_w - 1)
                line.append(fmt.target_clip(tid, room).ljust(room), style="bold" if serving else "")
                line.append(" ")
                line.append(f"{sym} {state}" if wide else sym, style=style)
                if serving and wide:
                    line.append(" · serving", style="green")
                if n == self.cursor:
                    line.stylize("reverse" if self.has_focus else "underline")
                out.append_text(line)
                n += 1
        return fmt.mono(out)

    def get_content_height(self, container, viewport, width: int) -> int:
        return sum(1 + len(self.order_of(r)) for r in self._state.routes) or 1
