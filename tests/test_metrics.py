"""`GET /metrics`: Prometheus figures that agree with the request log, bounded labels, admin token.

Known traffic goes through a real gateway (openai SDK client, fake vendors,
real SQLite file): plain answers, a failover, streams, a client error, and a
drill that opens a breaker. The scrape is parsed with prometheus_client's own
parser and compared, family by family, with what the request log holds for
the same traffic, and with the counts the traffic was built to produce.
"""

from __future__ import annotations

import collections
import math
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.control.metrics import METRIC_NAMES, TARGET_STATES

ADMIN_TOKEN = "adm-metrics-test-token"
ENV = {"PATCHBAY_ADMIN_TOKEN": ADMIN_TOKEN}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MSGS = [{"role": "user", "content": "count these five words"}]

#: label names of every family (and nothing else: bounded by design)
LABELS = {
    "patchbay_requests_total": {"route", "target", "outcome"},
    "patchbay_attempts_total": {"target", "outcome"},
    "patchbay_failovers_total": {"route"},
    "patchbay_request_duration_seconds": {"route"},
    "patchbay_ttft_seconds": {"route"},
    "patchbay_tokens_total": {"target", "kind"},
    "patchbay_cost_usd_total": {"target"},
    "patchbay_target_state": {"target", "state"},
    "patchbay_breaker_open": {"target"},
    "patchbay_inflight": {"target"},
    "patchbay_drill_active": {"target"},
    "patchbay_route_healthy_targets": {"route"},
    "patchbay_route_targets": {"route"},
    "patchbay_store_backlog_rows": set(),
    "patchbay_store_rows_not_written": set(),
    "patchbay_store_rows_dropped_total": set(),
    "patchbay_store_ok": set(),
    "patchbay_malformed_events_total": set(),
}

Samples = dict[str, dict[frozenset, float]]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """{sample name: {frozenset(labels): value}} and {family name: type}."""
    samples: Samples = collections.defaultdict(dict)
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[s.name][frozenset(s.labels.items())] = s.value
    return samples, types


def by(samples: Samples, name: str, *keys: str) -> dict[tuple, float]:
    """Non-zero values of one sample name keyed by the given labels."""
    out = {}
    for labels, v in samples.get(name, {}).items():
        d = dict(labels)
        if v:
            out[tuple(d[k] for k in keys)] = v
    return out


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][frozenset(labels.items())]


async def scrape(gw: Any) -> tuple[Samples, dict[str, str], str]:
    async with httpx.AsyncClient(base_url=gw.admin_url, timeout=10) as a:
        r = await a.get("/metrics", headers=AUTH)
    assert r.status_code == 200, r.text
    samples, types = parse(r.text)
    return samples, types, r.text


