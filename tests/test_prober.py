"""The prober against real fake vendors: cadence, cost control, one probe in flight, health transitions.

Probe intervals and breaker cooldowns run on `VirtualTime` (the Prober's and the breakers' injected
clock and sleep): a test advances time interval by interval and waits, in real time, only for the probes
themselves (real HTTP to the fake vendors) to finish before moving on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

from gateway.control.prober import JITTER, Prober
from gateway.routing.faults import parse_drill_fault as parse_fault

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


class VirtualTime:
    """Monotonic time that moves only when the test says; sleepers wake in deadline order."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self.now + max(0.0, delay), next(self._seq), fut))
        await fut

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._heap if not f.done())

    async def advance(self, seconds: float, settled: Callable[[], bool]) -> None:
        """Move time forward by `seconds`, waking each sleeper at its deadline and waiting (real time)
        until `settled()` before the next one: what it woke (a probe) has finished."""
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _, fut = heapq.heappop(self._heap)
            if fut.done():
                continue   # its task was cancelled
            self.now = max(self.now, when)
            fut.set_result(None)
            assert await wait_for(settled, 10, 0.001), "probes did not finish"
        self.now = end

    async def advance_until(self, pred: Callable[[], bool], step: float, limit: float,
                            settled: Callable[[], bool]) -> bool:
        """Advance in `step`s until pred() holds, at most `limit` seconds of virtual time."""
        end = self.now + limit
        while not pred() and self.now < end:
            await self.advance(step, settled)
        return pred()


async def virtual_prober(gw, interval: float, mode: str = "models") -> tuple[Prober, VirtualTime, Callable[[], bool]]:
    """A prober on virtual time for a gateway started without its own; the breakers share the clock.
    Returns it with the predicate "every probe loop sleeps" (nothing in flight)."""
    vt = VirtualTime()
    for t in gw.runtime.targets.values():
        t.breaker.clock = vt
    prober = Prober(gw.runtime, gw.router, interval=interval, mode=mode, clock=vt, sleep=vt.sleep)
    gw.extras.append(prober)   # stopped with the gateway
    prober.start()

    def asleep() -> bool:
        return vt.sleeping == len(prober._tasks)
    assert await wait_for(asleep, 5, 0.001)
    return prober, vt, asleep


async def test_probe_cadence_and_disabled_targets_are_not_probed(mock, gateway_cfg, start_gateway):
    interval = 10.0
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval))
    rt = gw.runtime
    rt.set_disabled(rt.targets["gemini/gemini-2.0-flash"], True, "test")
    prober, vt, asleep = await virtual_prober(gw, interval)
    mock.reset_stats()
    window = 20 * interval
    await vt.advance(window, asleep)
    stats = mock.stats
    paths = stats["paths"]
    # every wait is at most one interval (first probe included), and at least interval * (1 - JITTER)
    least = int(window / interval)
    most = int(window / (interval * (1 - JITTER))) + 1
    for tid in ("openai/gpt-4.1", "deepseek/deepseek-chat", "anthropic/claude-sonnet-4-20250514"):
        n = paths.get(MODELS_PATHS[tid], 0)
        assert least <= n <= most, (tid, n, least, most)
        assert prober.sent[tid] == n
    assert paths.get(MODELS_PATHS["gemini/gemini-2.0-flash"], 0) == 0
    # models mode costs nothing: no chat request reached any vendor
    assert all(not models for models in stats["chat"].values())
    st = rt.target_json(rt.targets["openai/gpt-4.1"])
    assert st["state"] == "healthy" and st["last_probe"]["ok"] is True and st["rpm"] == 0   # probes are not traffic


async def test_completion_mode_sends_one_token_and_skips_targets_busy_with_real_traffic(mock, gateway_cfg,
                                                                                         start_gateway):
    import httpx
    interval = 10.0
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval, "completion"))
    prober, vt, asleep = await virtual_prober(gw, interval, "completion")
    mock.reset_stats()
    n_real = 0
    async with httpx.AsyncClient(base_url=gw.url) as data:
        for _ in range(5):   # real traffic on the route's first target, then an interval of probing
            r = await data.post("/v1/chat/completions", json={"model": "chat", "messages": [
                {"role": "user", "content": "hi"}]})
            assert r.headers["x-patchbay-target"] == "openai/gpt-4.1"
            n_real += 1
            await vt.advance(interval, asleep)
    chat = mock.stats["chat"]
    # openai saw the real requests only: its probes were skipped while real traffic proved it healthy
    assert chat["openai"]["gpt-4.1"] == n_real
    assert prober.skipped_busy.get("openai/gpt-4.1", 0) >= 4
    # the idle targets got one-token completion probes, about one per interval
    for vendor, model in (("deepseek", "deepseek-chat"), ("anthropic", "claude-sonnet-4-20250514"),
                          ("gemini", "gemini-2.0-flash")):
        assert 4 <= chat[vendor].get(model, 0) <= 6, (vendor, chat[vendor])
    assert gw.runtime.targets["deepseek/deepseek-chat"].health.last_probe["mode"] == "completion"


