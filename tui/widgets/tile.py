"""One tile per target: the operator's at-a-glance health card.

A tile is a single widget that renders four lines (state, latency, sparkline,
breaker / last error): with 20 targets that is 20 widgets, not 100, and an
update that changes nothing costs a string comparison and no repaint. Layout
never changes after mount, so updates refresh without a layout pass.
"""

from __future__ import annotations

from rich.color import Color as RichColor
from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from tui import fmt
from tui.model import TargetInfo

BARS = "▁▂▃▄▅▆▇█"


def sparkline(series: tuple[float | None, ...], width: int, low: Color, high: Color,
              height: int = 1) -> list[Text]:
    """Rows of bars (top first), one column per series point, newest at the right.

    Bars are scaled from zero, not from the series minimum: a steady 400 ms
    target stays flat instead of 5 ms of jitter becoming a sawtooth, and a real
    spike still stands out. With fewer points than columns the left stays
    empty, so every tile's time axis lines up.
    """
    height = max(1, height)
    pts = series[-width:] if width > 0 else ()
    pad = max(0, width - len(pts))
    top = max((v for v in pts if v is not None), default=0.0) * 1.15   # headroom: steady is not a wall
    levels = len(BARS) * height
    cols: list[tuple[int, Style]] = []
    for v in pts:
        if v is None:              # no data in that step: a gap, not a zero
            cols.append((0, Style()))
            continue
        ratio = max(0.0, min(1.0, v / top)) if top > 0 else 0.0
        color = low.blend(high, ratio)
        style = Style(color=RichColor.from_rgb(color.r, color.g, color.b))
        cols.append((max(1, int(round(ratio * levels))), style))
    rows: list[Text] = []
    for row in reversed(range(height)):
        line = Text(no_wrap=True, overflow="crop")
        line.append(("·" if row == 0 else " ") * pad, style="dim")
        base = row * len(BARS)
        for level, style in cols:
            filled = level - base
            if filled <= 0:
                line.append(" ")
            elif filled >= len(BARS):
                line.append("█", style=style)
            else:
                line.append(BARS[filled - 1], style=style)
        rows.append(line)
    return rows


class TargetTile(Widget, can_focus=True):
    """Health card of one target; CSS classes carry state (-healthy, -down, -is-disabled...)."""

    COMPONENT_CLASSES = {"tile--spark-low", "tile--spark-high"}

    def __init__(self, target: TargetInfo, now: float, **kwargs) -> None:
        super().__init__(id=_dom_id(target.id), classes="tile", **kwargs)
        self.target_id = target.id
        self._target = target
        self._now = now
        self._state_class: str | None = None
        self._key: tuple | None = None
        self._text = Text()

    @property
    def target(self) -> TargetInfo:
        return self._target

    def on_mount(self) -> None:
        self.border_title = self.target_id
        # the sparkline says what it draws (border subtitle): p50 of total latency, one bar per step
        self.update_target(self._target, self._now)

    def on_resize(self) -> None:
        self._key = None
        self.update_target(self._target, self._now)

    def update_target(self, t: TargetInfo, now: float) -> None:
        """Take new figures; repaint only when what the tile shows actually changed."""
        self._target, self._now = t, now
        state_cls = f"-{t.state}" if t.state in fmt.STATE_STYLE else "-unknown"
        if state_cls != self._state_class:
            if self._state_class:
                self.remove_class(self._state_class)
            self.add_class(state_cls)
            self._state_class = state_cls
        self.set_class(t.disabled, "-is-disabled")
        width = self.content_region.width or 30
        spark_rows = max(0, (self.content_region.height or 4) - 3)   # none in a 5-row (short) tile
        foot = self._foot_text(t, now)
        key = (t, width, spark_rows, foot.plain)
        if key == self._key:
            return
        self._key = key
        self.border_subtitle = f"▁▅ p50 total /{t.series_step_s:g}s" if spark_rows else ""
        spark = self._spark(t, width, spark_rows) if spark_rows else []
        lines = [self._head_text(t), self._lat_text(t), *spark, foot]
        for line in lines:          # crop here: a wrapped line would push the others down
            line.truncate(width, overflow="ellipsis")
        text = Text("\n").join(lines)
        text.no_wrap, text.overflow = True, "ellipsis"
        self._text = fmt.mono(text)
        self.refresh()

    def render(self) -> Text:
        return self._text

    def _spark(self, t: TargetInfo, width: int, rows: int) -> list[Text]:
        low = self.get_component_styles("tile--spark-low").color
        high = self.get_component_styles("tile--spark-high").color
        return sparkline(t.latency_series, width, low, high, rows)

    @staticmethod
    def _head_text(t: TargetInfo) -> Text:
        sym, style = fmt.state_style(t.state)
        txt = Text(no_wrap=True, overflow="ellipsis")
        txt.append(f"{sym} {t.state.upper()}", style=style)
        if t.disabled and t.state != "disabled":
            txt.append(" DISABLED", style="bold reverse red")
        # the current rate (last 10 s): a target just disabled or opened drops to 0 at once
        txt.append(f" {fmt.rpm(t.rate)} rpm", style="bold")
        txt.append(f" {fmt.cost_per_hour(t.cost_per_hour, t.priced)}",
                   style="" if t.priced else "dim")
        rate = t.success_rate
        style = "" if rate is None or rate >= 0.99 else ("yellow" if rate >= 0.9 else "bold red")
        txt.append(" ok ", style="dim")
        txt.append(fmt.pct(rate), style=style)
        return txt

    @staticmethod
    def _lat_text(t: TargetInfo) -> Text:
        """Total latency (request start to last byte) and, for streams, time to first token."""
        txt = Text(no_wrap=True, overflow="ellipsis")
        if t.latency_source == "probes":  # no traffic: say so rather than look faster than the serving target
            txt.append("probe ", style="dim italic")
        txt.append("p50/95 ", style="dim")
        txt.append(fmt.ms_pair(t.p50_ms, t.p95_ms))
        if t.ttft_p50_ms is not None:
            txt.append(" ttft ", style="dim")
            txt.append(fmt.ms_pair(t.ttft_p50_ms, t.ttft_p95_ms))
        return txt

    @staticmethod
    def _foot_text(t: TargetInfo, now: float) -> Text:
        txt = Text(no_wrap=True, overflow="ellipsis")
        if t.disabled:
            txt.append("off", style="bold red")
            if t.target_disabled is None and t.vendor_disabled is None:   # an older gateway
                txt.append(f": {t.disabled_reason}" if t.disabled_reason else " by operator", style="red")
            if t.target_disabled is not None:
                txt.append(f" target: {t.target_disabled or 'no reason'}", style="red")
            if t.vendor_disabled is not None:
                txt.append(" ·" if t.target_disabled is not None else "", style="dim")
                txt.append(f" vendor: {t.vendor_disabled or 'no reason'}", style="red")
            return txt
        brk_style = {"closed": "dim", "half_open": "yellow", "half-open": "yellow"}.get(
            t.breaker, "bold red")
        txt.append(f"brk {t.breaker}", style=brk_style)
        if t.last_error:
            txt.append(" · ", style="dim")
            if t.last_error_ts is not None:
                txt.append(fmt.ago(t.last_error_ts, now) + " ", style="dim")
            txt.append(" ".join(t.last_error.split()), style="red")
        return txt


def _dom_id(target_id: str) -> str:
    """DOM ids allow only letters, digits, - and _: keep them readable and unique."""
    out = []
    for ch in target_id:
        out.append(ch if ch.isalnum() or ch in "-_" else f"_{ord(ch):x}_")
    return "tile-" + "".join(out)
