"""contrib/: the Grafana dashboard and the Prometheus alert rules parse and use only metrics the gateway exports.

"Exported" is read from a real scrape of a running gateway after a request,
so a metric renamed in the gateway and not in these files fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "contrib" / "grafana" / "patchbay-dashboard.json"
ALERTS = ROOT / "contrib" / "prometheus" / "patchbay-alerts.yml"
TOKEN = "adm-contrib-test"
#: names in PromQL that look like metrics of ours (process_* come from prometheus_client's ProcessCollector)
METRIC_REF = re.compile(r"\b((?:patchbay|process)_[a-zA-Z0-9_]+)\b")


@pytest.fixture
async def exported(start_gateway, gateway_cfg) -> set[str]:
    """Every sample and family name a live gateway's /metrics has, after one request."""
    gw = await start_gateway(gateway_cfg, env={"PATCHBAY_ADMIN_TOKEN": TOKEN})
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(gw.url + "/v1/chat/completions",
                         json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert r.status_code == 200
        text = (await c.get(gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    assert "patchbay_ttft_seconds_bucket" in names and "process_cpu_seconds_total" in names
    return names


def refs(expr: str) -> set[str]:
    return set(METRIC_REF.findall(expr))


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
    walk(dash["panels"])
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"variable {v['name']}", v["definition"]))
    return out


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_dashboard_uses_only_exported_metrics(exported: set[str]):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] == "Patchbay" and dash["uid"]
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        used = refs(expr)
        assert used, (title, expr)
        assert used <= exported, (title, used - exported)
    # what the issue asks the dashboard to show, each by at least one panel
    titles = " | ".join(t.lower() for t, _ in exprs)
    for topic in ("requests per second", "error", "failover", "duration percentiles", "time to first token",
                  "cost", "breaker", "target state", "by target"):
        assert topic in titles, topic
    all_refs = set().union(*(refs(e) for _, e in exprs))
    for needed in ("patchbay_requests_total", "patchbay_failovers_total", "patchbay_request_duration_seconds_bucket",
                   "patchbay_ttft_seconds_bucket", "patchbay_cost_usd_total", "patchbay_breaker_open",
                   "patchbay_target_state", "patchbay_attempts_total", "patchbay_store_backlog_rows"):
        assert needed in all_refs, needed
    # grid positions inside the 24-column grid, and unique panel ids
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0


def test_alert_rules_use_only_exported_metrics(exported: set[str]):
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert len(names) == len(rules)
    for r in rules:
        used = refs(r["expr"])
        assert used and used <= exported, (r["alert"], used - exported)
        assert r["labels"]["severity"] in ("page", "warn") and r["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), r
    by_metric = {m: r for r in rules for m in refs(r["expr"])}
    # the four the issue names
    assert re.search(r"patchbay_route_healthy_targets\s*==\s*0", by_metric["patchbay_route_healthy_targets"]["expr"])
    assert "patchbay_failovers_total" in by_metric
    breaker = by_metric["patchbay_breaker_open"]
    assert re.search(r"patchbay_breaker_open\s*==\s*1", breaker["expr"]) and breaker["for"].endswith("m")
    assert "deriv(patchbay_store_backlog_rows" in by_metric["patchbay_store_backlog_rows"]["expr"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package 'prometheus') not installed")
def test_promtool_accepts_the_alert_rules():
    out = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package 'prometheus') not installed")
def test_promtool_parses_every_dashboard_query(tmp_path: Path):
    """Each panel query, with Grafana's variables filled in, as a recording rule promtool must accept."""
    fill = {"$__rate_interval": "5m", "$__range": "1h", "$route": ".*", "$target": ".*", "$instance": ".*",
            "$job": ".*"}
    rules = []
    for i, (title, expr) in enumerate(e for e in dashboard_exprs() if not e[0].startswith("variable ")):
        for k, v in fill.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, (title, expr)
        rules.append({"record": f"patchbay:dashboard_panel_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
