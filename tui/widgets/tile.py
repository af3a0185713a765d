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


def sparkline(series: tuple[float, ...], width: int, low: Color, high: Color,
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
    top = max(pts) * 1.15 if pts else 0.0      # headroom: a steady series is not a solid wall
    levels = len(BARS) * height
    cols: list[tuple[int, Style]] = []
    for v in pts:
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
        spark_rows = max(1, (self.content_region.height or 4) - 3)
        foot = self._foot_text(t, now)
        key = (t, width, spark_rows, foot.plain)
        if key == self._key:
            return
        self._key = key
        lines = [self._head_text(t), self._lat_text(t), *self._spark(t, width, spark_rows), foot]
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
        txt.append(f"  {fmt.rpm(t.rpm)} rpm", style="bold")
        txt.append(f"  {fmt.money(t.cost_per_hour, '/h')}")
        return txt

    @staticmethod
    def _lat_text(t: TargetInfo) -> Text:
        txt = Text(no_wrap=True, overflow="ellipsis")
        if t.latency_source == "probes":  # no traffic: say so rather than look faster than the serving target
            txt.append("probe ", style="dim italic")
        txt.append("p50 ", style="dim")
        txt.append(fmt.ms(t.p50_ms))
        txt.append(" p95 ", style="dim")
        txt.append(fmt.ms(t.p95_ms))
        txt.append("  ok ", style="dim")
        rate = t.success_rate
        style = "" if rate is None or rate >= 0.99 else ("yellow" if rate >= 0.9 else "bold red")
        txt.append(fmt.pct(rate), style=style)
        return txt

    @staticmethod
    def _foot_text(t: TargetInfo, now: float) -> Text:
        txt = Text(no_wrap=True, overflow="ellipsis")
        if t.disabled:
            txt.append("disabled", style="bold red")
            txt.append(f": {t.disabled_reason}" if t.disabled_reason else " by operator",
                       style="red")
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
