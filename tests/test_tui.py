"""The TUI against a real gateway: fake vendors and the gateway on 127.0.0.1, port 0.

Every flow is driven with Textual's Pilot the way an operator would (keys), and
checked on both sides: what the screen shows, and what the gateway now does
(its admin state, its answers to real client requests, its SQLite log).
"""

from __future__ import annotations

import ast
import asyncio
import html
import pathlib
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select

from tests.conftest import base_config
from tui.app import MODIFYING_ACTIONS, PatchbayApp
from tui.client import AdminAuthError, AdminClient, AdminUnreachable
from tui.screens.dashboard import DashboardScreen
from tui.screens.detail import DetailScreen
from tui.screens.drill import DrillForm, DrillScreen
from tui.screens.help import HelpScreen, sections
from tui.screens.history import PAGE_SIZE, HistoryScreen
from tui.widgets.confirm import ConfirmModal
from tui.widgets.reqtable import RequestTable
from tui.widgets.routes import RoutePanel
from tui.widgets.tile import TargetTile

TOKEN = "admin-test-token"
ENV = {"PATCHBAY_ADMIN_TOKEN": TOKEN}
MSG = [{"role": "user", "content": "hello tui"}]
ROOT = pathlib.Path(__file__).resolve().parents[1]


def four_target_config(mock_url: str, tmp_path: pathlib.Path) -> dict[str, Any]:
    raw = base_config(mock_url, tmp_path)
    raw["routes"] = [{"name": "chat", "targets": [
        {"vendor": "openai", "model": "gpt-4.1"},
        {"vendor": "deepseek", "model": "deepseek-chat"},
        {"vendor": "anthropic", "model": "claude-sonnet-4-20250514"},
        {"vendor": "gemini", "model": "gemini-2.0-flash"},
    ]}]
    return raw


@pytest.fixture
async def gw(mock, tmp_path, start_gateway):
    return await start_gateway(four_target_config(mock.url, tmp_path), env=ENV)


async def wait_for(pilot: Pilot, cond: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll the UI until `cond()` is truthy; the timeout only bounds a failing test."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = cond()
        if value:
            await pilot.pause()          # let the screen repaint before anyone reads it
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def tiles(app: PatchbayApp) -> dict[str, TargetTile]:
    return {t.target_id: t for t in app.screen_stack[0].query(TargetTile)}


def _export_text(app: PatchbayApp) -> str:
    """Everything visible on the current screen as plain text (what an operator reads)."""
    svg = app.export_screenshot()
    text = re.sub(r"<[^>]+>", "", svg)
    return html.unescape(text).replace("\xa0", " ")


async def client_request(gw_url: str, model: str = "chat") -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw_url, timeout=20) as hc:
        return await hc.post("/v1/chat/completions", json={"model": model, "messages": MSG})


async def live_app(gw, pilot_size=(80, 24), **kw) -> PatchbayApp:
    return PatchbayApp(gw.admin_url, TOKEN, refresh=0.2, **kw)


# ------------------------------------------------------------------ boundary


def test_tui_talks_to_the_gateway_only_through_the_admin_api():
    """tui/ imports neither gateway/ nor store/: it must work against any reachable gateway."""
    bad = {}
    for path in (ROOT / "tui").rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        if names & {"gateway", "store", "aiohttp"}:
            bad[str(path)] = names & {"gateway", "store", "aiohttp"}
    assert not bad, bad


def test_every_binding_has_an_id():
    from tui.screens.detail import DetailScreen as D
    from tui.screens.drill import DrillTable
    from tui.widgets.reqtable import RequestTable
    classes = [PatchbayApp, DashboardScreen, RoutePanel, HistoryScreen, RequestTable, D,
               DrillScreen, DrillTable, DrillForm, ConfirmModal, HelpScreen]
    missing = [(c.__name__, b.key) for c in classes for b in c.BINDINGS if not b.id]
    assert not missing, missing
    ids = [b.id for c in classes for b in c.BINDINGS]
    assert len(ids) == len(set(ids)), "binding ids must be unique"


# ------------------------------------------------------------------ client


