"""A target with no traffic shows probe latency as probe latency, not as if it were faster than the serving one."""

from __future__ import annotations

from tui.model import TargetInfo
from tui.widgets.tile import TargetTile


def test_probe_latency_is_labelled():
    idle = TargetInfo.from_json({"id": "gemini/gemini-2.0-flash", "p50_ms": 1.0, "p95_ms": 4.0,
                                 "latency_source": "probes"})
    busy = TargetInfo.from_json({"id": "openai/gpt-4.1", "p50_ms": 420.0, "p95_ms": 500.0,
                                 "latency_source": "requests"})
    assert idle.latency_source == "probes"
    assert TargetTile._lat_text(idle).plain.startswith("probe p50/95 ")
    assert TargetTile._lat_text(busy).plain.startswith("p50/95 ")


def test_tile_shows_total_and_ttft_the_current_rate_no_price_and_both_disables():
    """Issue 12: total and TTFT p50/p95, the 10 s rate (a disabled target drops to 0 at once),
    "no price" instead of $0.00/h, and a target's own disable beside its vendor's."""
    t = TargetInfo.from_json({
        "id": "openai/gpt-4.1", "state": "disabled", "disabled": True, "p50_ms": 421.0, "p95_ms": 653.0,
        "ttft_p50_ms": 227.0, "ttft_p95_ms": 419.0, "rpm": 150.0, "rpm_now": 0.0, "priced": False,
        "cost_per_hour": 0.0, "target_disabled": {"reason": "incident 42"},
        "vendor_disabled": {"reason": "outage"}})
    assert TargetTile._lat_text(t).plain == "p50/95 421/653ms ttft 227/419ms"
    head = TargetTile._head_text(t).plain
    assert " 0 rpm " in head and "150" not in head and "no price" in head and "$0.00" not in head
    assert TargetTile._foot_text(t, 0.0).plain == "off target: incident 42 · vendor: outage"
