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
    from tui.ops import format_status
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


# ------------------------------------------------------------------ one admin client for the CLI and the panel

def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_the_cli_and_the_panel_share_one_admin_client(stack, capsys, monkeypatch):
    """The CLI runs the panel's AdminClient (through SyncAdminClient): its words and exit codes for the API
    port, a refused token and a dead port are the panel client's exceptions, and every CLI request goes
    through AdminClient's own checks. The old sync client is gone."""
    import asyncio
    import importlib.util

    from tui.client import (
        TOKEN_ENV,
        AdminAuthError,
        AdminClient,
        AdminProblem,
        AdminUnreachable,
        AdminWrongListener,
    )

    mock, gw, url = stack
    assert importlib.util.find_spec("gateway.control.client") is None

    async def panel_error(base: str, token: str) -> AdminProblem:
        async with AdminClient(base, token) as client:
            with pytest.raises(AdminProblem) as exc:
                await client.state()
        return exc.value

    cases = [(gw.url, TOKEN, AdminWrongListener, 1), (url, "not-it", AdminAuthError, 3),
             (url, "", AdminAuthError, 3), (_dead_url(), TOKEN, AdminUnreachable, 2)]
    for base, token, kind, code in cases:
        monkeypatch.setenv(TOKEN_ENV, token)
        exc = asyncio.run(panel_error(base, token))
        assert type(exc) is kind and exc.exit_code == code
        got, out, err = run(capsys, "status", "--admin-url", base)
        assert (got, err.strip()) == (code, f"patchbay: {exc.explain()}")
    wrong = asyncio.run(panel_error(gw.url, TOKEN))
    assert "is the gateway's client API (server.listen)" in wrong.message     # the panel shows these words too

    seen: list[str] = []
    check = AdminClient._check

    def spy(self: AdminClient, resp) -> None:
        seen.append(resp.request.url.raw_path.decode())
        check(self, resp)
    monkeypatch.setattr(AdminClient, "_check", spy)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    code, out, err = run(capsys, "disable", "openai/gpt-4.1", "--reason", "one client", "--admin-url", url)
    assert code == 0, err
    assert seen == ["/admin/targets/openai%2Fgpt-4.1/disable"]

    async def panel_disable() -> dict:
        # no scheme, and the operator from PATCHBAY_OPERATOR, as for the CLI
        async with AdminClient(url.removeprefix("http://"), TOKEN) as client:
            return await client.disable_target("deepseek/deepseek-chat", "panel")
    assert asyncio.run(panel_disable())["changed"]
    assert gw.runtime.targets["deepseek/deepseek-chat"].disabled_by == "127.0.0.1 (dave)"


def test_admin_events_are_parsed_by_httpx_sse_from_a_real_gateway(stack, monkeypatch):
    """AdminClient.events() reads a real gateway's /admin/events through httpx-sse: the state event and an
    operator event arrive with their names and JSON data; a refused token, the API port, a dead port and a
    silent stream (the read timeout) raise the client's exceptions."""
    import asyncio

    import httpx_sse

    import tui.client as tc

    mock, gw, url = stack
    parsed: list[str] = []
    aiter_sse = httpx_sse.EventSource.aiter_sse

    async def spy(self):
        async for sse in aiter_sse(self):
            parsed.append(sse.event)
            yield sse
    monkeypatch.setattr(httpx_sse.EventSource, "aiter_sse", spy)

    async def watch() -> list[tc.SSEMessage]:
        got: list[tc.SSEMessage] = []
        async with tc.AdminClient(url, TOKEN) as client:
            async for msg in client.events():
                got.append(msg)
                if msg.event == "state" and len(got) == 1:
                    await client.disable_target("openai/gpt-4.1", "sse test")
                if msg.event == "operator":
                    return got
        return got

    got = asyncio.run(asyncio.wait_for(watch(), 10))
    assert got[0].event == "state" and isinstance(got[0].data, dict)
    assert {t["id"] for t in got[0].data["targets"]} >= {"openai/gpt-4.1"}
    op = got[-1]
    assert op.event == "operator" and op.data["kind"] == "operator" and op.data["target"] == "openai/gpt-4.1"
    assert "dave" in str(op.data["detail"]) and "sse test" in str(op.data["detail"])
    assert parsed[:1] == ["message"] and "state" in parsed and "operator" in parsed   # `retry:` block first

    async def first_error(base: str, token: str) -> Exception:
        async with tc.AdminClient(base, token, timeout=2) as client:
            try:
                async for _ in client.events():
                    pass
            except Exception as exc:   # noqa: BLE001 - the test looks at which one
                return exc
        raise AssertionError("the stream ended without an error")

    assert isinstance(asyncio.run(first_error(url, "not-it")), tc.AdminAuthError)
    assert isinstance(asyncio.run(first_error(gw.url, TOKEN)), tc.AdminWrongListener)
    assert isinstance(asyncio.run(first_error(_dead_url(), TOKEN)), tc.AdminUnreachable)

    async def silent_stream() -> Exception:
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(30)
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await first_error(f"http://127.0.0.1:{port}", TOKEN)
        finally:
            server.close()

    monkeypatch.setattr(tc, "EVENTS_READ_TIMEOUT", 0.3)
    exc = asyncio.run(asyncio.wait_for(silent_stream(), 10))
    assert isinstance(exc, tc.AdminUnreachable) and "stopped answering" in str(exc)
