"""`?`: every key of every view, generated from the bindings themselves.

Built from the same `BINDINGS` lists the app runs on, so the help can never
drift from the keys, and `--readonly` drops exactly what it disables.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui import fmt

KEY_NAMES = {
    "question_mark": "?", "colon": ":", "slash": "/", "escape": "esc", "enter": "enter",
    "left_square_bracket": "[", "right_square_bracket": "]", "ctrl+up": "ctrl+↑",
    "ctrl+down": "ctrl+↓", "up": "↑", "down": "↓", "left": "←", "right": "→",
}


def key_label(keys: str) -> str:
    return " ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


def sections(readonly: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(keys, description)]) for every view, filtered for readonly."""
    from tui.app import MODIFYING_ACTIONS, PatchbayApp
    from tui.screens.dashboard import DashboardScreen
    from tui.screens.detail import DetailScreen
    from tui.screens.drill import DrillForm, DrillScreen, DrillTable
    from tui.screens.history import HistoryScreen
    from tui.screens.target import TargetScreen
    from tui.widgets.confirm import ConfirmModal
    from tui.widgets.reqtable import RequestTable
    from tui.widgets.routes import RoutePanel

    groups: list[tuple[str, list]] = [
        ("Everywhere", [PatchbayApp.BINDINGS]),
        ("Dashboard: tiles (tab moves between tiles, routes, events)",
         [DashboardScreen.BINDINGS]),
        ("Dashboard: route panel (o or tab to reach it)", [RoutePanel.BINDINGS]),
        ("History", [HistoryScreen.BINDINGS, RequestTable.BINDINGS]),
        ("Target view (enter on a tile)", [TargetScreen.BINDINGS]),
        ("Request detail", [DetailScreen.BINDINGS]),
        ("Drills", [DrillScreen.BINDINGS, DrillTable.BINDINGS]),
        ("Drill form", [DrillForm.BINDINGS]),
        ("Confirmations", [ConfirmModal.BINDINGS]),
    ]
    # In readonly nothing can be changed, so the keys that only serve changes go too.
    hidden = MODIFYING_ACTIONS | {"discard", "submit", "reason", "answer"} if readonly else set()
    out = []
    for title, lists in groups:
        if readonly and title in ("Drill form", "Confirmations"):
            continue
        rows = []
        for bindings in lists:
            for b in bindings:
                assert isinstance(b, Binding)
                action = b.action.split("(")[0].removeprefix("app.")
                if action in hidden:
                    continue
                rows.append((key_label(b.key), b.tooltip or b.description))
        if rows:
            out.append((title, rows))
    return out


class HelpScreen(ModalScreen[None]):
    """Full key reference; esc, q or ? closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close"),
        Binding("j,down", "scroll(1)", "Down", show=False, id="help.down"),
        Binding("k,up", "scroll(-1)", "Up", show=False, id="help.up"),
    ]

    def compose(self) -> ComposeResult:
        readonly = getattr(self.app, "readonly", False)
        parts: list = []
        if readonly:
            parts.append(fmt.mono(Text("READONLY: changing keys are switched off.\n",
                                       style="bold cyan")))
        all_sections = sections(readonly)
        key_width = max(len(k) for _, rows in all_sections for k, _ in rows)
        for title, rows in all_sections:
            grid = Table.grid(padding=(0, 2), pad_edge=False)
            grid.add_column(justify="right", width=key_width, no_wrap=True)
            grid.add_column(ratio=1)
            for keys, desc in rows:
                grid.add_row(Text(keys, style="bold"), Text(desc))
            parts.append(fmt.mono(Text(title, style="bold underline")))
            parts.append(grid)
            parts.append(Text(""))
        parts.append(Text("Mouse works too, but nothing needs it. Colours always come with a "
                          "word.", style="dim"))
        with VerticalScroll(id="help-box") as box:
            box.border_title = "Keys  (esc closes)"
            yield Static(Group(*parts), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, delta: int) -> None:
        self.query_one("#help-box", VerticalScroll).scroll_relative(y=delta * 3, animate=False)
