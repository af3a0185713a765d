"""The prober against real fake vendors: cadence, cost control, one probe in flight, health transitions."""

from __future__ import annotations

import asyncio
import time

from gateway.routing.faults import parse_drill_fault as parse_fault
from gateway.control.prober import JITTER

MODELS_PATHS = {"openai/gpt-4.1": "GET /openai/v1/models", "deepseek/deepseek-chat": "GET /deepseek/v1/models",
                "anthropic/claude-sonnet-4-20250514": "GET /anthropic/v1/models",
                "gemini/gemini-2.0-flash": "GET /gemini/v1beta/models"}


def four_vendor_route(cfg: dict, interval: float = 0.2, mode: str = "models", **breaker) -> dict:
    cfg["routes"] = [{"name": "chat", "targets": [{"vendor": "openai", "model": "gpt-4.1"},
                                                  {"vendor": "deepseek", "model": "deepseek-chat"},
                                                  {"vendor": "anthropic", "model": "claude-sonnet-4-20250514"},
                                                  {"vendor": "gemini", "model": "gemini-2.0-flash"}]}]
    cfg["prober"] = {"enabled": True, "interval": interval, "mode": mode}
    cfg["breaker"] = {"failures_to_open": 2, "cooldown": 0.4, **breaker}
    return cfg


async def wait_for(pred, timeout: float = 10.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


async def test_probe_cadence_and_disabled_targets_are_not_probed(mock, gateway_cfg, start_gateway):
    interval = 0.2
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval), with_prober=True)
    rt = gw.runtime
    rt.set_disabled(rt.targets["gemini/gemini-2.0-flash"], True, "test")
    await asyncio.sleep(interval)         # a probe already started for it may finish
    mock.reset_stats()
    window = 2.0
    t0 = time.monotonic()
    await asyncio.sleep(window)
    stats = mock.stats
    elapsed = time.monotonic() - t0
    paths = stats["paths"]
    most = elapsed / (interval * (1 - JITTER)) + 1     # waits are never longer than the interval... nor shorter than this
    for tid in ("openai/gpt-4.1", "deepseek/deepseek-chat", "anthropic/claude-sonnet-4-20250514"):
        n = paths.get(MODELS_PATHS[tid], 0)
        assert 2 <= n <= most, (tid, n, most)
    assert paths.get(MODELS_PATHS["gemini/gemini-2.0-flash"], 0) == 0
    # models mode costs nothing: no chat request reached any vendor
    assert all(not models for models in stats["chat"].values())
    st = rt.target_json(rt.targets["openai/gpt-4.1"])
    assert st["state"] == "healthy" and st["last_probe"]["ok"] is True and st["rpm"] == 0   # probes are not traffic


async def test_completion_mode_sends_one_token_and_skips_targets_busy_with_real_traffic(mock, gateway_cfg,
                                                                                         start_gateway):
    import httpx
    interval = 0.3
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval, "completion"), with_prober=True)
    async with httpx.AsyncClient(base_url=gw.url) as data:
        await asyncio.sleep(interval)
        mock.reset_stats()
        end = time.monotonic() + 1.5
        n_real = 0
        while time.monotonic() < end:      # steady real traffic on the route's first target
            r = await data.post("/v1/chat/completions", json={"model": "chat", "messages": [
                {"role": "user", "content": "hi"}]})
            assert r.headers["x-patchbay-target"] == "openai/gpt-4.1"
            n_real += 1
            await asyncio.sleep(0.05)
    chat = mock.stats["chat"]
    # openai saw the real requests only: its probes were skipped while real traffic proved it healthy
    assert chat["openai"]["gpt-4.1"] == n_real
    prober = next(x for x in gw.extras if hasattr(x, "skipped_busy"))
    assert prober.skipped_busy.get("openai/gpt-4.1", 0) >= 1
    # the idle targets got one-token completion probes
    assert chat["deepseek"].get("deepseek-chat", 0) >= 1
    assert chat["anthropic"].get("claude-sonnet-4-20250514", 0) >= 1
    assert chat["gemini"].get("gemini-2.0-flash", 0) >= 1
    assert gw.runtime.targets["deepseek/deepseek-chat"].health.last_probe["mode"] == "completion"


