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
