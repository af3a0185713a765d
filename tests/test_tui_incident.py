"""Issue 12 in the panel, against a real gateway: what an operator attaching mid-incident sees and does."""

from __future__ import annotations

import asyncio
import csv
import pathlib

import httpx
from textual.widgets import Input, Select

from tests.test_tui import TOKEN, _export_text, client_request, gw, live_app, tiles, wait_for  # noqa: F401 (gw: fixture)
from tui.app import PatchbayApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.detail import DetailScreen
from tui.screens.drill import FAULTS, DrillForm
from tui.screens.history import HistoryScreen
from tui.screens.target import TargetScreen
from tui.widgets.confirm import ConfirmModal
from tui.widgets.events import EventFeed

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _incident(gw, mock) -> None:
    """openai/gpt-4.1 answers 503: requests fail over to deepseek; an operator disables gemini."""
    mock.set_fault("error", model="gpt-4.1", status=503)
    for _ in range(3):
        r = await client_request(gw.url)
        assert r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH) as hc:
        await hc.post("/admin/targets/gemini%2Fgemini-2.0-flash/disable", json={"reason": "billing hold"})
    await asyncio.to_thread(gw.store.flush, 5.0)


async def test_a_panel_attached_mid_incident_shows_the_events_so_far(gw, mock):
    await _incident(gw, mock)
    app = await live_app(gw)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        feed = app.screen.query_one(EventFeed)
        await wait_for(pilot, lambda: feed.count >= 3, "backfilled events")
        text = _export_text(app)
        assert "openai/gpt-4.1 → deepseek/deepseek-chat" in text
        assert "disable gemini/gemini-2.0-flash (billing hold)" in text


async def test_events_are_one_line_each_and_recut_on_resize(gw, mock):
    await _incident(gw, mock)
    app = await live_app(gw)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        feed = app.screen.query_one(EventFeed)
        await wait_for(pilot, lambda: feed.count >= 3, "events")
        wide = [strip.text for strip in feed.lines]
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: feed.scrollable_content_region.width < 60, "narrow")
        await pilot.pause(0.2)
        narrow = [strip.text.rstrip() for strip in feed.lines]
        width = feed.scrollable_content_region.width
        assert len(narrow) == len(wide) and all(len(line) <= width for line in narrow)
        assert any(line.endswith("…") for line in narrow)


async def test_target_view_charts_failures_and_its_history(gw, mock):
    await _incident(gw, mock)
    app = await live_app(gw)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("enter")            # the first tile: openai/gpt-4.1
        screen = await wait_for(pilot, lambda: isinstance(app.screen, TargetScreen) and app.screen.data
                                and app.screen, "target view")
        assert screen.target_id == "openai/gpt-4.1" and screen.window == "1h"
        text = _export_text(app)
        assert "total latency p50" in text and "time to first token p50" in text
        assert "attempts 3, failed 3" in text and "by class server 3" in text
        assert "closed → open" in text or "breaker no transitions" in text
        assert "chat #1 of 4" in text
        await pilot.press("3")
        await wait_for(pilot, lambda: screen.window == "24h" and screen.data
                       and screen.data.get("window") == "24h", "24h window")
        # h: the requests that tried this target, including those that failed over away from it
        await pilot.press("h")
        hist = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and not app.screen.is_loading
                              and app.screen.rows and app.screen, "history of the target")
        assert hist.filters.target == "openai/gpt-4.1"
        assert {r["final_target"] for r in hist.rows} == {"deepseek/deepseek-chat"}


