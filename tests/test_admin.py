"""Admin API against a real gateway and real fake vendors: auth, state, operator controls, SSE, history."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import httpx
import pytest

from store.history import History
from store.records import AttemptRow, RequestRow
from store.sink import Sink

TOKEN = "adm-7f3c-secret-token-value"
ENV = {"PATCHBAY_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(start_gateway, gateway_cfg):
    return await start_gateway(gateway_cfg, env=ENV)


@pytest.fixture
async def admin(gw):
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH, timeout=10) as c:
        yield c


@pytest.fixture
async def data(gw):
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        yield c


async def flush(gw) -> None:
    await asyncio.to_thread(gw.store.flush, 5.0)


ENDPOINTS = [
    ("GET", "/admin/state"), ("GET", "/admin/events"), ("GET", "/admin/events/recent"),
    ("POST", "/admin/routes/chat/order"), ("POST", "/admin/targets/openai/gpt-4.1/disable"),
    ("POST", "/admin/targets/openai%2Fgpt-4.1/enable"), ("POST", "/admin/vendors/openai/disable"),
    ("POST", "/admin/vendors/openai/enable"), ("POST", "/admin/drills"), ("GET", "/admin/drills"),
    ("GET", "/admin/drills/drill_x"), ("DELETE", "/admin/drills/drill_x"), ("GET", "/admin/requests"),
    ("GET", "/admin/requests/req_x"), ("GET", "/admin/no-such-path"), ("GET", "/"),
]


async def test_every_endpoint_refuses_missing_or_wrong_token(gw, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + TOKEN
    async with httpx.AsyncClient(base_url=gw.admin_url, timeout=5) as c:
        for method, path in ENDPOINTS:
            for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
                r = await c.request(method, path, headers=headers, json={"order": []})
                assert r.status_code == 401, (method, path, headers, r.text)
                body = r.json()
                assert body["error"]["code"] == "invalid_admin_token"
                assert TOKEN not in r.text and wrong not in r.text
                assert TOKEN not in str(r.headers)
        # the right token opens the same door
        r = await c.get("/admin/state", headers=AUTH)
        assert r.status_code == 200
        assert TOKEN not in r.text
        # operator actions with the right token are recorded (who, what) but the token is not
        r = await c.post("/admin/targets/openai%2Fgpt-4.1/disable", headers=AUTH, json={"reason": "r"})
        assert r.status_code == 200 and TOKEN not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert TOKEN not in logged and wrong not in logged
    await flush(gw)
    db = gw.config.store.path
    files = [p for p in (db, db + "-wal", gw.config.overrides_path) if os.path.exists(p)]
    assert len(files) >= 2
    for path in files:
        with open(path, "rb") as fh:
            assert TOKEN.encode() not in fh.read(), path


async def test_state_has_the_design_shape(admin, data):
    r = await data.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    st = (await admin.get("/admin/state")).json()
    assert st["routes"] == [{"name": "chat", "order": ["openai/gpt-4.1", "deepseek/deepseek-chat"],
                             "serving": "openai/gpt-4.1",
                             "config_order": ["openai/gpt-4.1", "deepseek/deepseek-chat"],
                             "overridden": False, "fallback_response": False}]
    ids = [t["id"] for t in st["targets"]]
    assert ids == ["openai/gpt-4.1", "deepseek/deepseek-chat"]
    top = st["targets"][0]
    for key in ("vendor", "model", "state", "disabled", "breaker", "p50_ms", "p95_ms", "success_rate", "rpm",
                "cost_per_hour", "last_error", "latency_series", "inflight", "disabled_reason", "prefill"):
        assert key in top, key
    assert (top["vendor"], top["model"], top["state"], top["breaker"]) == ("openai", "gpt-4.1", "healthy", "closed")
    assert top["success_rate"] == 1.0 and top["rpm"] == 1.0 and top["p50_ms"] is not None
    assert top["cost_per_hour"] > 0
    assert st["store"]["ok"] is True and st["store"]["rows_not_written"] == 0
    assert st["drills"] == []
    assert st["gateway"]["uptime_s"] >= 0 and st["gateway"]["version"]
    assert st["overrides"]["ok"] is True


async def test_route_order_takes_effect_and_rejects_non_permutations(gw, admin, data):
    new = ["deepseek/deepseek-chat", "openai/gpt-4.1"]
    r = await admin.post("/admin/routes/chat/order", json={"order": new},
                         headers={"X-Patchbay-Operator": "alice"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["order"] == new and body["serving"] == "deepseek/deepseek-chat" and body["overridden"] is True
    resp = await data.post("/v1/chat/completions", json=CHAT)
    assert resp.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
    assert resp.json()["model"] == "deepseek-chat"

    bad = [
        ({"order": []}, 400, "no target listed"),
        ({"order": ["openai/gpt-4.1", "openai/gpt-4.1"]}, 400, "repeated"),
        ({"order": ["openai/gpt-4.1", "deepseek/deepseek-chat", "gemini/x"]}, 400, "not in this route"),
        ({"order": "openai/gpt-4.1"}, 400, "list of target ids"),
        ({}, 400, "order"),
    ]
    for payload, status, words in bad:
        r = await admin.post("/admin/routes/chat/order", json=payload)
        assert r.status_code == status, (payload, r.text)
        assert words in r.json()["error"]["message"]
    r = await admin.post("/admin/routes/nope/order", json={"order": []})
    assert r.status_code == 404 and "chat" in r.json()["error"]["message"]
    r = await admin.post("/admin/routes/chat/order", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await admin.post("/admin/routes/chat/order", json=[1, 2])
    assert r.status_code == 400
    # the rejected attempts changed nothing
    st = (await admin.get("/admin/state")).json()
    assert st["routes"][0]["order"] == new


    await flush(gw)
    ops = History(gw.config.store.path).list_events(kind="operator")
    assert ops and ops[0]["detail"]["action"] == "order" and ops[0]["detail"]["order"] == new
    assert ops[0]["detail"]["who"] == "127.0.0.1 (alice)"
    assert ops[0]["route"] == "chat"


async def test_disable_skips_target_at_once_and_enable_brings_it_back(gw, mock, admin, data):
    r = await admin.post("/admin/targets/openai%2Fgpt-4.1/disable", json={"reason": "incident 42"})
    assert r.status_code == 200, r.text
    t = r.json()["target"]
    assert (t["disabled"], t["state"], t["disabled_reason"]) == (True, "disabled", "incident 42")
    mock.reset_stats()
    for _ in range(5):
        resp = await data.post("/v1/chat/completions", json=CHAT)
        assert resp.status_code == 200
        assert resp.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
        assert resp.headers["x-patchbay-attempts"] == "1"
    assert mock.stats["chat"]["openai"] == {}
    assert mock.stats["chat"]["deepseek"] == {"deepseek-chat": 5}
    st = (await admin.get("/admin/state")).json()
    assert st["routes"][0]["serving"] == "deepseek/deepseek-chat"
    # raw slash form works too
    r = await admin.post("/admin/targets/openai/gpt-4.1/enable")
    assert r.status_code == 200 and r.json()["target"]["disabled"] is False
    resp = await data.post("/v1/chat/completions", json=CHAT)
    assert resp.headers["x-patchbay-target"] == "openai/gpt-4.1"

    r = await admin.post("/admin/targets/openai/nope/disable", json={})
    assert r.status_code == 404 and "openai/gpt-4.1" in r.json()["error"]["message"]
    r = await admin.post("/admin/targets/openai/gpt-4.1/disable", json={"reason": 5})
    assert r.status_code == 400
    await flush(gw)
    ops = History(gw.config.store.path).list_events(kind="operator")
    assert [e["detail"]["action"] for e in ops[:2]] == ["enable", "disable"]
    assert ops[1]["target"] == "openai/gpt-4.1" and ops[1]["detail"]["reason"] == "incident 42"
    assert ops[1]["detail"]["who"] == "127.0.0.1"


async def test_vendor_disable_covers_every_target_of_the_vendor(mock, start_gateway, gateway_cfg):
    gateway_cfg["routes"] = [
        {"name": "chat", "targets": [{"vendor": "openai", "model": "gpt-4.1"},
                                     {"vendor": "openai", "model": "gpt-4o"},
                                     {"vendor": "deepseek", "model": "deepseek-chat"}]},
        {"name": "mini", "targets": [{"vendor": "openai", "model": "gpt-4o-mini"},
                                     {"vendor": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
    ]
    g2 = await start_gateway(gateway_cfg, env=ENV)
    async with httpx.AsyncClient(base_url=g2.admin_url, headers=AUTH) as admin, \
            httpx.AsyncClient(base_url=g2.url) as data:
        r = await admin.post("/admin/vendors/openai/disable", json={"reason": "openai outage"})
        assert r.status_code == 200, r.text
        assert sorted(r.json()["changed"]) == ["openai/gpt-4.1", "openai/gpt-4o", "openai/gpt-4o-mini"]
        mock.reset_stats()
        a = await data.post("/v1/chat/completions", json=CHAT)
        b = await data.post("/v1/chat/completions", json={**CHAT, "model": "mini"})
        assert a.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
        assert b.headers["x-patchbay-target"] == "anthropic/claude-3-5-haiku-20241022"
        assert mock.stats["chat"]["openai"] == {}
        st = (await admin.get("/admin/state")).json()
        states = {t["id"]: t["state"] for t in st["targets"]}
        assert states["openai/gpt-4o"] == "disabled" and states["deepseek/deepseek-chat"] == "healthy"
        r = await admin.post("/admin/vendors/openai/enable")
        assert r.status_code == 200
        a = await data.post("/v1/chat/completions", json=CHAT)
        assert a.headers["x-patchbay-target"] == "openai/gpt-4.1"
        r = await admin.post("/admin/vendors/nobody/disable")
        assert r.status_code == 404


async def test_sse_stream_delivers_state_and_operator_events(gw, admin):
    got: list[tuple[str, object]] = []

    async def read() -> None:
        async with admin.stream("GET", "/admin/events", timeout=httpx.Timeout(10, read=10)) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    got.append((event, json.loads(line[6:])))
                    if event == "operator":
                        return

    reader = asyncio.create_task(read())
    for _ in range(100):
        if any(e == "state" for e, _ in got):
            break
        await asyncio.sleep(0.02)
    assert any(e == "state" for e, _ in got)
    state = next(d for e, d in got if e == "state")
    assert state["routes"][0]["name"] == "chat" and len(state["targets"]) == 2
    r = await admin.post("/admin/targets/deepseek%2Fdeepseek-chat/disable", json={"reason": "sse test"},
                         headers={"X-Patchbay-Operator": "bob"})
    assert r.status_code == 200
    await asyncio.wait_for(reader, 5)
    op = next(d for e, d in got if e == "operator")
    assert set(op) == {"ts", "kind", "target", "route", "detail", "request_id"}
    assert op["target"] == "deepseek/deepseek-chat" and op["detail"]["action"] == "disable"
    assert op["detail"]["who"] == "127.0.0.1 (bob)" and op["detail"]["reason"] == "sse test"
    # the subscription is gone once the client left
    for _ in range(100):
        if not gw.runtime._subscribers:
            break
        await asyncio.sleep(0.02)
    assert not gw.runtime._subscribers


async def test_request_detail_has_the_attempt_chain_and_failover_event(gw, mock, admin, data):
    mock.set_fault("error:503", model="gpt-4.1")
    r = await data.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
    rid = r.headers["x-request-id"]
    await flush(gw)
    d = (await admin.get(f"/admin/requests/{rid}")).json()
    assert d["id"] == rid and d["outcome"] == "ok" and d["final_target"] == "deepseek/deepseek-chat"
    chain = [(a["n"], a["target"], a["outcome"], a["http_status"]) for a in d["attempts"]]
    assert chain == [(1, "openai/gpt-4.1", "server", 503), (2, "openai/gpt-4.1", "server", 503),
                     (3, "deepseek/deepseek-chat", "ok", 200)]
    assert [e["kind"] for e in d["events"]] == ["failover"]
    assert d["events"][0]["detail"]["to"] == "deepseek/deepseek-chat"
    r = await admin.get("/admin/requests/req_0123456789abffff")
    assert r.status_code == 404
    listed = (await admin.get("/admin/requests", params={"target": "deepseek/deepseek-chat"})).json()
    assert [x["id"] for x in listed["requests"]] == [rid] and listed["next_cursor"] is None


def _rows(n: int, t0: float) -> list:
    out = []
    for i in range(n):
        rid = f"req_{int((t0 + i) * 1000):012x}{i:010x}"
        outcome = "error" if i % 10 == 0 else "ok"
        target = "openai/gpt-4.1" if i % 3 else "deepseek/deepseek-chat"
        out.append(RequestRow(id=rid, ts=t0 + i * 0.01, route="chat" if i % 2 else "other", stream=False,
                              outcome=outcome, http_status=200 if outcome == "ok" else 503,
                              final_target=target, attempts=1, latency_ms=10.0 + i % 50,
                              error_class="server" if outcome == "error" else None,
                              error_message="upstream 503 overloaded" if outcome == "error" else None))
        out.append(AttemptRow(rid, 1, target, t0 + i * 0.01, 10.0, "ok" if outcome == "ok" else "server"))
    return out


async def test_history_pages_over_ten_thousand_rows(gw, admin):
    n = 12_345
    t0 = time.time() - 3600
    sink = Sink(gw.config.store.path)
    sink.open()
    rows = _rows(n, t0)
    for i in range(0, len(rows), 5000):
        sink.write(rows[i:i + 5000])
    sink.close()

    seen: list[tuple[float, str]] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        r = await admin.get("/admin/requests", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen.extend((x["ts"], x["id"]) for x in page["requests"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 13
    assert len(seen) == n and len(set(i for _, i in seen)) == n
    assert seen == sorted(seen, reverse=True)

    # filters: route + outcome, paged in smaller pages
    ids: list[str] = []
    cursor = None
    while True:
        params = {"route": "chat", "outcome": "error", "limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await admin.get("/admin/requests", params=params)).json()
        assert all(x["route"] == "chat" and x["outcome"] == "error" for x in page["requests"])
        ids.extend(x["id"] for x in page["requests"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = sum(1 for i in range(n) if i % 10 == 0 and i % 2)
    assert len(ids) == len(set(ids)) == expected
    # time window and free text
    page = (await admin.get("/admin/requests", params={"since": t0 + 100, "until": t0 + 101, "limit": 1000})).json()
    assert len(page["requests"]) == 100
    page = (await admin.get("/admin/requests", params={"q": "overloaded", "limit": 5})).json()
    assert len(page["requests"]) == 5 and all("overloaded" in x["error_message"] for x in page["requests"])
    # bad input is a 400 with a reason, never a 500
    for params in ({"cursor": "!!!"}, {"limit": "x"}, {"limit": 0}, {"since": "yesterday-ish"}):
        r = await admin.get("/admin/requests", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["message"]
    # the events feed's parameters too: a huge before_id used to reach SQLite and come back as a 500
    for params in ({"before_id": str(2**80)}, {"before_id": "-1"}, {"before_id": "x"}, {"limit": "5000"},
                   {"limit": "0"}):
        r = await admin.get("/admin/events/recent", params=params)
        assert r.status_code == 400, (params, r.text)
        assert next(iter(params)) in r.json()["error"]["message"]
    assert (await admin.get("/admin/events/recent", params={"before_id": str(2**63 - 1)})).status_code == 200


async def test_partial_order_puts_the_listed_targets_first(start_gateway, gateway_cfg):
    """Issue 12: `order chat b` means "b first, the rest keep their order" (README's own example)."""
    gateway_cfg["routes"][0]["targets"].append({"vendor": "gemini", "model": "gemini-2.0-flash"})
    gw = await start_gateway(gateway_cfg, env=ENV)
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH, timeout=10) as admin:
        r = await admin.post("/admin/routes/chat/order", json={"order": ["gemini/gemini-2.0-flash"]})
        assert r.status_code == 200, r.text
        assert r.json()["order"] == ["gemini/gemini-2.0-flash", "openai/gpt-4.1", "deepseek/deepseek-chat"]
        r = await admin.post("/admin/routes/chat/order",
                             json={"order": ["deepseek/deepseek-chat", "openai/gpt-4.1"]})
        assert r.json()["order"] == ["deepseek/deepseek-chat", "openai/gpt-4.1", "gemini/gemini-2.0-flash"]