async def test_client_reports_wrong_token_and_unreachable(gw):
    bad = AdminClient(gw.admin_url, "wrong")
    with pytest.raises(AdminAuthError) as err:
        await bad.state()
    assert err.value.status == 401 and "wrong" not in err.value.message.lower().replace(
        "wrong admin token", "")
    await bad.aclose()
    good = AdminClient(gw.admin_url, TOKEN)
    st = await good.state()
    assert [t["id"] for t in st["targets"]][0] == "openai/gpt-4.1"
    await good.aclose()
    # a port nobody listens on: take one the OS gave the gateway, after the gateway is gone
    port = int(gw.admin_url.rsplit(":", 1)[1])
    await gw.stop()
    gone = AdminClient(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    with pytest.raises(AdminUnreachable):
        await gone.state()
    await gone.aclose()


# ------------------------------------------------------------------ dashboard


async def test_dashboard_shows_every_target_and_the_route(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "four tiles")
        assert list(tiles(app)) == ["openai/gpt-4.1", "deepseek/deepseek-chat",
                                    "anthropic/claude-sonnet-4-20250514", "gemini/gemini-2.0-flash"]
        assert app.state.route("chat").serving == "openai/gpt-4.1"
        text = await wait_for(pilot, lambda: "HEALTHY" in (t := _export_text(app)) and t,
                              "tiles painted")
        assert "▶" in text and "chat" in text
        # traffic through the gateway shows up on the serving tile (rpm from the admin state)
        for _ in range(5):
            assert (await client_request(gw.url)).status_code == 200
        await wait_for(pilot, lambda: (tiles(app)["openai/gpt-4.1"].target.rpm or 0) > 0,
                       "rpm on the openai tile")


async def test_tiles_reflow_with_the_terminal_width(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        grid = app.screen.query_one("#tiles")
        await wait_for(pilot, lambda: grid.styles.grid_size_columns == 2, "2 columns at 80")
        await pilot.resize_terminal(200, 50)
        await wait_for(pilot, lambda: grid.styles.grid_size_columns >= 3, "3+ columns at 200")
        assert app.screen.has_class("-wide")


# ------------------------------------------------------------------ reorder


async def test_reorder_changes_the_gateway_order(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("o")                       # to the route panel, cursor on openai
        panel = app.screen.query_one(RoutePanel)
        assert panel.has_focus and panel.current.target == "openai/gpt-4.1"
        await pilot.press("J", "ctrl+down")          # openai: 1 -> 2 -> 3
        assert panel.has_draft()
        assert list(gw.runtime.routes["chat"].order)[0] == "openai/gpt-4.1"   # nothing sent yet
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm modal")
        await pilot.press("y")
        expected = ["deepseek/deepseek-chat", "anthropic/claude-sonnet-4-20250514",
                    "openai/gpt-4.1", "gemini/gemini-2.0-flash"]
        await wait_for(pilot, lambda: list(gw.runtime.routes["chat"].order) == expected,
                       "gateway order changed")
        # the panel shows the gateway's answer, not a local draft
        await wait_for(pilot, lambda: not panel.has_draft()
                       and list(app.state.route("chat").order) == expected, "panel = gateway")
        # K moves back up; esc discards a draft without sending anything
        await pilot.press("k", "K")
        assert panel.has_draft()
        await pilot.press("escape")
        assert not panel.has_draft()
        assert list(gw.runtime.routes["chat"].order) == expected
        # a real request now goes to the new first target
        r = await client_request(gw.url)
        assert r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"


async def test_reorder_answer_no_leaves_the_gateway_alone(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("o", "J", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm modal")
        await pilot.press("n")
        await pilot.pause(0.3)
        assert list(gw.runtime.routes["chat"].order)[0] == "openai/gpt-4.1"
        assert app.screen.query_one(RoutePanel).has_draft()   # still there to apply or discard


# ------------------------------------------------------------------ disable / enable


async def test_disable_target_with_reason_then_requests_skip_it_then_enable(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        assert app.focused is tiles(app)["openai/gpt-4.1"]
        await pilot.press("d")
        modal = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal) and app.screen,
                               "confirm modal")
        body = _export_text(app)
        assert "Disable openai/gpt-4.1?" in body and "requests/min" in body
        await pilot.press("r")
        await pilot.press(*"vendor outage")
        await pilot.press("enter")
        target = gw.runtime.targets["openai/gpt-4.1"]
        await wait_for(pilot, lambda: target.disabled, "gateway disabled the target")
        assert target.disabled_reason == "vendor outage" and modal.reason == "vendor outage"
        tile = tiles(app)["openai/gpt-4.1"]
        await wait_for(pilot, lambda: tile.has_class("-is-disabled"), "tile shows disabled")
        assert "DISABLED" in _export_text(app)
        # disable -> new requests skip the target
        r = await client_request(gw.url)
        assert r.status_code == 200 and r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
        await pilot.press("e")
        await wait_for(pilot, lambda: not target.disabled, "gateway enabled the target")
        await wait_for(pilot, lambda: not tile.has_class("-is-disabled"), "tile back to normal")
        r = await client_request(gw.url)
        assert r.headers["x-patchbay-target"] == "openai/gpt-4.1"


async def test_disable_answer_no_changes_nothing(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm modal")
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DashboardScreen)
        assert not gw.runtime.targets["openai/gpt-4.1"].disabled


async def test_disable_whole_vendor(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("j")                       # deepseek tile
        assert app.focused is tiles(app)["deepseek/deepseek-chat"]
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm modal")
        assert "vendor deepseek" in _export_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: gw.runtime.targets["deepseek/deepseek-chat"].disabled,
                       "vendor disabled")
        await wait_for(pilot, lambda: app.state.target("deepseek/deepseek-chat").disabled,
                       "state shows it")
        await pilot.press("E")                       # enable the whole vendor again
        await wait_for(pilot, lambda: not gw.runtime.targets["deepseek/deepseek-chat"].disabled,
                       "vendor enabled")


# ------------------------------------------------------------------ drills


async def test_drill_form_confirm_live_view_and_report(gw, mock):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("D")
        form = await wait_for(pilot, lambda: isinstance(app.screen, DrillForm) and app.screen,
                              "drill form")
        assert form.query_one("#df-target", Select).value == "openai/gpt-4.1"
        form.query_one("#df-duration", Input).value = "6"   # long enough to be seen running on a busy machine
        form.query_one("#df-traffic", Input).value = "10"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "drill confirm")
        assert "error:503" in _export_text(app)
        await pilot.press("y")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, DrillScreen) and app.screen,
                                "drill screen")
        await wait_for(pilot, lambda: screen.detail and screen.detail.get("state") == "running",
                       "running drill shown")
        assert "left" in _export_text(app) or "ending" in _export_text(app)
        await wait_for(pilot, lambda: screen.detail.get("state") == "done"
                       and screen.detail.get("report"), "report", timeout=30)
        text = _export_text(app)
        assert "Report" in text and "requests rerouted" in text
        report = screen.detail["report"]
        assert report["requests"] > 0
        # the past drill is listed
        assert screen.query_one(DataTable).row_count >= 1


# ------------------------------------------------------------------ history


async def _make_history(gw, mock, n_ok: int = 110, n_failover: int = 1) -> None:
    async with httpx.AsyncClient(base_url=gw.url, timeout=20) as hc:
        for i in range(0, n_ok, 20):
            rs = await asyncio.gather(*(hc.post("/v1/chat/completions",
                                                json={"model": "chat", "messages": MSG})
                                        for _ in range(min(20, n_ok - i))))
            assert all(r.status_code == 200 for r in rs)
        mock.set_fault("error", model="gpt-4.1", status=503, times=2 * n_failover)
        for _ in range(n_failover):
            r = await hc.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
            assert r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
    gw.runtime.store.flush() if hasattr(gw.runtime.store, "flush") else None


async def test_history_keyset_paging_filters_search_and_detail(gw, mock):
    await _make_history(gw, mock)
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("h")
        hist = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen,
                              "history screen")
        await wait_for(pilot, lambda: len(hist.rows) == PAGE_SIZE, "first page", timeout=20)
        page1 = [r["id"] for r in hist.rows]
        assert hist.query_one(RequestTable).row_count == PAGE_SIZE
        await pilot.press("n")
        await wait_for(pilot, lambda: len(hist.stack) == 2 and not hist.is_loading, "page 2")
        page2 = [r["id"] for r in hist.rows]
        assert not set(page1) & set(page2) and page2[0] < page1[-1]   # newest first, no overlap
        await pilot.press("n")
        await wait_for(pilot, lambda: len(hist.stack) == 3 and not hist.is_loading, "page 3")
        assert len(hist.rows) == 111 - 2 * PAGE_SIZE and hist.next_cursor is None
        await pilot.press("n")                       # past the end: stays
        await pilot.pause(0.2)
        assert len(hist.stack) == 3
        await pilot.press("b")
        await wait_for(pilot, lambda: len(hist.stack) == 2 and not hist.is_loading, "back to 2")
        assert [r["id"] for r in hist.rows] == page2
        await pilot.press("b")
        await wait_for(pilot, lambda: len(hist.stack) == 1 and not hist.is_loading, "back to 1")
        assert [r["id"] for r in hist.rows] == page1

        # filter by target (typed into the filter bar)
        await pilot.press("f", "tab")                # route -> target input
        assert app.focused.id == "f-target"
        await pilot.press(*"deepseek/deepseek-chat", "enter")
        await wait_for(pilot, lambda: hist.filters.target == "deepseek/deepseek-chat"
                       and not hist.is_loading and len(hist.rows) == 1, "target filter")
        assert {r["final_target"] for r in hist.rows} == {"deepseek/deepseek-chat"}
        assert all(r["failovers"] == 1 for r in hist.rows)

        # enter opens the detail with the attempt chain as a timeline
        await pilot.press("enter")
        detail = await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen)
                                and app.screen.data and app.screen, "detail")
        assert [a["target"] for a in detail.data["attempts"]] == [
            "openai/gpt-4.1", "openai/gpt-4.1", "deepseek/deepseek-chat"]
        text = _export_text(app)
        assert "#1 openai/gpt-4.1" in text and "#3 deepseek/deepseek-chat" in text
        assert "█" in text and "Attempt chain" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is hist, "back to history")

        # outcome + free text search; x clears
        await pilot.press("x")
        await wait_for(pilot, lambda: hist.filters.is_empty() and len(hist.rows) == PAGE_SIZE,
                       "cleared")
        await pilot.press("slash")
        assert app.focused.id == "f-q"
        await pilot.press(*"nothing-matches-this", "enter")
        await wait_for(pilot, lambda: hist.filters.q == "nothing-matches-this"
                       and not hist.is_loading and hist.rows == [], "no rows for q")
        assert "no requests match" in _export_text(app)
        await pilot.press("x")
        await wait_for(pilot, lambda: len(hist.rows) == PAGE_SIZE, "cleared again")
        hist.query_one("#f-outcome", Input).value = "error"
        hist.query_one("#f-since", Input).value = "1h"
        await pilot.press("slash", "enter")
        await wait_for(pilot, lambda: hist.filters.outcome == "error" and not hist.is_loading,
                       "outcome filter")
        assert hist.rows == [] and hist.filters.since
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "dashboard")


