"""The operator CLI (`patchbay status/order/disable/enable/drill/history --admin-url`) against a real gateway."""

from __future__ import annotations

import socket

import pytest

from gateway.cli import main

TOKEN = "cli-token-abcdef"
ENV = {"PATCHBAY_ADMIN_TOKEN": TOKEN}


@pytest.fixture
def stack(bg_stack, monkeypatch):
    monkeypatch.setenv("PATCHBAY_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("PATCHBAY_OPERATOR", "dave")

    def mutate(raw: dict) -> None:
        raw["breaker"] = {"failures_to_open": 2, "cooldown": 0.5}
        raw["prober"] = {"enabled": True, "interval": 0.2}

    mock, gw = bg_stack(mutate, env=ENV, with_prober=True)
    return mock, gw, gw.admin_url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_order_disable_enable(stack, capsys):
    mock, gw, url = stack
    code, out, err = run(capsys, "status", "--admin-url", url)
    assert code == 0, err
    assert "route chat: openai/gpt-4.1 > deepseek/deepseek-chat" in out
    assert "serving: openai/gpt-4.1" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith(("openai/", "deepseek/"))}
    assert lines["openai/gpt-4.1"][1] == "healthy" and lines["openai/gpt-4.1"][2] == "closed"

    code, out, err = run(capsys, "order", "chat", "deepseek/deepseek-chat", "openai/gpt-4.1", "--admin-url", url)
    assert code == 0 and "route chat: deepseek/deepseek-chat > openai/gpt-4.1" in out
    code, out, err = run(capsys, "order", "chat", "openai/gpt-4.1", "--admin-url", url)
    assert code == 0 and "route chat: openai/gpt-4.1 > deepseek/deepseek-chat" in out, err
    code, out, err = run(capsys, "order", "chat", "deepseek/deepseek-chat", "--admin-url", url)
    assert code == 0 and "route chat: deepseek/deepseek-chat > openai/gpt-4.1" in out, err
    code, out, err = run(capsys, "order", "chat", "gemini/nope", "--admin-url", url)
    assert code == 1 and "not in this route: gemini/nope" in err

    code, out, err = run(capsys, "disable", "openai/gpt-4.1", "--reason", "maintenance", "--admin-url", url)
    assert code == 0 and "openai/gpt-4.1: disabled (maintenance)" in out
    code, out, err = run(capsys, "disable", "deepseek", "--admin-url", url)
    assert code == 0 and "vendor deepseek: disabled, 1 target(s): deepseek/deepseek-chat" in out
    code, out, _ = run(capsys, "status", "--admin-url", url)
    assert "serving: NOTHING" in out and "maintenance" in out
    assert gw.runtime.targets["openai/gpt-4.1"].disabled_by == "127.0.0.1 (dave)"
    for what in ("openai/gpt-4.1", "deepseek"):
        code, out, err = run(capsys, "enable", what, "--admin-url", url)
        assert code == 0, err
    assert not any(t.disabled for t in gw.runtime.targets.values())
    code, out, err = run(capsys, "disable", "nobody/x", "--admin-url", url)
    assert code == 1 and "unknown target" in err


def test_clear_errors_when_unreachable_or_token_wrong(stack, capsys, monkeypatch):
    _, _, url = stack
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, out, err = run(capsys, "status", "--admin-url", dead)
    assert code == 2 and "cannot reach the admin API" in err and "Traceback" not in err
    monkeypatch.setenv("PATCHBAY_ADMIN_TOKEN", "not-it")
    code, out, err = run(capsys, "status", "--admin-url", url)
    assert code == 3 and "not the gateway's admin token" in err and "not-it" not in err
    monkeypatch.delenv("PATCHBAY_ADMIN_TOKEN")
    code, out, err = run(capsys, "enable", "openai", "--admin-url", url)
    assert code == 3 and "PATCHBAY_ADMIN_TOKEN is not set" in err


def test_drill_waits_and_prints_the_report_then_history(stack, capsys):
    mock, gw, url = stack
    code, out, err = run(capsys, "drill", "openai/gpt-4.1", "--fault", "error:503", "--duration", "1",
                         "--traffic", "20", "--admin-url", url)
    assert code == 0, err
    assert "started: error:503 on openai/gpt-4.1" in out
    report = out[out.index("-> done"):]
    fields = {ln.split("  ")[1].strip(): ln.split("  ", 2)[-1].strip()
              for ln in report.splitlines()[1:] if ln.startswith("  ")}
    assert fields["client-visible errors"] == "0"
    assert int(fields["requests rerouted"]) >= 15
    assert "recovered" in fields["time back to normal"]
    code, out, err = run(capsys, "drill", "openai/gpt-4.1", "--fault", "bogus", "--admin-url", url)
    assert code == 1 and "unknown fault" in err

    gw.store.flush(5)
    code, out, err = run(capsys, "history", "--admin-url", url, "--limit", "5", "--target", "deepseek/deepseek-chat")
    assert code == 0, err
    rows = [ln for ln in out.splitlines()[2:] if ln.strip() and not ln.startswith("(")]
    assert len(rows) == 5 and all("deepseek/deepseek-chat" in ln and "(drill)" in ln for ln in rows)
    assert "use --limit for more" in out


