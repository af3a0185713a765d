"""Bar charts with axis values for the per-target view (the tiles' sparklines carry none)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.color import Color

from tui import fmt
from tui.widgets.tile import sparkline

AXIS_W = 7    # "1.2s ┤" / "980ms┤"


def chart(values: list[float | None], since: float, step_s: float, width: int, height: int,
          low: Color, high: Color, unit: str = "ms") -> list[Text]:
    """Rows of bars (one bucket per column group) with the top value on the y axis and
    the window's start, middle and end times on the x axis. Empty buckets stay blank."""
    cols = max(10, width - AXIS_W)
    n = max(1, len(values))
    per = max(1, cols // n)
    stretched: list[float | None] = []
    for v in values:
        stretched.extend([v] * per)
    stretched = stretched[:cols]
    top = max((v for v in stretched if v is not None), default=0.0) * 1.15
    rows = sparkline(tuple(stretched), len(stretched), low, high, height)
    out: list[Text] = []
    for i, row in enumerate(rows):
        label = _value(top, unit) if i == 0 else ("0" if i == len(rows) - 1 else "")
        line = Text(no_wrap=True, overflow="crop")
        line.append(f"{label:>{AXIS_W - 1}}┤", style="dim")
        line.append_text(row)
        out.append(line)
    span = len(stretched)
    end = since + step_s * n
    marks = [(0, since), (span // 2, since + (end - since) / 2), (max(0, span - 5), end)]
    axis = [" "] * (span + AXIS_W)
    for pos, ts in marks:
        text = time.strftime("%H:%M", time.localtime(ts))
        for j, ch in enumerate(text):
            k = AXIS_W + pos + j
            if k < len(axis):
                axis[k] = ch
    out.append(Text("".join(axis).rstrip(), style="dim", no_wrap=True, overflow="crop"))
    return out


def _value(v: float, unit: str) -> str:
    if unit == "ms":
        return fmt.ms(v) if v else "0"
    return f"{v:.0f}"