async def test_never_more_than_one_probe_in_flight_per_target(mock, gateway_cfg, start_gateway):
    mock.set_fault("latency:800", dialect="deepseek", scope="models")
    interval = 1.0
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval))
    prober, vt, _asleep = await virtual_prober(gw, interval)
    t = gw.runtime.targets["deepseek/deepseek-chat"]

    def asleep_or_busy() -> bool:
        return vt.sleeping + len(prober._busy) == len(prober._tasks)
    assert await vt.advance_until(lambda: "deepseek/deepseek-chat" in prober._busy, interval / 4, 2 * interval,
                                  asleep_or_busy)
    # a second probe while one is in flight is refused, not queued
    assert await prober.probe_once(t) is None
    mock.reset_stats()
    # twelve intervals pass while the slow probe is still in flight: the other targets are probed each
    # interval, the slow one is never sent a second probe
    await vt.advance(12 * interval, asleep_or_busy)
    assert "deepseek/deepseek-chat" in prober._busy
    assert prober.sent["deepseek/deepseek-chat"] == 1
    assert mock.stats["paths"].get("GET /deepseek/v1/models", 0) <= 1   # (the one in flight may land after the reset)
    assert mock.stats["paths"].get("GET /openai/v1/models", 0) >= 11


async def test_health_goes_down_open_and_back_to_healthy_by_probes_alone(mock, gateway_cfg, start_gateway):
    interval, cooldown = 10.0, 30.0
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval, cooldown=cooldown))
    rt = gw.runtime
    t = rt.targets["openai/gpt-4.1"]
    events: list = []
    q = rt.subscribe()

    def drain() -> None:
        while not q.empty():
            events.append(q.get_nowait())

    _prober, vt, asleep = await virtual_prober(gw, interval)
    step = interval / 4
    assert await vt.advance_until(lambda: t.health.last_probe is not None, step, 2 * interval, asleep)
    assert rt.target_state(t) == "healthy"
    mock.set_fault("error:503", dialect="openai")
    seen: set[str] = set()
    assert await vt.advance_until(lambda: (seen.add(rt.target_state(t)), rt.target_state(t) == "open")[1],
                                  step, 5 * interval, asleep)
    assert "degraded" in seen or "down" in seen
    assert t.breaker.state == "open"
    opened = t.breaker.opened_at
    assert rt.serving(rt.routes["chat"]) in ("deepseek/deepseek-chat", "openai/gpt-4.1")
    # until the cooldown is over, scheduled probes are no trial: the breaker stays open
    await vt.advance(cooldown - step - (vt.now - opened), asleep)
    assert t.breaker.state == "open"
    mock.clear_faults()
    # at the end of the cooldown a probe is the half-open trial and closes the breaker, with no client traffic
    assert await vt.advance_until(lambda: t.breaker.state == "closed", step / 10, step, asleep)
    assert vt.now - opened <= cooldown + step / 10 + 1e-9      # woke for the cooldown, not the next interval
    # health's success-rate window is wall-clock time, which barely moved: "healthy" again once
    # RECOVERED_AFTER probes in a row succeeded
    assert await vt.advance_until(lambda: rt.target_state(t) == "healthy", step, 15 * interval, asleep)
    drain()
    rt.unsubscribe(q)
    mine = [e for e in events if e.target == "openai/gpt-4.1"]
    probe_flips = [e.detail["ok"] for e in mine if e.kind == "probe"]
    assert probe_flips[:1] == [False] and probe_flips[-1] is True
    # one event per flip, not per probe
    assert all(a != b for a, b in itertools.pairwise(probe_flips))
    breaker = [(e.detail["from"], e.detail["to"]) for e in mine if e.kind == "breaker"]
    assert breaker[0] == ("closed", "open") and breaker[-1] == ("half_open", "closed")
    assert all("probe" in e.detail["reason"] for e in mine if e.kind == "breaker")
    assert not any(e.kind == "failover" for e in events)   # nobody sent traffic


async def test_probes_see_drill_faults_exactly_like_requests(mock, gateway_cfg, start_gateway):
    interval, cooldown = 10.0, 30.0
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval, cooldown=cooldown))
    t = gw.runtime.targets["anthropic/claude-sonnet-4-20250514"]
    _prober, vt, asleep = await virtual_prober(gw, interval)
    step = interval / 4
    assert await vt.advance_until(lambda: t.health.last_probe is not None, step, 2 * interval, asleep)
    t.fault = parse_fault("error:503", drill_id="drill_test")
    mock.reset_stats()
    assert await vt.advance_until(lambda: t.breaker.state == "open", step, 3 * interval, asleep)
    assert "drill: injected HTTP 503" in t.health.last_probe["error"]
    # the fault is injected at the gateway: the vendor never saw those probes
    assert mock.stats["paths"].get("GET /anthropic/v1/models", 0) == 0
    t.fault = None
    assert await vt.advance_until(lambda: t.breaker.state == "closed", step, cooldown + step, asleep)
    assert mock.stats["paths"].get("GET /anthropic/v1/models", 0) >= 1


async def test_a_vendor_without_a_models_list_is_not_marked_down(mock, gateway_cfg, start_gateway, caplog):
    mock.set_fault("error:404", dialect="deepseek", scope="models")   # chat still works
    interval = 10.0
    gw = await start_gateway(four_vendor_route(gateway_cfg, interval))
    t = gw.runtime.targets["deepseek/deepseek-chat"]
    _prober, vt, asleep = await virtual_prober(gw, interval)
    assert await vt.advance_until(lambda: mock.stats["paths"].get("GET /deepseek/v1/models", 0) >= 4,
                                  interval, 6 * interval, asleep)
    assert t.health.last_probe["ok"] is None and "prober.mode" in t.health.last_probe["error"]
    assert t.breaker.state == "closed" and gw.runtime.target_state(t) == "healthy"
    warnings = [r for r in caplog.records if "deepseek/deepseek-chat" in r.getMessage() and r.levelname == "WARNING"]
    assert len(warnings) == 1      # said once, not every interval