async def test_never_more_than_one_probe_in_flight_per_target(mock, gateway_cfg, start_gateway):
    mock.set_fault("latency:800", dialect="deepseek", scope="models")
    gw = await start_gateway(four_vendor_route(gateway_cfg, 0.1), with_prober=True)
    prober = next(x for x in gw.extras if hasattr(x, "skipped_busy"))
    t = gw.runtime.targets["deepseek/deepseek-chat"]
    assert await wait_for(lambda: "deepseek/deepseek-chat" in prober._busy, 3)
    # a second probe while one is in flight is refused, not queued
    assert await prober.probe_once(t) is None
    mock.reset_stats()
    await asyncio.sleep(1.2)
    # ~1.2s at 0.1s interval would be ~12 probes; a slow vendor gets at most one at a time
    assert mock.stats["paths"].get("GET /deepseek/v1/models", 0) <= 2
    assert mock.stats["paths"].get("GET /openai/v1/models", 0) >= 3


async def test_health_goes_down_open_and_back_to_healthy_by_probes_alone(mock, gateway_cfg, start_gateway):
    gw = await start_gateway(four_vendor_route(gateway_cfg, 0.15), with_prober=True)
    rt = gw.runtime
    t = rt.targets["openai/gpt-4.1"]
    events: list = []
    q = rt.subscribe()

    def drain() -> None:
        while not q.empty():
            events.append(q.get_nowait())

    assert await wait_for(lambda: t.health.last_probe is not None)
    assert rt.target_state(t) == "healthy"
    mock.set_fault("error:503", dialect="openai")
    seen: set[str] = set()
    assert await wait_for(lambda: (seen.add(rt.target_state(t)), rt.target_state(t) == "open")[1], 5)
    assert "degraded" in seen or "down" in seen or t.breaker.failures >= 2
    assert t.breaker.state in ("open", "half_open")
    assert rt.serving(rt.routes["chat"]) in ("deepseek/deepseek-chat", "openai/gpt-4.1")
    mock.clear_faults()
    # after the cooldown a probe is the half-open trial and closes the breaker, with no client traffic
    assert await wait_for(lambda: t.breaker.state == "closed" and rt.target_state(t) == "healthy", 5)
    drain()
    rt.unsubscribe(q)
    mine = [e for e in events if e.target == "openai/gpt-4.1"]
    probe_flips = [e.detail["ok"] for e in mine if e.kind == "probe"]
    assert probe_flips[:1] == [False] and probe_flips[-1] is True
    # one event per flip, not per probe
    assert all(a != b for a, b in zip(probe_flips, probe_flips[1:]))
    breaker = [(e.detail["from"], e.detail["to"]) for e in mine if e.kind == "breaker"]
    assert breaker[0] == ("closed", "open") and breaker[-1] == ("half_open", "closed")
    assert all("probe" in e.detail["reason"] for e in mine if e.kind == "breaker")
    assert not any(e.kind == "failover" for e in events)   # nobody sent traffic


async def test_probes_see_drill_faults_exactly_like_requests(mock, gateway_cfg, start_gateway):
    gw = await start_gateway(four_vendor_route(gateway_cfg, 0.1), with_prober=True)
    t = gw.runtime.targets["anthropic/claude-sonnet-4-20250514"]
    assert await wait_for(lambda: t.health.last_probe is not None)
    t.fault = parse_fault("error:503", drill_id="drill_test")
    mock.reset_stats()
    assert await wait_for(lambda: t.breaker.state == "open", 3)
    assert "drill: injected HTTP 503" in t.health.last_probe["error"]
    # the fault is injected at the gateway: the vendor never saw those probes
    assert mock.stats["paths"].get("GET /anthropic/v1/models", 0) == 0
    t.fault = None
    assert await wait_for(lambda: t.breaker.state == "closed", 3)
    assert mock.stats["paths"].get("GET /anthropic/v1/models", 0) >= 1


async def test_a_vendor_without_a_models_list_is_not_marked_down(mock, gateway_cfg, start_gateway, caplog):
    mock.set_fault("error:404", dialect="deepseek", scope="models")   # chat still works
    gw = await start_gateway(four_vendor_route(gateway_cfg, 0.1), with_prober=True)
    t = gw.runtime.targets["deepseek/deepseek-chat"]
    assert await wait_for(lambda: mock.stats["paths"].get("GET /deepseek/v1/models", 0) >= 4, 5)
    assert t.health.last_probe["ok"] is None and "prober.mode" in t.health.last_probe["error"]
    assert t.breaker.state == "closed" and gw.runtime.target_state(t) == "healthy"
    warnings = [r for r in caplog.records if "deepseek/deepseek-chat" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1      # said once, not every interval
