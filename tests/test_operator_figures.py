"""Issue 12: the figures an operator reads (admin state, status) are the request log's figures."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx

TOKEN = "adm-figures-token"
ENV = {"PATCHBAY_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _pct(values: list[float], q: float) -> float:
    """The same rank rule as the health histograms (zero-based int(q * n))."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def test_stream_latency_in_state_matches_the_request_log(mock, gateway_cfg, start_gateway):
    """Streams: p50/p95 in /admin/state include the wait for the first token, and TTFT is shown too,
    both agreeing with the request log's latency_ms / ttft_ms for the same window."""
    mock.configure(token_interval_ms=8, tokens=12)
    mock.set_fault("slow_first_token", model="gpt-4.1", ms=150)
    gw = await start_gateway(gateway_cfg, env=ENV)
    t0 = time.time()
    async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
        async def one(i: int) -> None:
            body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": f"hi {i}"}]}
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                async for _ in r.aiter_bytes():
                    pass
        for batch in range(4):
            await asyncio.gather(*(one(batch * 8 + i) for i in range(8)))
    await asyncio.to_thread(gw.store.flush, 5.0)
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH, timeout=10) as a:
        st = (await a.get("/admin/state")).json()
    t = next(x for x in st["targets"] if x["id"] == "openai/gpt-4.1")
    with sqlite3.connect(gateway_cfg["store"]["path"]) as db:
        rows = db.execute("SELECT latency_ms, ttft_ms FROM requests WHERE final_target = ? AND outcome = 'ok' "
                          "AND ts >= ?", ("openai/gpt-4.1", t0 - 1)).fetchall()
    assert len(rows) == 32
    total = [r[0] for r in rows]
    ttft = [r[1] for r in rows]
    assert min(ttft) >= 150 and min(total) > min(ttft)
    for key, values, q in (("p50_ms", total, 0.5), ("p95_ms", total, 0.95),
                           ("ttft_p50_ms", ttft, 0.5), ("ttft_p95_ms", ttft, 0.95)):
        want = _pct(values, q)
        assert abs(t[key] - want) <= want * 0.04, (key, t[key], want)
    assert t["latency_series"] and t["ttft_series"] and t["series_step_s"] > 0


async def test_target_detail_charts_and_failures_from_the_store(mock, gateway_cfg, start_gateway):
    """Issue 12 (per-target view): latency and TTFT over a window, failures by class, recent failed
    attempts, breaker transitions and routes, all for one target, from the request log."""
    gateway_cfg["breaker"] = {"failures_to_open": 2, "cooldown": 30}
    gw = await start_gateway(gateway_cfg, env=ENV)
    async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
        for i in range(6):
            body = {"model": "chat", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]}
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200
        mock.set_fault("error", model="gpt-4.1", status=503)
        for _ in range(2):
            assert (await c.post("/v1/chat/completions", json={"model": "chat", "messages": [
                {"role": "user", "content": "hi"}]})).headers["x-patchbay-target"] == "deepseek/deepseek-chat"
    await asyncio.to_thread(gw.store.flush, 5.0)
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH, timeout=10) as a:
        r = await a.get("/admin/targets/openai%2Fgpt-4.1", params={"window": "5m"})
        bad = await a.get("/admin/targets/openai/gpt-4.1", params={"window": "soon"})
        missing = await a.get("/admin/targets/openai/nope")
    assert r.status_code == 200, r.text
    d = r.json()
    assert bad.status_code == 400 and missing.status_code == 404
    pts = d["series"]["points"]
    assert len(pts) == 60 and sum(p["n"] for p in pts) == 6
    assert any(p["ttft_p50_ms"] for p in pts) and all(p["p50_ms"] for p in pts if p["n"])
    assert sum(p["failed"] for p in pts) == 2 and d["series"]["errors_by_class"] == {"server": 2}
    assert len(d["failed_attempts"]) == 2 and all(a["http_status"] == 503 for a in d["failed_attempts"])
    assert [e["detail"]["to"] for e in d["breaker_events"]] == ["open"]
    assert d["routes"] == [{"name": "chat", "position": 1, "of": 2, "serving": "deepseek/deepseek-chat"}]
    assert d["target"]["breaker"] == "open"
