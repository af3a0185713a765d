"""Snapshots of the control panel at 80x24 and 200x50, from fixed data.

A live gateway cannot give pixel-stable screens (real latencies, real clocks),
so these feed recorded admin-API documents through the TUI's real AdminClient
from a real aiohttp server on 127.0.0.1 (tests/test_tui_support.py). Time is
frozen, the zone is UTC, sparklines come from fixed series and the cursor does
not blink. The flows themselves are tested against the real gateway in
tests/test_tui.py.

Update after an intended visual change: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from textual.pilot import Pilot

from tests.test_tui_support import (
    FROZEN_NOW,
    RecordedAdmin,
    degraded_state,
    done_drill,
    fixed_events,
    healthy_state,
    history_rows,
)
from tui.app import PatchbayApp
from tui.screens.detail import DetailScreen
from tui.screens.drill import DrillScreen
from tui.screens.history import HistoryScreen
from tui.screens.target import TargetScreen
from tui.widgets.confirm import ConfirmModal
from tui.widgets.tile import TargetTile

SIZES = [(80, 24), (200, 50)]
SHOWN_URL = "http://gateway.test:4001"   # the top bar shows this, whatever port the server got


class _ToRecorded(httpx.AsyncBaseTransport):
    """Sends every request for SHOWN_URL to the recorded server's real port."""

    def __init__(self, port: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._port = port

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host="127.0.0.1", port=self._port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture(autouse=True)
def fixed_terminal(monkeypatch) -> Iterator[None]:
    """UTC clock and a truecolor terminal, whatever the machine running the tests has."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.delenv("NO_COLOR", raising=False)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _server(state: dict[str, Any], **kw: Any) -> RecordedAdmin:
    return RecordedAdmin(state=state, events=fixed_events(), rows=history_rows(120),
                         drills=[done_drill()], **kw).start()


def _app(srv: RecordedAdmin, **kw: Any) -> PatchbayApp:
    port = int(srv.url.rsplit(":", 1)[1])
    return PatchbayApp(SHOWN_URL, srv.token, refresh=1.0, clock=lambda: FROZEN_NOW,
                       cursor_blink=False, transport=_ToRecorded(port), **kw)


async def _painted(pilot: Pilot, cond) -> None:
    """Wait for `cond`, then until two screenshots 0.1 s apart agree (nothing left to paint)."""
    for _ in range(200):
        if cond():
            break
        await pilot.pause(0.05)
    else:
        raise AssertionError("screen never reached the expected state")
    last = None
    for _ in range(100):
        await pilot.pause(0.1)
        await pilot.wait_for_scheduled_animations()
        shot = pilot.app.export_screenshot()
        if shot == last and "Patchbay" in shot:
            return
        last = shot
    raise AssertionError("screen never settled")


def _tiles_ready(pilot: Pilot, n: int = 5):
    app = pilot.app

    def ready() -> bool:
        tiles = app.screen_stack[0].query(TargetTile)
        return (len(tiles) == n and all(t.is_mounted and t._key is not None for t in tiles)
                and app.screen_stack[0].query_one("#events").count >= 3)
    return ready


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_healthy(snap_compare, size):
    srv = _server(healthy_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_degraded(snap_compare, size):
    srv = _server(degraded_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_confirm_modal_disable_target(snap_compare, size):
    srv = _server(degraded_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
            await pilot.press("k")                   # wrap to the last tile: gpt-4.1-mini (scrolled into view)
            await pilot.press("d")
            await _painted(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal))
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_drill_report(snap_compare, size):
    srv = _server(healthy_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
            await pilot.press("r")

            def shown() -> bool:
                s = pilot.app.screen
                return isinstance(s, DrillScreen) and bool(s.detail) and bool(s.drills)
            await _painted(pilot, shown)
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_detail(snap_compare, size):
    srv = _server(healthy_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
            await pilot.press("h")
            await _painted(pilot, lambda: len(getattr(pilot.app.screen, "rows", [])) == 50)
            await pilot.press("j", "j", "j", "enter")   # req_000003: a failover
            await _painted(pilot, lambda: isinstance(pilot.app.screen, DetailScreen)
                           and pilot.app.screen.data is not None)
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_page(snap_compare, size):
    srv = _server(healthy_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
            await pilot.press("h")
            await _painted(pilot, lambda: len(getattr(pilot.app.screen, "rows", [])) == 50)
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_target_view(snap_compare, size):
    """The per-target view of the open target mid-incident: charts with axes, failures, breaker."""
    srv = _server(degraded_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
            await pilot.press("enter")
            await _painted(pilot, lambda: isinstance(pilot.app.screen, TargetScreen)
                           and pilot.app.screen.data is not None)
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_failovers_only(snap_compare, size):
    """History with the error (and, wide, request id) columns, filtered to requests that failed over."""
    srv = _server(degraded_state())
    try:
        async def run_before(pilot: Pilot) -> None:
            await _painted(pilot, _tiles_ready(pilot))
            await pilot.press("h")
            await _painted(pilot, lambda: len(getattr(pilot.app.screen, "rows", [])) == 50)
            await pilot.press("F")
            await _painted(pilot, lambda: isinstance(pilot.app.screen, HistoryScreen)
                           and pilot.app.screen.filters.failover and not pilot.app.screen.is_loading)
        assert snap_compare(_app(srv), terminal_size=size, run_before=run_before)
    finally:
        srv.stop()
