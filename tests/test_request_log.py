"""Every request, attempt and failover lands in a real SQLite file; a clean stop loses nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

import httpx
import pytest

MSG = [{"role": "user", "content": "log me"}]


def db_rows(path, sql, *args):
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


async def test_requests_attempts_and_failovers_are_recorded(mock, gateway_cfg, start_gateway, tmp_path):
    mock.set_fault("error", model="gpt-4.1", status=503, times=2)
    gw = await start_gateway(gateway_cfg)
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        r1 = await hc.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
        r2 = await hc.post("/v1/chat/completions", json={"model": "chat", "messages": MSG, "stream": True})
        r3 = await hc.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 404)
    await gw.stop()
    db = str(tmp_path / "patchbay.db")
    reqs = {r["id"]: r for r in db_rows(db, "select * from requests")}
    first = reqs[r1.headers["x-request-id"]]
    assert first["outcome"] == "ok" and first["final_target"] == "deepseek/deepseek-chat"
    assert first["model"] == "deepseek-chat" and first["attempts"] == 3 and first["failovers"] == 1
    assert first["prompt_tokens"] > 0 and first["cost"] > 0 and first["stream"] == 0
    second = reqs[r2.headers["x-request-id"]]
    assert second["stream"] == 1 and second["final_target"] == "openai/gpt-4.1" and second["ttft_ms"] > 0
    attempts = db_rows(db, "select target, outcome, http_status from attempts where request_id = ? order by n",
                       first["id"])
    assert [(a["target"], a["outcome"], a["http_status"]) for a in attempts] == [
        ("openai/gpt-4.1", "server", 503), ("openai/gpt-4.1", "server", 503), ("deepseek/deepseek-chat", "ok", 200)]
    [fo] = db_rows(db, "select * from events where kind = 'failover'")
    assert fo["target"] == "openai/gpt-4.1" and fo["route"] == "chat" and "deepseek/deepseek-chat" in fo["detail"]
    # bad input never reached a vendor and is not a request of a route
    assert len(reqs) == 2


async def test_clean_stop_flushes_every_row(gateway_cfg, start_gateway, tmp_path):
    gw = await start_gateway(gateway_cfg)
    n = 300
    async with httpx.AsyncClient(base_url=gw.url, limits=httpx.Limits(max_connections=32)) as hc:
        rs = await asyncio.gather(*(hc.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
                                    for _ in range(n)))
    assert all(r.status_code == 200 for r in rs)
    await gw.stop()
    db = str(tmp_path / "patchbay.db")
    assert db_rows(db, "select count(*) c from requests")[0]["c"] == n
    assert db_rows(db, "select count(*) c from attempts")[0]["c"] == n


async def test_history_command_reads_the_database(gateway_cfg, start_gateway, tmp_path):
    gw = await start_gateway(gateway_cfg)
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        await hc.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
    await gw.stop()
    cfg = tmp_path / "patchbay.toml"
    cfg.write_text(f'[store]\npath = "{tmp_path / "patchbay.db"}"\n[vendors.v]\nkind = "openai"\n'
                   'base_url = "http://127.0.0.1:1/v1"\n[[routes]]\nname = "chat"\n'
                   'targets = [{ vendor = "v", model = "m" }]\n')
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "history", "-c", str(cfg), "--limit", "5"],
                         capture_output=True, text=True, check=True)
    assert "openai/gpt-4.1" in out.stdout and "ok" in out.stdout


@pytest.mark.parametrize("log_bodies", [False, True])
async def test_bodies_are_stored_only_when_asked(gateway_cfg, start_gateway, tmp_path, log_bodies):
    gateway_cfg["store"]["log_bodies"] = log_bodies
    gw = await start_gateway(gateway_cfg)
    secret_prompt = "my private prompt 7731"
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        r1 = await hc.post("/v1/chat/completions", json={"model": "chat", "messages": [
            {"role": "user", "content": secret_prompt}]})
        r2 = await hc.post("/v1/chat/completions", json={"model": "chat", "stream": True, "messages": [
            {"role": "user", "content": secret_prompt}]})
    await gw.stop()
    rows = {r["id"]: r for r in db_rows(str(tmp_path / "patchbay.db"), "select * from requests")}
    whole, streamed = rows[r1.headers["x-request-id"]], rows[r2.headers["x-request-id"]]
    if not log_bodies:
        assert all(r["request_body"] is None and r["response_body"] is None for r in rows.values())
        return
    assert secret_prompt in whole["request_body"] and secret_prompt in streamed["request_body"]
    assert r1.json()["choices"][0]["message"]["content"] in whole["response_body"]
    assert streamed["response_body"].startswith("Hello from openai/gpt-4.1")