def client(gw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


async def test_metrics_agree_with_the_request_log_after_known_traffic(start_gateway, gateway_cfg, mock):
    gw = await start_gateway(gateway_cfg, env=ENV)
    c = client(gw)
    for _ in range(3):
        r = await c.chat.completions.create(model="chat", messages=MSGS)
        assert r.model == "gpt-4.1"
    mock.set_fault("error:503", model="gpt-4.1", times=2)       # both attempts on openai fail: one failover
    r = await c.chat.completions.create(model="chat", messages=MSGS)
    assert r.model == "deepseek-chat"
    for _ in range(2):
        stream = await c.chat.completions.create(model="chat", messages=MSGS, stream=True,
                                                 stream_options={"include_usage": True})
        async for _ in stream:
            pass
    mock.set_fault("content_policy", model="gpt-4.1", times=1)  # the client's own error: returned, no failover
    with pytest.raises(openai.BadRequestError):
        await c.chat.completions.create(model="chat", messages=MSGS)

    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH, timeout=10) as a:
        d = await a.post("/admin/drills", json={"target": "openai/gpt-4.1", "fault": "error:503", "duration": 60})
        assert d.status_code in (200, 201), d.text
        drill_id = d.json()["id"]
        # drill request 1: two failed attempts, then deepseek; request 2: the third failure opens the
        # breaker, deepseek answers; request 3: openai is skipped (breaker open), deepseek answers
        for _ in range(3):
            r = await c.chat.completions.create(model="chat", messages=MSGS)
            assert r.model == "deepseek-chat"
        during, _, _ = await scrape(gw)
        assert (await a.delete(f"/admin/drills/{drill_id}")).status_code == 200

    # state gauges while the drill's breaker was open
    assert one(during, "patchbay_breaker_open", target="openai/gpt-4.1") == 1
    assert one(during, "patchbay_breaker_open", target="deepseek/deepseek-chat") == 0
    for tid, now in (("openai/gpt-4.1", "open"), ("deepseek/deepseek-chat", "healthy")):
        states = {s: one(during, "patchbay_target_state", target=tid, state=s) for s in TARGET_STATES}
        assert states == {s: (1.0 if s == now else 0.0) for s in TARGET_STATES}, (tid, states)
    assert one(during, "patchbay_route_healthy_targets", route="chat") == 1
    assert one(during, "patchbay_route_targets", route="chat") == 2
    assert one(during, "patchbay_drill_active", target="openai/gpt-4.1") == 1
    assert one(during, "patchbay_inflight", target="openai/gpt-4.1") == 0

    samples, types, text = await scrape(gw)
    assert gw.store.flush(10)
    db = sqlite3.connect(gw.config.store.path)
    reqs = db.execute("SELECT route, COALESCE(final_target, 'none'), outcome, failovers, latency_ms, ttft_ms, "
                      "prompt_tokens, completion_tokens, cost, drill_id FROM requests").fetchall()
    atts = db.execute("SELECT target, outcome FROM attempts").fetchall()
    db.close()

    # what the traffic was built to produce (independent of both the log and the metrics)
    assert len(reqs) == 10
    requests = by(samples, "patchbay_requests_total", "route", "target", "outcome")
    assert requests == {("chat", "openai/gpt-4.1", "ok"): 5, ("chat", "deepseek/deepseek-chat", "ok"): 4,
                        ("chat", "none", "client_error"): 1}
    attempts = by(samples, "patchbay_attempts_total", "target", "outcome")
    assert attempts == {("openai/gpt-4.1", "ok"): 5, ("openai/gpt-4.1", "server"): 5,
                        ("openai/gpt-4.1", "content_policy"): 1, ("deepseek/deepseek-chat", "ok"): 4}
    assert by(samples, "patchbay_failovers_total", "route") == {("chat",): 3}
    assert one(samples, "patchbay_ttft_seconds_count", route="chat") == 2
    assert one(samples, "patchbay_request_duration_seconds_count", route="chat") == 10
    assert sum(1 for r in reqs if r[9] == drill_id) == 3

    # ... and the request log agrees, family by family
    assert requests == dict(collections.Counter((r[0], r[1], r[2]) for r in reqs))
    assert attempts == dict(collections.Counter(atts))
    assert one(samples, "patchbay_failovers_total", route="chat") == sum(r[3] for r in reqs)
    lat = sum(r[4] for r in reqs) / 1000
    assert math.isclose(one(samples, "patchbay_request_duration_seconds_sum", route="chat"), lat, rel_tol=1e-6)
    ttfts = [r[5] / 1000 for r in reqs if r[5] is not None]
    assert math.isclose(one(samples, "patchbay_ttft_seconds_sum", route="chat"), sum(ttfts), rel_tol=1e-6)
    # histogram buckets: the +Inf bucket holds every request, each bucket at least as many as the one below
    buckets = sorted(((float(dict(k)["le"]), v) for k, v in samples["patchbay_request_duration_seconds_bucket"].items()
                      if dict(k)["route"] == "chat"))
    assert buckets[0][0] == 0.025 and buckets[-2][0] >= 120 and buckets[-1] == (math.inf, 10)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert buckets[-2][1] == sum(1 for r in reqs if r[4] / 1000 <= buckets[-2][0])
    tokens = by(samples, "patchbay_tokens_total", "target", "kind")
    log_tokens: dict[tuple, float] = collections.Counter()
    log_cost: dict[str, float] = collections.Counter()
    for r in reqs:
        if r[1] != "none":
            log_tokens[(r[1], "input")] += r[6] or 0
            log_tokens[(r[1], "output")] += r[7] or 0
            log_cost[r[1]] += r[8] or 0
    assert tokens == {k: v for k, v in log_tokens.items() if v}
    assert all(v > 0 for v in tokens.values()) and len(tokens) == 4
    cost = by(samples, "patchbay_cost_usd_total", "target")
    assert set(cost) == {(t,) for t, v in log_cost.items() if v}
    for (t,), v in cost.items():
        assert math.isclose(v, log_cost[t], rel_tol=1e-9)

    # every family exported, typed, and with exactly its bounded label set
    families = {n.removesuffix("_total") for n in METRIC_NAMES}
    assert families <= set(types), families - set(types)
    assert types["patchbay_request_duration_seconds"] == "histogram"
    assert types["patchbay_requests"] == "counter" and types["patchbay_target_state"] == "gauge"
    configured = {"openai/gpt-4.1", "deepseek/deepseek-chat", "none"}
    for name, want in LABELS.items():
        for labels in samples[name]:
            assert {k for k, _ in labels} == want, (name, labels)
            for k, v in labels:
                if k == "target":
                    assert v in configured, (name, v)
                if k == "route":
                    assert v == "chat", (name, v)
    for value in (v for fam in samples.values() for labels in fam for _, v in labels):
        assert not value.startswith(("req_", "drill_", "chatcmpl")), value
    assert "req_" not in text and drill_id not in text
    # process metrics from prometheus_client's ProcessCollector, on this gateway's own registry
    assert samples["process_cpu_seconds_total"][frozenset()] > 0
    assert samples["process_resident_memory_bytes"][frozenset()] > 0
    assert one(samples, "patchbay_store_ok") == 1
    assert one(samples, "patchbay_store_rows_not_written") == 0
    assert "patchbay_store_backlog_rows" in samples


async def test_metrics_need_the_admin_token(start_gateway, gateway_cfg):
    gw = await start_gateway(gateway_cfg, env=ENV)
    async with httpx.AsyncClient(base_url=gw.admin_url, timeout=10) as a:
        assert (await a.get("/metrics")).status_code == 401
        wrong = await a.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "patchbay_" not in wrong.text
        ok = await a.get("/metrics", headers=AUTH)
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain; version=")
        assert "# TYPE patchbay_requests_total counter" in ok.text
        om = await a.get("/metrics", headers={**AUTH, "Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
    # the data listener does not serve it
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as d:
        assert (await d.get("/metrics")).status_code == 404


async def test_each_gateway_has_its_own_registry(start_gateway, gateway_cfg, tmp_path: Path):
    gw1 = await start_gateway(gateway_cfg, env=ENV)
    cfg2 = {**gateway_cfg, "store": {"path": str(tmp_path / "second.db")}}
    gw2 = await start_gateway(cfg2, env=ENV)
    await client(gw1).chat.completions.create(model="chat", messages=MSGS)
    s1, _, _ = await scrape(gw1)
    s2, _, _ = await scrape(gw2)
    assert by(s1, "patchbay_requests_total", "route", "target", "outcome") == {("chat", "openai/gpt-4.1", "ok"): 1}
    assert by(s2, "patchbay_requests_total", "route", "target", "outcome") == {}
