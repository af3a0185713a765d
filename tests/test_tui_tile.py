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
    assert TargetTile._lat_text(idle).plain.startswith("probe p50 ")
    assert TargetTile._lat_text(busy).plain.startswith("p50 ")