# ------------------------------------------------------------------ connection trouble


async def test_unreachable_gateway_shows_a_calm_screen_and_reconnects(mock, tmp_path,
                                                                       start_gateway):
    raw = four_target_config(mock.url, tmp_path)
    gw1 = await start_gateway(raw, env=ENV)
    port = gw1.admin_port
    app = PatchbayApp(gw1.admin_url, TOKEN, refresh=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await gw1.stop()
        await wait_for(pilot, lambda: app.connected is False, "offline noticed")
        text = _export_text(app)
        assert "Cannot reach the gateway" in text and "Retrying" in text
        assert "Traceback" not in text
        # the gateway comes back on the same address: the TUI reattaches by itself
        raw2 = four_target_config(mock.url, tmp_path)
        raw2["server"]["admin_listen"] = f"127.0.0.1:{port}"
        await start_gateway(raw2, env=ENV)
        await pilot.press("R")                       # retry now instead of waiting
        await wait_for(pilot, lambda: app.connected is True, "reconnected")
        await wait_for(pilot, lambda: app.screen.query_one("#dash-main").display, "tiles back")


async def test_nothing_listening_at_start(gw):
    port = gw.admin_port
    await gw.stop()
    app = PatchbayApp(f"http://127.0.0.1:{port}", TOKEN, refresh=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.connected is False, "offline")
        assert "Cannot reach the gateway" in _export_text(app)
        await pilot.press("h")                       # other views say so too, no crash
        hist = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen,
                              "history")
        await wait_for(pilot, lambda: "cannot reach" in hist._problem, "history problem")
        await pilot.press("escape", "q")


