"""A lean, line-rendered table for one page of request history.

Textual's DataTable renders every cell through Rich padding and measurement;
with 50 rows x 9 columns that alone took 50-150 ms per page on this machine,
more than the whole page budget. Here each row is formatted once into a Strip
when the page arrives and `render_line` only slices cached strips, so a page
change costs a few milliseconds however large the log behind it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass(frozen=True, slots=True)
class Column:
    label: str
    width: int
    right: bool = False


class RequestTable(ScrollView, can_focus=True):
    """Rows of pre-formatted cells with a row cursor; enter selects."""

    BINDINGS = [
        Binding("j,down", "cursor(1)", "Down", show=False, id="history.down"),
        Binding("k,up", "cursor(-1)", "Up", show=False, id="history.up"),
        Binding("pagedown", "cursor(10)", "Page down", show=False, id="history.pagedown"),
        Binding("pageup", "cursor(-10)", "Page up", show=False, id="history.pageup"),
        Binding("home", "home", "First row", show=False, id="history.home"),
        Binding("end", "end", "Last row", show=False, id="history.end"),
        Binding("enter", "select", "Open", show=False, id="history.open",
                tooltip="Open the request: attempt chain as a timeline"),
    ]

    COMPONENT_CLASSES = {"reqtable--header", "reqtable--cursor", "reqtable--odd"}

    cursor = reactive(0)

    class RowSelected(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns: list[Column] = []
        self.keys: list[str] = []
        self._cells: list[Sequence[Text | str]] = []
        self._strips: list[Strip] = []
        self._header = Strip([])

    # -- data ------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.keys)

    def set_columns(self, columns: list[Column]) -> None:
        self.columns = columns
        self._rebuild()

    def set_rows(self, keys: list[str], cells: list[Sequence[Text | str]]) -> None:
        """Replace the page; the cursor goes back to the top row."""
        self.keys, self._cells = list(keys), list(cells)
        self.cursor = 0
        self.scroll_to(y=0, animate=False)
        self._rebuild()

    def _rebuild(self) -> None:
        self._header = self._format([c.label for c in self.columns], header=True)
        self._strips = [self._format(row) for row in self._cells]
        width = sum(c.width + 2 for c in self.columns)
        self.virtual_size = Size(width, len(self._strips) + 1)
        self.refresh()

    def _format(self, cells: Sequence[Text | str], header: bool = False) -> Strip:
        line = Text(no_wrap=True)
        for col, cell in zip(self.columns, cells):
            text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            text.truncate(col.width, overflow="ellipsis")
            pad = col.width - text.cell_len
            if col.right and not header:
                line.append(" " * pad)
                line.append_text(text)
            else:
                line.append_text(text)
                line.append(" " * pad)
            line.append("  ")
        return Strip(list(line.render(self.app.console)) if self.is_mounted else
                     [Segment(line.plain)])

    def on_mount(self) -> None:
        self._rebuild()

    # -- rendering ---------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y == 0:       # the header stays put while rows scroll under it
            style = base + self.get_component_rich_style("reqtable--header")
            return self._header.crop_extend(scroll_x, scroll_x + width, None).apply_style(style)
        index = scroll_y + y - 1
        if index >= len(self._strips):
            return Strip.blank(width, base)
        strip = self._strips[index].crop_extend(scroll_x, scroll_x + width, None)
        if index == self.cursor:
            row = base + self.get_component_rich_style("reqtable--cursor")
            if not self.has_focus:
                row += Style(dim=True)
        elif index % 2:
            row = base + self.get_component_rich_style("reqtable--odd")
        else:
            row = base
        return Strip([Segment(seg.text, row + seg.style if seg.style else row, seg.control)
                      for seg in strip], strip.cell_length)

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        visible = max(1, self.size.height - 1)          # rows under the header
        top = self.scroll_offset.y
        if new < top:
            self.scroll_to(y=new, animate=False, immediate=True)
        elif new >= top + visible:
            self.scroll_to(y=new - visible + 1, animate=False, immediate=True)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # -- actions -----------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        if self.keys:
            self.cursor = max(0, min(len(self.keys) - 1, self.cursor + delta))

    def action_home(self) -> None:
        self.cursor = 0

    def action_end(self) -> None:
        self.cursor = max(0, len(self.keys) - 1)

    def action_select(self) -> None:
        if 0 <= self.cursor < len(self.keys):
            self.post_message(self.RowSelected(self.keys[self.cursor]))

    def on_click(self, event: Click) -> None:
        index = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= index < len(self.keys):
            if index == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = index
