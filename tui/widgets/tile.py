"""One tile per target: the operator's at-a-glance health card.

Tiles are built once per target and then updated in place: each line is only
re-rendered when its text changed, so a 1 s refresh of 20 tiles stays cheap.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from tui import fmt
from tui.model import TargetInfo


class _Line(Static):
    """A Static that skips work when asked to show what it already shows."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._plain: str | None = None
        self._style_key: str | None = None

    def set(self, text: Text) -> None:
        key = text.plain, str(text.spans)
        if key != (self._plain, self._style_key):
            self._plain, self._style_key = key
            self.update(text)


class TargetTile(Vertical, can_focus=True):
    """Health card of one target; CSS classes carry state (-healthy, -down, -disabled...)."""

    def __init__(self, target: TargetInfo, now: float, **kwargs) -> None:
        super().__init__(id=_dom_id(target.id), classes="tile", **kwargs)
        self.target_id = target.id
        self._target = target
        self._now = now
        self._series: tuple[float, ...] | None = None
        self._state_class: str | None = None

    @property
    def target(self) -> TargetInfo:
        return self._target

    def compose(self) -> ComposeResult:
        yield _Line(classes="tile-head")
        yield _Line(classes="tile-lat")
        yield Sparkline([], classes="tile-spark")
        yield _Line(classes="tile-foot")

    def on_mount(self) -> None:
        self.border_title = self.target_id
        self.update_target(self._target, self._now, force=True)

    def update_target(self, t: TargetInfo, now: float, force: bool = False) -> None:
        self._target, self._now = t, now
        if not self.is_mounted:
            return
        state_cls = f"-{t.state}" if t.state in fmt.STATE_STYLE else "-unknown"
        if state_cls != self._state_class:
            if self._state_class:
                self.remove_class(self._state_class)
            self.add_class(state_cls)
            self._state_class = state_cls
        self.set_class(t.disabled, "-is-disabled")
        head, lat, foot = self.query(_Line)
        head.set(self._head_text(t))
        lat.set(self._lat_text(t))
        foot.set(self._foot_text(t, now))
        series = t.latency_series[-60:]
        if force or series != self._series:
            self._series = series
            self.query_one(Sparkline).data = list(series)

    @staticmethod
    def _head_text(t: TargetInfo) -> Text:
        sym, style = fmt.state_style(t.state)
        txt = Text()
        txt.append(f"{sym} {t.state.upper()}", style=style)
        if t.disabled and t.state != "disabled":
            txt.append(" DISABLED", style="bold reverse red")
        txt.append(f"  {fmt.rpm(t.rpm)} rpm", style="bold")
        txt.append(f"  {fmt.money(t.cost_per_hour, '/h')}")
        return txt

    @staticmethod
    def _lat_text(t: TargetInfo) -> Text:
        txt = Text()
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