async def test_wrong_token_says_so_without_echoing_it(gw):
    app = PatchbayApp(gw.admin_url, "not-the-token", refresh=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.connected is False, "refused")
        text = _export_text(app)
        assert "refused the admin token" in text and "PATCHBAY_ADMIN_TOKEN" in text
        assert "not-the-token" not in text and TOKEN not in text


# ------------------------------------------------------------------ readonly, help, palette, pause


async def test_readonly_removes_every_modifying_action(gw):
    app = PatchbayApp(gw.admin_url, TOKEN, readonly=True, refresh=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        text = _export_text(app)
        assert "READONLY" in text and "Disable" not in text and "Drill" not in text
        for key in ("d", "v", "D"):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert isinstance(app.screen, DashboardScreen), key
        await pilot.press("o", "J", "K", "ctrl+up")
        await pilot.pause(0.2)
        assert not app.screen.query_one(RoutePanel).has_draft()
        await pilot.press("escape", "e", "E")
        await pilot.pause(0.2)
        assert not any(t.disabled for t in gw.runtime.targets.values())
        assert list(gw.runtime.routes["chat"].order)[0] == "openai/gpt-4.1"
        # help lists no modifying key, palette offers no modifying command
        changing = ("Disable", "Enable", "Start", "Move", "Apply", "Discard", "Stop", "New drill")
        ro_rows = [d for _, rows in sections(True) for _, d in rows]
        rw_rows = [d for _, rows in sections(False) for _, d in rows]
        assert [d for d in ro_rows if d.startswith(changing)] == []
        assert len([d for d in rw_rows if d.startswith(changing)]) >= 8   # they do exist
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not [t for t in titles if t.startswith(("Disable", "Enable", "Start a drill",
                                                        "Reorder"))]
        assert "History" in titles
        # the drills view shows reports but offers no stop / new
        await pilot.press("r")
        drills = await wait_for(pilot, lambda: isinstance(app.screen, DrillScreen) and app.screen,
                                "drills")
        assert drills.check_action("cancel_drill", ()) is False
        assert drills.check_action("new_drill", ()) is False
    assert {"disable_target", "disable_vendor", "drill_form"} <= MODIFYING_ACTIONS


async def test_help_palette_and_pause(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        text = await wait_for(pilot, lambda: "Everywhere" in (t := _export_text(app)) and t, "help painted")
        assert "Everywhere" in text and "Request history" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "help closed")
        # ':' opens Textual's command palette with views and actions
        await pilot.press("colon")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")
        titles = [c.title for c in app.get_system_commands(app.screen_stack[0])]
        assert {"Dashboard", "History", "Drills", "Help"} <= set(titles)
        assert "Disable target openai/gpt-4.1" in titles and "Disable vendor gemini" in titles
        await pilot.press(*"history")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "history via palette")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "back")
        # pause: gateway changes are not painted until resumed
        await pilot.press("p")
        assert app.paused and "PAUSED" in _export_text(app)
        async with httpx.AsyncClient(base_url=gw.admin_url,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as hc:
            r = await hc.post("/admin/targets/gemini%2Fgemini-2.0-flash/disable",
                              json={"reason": "elsewhere"})
            assert r.status_code == 200
        await wait_for(pilot, lambda: app.state.target("gemini/gemini-2.0-flash").disabled,
                       "state received while paused")
        await pilot.pause(0.5)
        tile = tiles(app)["gemini/gemini-2.0-flash"]
        assert not tile.has_class("-is-disabled")      # frozen on screen
        await pilot.press("p")
        await wait_for(pilot, lambda: tile.has_class("-is-disabled"), "painted after resume")
        # the operator event from the other client shows in the feed
        feed = app.screen.query_one("#events")
        await wait_for(pilot, lambda: feed.count >= 1, "event in feed")


# ------------------------------------------------------------------ 16 colours, NO_COLOR


async def test_sixteen_colour_terminal_gets_the_ansi_theme(gw, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("COLORTERM", raising=False)
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        assert app.theme == "ansi-dark"       # the terminal's own red, not RGB squeezed to magenta
    monkeypatch.setenv("TERM", "xterm-256color")
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        assert app.theme != "ansi-dark"


def test_no_color_turns_alarm_colours_into_weight(monkeypatch):
    from rich.text import Text

    from tui import fmt
    t = Text()
    t.append("⊘ OPEN", style="bold red")
    t.append(" 503 overloaded", style="red")
    t.append(" ● healthy", style="green")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert fmt.mono(t) is t
    monkeypatch.setenv("NO_COLOR", "1")
    spans = fmt.mono(t).spans
    assert spans[0].style.reverse and spans[0].style.bold and spans[0].style.color is None
    assert spans[1].style.underline and spans[1].style.color is None
    assert spans[2].style.color is None and not spans[2].style.bold


async def test_no_color_dashboard_shows_open_target_inverted(monkeypatch):
    from tests.test_tui_support import RecordedAdmin, degraded_state
    monkeypatch.setenv("NO_COLOR", "1")
    srv = RecordedAdmin(state=degraded_state()).start()
    try:
        app = PatchbayApp(srv.url, srv.token, refresh=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: len(tiles(app)) == 5, "tiles")
            tile = tiles(app)["openai/gpt-4.1"]
            await wait_for(pilot, lambda: "OPEN" in tile.render().plain, "tile text")
            head = tile.render()
            styles = [s.style for s in head.spans if head.plain[s.start:s.end].endswith("OPEN")]
            assert styles and styles[0].reverse and styles[0].color is None
    finally:
        srv.stop()


async def test_pointing_at_the_client_api_instead_of_admin_says_so(gw):
    app = PatchbayApp(gw.url, TOKEN, refresh=0.2)        # the data listener, not admin_listen
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.connected is False, "refused")
        text = _export_text(app)
        assert "not as a Patchbay admin API" in text and "admin_listen" in text
        assert "Traceback" not in text


async def test_repeated_events_are_counted_on_one_line(monkeypatch):
    from tests.test_tui_support import RecordedAdmin, healthy_state
    from tui.widgets.events import EventFeed
    ev = {"kind": "failover", "ts": 1_764_096_000.0, "target": "openai/gpt-4.1", "route": "chat",
          "detail": {"to": "deepseek/deepseek-chat", "reason": "server 503"}}
    srv = RecordedAdmin(state=healthy_state()).start()
    try:
        app = PatchbayApp(srv.url, srv.token, refresh=0.2)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: len(tiles(app)) == 5, "tiles")
            feed = app.screen_stack[0].query_one(EventFeed)
            await wait_for(pilot, lambda: feed.size.width > 0, "feed laid out")
            for e in [ev] * 5 + [{**ev, "kind": "breaker", "detail": {"from": "closed",
                                                                      "to": "open"}}, ev]:
                srv.push_event(e)
            await wait_for(pilot, lambda: feed.count >= 7, "events")
            joined = "\n".join(strip.text for strip in feed.lines)
            assert joined.count("failover chat openai/gpt-4.1") == 2
            assert "×5" in joined and "breaker closed → open" in joined
    finally:
        srv.stop()


