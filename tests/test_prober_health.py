"""The health model the prober and real traffic feed: windows, percentiles, rates, states."""

from __future__ import annotations

from unittest import mock

from gateway.routing.health import RECOVERED_AFTER, WINDOW_S, Health
from gateway.vendors.base import ErrorClass


def at(t: float):
    return mock.patch("gateway.routing.health.time.time", return_value=t)


def test_percentiles_rates_and_cost_over_the_window():
    h = Health()
    t0 = 1_000_000.0
    with at(t0):
        for ms in range(1, 1001):                 # 1..1000 ms, one of each
            h.observe(True, cost=0.01)
            h.answered(float(ms))
        h.observe(False, 5.0, "server 503", ErrorClass.SERVER)
        h.observe(False, 5.0, "bad request", ErrorClass.BAD_REQUEST)   # the client's fault: not health
        s = h.snapshot()
    assert abs(s["p50_ms"] - 500) <= 500 * 0.02 + 0.1
    assert abs(s["p95_ms"] - 950) <= 950 * 0.02 + 0.1
    assert s["success_rate"] == round(1000 / 1001, 4)
    assert s["rpm"] == 1002.0 and s["observations"] == 1002
    assert abs(s["cost_per_hour"] - 10.0 * 3600 / WINDOW_S) < 1e-6
    # a minute later the rate has aged out, the 5-minute figures have not
    with at(t0 + 61):
        s = h.snapshot()
    assert s["rpm"] == 0.0 and s["observations"] == 1002
    # after the window everything has aged out
    with at(t0 + WINDOW_S + 2):
        s = h.snapshot()
    assert (s["observations"], s["p50_ms"], s["success_rate"], s["cost_per_hour"]) == (0, None, None, 0.0)


def test_probes_do_not_count_as_traffic_or_hide_real_latency():
    h = Health()
    with at(2_000_000.0):
        for _ in range(10):
            h.observe(True, 2.0, probe=True, cost=0.0)
        s = h.snapshot()
        assert s["rpm"] == 0.0 and abs(s["p50_ms"] - 2.0) < 0.1   # probes only: their latency shows
        assert s["latency_series"] == []                          # sparklines are for client traffic
        h.observe(True)
        h.answered(400.0)
        s = h.snapshot()
    assert s["rpm"] == 1.0 and abs(s["p50_ms"] - 400) < 9 and len(s["latency_series"]) == 1


def test_states_healthy_degraded_down_and_back():
    h = Health()
    clock = iter(3_000_000.0 + i * 0.001 for i in range(100_000))
    with mock.patch("gateway.routing.health.time.time", side_effect=lambda: next(clock)):
        for _ in range(20):
            h.observe(True, 10.0)
        assert h.state("closed", False) == "healthy"
        h.observe(False, 10.0, "server 503", ErrorClass.SERVER)
        assert h.state("closed", False) == "degraded"
        h.observe(False, 10.0, "server 503", ErrorClass.SERVER)
        assert h.state("closed", False) == "down"
        assert h.state("open", False) == "open" and h.state("closed", True) == "disabled"
        h.observe(True, 10.0)
        # one success ends "down", but 2 failures in 23 are over 5%: degraded...
        assert h.state("closed", False) == "degraded"
        for _ in range(RECOVERED_AFTER - 1):
            h.observe(True, 10.0)
        # ...until RECOVERED_AFTER straight successes say it is back
        assert h.state("closed", False) == "healthy"
        h.observe(False, 10.0, "429", ErrorClass.THROTTLED, retry_after=30)
        assert h.state("closed", False) == "throttled"
        h.observe(False, 10.0, "401", ErrorClass.MISCONFIGURED)
        assert h.state("closed", False) == "misconfigured"
        h.observe(True, 10.0)
        assert h.state("closed", False) != "misconfigured"


def test_latency_source_says_requests_or_probes():
    from gateway.routing.health import Health

    h = Health()
    assert h.snapshot()["latency_source"] is None
    h.observe(True, 3.0, probe=True)
    assert h.snapshot()["latency_source"] == "probes" and h.snapshot()["p50_ms"] is not None
    h.observe(True)
    h.answered(400.0)
    snap = h.snapshot()
    assert snap["latency_source"] == "requests" and snap["p50_ms"] >= 300


def test_time_to_first_token_and_total_latency_are_kept_apart():
    """A stream's total (start to last byte) and its TTFT (start to first token) each get p50/p95."""
    h = Health()
    with at(4_000_000.0):
        for ms in range(421, 654):           # 233 streams, 421..653 ms in total
            h.observe(True)
            h.answered(float(ms), float(ms) / 2)
        h.answered(100.0)                    # a non-stream: no TTFT
        s = h.snapshot()
    assert 421 * 0.98 <= s["p50_ms"] <= 653 and abs(s["p95_ms"] - 641) <= 641 * 0.02
    assert abs(s["ttft_p50_ms"] - 537 / 2) <= 537 / 2 * 0.03 and s["ttft_p95_ms"] > s["ttft_p50_ms"]
    assert len(s["latency_series"]) == len(s["ttft_series"]) == 1


def test_current_rate_drops_within_ten_seconds():
    """`rpm` is the last minute; `rpm_now` the last 10 s, so a disabled target shows 0 at once."""
    h = Health()
    with at(5_000_000.0):
        for _ in range(30):
            h.observe(True)
    with at(5_000_000.0 + 11):
        s = h.snapshot()
    assert s["rpm"] == 30.0 and s["rpm_now"] == 0.0
    with at(5_000_000.0 + 5):
        assert h.snapshot()["rpm_now"] == 180.0
