"""One-line status bar: where we are attached, link health, pause and readonly flags."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui import fmt
from tui.model import GatewayState


class TopBar(Static):
    """Rendered from plain fields so screens can share it without querying the app."""

    def __init__(self, url: str, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.url = url
        self.connected: bool | None = None
        self.paused = False
        self.readonly = False
        self.view = "dashboard"
        self._state = GatewayState()
        self._last: str | None = None

    def on_mount(self) -> None:
        app = self.app
        state = getattr(app, "state", None)
        self.show(state=state, connected=getattr(app, "connected", None),
                  paused=getattr(app, "paused", False), readonly=getattr(app, "readonly", False))

    def show(self, *, state: GatewayState | None = None, connected: bool | None = None,
             paused: bool | None = None, readonly: bool | None = None) -> None:
        if state is not None:
            self._state = state
        if connected is not None:
            self.connected = connected
        if paused is not None:
            self.paused = paused
        if readonly is not None:
            self.readonly = readonly
        text = fmt.mono(self._text())
        key = text.plain + str(text.spans)
        if key != self._last:
            self._last = key
            self.update(text, layout=False)

    def _text(self) -> Text:
        full = self._build(compact=False)
        if self.size.width and full.cell_len > self.size.width:
            return self._build(compact=True)
        return full

    def on_resize(self) -> None:
        self._last = None
        self.show()

    def _build(self, compact: bool) -> Text:
        st = self._state
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" Patchbay ", style="bold reverse")
        t.append(f" {self.view}", style="bold")
        if self.connected is None:
            t.append("  ◌ connecting", style="yellow")
        elif not self.connected:
            t.append("  ✖ offline", style="bold red")
        elif self.paused:          # not "live" as well: the screen is frozen
            t.append("  ⏸ PAUSED", style="bold reverse yellow")
        else:
            t.append("  ● live", style="green")
        if self.readonly:
            t.append("  READONLY", style="bold reverse cyan")
        if st.targets:
            counts: dict[str, int] = {}
            for x in st.targets:
                counts[x.state] = counts.get(x.state, 0) + 1
            healthy = counts.pop("healthy", 0)
            t.append(f"  {healthy}/{len(st.targets)} healthy",
                     style="green" if not counts else "bold")
            for state, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                sym, style = fmt.state_style(state)
                t.append(" " if compact else " · ", style="dim")
                t.append(f"{sym}{n}" if compact else f"{n} {state}",
                         style=style.replace("reverse", "").strip())
        running = st.running_drills()
        if running:
            t.append("  ⚑ drill running", style="bold magenta")
        if not st.store_ok:
            t.append(f"  store failing ({st.rows_not_written} rows lost)", style="bold red")
        if not compact:
            t.append(f"  {self.url}", style="dim")
        return t