def test_history_time_filters_accept_what_operators_type(monkeypatch):
    import time as _time

    from tui.screens.history import parse_when
    monkeypatch.setenv("TZ", "UTC")
    _time.tzset()
    try:
        now = 1_764_096_000.0                          # 2025-11-25 18:40:00 UTC
        assert float(parse_when("15m", now)) == now - 900
        assert float(parse_when("2h", now)) == now - 7200
        assert float(parse_when("18:30", now)) == now - 600
        assert float(parse_when("2025-11-25 18:00", now)) == now - 2400
        assert float(parse_when("1764000000", now)) == 1764000000
        assert parse_when("", now) == ""
        with pytest.raises(ValueError, match="not a time"):
            parse_when("yesterday", now)
    finally:
        monkeypatch.undo()
        _time.tzset()


def test_target_ids_keep_the_vendor_and_cut_the_model_end():
    """Issue 12: `ope/`, `dee/` said nothing; the vendor stays whole, the model's end gives way."""
    from tui.fmt import target_clip
    assert target_clip("openai/gpt-4.1", 14) == "openai/gpt-4.1"
    assert target_clip("anthropic/claude-sonnet-4-20250514", 24) == "anthropic/claude-sonnet…"
    assert target_clip("deepseek/deepseek-chat", 17) == "deepseek/deepsee…"


async def test_global_keys_wait_while_a_question_is_open(gw):
    app = await live_app(gw)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(tiles(app)) == 4, "tiles")
        await pilot.press("d")
        modal = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal) and app.screen,
                               "confirm modal")
        await pilot.press("h", "D", "p")           # (r would start typing a reason)
        await pilot.pause(0.2)
        assert app.screen is modal and not app.paused
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), "back")
        assert not gw.runtime.targets["openai/gpt-4.1"].disabled
