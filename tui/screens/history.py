"""Request history: the gateway's request log, one keyset page at a time.

Only one page (50 rows) is ever held: next/previous walk the gateway's keyset
cursors (a stack of them remembers the way back), so browsing a million-row
log costs the same as browsing a hundred.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Footer, Input, Static

from tui import fmt
from tui.client import AdminError, AdminUnreachable, HistoryFilters
from tui.widgets.reqtable import Column, RequestTable
from tui.widgets.topbar import TopBar

if TYPE_CHECKING:
    from tui.app import PatchbayApp

PAGE_SIZE = 50
EXPORT_MAX = 10_000
OUTCOMES = ["ok", "fallback", "error", "client_error", "cut", "client_gone"]
_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: float) -> str:
    """Turn what an operator types into epoch seconds for `since`/`until`.

    Accepts `15m`, `2h`, `3d` (that long ago), `18:30` (today), `2026-11-25`,
    `2026-11-25 18:30[:05]`, or a raw epoch number. Raises ValueError otherwise.
    """
    text = text.strip()
    if not text:
        return ""
    m = _REL.match(text)
    if m:
        return f"{now - float(m.group(1)) * _UNIT[m.group(2)]:.3f}"
    try:
        v = float(text)
        if v > 1e9:
            return f"{v:.3f}"
    except ValueError:
        pass
    lt = time.localtime(now)
    for pattern in ("%H:%M", "%H:%M:%S"):
        try:
            t = time.strptime(text, pattern)
            today = (lt.tm_year, lt.tm_mon, lt.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0, 0, -1)
            return f"{time.mktime(today):.3f}"
        except ValueError:
            pass
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S",
                    "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return f"{time.mktime(time.strptime(text, pattern)):.3f}"
        except ValueError:
            pass
    raise ValueError(f"not a time: {text!r} (try 15m, 2h, 18:30 or 2026-11-25 18:30)")


def _cost(v: Any, narrow: bool) -> str:
    if v is None:
        return fmt.DASH
    v = float(v)
    if narrow and 0 < v < 1:
        if v < 0.00005:
            return "~$0"
        return "$" + (f"{v:.4f}" if v < 0.01 else f"{v:.3f}")[1:]
    return fmt.money(v)


class PageLoaded(Message):
    def __init__(self, rows: list[dict[str, Any]], next_cursor: str | None,
                 stack: list[str | None], elapsed_ms: float) -> None:
        super().__init__()
        self.rows, self.next_cursor, self.stack, self.elapsed_ms = (
            rows, next_cursor, stack, elapsed_ms)


class PageFailed(Message):
    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem


class HistoryScreen(Screen):
    """Filterable, keyset-paged table of requests; enter opens a request."""

    AUTO_FOCUS = "#hist-table"

    BINDINGS = [
        Binding("n,right_square_bracket", "page(1)", "Next", id="history.next",
                tooltip="Next page (older requests)"),
        Binding("b,left_square_bracket", "page(-1)", "Prev page", show=False, id="history.prev",
                tooltip="Previous page (newer requests)"),
        Binding("slash", "search", "Search", id="history.search",
                tooltip="Free-text search over route, target, error (enter applies)"),
        Binding("f", "filters", "Filters", id="history.filters",
                tooltip="Edit filters: route, target, outcome, since, until (enter applies)"),
        Binding("F", "failover", "Failovers", id="history.failover",
                tooltip="Only requests that failed over (toggle)"),
        Binding("x", "clear", "Clear", show=False, id="history.clear",
                tooltip="Clear all filters"),
        Binding("c", "copy_id", "Copy id", show=False, id="history.copy",
                tooltip="Copy the selected request's id to the clipboard (OSC 52; also shown in a notice)"),
        Binding("S", "export", "Save", id="history.export",
                tooltip=f"Save every request matching the filters (up to {EXPORT_MAX:,}) to a CSV file"),
        Binding("g", "reload", "Reload", show=False, id="history.reload",
                tooltip="Reload from the newest request"),
        Binding("escape", "back", "Back", id="history.back"),
    ]

    def __init__(self, filters: HistoryFilters | None = None) -> None:
        super().__init__()
        self.filters = filters or HistoryFilters()
        self.stack: list[str | None] = [None]   # cursor of every page up to the current one
        self.next_cursor: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.is_loading = False
        self.last_page_ms: float | None = None    # fetch + fill of the last page (bench)
        self.last_fetch_ms: float | None = None
        self.last_fill_ms: float | None = None
        self.pages_loaded = 0
        self._layout: str | None = None
        self._target_width = 14
        self._problem = ""

    @property
    def papp(self) -> PatchbayApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        bar = TopBar(self.papp.admin_url, id="topbar")
        bar.view = "history"
        yield bar
        with Horizontal(id="hist-filters"):
            yield Input(self.filters.route, placeholder="route", id="f-route", compact=True)
            yield Input(self.filters.target, placeholder="target", id="f-target", compact=True)
            yield Input(self.filters.outcome, placeholder="outcome", id="f-outcome",
                        compact=True, suggester=SuggestFromList(OUTCOMES))
            yield Input(placeholder="since 1h", id="f-since", compact=True)
            yield Input(placeholder="until", id="f-until", compact=True)
            yield Input(self.filters.q, placeholder="/ search", id="f-q", compact=True)
        yield RequestTable(id="hist-table")
        yield Static(id="hist-status")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.papp.tune_inputs(self)
        self._columns(force=True)
        self.load(None, push=False)

    def on_resize(self) -> None:
        self._columns()

    # -- table layout ------------------------------------------------------------

    def _columns(self, force: bool = False) -> None:
        width = self.size.width or 80
        layout = "narrow" if width < 110 else "wide"
        if layout == self._layout and not force:
            return
        self._layout = layout
        # each column takes its width + 2 (RequestTable); the error takes what is left
        if layout == "narrow":
            spec = [("time", 8), ("route", 6), ("target", 15), ("result", 6), ("att", 3),
                    ("lat", 5), ("ttft", 5)]      # cost: wide layout and the detail
        else:
            spec = [("time", 14), ("route", 12), ("final target", 30), ("outcome", 12), ("att", 3),
                    ("latency", 7), ("ttft", 7), ("tokens", 11), ("cost", 8), ("request id", 28)]
        used = sum(w + 2 for _, w in spec) + 2          # + the error column's gap and the scrollbar
        spec.insert(len(spec) - (0 if layout == "narrow" else 1), ("error", max(10, width - used - 1)))
        self._target_width = spec[2][1]
        right = {"att", "lat", "latency", "ttft", "tok", "tokens", "cost"}
        self.query_one(RequestTable).set_columns(
            [Column(label, w, right=label in right) for label, w in spec])
        self._fill()

    def _cells(self, r: dict[str, Any], now: float) -> list[Text | str]:
        narrow = self._layout == "narrow"
        outcome = str(r.get("outcome") or "")
        ostyle = fmt.OUTCOME_STYLE.get(outcome, "")
        if narrow:
            outcome = {"fallback": "fallbk", "client_error": "client"}.get(outcome, outcome)
        tgt = str(r.get("final_target") or fmt.DASH)
        if narrow:
            tgt = fmt.target_clip(tgt, self._target_width - (1 if r.get("drill_id") else 0))
        if r.get("drill_id"):
            tgt = "⚑" + tgt
        failovers = r.get("failovers") or 0
        att = Text(str(r.get("attempts", fmt.DASH)),
                   style="bold yellow" if failovers else "")
        err = " ".join(str(r.get("error_message") or r.get("error_class") or "").split())
        if not err and failovers:
            err = f"failed over {failovers}×" + ("" if narrow else " (enter: the attempt chain)")
        cells: list[Text | str] = [
            fmt.clock_time(r.get("ts")) if narrow else fmt.short_time(r.get("ts"), now),
            str(r.get("route") or ""),
            Text(tgt, no_wrap=True, overflow="ellipsis"),
            Text(outcome, style=ostyle),
            att,
            fmt.ms(r.get("latency_ms")),
            fmt.ms(r.get("ttft_ms")),
        ]
        if not narrow:
            cells.append(fmt.tokens(r.get("prompt_tokens"), r.get("completion_tokens")))
            cells.append(_cost(r.get("cost"), narrow))
        cells.append(Text(err, style="red" if r.get("error_message") else "yellow",
                          no_wrap=True, overflow="ellipsis"))
        if not narrow:
            cells.append(Text(str(r.get("id") or ""), style="dim", no_wrap=True, overflow="ellipsis"))
        return [fmt.mono(c) if isinstance(c, Text) else c for c in cells]

    def _fill(self) -> None:
        now = self.papp.clock()
        self.query_one(RequestTable).set_rows([str(r.get("id")) for r in self.rows],
                                              [self._cells(r, now) for r in self.rows])
        self._status()

    def _status(self) -> None:
        t = Text(no_wrap=True, overflow="ellipsis")
        page = len(self.stack)
        if self._problem:
            t.append(self._problem, style="bold red")
        elif self.is_loading:
            t.append("loading…", style="yellow")
        elif not self.rows:
            t.append("no requests match" if not self.filters.is_empty() else "no requests yet",
                     style="dim")
        else:
            first = (page - 1) * PAGE_SIZE + 1
            t.append(f"page {page} · rows {first}–{first + len(self.rows) - 1}", style="bold")
            if self.next_cursor is None:
                t.append(" (end)", style="dim")
        if not self.filters.is_empty():
            t.append("  filter: ", style="dim")
            t.append(" ".join(f"{k}={v}" for k, v in self.filters.params().items()
                              if k not in ("since", "until")))
            if self.filters.since or self.filters.until:
                t.append(" (time range)")
        t.append("   n/b page · x clear · c copy id · enter detail", style="dim")
        self.query_one("#hist-status", Static).update(fmt.mono(t))

    # -- loading --------------------------------------------------------------------

    @work(exclusive=True, group="history", exit_on_error=False)
    async def load(self, cursor: str | None, push: bool, pop: bool = False) -> None:
        self.is_loading = True
        self._status()
        stack = list(self.stack)
        if push:
            stack.append(cursor)
        elif pop and len(stack) > 1:
            stack.pop()
        t0 = time.perf_counter()
        try:
            body = await self.papp.client.requests(self.filters, stack[-1], PAGE_SIZE)
        except AdminError as exc:
            self.post_message(PageFailed(f"gateway refused: {exc.message} (HTTP {exc.status})"))
            return
        except AdminUnreachable as exc:
            self.post_message(PageFailed(f"cannot reach the gateway: {exc}"))
            return
        rows = body.get("requests") or []
        self.post_message(PageLoaded(rows, body.get("next_cursor"), stack,
                                     (time.perf_counter() - t0) * 1000))

    @on(PageLoaded)
    def _loaded(self, msg: PageLoaded) -> None:
        t0 = time.perf_counter()
        self.is_loading = False
        self._problem = ""
        self.rows, self.next_cursor, self.stack = msg.rows, msg.next_cursor, msg.stack
        self._fill()
        self.pages_loaded += 1
        self.last_fetch_ms = msg.elapsed_ms
        self.last_fill_ms = (time.perf_counter() - t0) * 1000
        self.last_page_ms = self.last_fetch_ms + self.last_fill_ms

    @on(PageFailed)
    def _failed(self, msg: PageFailed) -> None:
        self.is_loading = False
        self._problem = msg.problem
        self._status()

    # -- filters -------------------------------------------------------------------

    def _read_filters(self) -> HistoryFilters | None:
        now = self.papp.clock()
        v = {i.id: i.value.strip() for i in self.query(Input)}
        try:
            since = parse_when(v["f-since"], now)
            until = parse_when(v["f-until"], now)
        except ValueError as exc:
            self.notify(str(exc), severity="warning", timeout=5)
            return None
        if v["f-outcome"] and v["f-outcome"] not in OUTCOMES:
            self.notify(f"outcome is one of: {', '.join(OUTCOMES)}", severity="warning",
                        timeout=5)
            return None
        return HistoryFilters(route=v["f-route"], target=v["f-target"], outcome=v["f-outcome"],
                              since=since, until=until, q=v["f-q"], failover=self.filters.failover)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        f = self._read_filters()
        if f is None:
            return
        self.filters = f
        self.stack = [None]
        self.load(None, push=False)
        self.query_one(RequestTable).focus()

    def set_filters(self, filters: HistoryFilters) -> None:
        """Programmatic filter change (tests, palette): same path as typing + enter."""
        self.filters = filters
        for key, val in (("f-route", filters.route), ("f-target", filters.target),
                         ("f-outcome", filters.outcome), ("f-q", filters.q)):
            self.query_one(f"#{key}", Input).value = val
        self.stack = [None]
        self.load(None, push=False)

    # -- actions ----------------------------------------------------------------------

    def action_page(self, delta: int) -> None:
        if self.is_loading:
            return
        if delta > 0:
            if self.next_cursor is None:
                self.notify("Last page.", timeout=2)
                return
            self.load(self.next_cursor, push=True)
        else:
            if len(self.stack) <= 1:
                self.notify("First page.", timeout=2)
                return
            self.load(None, push=False, pop=True)

    def action_search(self) -> None:
        self.query_one("#f-q", Input).focus()

    def action_filters(self) -> None:
        self.query_one("#f-route", Input).focus()

    def action_clear(self) -> None:
        for i in self.query(Input):
            i.value = ""
        self.filters = HistoryFilters()
        self.stack = [None]
        self.load(None, push=False)

    def action_failover(self) -> None:
        from dataclasses import replace
        self.filters = replace(self.filters, failover=not self.filters.failover)
        self.stack = [None]
        self.load(None, push=False)

    def action_copy_id(self) -> None:
        from tui.screens.detail import copy_request_id
        table = self.query_one(RequestTable)
        if 0 <= table.cursor < len(self.rows):
            copy_request_id(self.app, str(self.rows[table.cursor].get("id")))

    def action_export(self) -> None:
        self.export(self.filters)

    @work(exclusive=True, group="export", exit_on_error=False)
    async def export(self, filters: HistoryFilters, directory: str = ".") -> str | None:
        """Every request matching the filters (keyset pages of 1,000), newest first, into a CSV file."""
        import csv
        import os
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        self.notify("Saving the filtered history…", timeout=3)
        try:
            while len(rows) < EXPORT_MAX:
                body = await self.papp.client.requests(filters, cursor, min(1000, EXPORT_MAX - len(rows)))
                rows.extend(body.get("requests") or [])
                cursor = body.get("next_cursor")
                if not cursor:
                    break
        except (AdminError, AdminUnreachable) as exc:
            self.notify(f"Not saved: {exc}", severity="error", timeout=8)
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.papp.clock()))
        path = os.path.abspath(os.path.join(directory, f"patchbay-history-{stamp}.csv"))
        fields = list(rows[0]) if rows else ["id"]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        more = f" (the first {EXPORT_MAX:,}; narrow the filters for the rest)" if cursor else ""
        self.notify(f"Saved {len(rows)} requests to {path}{more}", timeout=10)
        return path

    def action_reload(self) -> None:
        self.stack = [None]
        self.load(None, push=False)

    def action_back(self) -> None:
        if isinstance(self.focused, Input):
            self.query_one(RequestTable).focus()
            return
        self.app.pop_screen()

    @on(RequestTable.RowSelected)
    def _open(self, event: RequestTable.RowSelected) -> None:
        from tui.screens.detail import DetailScreen
        self.app.push_screen(DetailScreen(event.key))