def test_target_and_vendor_disables_are_kept_apart(stack, capsys):
    """Issue 12: disabling a target then its vendor keeps both reasons; enabling the vendor leaves
    the target off (and says so), and both survive in the overrides file."""
    mock, gw, url = stack
    run(capsys, "disable", "openai/gpt-4.1", "--reason", "incident 42", "--admin-url", url)
    code, out, err = run(capsys, "disable", "openai", "--reason", "vendor outage", "--admin-url", url)
    assert code == 0, err
    code, out, _ = run(capsys, "status", "--admin-url", url)
    line = next(ln for ln in out.splitlines() if ln.startswith("openai/gpt-4.1"))
    assert "target: incident 42" in line and "vendor openai: vendor outage" in line
    from gateway.control.overrides import current
    saved = current(gw.runtime)
    assert saved["disabled"]["openai/gpt-4.1"]["reason"] == "incident 42"
    assert saved["disabled_vendors"]["openai"]["reason"] == "vendor outage"
    code, out, err = run(capsys, "enable", "openai", "--admin-url", url)
    assert code == 0 and "still off: openai/gpt-4.1 is disabled by itself (incident 42)" in out
    assert gw.runtime.targets["openai/gpt-4.1"].disabled
    assert gw.runtime.targets["openai/gpt-4.1"].disabled_reason == "incident 42"
    run(capsys, "disable", "openai", "--reason", "vendor outage", "--admin-url", url)
    code, out, err = run(capsys, "enable", "openai/gpt-4.1", "--admin-url", url)
    assert code == 0 and "still off: its vendor openai is disabled (vendor outage)" in out
    run(capsys, "enable", "openai", "--admin-url", url)
    assert not gw.runtime.targets["openai/gpt-4.1"].disabled


def test_history_and_status_exports_and_admin_url_mistakes(stack, capsys, monkeypatch):
    """Issue 12: `history` defaults to the admin API like every operator command, `--limit 0` is refused,
    a URL without a scheme works, the API port is named as such, and --json / --csv export."""
    import csv
    import io
    import json

    import httpx

    mock, gw, url = stack
    for _ in range(3):
        httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=10)
    gw.store.flush(5)
    monkeypatch.chdir(gw.config.path.rsplit("/", 1)[0])     # a patchbay.toml here must not be read
    monkeypatch.setenv("PATCHBAY_ADMIN_URL", url.removeprefix("http://"))
    code, out, err = run(capsys, "history", "--limit", "2")
    assert code == 0, err
    assert "request id" in out.splitlines()[0] and out.count("req_") == 2
    code, out, err = run(capsys, "history", "--json", "--limit", "3")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 3 and rows[0]["id"].startswith("req_")
    code, out, err = run(capsys, "history", "--csv", "--admin-url", url, "--outcome", "ok")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 3 and table[0]["final_target"] == "openai/gpt-4.1"
    code, out, err = run(capsys, "status", "--json")
    assert code == 0 and {t["id"] for t in json.loads(out)["targets"]} >= {"openai/gpt-4.1"}
    with pytest.raises(SystemExit) as exc:
        main(["history", "--limit", "0"])
    assert exc.value.code == 2 and "must be 1-1000" in capsys.readouterr().err
    code, out, err = run(capsys, "status", "--admin-url", gw.url)
    assert code == 1 and "point --admin-url at the admin listener" in err and "Traceback" not in err


def test_status_shows_total_and_ttft_the_current_rate_and_no_price(stack, capsys, monkeypatch):
    """Issue 12: `status` has TTFT beside total latency, RPM over the last 10 s, `no price`."""
    from gateway.control.client import format_status
    mock, gw, url = stack
    gw.runtime.targets["deepseek/deepseek-chat"].price = None
    code, out, err = run(capsys, "status", "--admin-url", url)
    assert code == 0, err
    header = next(ln for ln in out.splitlines() if ln.startswith("TARGET"))
    assert header.split()[:10] == ["TARGET", "STATE", "BREAKER", "P50", "P95", "TTFT50", "TTFT95", "OK", "RPM", "$/H"]
    ds = next(ln for ln in out.splitlines() if ln.startswith("deepseek/"))
    assert "no price" in ds
    st = {"gateway": {}, "store": {}, "routes": [], "targets": [
        {"id": "a/b", "state": "disabled", "breaker": "closed", "p50_ms": 421.0, "p95_ms": 653.0,
         "ttft_p50_ms": 227.0, "ttft_p95_ms": 419.0, "rpm": 150, "rpm_now": 0, "priced": True,
         "cost_per_hour": 1.5, "disabled": True, "target_disabled": {"reason": "x"}}]}
    row = next(ln for ln in format_status(st).splitlines() if ln.startswith("a/b")).split()
    assert row[3:10] == ["421ms", "653ms", "227ms", "419ms", "-", "0", "1.50"]
