"""Number and time formatting shared by every screen.

Operators compare tiles at a glance, so every figure has one fixed short form
(`412ms`, `1.2s`, `99.8%`, `$0.42/h`) and a dash when unknown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from rich.style import Style
from rich.text import Span, Text

DASH = "–"

# state -> (symbol, colour style); the word itself is always shown too, so
# colour is never the only carrier (16-colour terminals, NO_COLOR, colour-blind).
STATE_STYLE: dict[str, tuple[str, str]] = {
    "healthy": ("●", "bold green"),
    "degraded": ("◐", "bold yellow"),
    "throttled": ("◑", "bold yellow"),
    "down": ("✖", "bold red"),
    "open": ("⊘", "bold red"),
    "disabled": ("■", "bold reverse red"),
    "misconfigured": ("⚠", "bold magenta"),
}

OUTCOME_STYLE: dict[str, str] = {
    "ok": "green",
    "fallback": "yellow",
    "cut": "red",
    "error": "red",
    "client_error": "magenta",
}

EVENT_STYLE: dict[str, str] = {
    "failover": "yellow",
    "breaker": "red",
    "operator": "cyan",
    "drill": "magenta",
    "probe": "dim",
    "store": "red",
}


def state_style(state: str) -> tuple[str, str]:
    return STATE_STYLE.get(state, ("?", "bold"))


def ms(v: float | None) -> str:
    if v is None:
        return DASH
    if v >= 999.5:
        return secs(v / 1000)
    return f"{v:.0f}ms"


def secs(v: float | None) -> str:
    """Seconds with one decimal, and none when it is .0: `10s` and `2.5s`, never `10.0s` beside `10s`."""
    if v is None:
        return DASH
    text = f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
    return text.removesuffix(".0") + "s"


def ms_pair(a: float | None, b: float | None) -> str:
    """p50/p95 as one figure: `419/636ms`, `1.2/3.4s` (one unit, the larger one's)."""
    if a is None and b is None:
        return DASH
    hi = max(x for x in (a, b) if x is not None)
    if hi >= 1000:
        return "/".join(DASH if x is None else f"{x / 1000:.1f}" for x in (a, b)) + "s"
    return "/".join(DASH if x is None else f"{x:.0f}" for x in (a, b)) + "ms"


def pct(v: float | None) -> str:
    if v is None:
        return DASH
    p = v * 100
    if p >= 99.95 or p == 0:
        return f"{p:.0f}%"
    return f"{p:.1f}%"


def rpm(v: float | None) -> str:
    if v is None:
        return DASH
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.1f}"


def money(v: float | None, per: str = "") -> str:
    if v is None:
        return DASH
    if v >= 100:
        s = f"${v:.0f}"
    elif v >= 0.01 or v == 0:
        s = f"${v:.2f}"
    else:
        s = f"${v:.4f}"
    return s + per


def tokens(prompt: int | None, completion: int | None) -> str:
    if prompt is None and completion is None:
        return DASH
    return f"{prompt or 0}/{completion or 0}"


def clock_time(ts: float | None) -> str:
    """Wall-clock HH:MM:SS in the operator's local zone (TZ)."""
    if ts is None:
        return DASH
    return time.strftime("%H:%M:%S", time.localtime(ts))


def date_time(ts: float | None) -> str:
    if ts is None:
        return DASH
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def short_time(ts: float | None, now: float) -> str:
    """Today's rows show only the time; older rows show month-day too."""
    if ts is None:
        return DASH
    lt, ln = time.localtime(ts), time.localtime(now)
    if (lt.tm_year, lt.tm_yday) == (ln.tm_year, ln.tm_yday):
        return time.strftime("%H:%M:%S", lt)
    return time.strftime("%m-%d %H:%M", lt)


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return DASH
    d = max(0.0, now - ts)
    if d < 60:
        return f"{d:.0f}s ago"
    if d < 3600:
        return f"{d / 60:.0f}m ago"
    if d < 86400:
        return f"{d / 3600:.0f}h ago"
    return f"{d / 86400:.0f}d ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def clip(text: str | None, width: int) -> str:
    if not text:
        return ""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


Clock = Callable[[], float]


def target_clip(target_id: str, width: int) -> str:
    """Fit `vendor/model` in `width`: the vendor stays whole (it is how operators tell targets
    apart) and the model's end gives way (`anthropic/claude-sonnet-4-2…`)."""
    return clip(target_id, width)


def cost_per_hour(v: float | None, priced: bool) -> str:
    """A target without a configured price has no cost figure, not a cost of $0."""
    return money(v, "/h") if priced else "no price"


def no_color() -> bool:
    """https://no-color.org: any non-empty NO_COLOR means no colour."""
    return bool(os.environ.get("NO_COLOR"))


_ALARM = {"red", "bright_red", "magenta", "bright_magenta"}
_WARN = {"yellow", "bright_yellow", "cyan", "bright_cyan"}


def mono(text: Text) -> Text:
    """Under NO_COLOR, turn colour-only emphasis into weight and inversion.

    Textual renders NO_COLOR as greys by luminance, which makes red text (errors,
    "down", "open") dark grey on black: nearly invisible exactly when it matters.
    Here red/magenta become bold reverse (if bold) or bold underline, yellow and
    cyan become bold, other colours are dropped. Words already carry the meaning.
    """
    if not no_color():
        return text
    out = text.copy()
    spans = []
    for span in out.spans:
        style = Style.parse(span.style) if isinstance(span.style, str) else span.style
        name = style.color.name if style.color is not None else ""
        if name in _ALARM:
            new = Style(bold=True, reverse=True) if style.bold else Style(bold=True, underline=True)
        elif name in _WARN:
            new = Style(bold=True)
        else:
            new = Style(bold=style.bold, dim=style.dim, italic=style.italic,
                        underline=style.underline, reverse=style.reverse)
        if style.reverse:
            new += Style(reverse=True)
        spans.append(Span(span.start, span.end, new))
    out.spans = spans
    return out
