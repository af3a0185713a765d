"""Failover drills end to end: the report's figures against the fake vendor's counters and the request log."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from store.history import History

TOKEN = "drill-token-0099"
ENV = {"PATCHBAY_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(start_gateway, gateway_cfg):
    gateway_cfg["breaker"] = {"failures_to_open": 3, "cooldown": 0.5}
    gateway_cfg["prober"] = {"enabled": True, "interval": 0.2}
    return await start_gateway(gateway_cfg, env=ENV, with_prober=True)


@pytest.fixture
async def admin(gw):
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH, timeout=10) as c:
        yield c


async def finished(admin, did: str, timeout: float = 20) -> dict:
    """Poll until the drill is over and its recovery figure is settled."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        d = (await admin.get(f"/admin/drills/{did}")).json()
        if d["state"] != "running" and d["report"] and d["report"].get("recovery") != "watching":
            return d
        await asyncio.sleep(0.1)
    raise AssertionError(f"drill {did} did not finish: {d}")


async def drill_rows(admin, did: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        page = (await admin.get("/admin/requests", params={"drill_id": did, "limit": 1000,
                                                           **({"cursor": cursor} if cursor else {})})).json()
        rows += page["requests"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


async def test_hard_fail_drill_report_matches_vendor_and_request_log(gw, mock, admin):
    await asyncio.sleep(0.3)
    mock.reset_stats()
    r = await admin.post("/admin/drills", json={"target": "openai/gpt-4.1", "fault": "error:503",
                                                "duration": 1.5, "traffic": 20},
                         headers={"X-Patchbay-Operator": "erin"})
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    st = (await admin.get("/admin/state")).json()
    assert [d["id"] for d in st["drills"] if d["state"] == "running"] == [did]
    assert next(t for t in st["targets"] if t["id"] == "openai/gpt-4.1")["fault"]["drill_id"] == did

    d = await finished(admin, did)
    rep = d["report"]
    assert d["state"] == "done" and d["by"] == "127.0.0.1 (erin)"
    stats = mock.stats
    rows = await drill_rows(admin, did)
    # every synthetic request is in the log with the drill's id, and none failed for the client
    assert rep["synthetic"]["sent"] == rep["synthetic"]["ok"] == len(rows) == rep["requests"]
    assert 20 <= len(rows) <= 31
    assert rep["client_visible_errors"] == 0 == sum(1 for x in rows if x["outcome"] != "ok")
    # the fault is injected at the gateway: the vendor never saw a chat for the drilled target
    assert stats["chat"]["openai"] == {} and rep["answered_by_target"] == 0
    # every drill request was answered by the fallback, and the vendor saw exactly those
    assert rep["requests_rerouted"] == stats["chat"]["deepseek"]["deepseek-chat"] == len(rows)
    assert rep["answered_by"] == {"deepseek/deepseek-chat": len(rows)}
    # failed attempts stay hidden: the log shows them on the rows that retried
    # (>= 2: the first request's two attempts; a failed probe may open the breaker before a third)
    assert rep["failed_attempts"] == sum(x["attempts"] - 1 for x in rows) >= 2
    # the live figures the panel shows while the drill runs, counted as requests finished, agree
    assert d["live"] == {"requests": len(rows), "rerouted": rep["requests_rerouted"], "client_errors": 0,
                         "failed_attempts": rep["failed_attempts"]}
    for key in ("time_to_detect_s", "breaker_open_s", "time_to_failover_s", "time_back_to_normal_s"):
        assert rep[key] is not None and rep[key] >= 0, key
    assert rep["detected_by"] in ("breaker_open", "state_change", "probe_failed")
    assert rep["recovery"] == "recovered"
    assert gw.runtime.targets["openai/gpt-4.1"].breaker.state == "closed"
    assert gw.runtime.targets["openai/gpt-4.1"].fault is None

    # the stored drill row holds the same final report; drill events mark start and end
    await asyncio.to_thread(gw.store.flush, 5.0)
    h = History(gw.config.store.path)
    row = h.get_drill(did)
    assert row["state"] == "done" and row["report"] == rep and row["params"]["traffic"] == 20
    kinds = [(e["detail"]["state"]) for e in reversed(h.list_events(kind="drill"))]
    assert kinds == ["running", "done"]
    # the request detail shows the hidden failed attempts on the drilled target
    retried = next(x for x in rows if x["attempts"] > 1)
    detail = (await admin.get(f"/admin/requests/{retried['id']}")).json()
    assert detail["attempts"][0]["target"] == "openai/gpt-4.1" and detail["attempts"][0]["http_status"] == 503
    assert "drill" in detail["attempts"][0]["error"]
    assert detail["attempts"][-1]["target"] == "deepseek/deepseek-chat" and detail["attempts"][-1]["outcome"] == "ok"


async def test_latency_drill_reports_added_latency_on_the_target(gw, mock, admin):
    async with httpx.AsyncClient(base_url=gw.url) as data:
        for _ in range(5):  # a baseline minute for the route
            assert (await data.post("/v1/chat/completions", json=CHAT)).status_code == 200
    await asyncio.to_thread(gw.store.flush, 5.0)
    mock.reset_stats()
    r = await admin.post("/admin/drills", json={"target": "openai/gpt-4.1", "fault": "latency:300",
                                                "duration": 1.0, "traffic": 10})
    d = await finished(admin, r.json()["id"])
    rep = d["report"]
    # a slow vendor is still answering: no failover, the vendor saw every request
    assert rep["requests_rerouted"] == 0 and rep["client_visible_errors"] == 0
    assert rep["answered_by_target"] == rep["requests"] == mock.stats["chat"]["openai"]["gpt-4.1"]
    assert rep["p50_ms_before"] is not None and rep["p50_ms_before"] < 300
    assert rep["p50_ms_during"] >= 300 and rep["added_latency_ms"] >= 300 - rep["p50_ms_before"]


async def test_delete_cancels_a_drill_and_lifts_the_fault(gw, admin):
    r = await admin.post("/admin/drills", json={"target": "openai/gpt-4.1", "fault": "timeout", "duration": 60})
    did = r.json()["id"]
    t = gw.runtime.targets["openai/gpt-4.1"]
    assert t.fault is not None and t.fault.kind == "timeout"
    r = await admin.delete(f"/admin/drills/{did}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert t.fault is None
    async with httpx.AsyncClient(base_url=gw.url) as data:
        resp = await data.post("/v1/chat/completions", json=CHAT)
    assert resp.headers["x-patchbay-target"] == "openai/gpt-4.1"
    d = (await admin.get(f"/admin/drills/{did}")).json()
    assert d["state"] == "cancelled" and d["ended"] - d["started"] < 30


async def test_bad_drill_requests_are_clear_400_404_409(gw, admin):
    cases = [
        ({"fault": "error:503"}, 400, "target"),
        ({"target": "nope/x", "fault": "error:503"}, 404, "unknown target"),
        ({"target": "openai/gpt-4.1", "fault": "explode"}, 400, "unknown fault"),
        ({"target": "openai/gpt-4.1", "fault": "error:200"}, 400, "400-599"),
        ({"target": "openai/gpt-4.1"}, 400, "fault"),
        ({"target": "openai/gpt-4.1", "fault": "hang", "duration": 0}, 400, "duration"),
        ({"target": "openai/gpt-4.1", "fault": "hang", "duration": "10"}, 400, "duration"),
        ({"target": "openai/gpt-4.1", "fault": "hang", "traffic": 10_000}, 400, "traffic"),
    ]
    for body, status, words in cases:
        r = await admin.post("/admin/drills", json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["error"]["message"], (body, r.text)
    r = await admin.post("/admin/drills", json={"target": "openai/gpt-4.1", "fault": "hang", "duration": 30})
    assert r.status_code == 201
    r2 = await admin.post("/admin/drills", json={"target": "openai/gpt-4.1", "fault": "error:500", "duration": 30})
    assert r2.status_code == 409 and r.json()["id"] in r2.json()["error"]["message"]
    assert (await admin.get("/admin/drills/drill_nope")).status_code == 404
    assert (await admin.delete("/admin/drills/drill_nope")).status_code == 404
    listed = (await admin.get("/admin/drills")).json()["drills"]
    assert [d["id"] for d in listed] == [r.json()["id"]]


async def test_drills_outlive_a_restart_in_the_log(start_gateway, gateway_cfg):
    gw1 = await start_gateway(gateway_cfg, env=ENV)
    async with httpx.AsyncClient(base_url=gw1.admin_url, headers=AUTH) as admin:
        did = (await admin.post("/admin/drills", json={"target": "deepseek/deepseek-chat", "fault": "latency:50",
                                                       "duration": 60})).json()["id"]
    await gw1.stop()        # stopping the gateway ends the drill and lifts its fault
    gw2 = await start_gateway(gateway_cfg, env=ENV)
    assert gw2.runtime.targets["deepseek/deepseek-chat"].fault is None
    async with httpx.AsyncClient(base_url=gw2.admin_url, headers=AUTH) as admin:
        listed = (await admin.get("/admin/drills")).json()["drills"]
        assert [(d["id"], d["state"], d["fault"], d["duration"]) for d in listed] == \
            [(did, "cancelled", "latency:50", 60)]
        d = (await admin.get(f"/admin/drills/{did}")).json()
        assert d["state"] == "cancelled" and d["report"]["target"] == "deepseek/deepseek-chat"


async def test_a_drill_on_a_target_that_serves_nothing_says_it_exercised_nothing(gw, admin):
    """Issue 12: a disabled (not serving) target's drill warns instead of reporting a clean 0."""
    r = await admin.post("/admin/targets/openai%2Fgpt-4.1/disable", json={"reason": "maintenance"})
    assert r.status_code == 200
    r = await admin.post("/admin/drills", json={"target": "openai/gpt-4.1", "fault": "error:503", "duration": 0.3,
                                                 "traffic": 20})
    d = await finished(admin, r.json()["id"])
    rep = d["report"]
    assert rep["requests"] > 0 and rep["requests_rerouted"] == 0 and rep["serving_at_start"] == []
    assert rep["warnings"] and "serving no route when the drill started (it was disabled)" in rep["warnings"][0]
    rows = dict(d["report_rows"])
    assert rows["breaker open after"] == "never opened" and rows["requests rerouted"] == "0"
    from tui.ops import format_report
    assert "warning: openai/gpt-4.1 was serving no route" in format_report(d)


def test_added_latency_is_never_a_negative_latency():
    from gateway.control.drill_report import added_latency_words, report_rows
    assert [added_latency_words(v) for v in (None, -0.0, -0.4, 0.6, -100.4, 12.34, 1500.0)] == [
        "-", "none", "none", "none", "none (100ms faster)", "+12ms", "+1500ms"]
    rows = dict(report_rows({"requests": 5, "added_latency_ms": -3.25, "breaker_open_s": None}))
    assert rows["added latency (p50)"] == "none (3.2ms faster)" and rows["breaker open after"] == "never opened"