async def test_history_failover_filter_error_column_copy_and_export(gw, mock, tmp_path, monkeypatch):
    for _ in range(2):
        await client_request(gw.url)
    await _incident(gw, mock)
    monkeypatch.chdir(tmp_path)
    app = await live_app(gw)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("h")
        hist = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.rows) == 5
                              and app.screen, "history")
        text = _export_text(app)
        assert "request id" in text and "error" in text and hist.rows[0]["id"] in text
        assert "failed over 1×" in text
        await pilot.press("F")
        # two failed over; the third skipped openai (breaker open) without trying it
        await wait_for(pilot, lambda: hist.filters.failover and not hist.is_loading and len(hist.rows) == 2,
                       "failovers only")
        await pilot.press("c")
        assert app.clipboard == hist.rows[0]["id"]
        await pilot.press("S")
        path = await wait_for(pilot, lambda: next(iter(pathlib.Path(tmp_path).glob("patchbay-history-*.csv")),
                                                  None), "export file")
        await pilot.pause(0.2)
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 2 and {r["failovers"] for r in rows} == {"1"}
        await pilot.press("enter")
        detail = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.data
                                and app.screen, "detail")
        await pilot.press("c")
        assert app.clipboard == detail.request_id
        await pilot.press("escape", "F")              # all requests again; the newest skipped openai
        await wait_for(pilot, lambda: not hist.filters.failover and not hist.is_loading and len(hist.rows) == 5,
                       "all again")
        await pilot.press("home", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.data, "detail 2")
        assert "skipped openai/gpt-4.1 (breaker open" in _export_text(app)


async def test_readonly_offers_no_order_and_pause_replaces_live(gw):
    app = PatchbayApp(gw.admin_url, TOKEN, refresh=0.2, readonly=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        dash = app.screen
        assert isinstance(dash, DashboardScreen) and dash.check_action("focus_routes", ()) is False
        footer = _export_text(app).splitlines()
        assert not any("Order" in ln for ln in footer)
        await pilot.press("p")
        text = _export_text(app)
        assert "PAUSED" in text and "● live" not in text


async def test_drill_form_offers_every_fault_and_n_goes_back_to_it(gw):
    assert [value for _, value in FAULTS] == ["error", "timeout", "hang", "latency", "stream_cut"]
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("D")
        form = await wait_for(pilot, lambda: isinstance(app.screen, DrillForm) and app.screen, "form")
        form.query_one("#df-fault", Select).value = "error"
        form.query_one("#df-arg", Input).value = "429"
        form.query_one("#df-duration", Input).value = "7"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm")
        assert "error:429" in _export_text(app)
        await pilot.press("n")
        again = await wait_for(pilot, lambda: isinstance(app.screen, DrillForm) and app.screen, "form again")
        assert again.query_one("#df-arg", Input).value == "429"
        assert again.query_one("#df-duration", Input).value == "7"
        assert again.query_one("#df-fault", Select).value == "error"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "dashboard")
    assert not any(t.fault for t in gw.runtime.targets.values())


async def test_request_detail_shows_bodies_when_the_gateway_logs_them(mock, tmp_path, start_gateway):
    from tests.test_tui import ENV, four_target_config
    raw = four_target_config(mock.url, tmp_path)
    raw["store"]["log_bodies"] = True
    gw2 = await start_gateway(raw, env=ENV)
    r = await client_request(gw2.url)
    rid = r.headers["x-request-id"]
    await asyncio.to_thread(gw2.store.flush, 5.0)
    app = await live_app(gw2)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        app.push_screen(DetailScreen(rid))
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen.data, "detail")
        text = _export_text(app)
        assert "Bodies (log_bodies = true)" in text and "hello tui" in text and "Hello from openai/gpt-4.1" in text


def test_seconds_read_one_way():
    """Issue 12: the detail printed `10s` and `10.0s` for the same ten seconds."""
    from tui import fmt
    assert [fmt.ms(v) for v in (999.4, 999.6, 1500.0, 9999.0, 10000.0, 12345.0)] == [
        "999ms", "1s", "1.5s", "10s", "10s", "12.3s"]
    assert [fmt.secs(v) for v in (0.0, 2.3, 10.0, 10.04, 125.0)] == ["0s", "2.3s", "10s", "10s", "125s"]


def test_the_gateways_answer_is_summed_up_in_words():
    """A disable's answer carries the whole target document; the notice says its id and state."""
    from tui.app import _answer_summary
    text = _answer_summary({"ok": True, "changed": True, "target": {
        "id": "openai/gpt-4.1", "state": "disabled", "vendor_kind": "openai", "p50_ms": 1.4}})
    assert text == "target openai/gpt-4.1 disabled"
