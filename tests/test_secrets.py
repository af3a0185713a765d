"""Secrets stay secret: vendor keys, client keys and the admin token never leave the process.

A gateway is started with distinctive values for every secret, then driven
through everything that writes text somewhere: successes, streams, failovers,
vendor auth failures, a relay that echoes the key it was sent back in its error
messages (some do), client mistakes, drills, probes, operator changes and the
admin SSE feed. Then every place text went is scanned for every secret:

- every log record at DEBUG (caplog, in-process) and the whole stderr of a
  `patchbay serve` child (subprocess);
- every HTTP response status line, header and body, data plane and admin API;
- every row of every table in the SQLite file, and the raw bytes of the file and
  its WAL (so an index or FTS shadow table cannot hide one);
- the overrides file written by operator changes.

And the admin API refuses every route it has without the token: the routes are
read from the running app, so an endpoint added later is covered without
editing this file.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from aiohttp import web

from gateway.control.admin import ADMIN_KEY
from gateway.mock.server import start_mock
from tests.conftest import base_config
from tests.serve_proc import ServeProcess, write_config

SECRETS = {
    "OPENAI_KEY": "sk-openai-SECRET-4d1c9a7e55b2",
    "DEEPSEEK_KEY": "sk-deepseek-SECRET-8b2f1e0c93aa",
    "ANTHROPIC_KEY": "sk-ant-SECRET-71e4c0dd2b6f",
    "GEMINI_KEY": "AIza-gemini-SECRET-wrong-c4e59d",     # not accepted by the vendor: auth failures
    "RELAY_KEY": "sk-relay-SECRET-echoed-0f9e8d7c",      # a relay that echoes it back in errors
}
CLIENT_KEYS = ["pb-client-SECRET-one-a1b2c3d4e5", "pb-client-SECRET-two-f6e7d8c9b0"]
ADMIN_TOKEN = "adm-SECRET-token-5e6f7a8b9c0d"
ALL_SECRETS = [*SECRETS.values(), *CLIENT_KEYS, ADMIN_TOKEN]
ENV = {**SECRETS, "PATCHBAY_CLIENT_KEYS": ",".join(CLIENT_KEYS), "PATCHBAY_ADMIN_TOKEN": ADMIN_TOKEN}
VENDOR_ACCEPTS = [SECRETS["OPENAI_KEY"], SECRETS["DEEPSEEK_KEY"], SECRETS["ANTHROPIC_KEY"]]


def leaks(blob: str | bytes, where: str) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    found = []
    for s in ALL_SECRETS:
        # the whole secret, and its distinctive tail (a "masked" key that keeps most of it still leaks)
        if s in text or s[-12:] in text:
            found.append(f"{s[:12]}... in {where}")
    return found


# --------------------------------------------------------------------------- a relay that echoes keys


async def start_echo_relay() -> tuple[web.AppRunner, str]:
    """An OpenAI-compatible relay with bad manners: its errors quote the key it was sent, in full."""

    def presented(request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "echo",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial "},
                                  "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            err = {"error": {"message": f"key {presented(request)} was revoked mid-stream", "type": "server_error"}}
            await resp.write(b"data: " + orjson.dumps(err) + b"\n\n")
            return resp
        return web.json_response({"error": {"message": f"Incorrect API key provided: {presented(request)}",
                                            "type": "invalid_request_error", "code": "invalid_api_key"}},
                                 status=401)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": f"key {presented(request)} is not allowed to list models",
                                            "type": "invalid_request_error"}}, status=403)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


def secret_config(mock_url: str, relay_url: str, tmp_path: Path) -> dict[str, Any]:
    raw = base_config(mock_url, tmp_path)
    raw["server"]["max_body_bytes"] = 32 * 1024
    raw["prober"] = {"enabled": True, "interval": 0.3, "mode": "models"}
    for name, env in (("openai", "OPENAI_KEY"), ("deepseek", "DEEPSEEK_KEY"), ("anthropic", "ANTHROPIC_KEY"),
                      ("gemini", "GEMINI_KEY")):
        raw["vendors"][name]["api_key_env"] = env
    raw["vendors"]["relay"] = {"kind": "openai", "base_url": relay_url, "api_key_env": "RELAY_KEY"}
    raw["routes"] = [
        {"name": "chat", "targets": [{"vendor": "openai", "model": "gpt-4.1"},
                                     {"vendor": "deepseek", "model": "deepseek-chat"}]},
        {"name": "mixed", "targets": [{"vendor": "gemini", "model": "gemini-2.0-flash"},
                                      {"vendor": "anthropic", "model": "claude-sonnet-4", "prefill": True}]},
        {"name": "relay", "targets": [{"vendor": "relay", "model": "gpt-echo"},
                                      {"vendor": "anthropic", "model": "claude-sonnet-4", "prefill": True}]},
        {"name": "relay-only", "targets": [{"vendor": "relay", "model": "gpt-echo"}]},
    ]
    return raw


# --------------------------------------------------------------------------- traffic


class Capture:
    """Every response seen, as text: status line, headers and body."""

    def __init__(self) -> None:
        self.blobs: list[tuple[str, str]] = []

    def add(self, what: str, r: httpx.Response, body: bytes | None = None) -> httpx.Response:
        head = f"HTTP {r.status_code}\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.multi_items())
        self.blobs.append((what, head + "\n\n" + (body if body is not None else r.content).decode("utf-8", "replace")))
        return r


async def drive(data_url: str, admin_url: str, mock_url: str, cap: Capture) -> None:
    """Everything a busy day does, through the public doors only."""
    key = {"Authorization": f"Bearer {CLIENT_KEYS[0]}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Patchbay-Operator": "secrets-test"}
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}
    async with httpx.AsyncClient(base_url=data_url, timeout=30) as c, \
            httpx.AsyncClient(base_url=admin_url, timeout=30) as a, \
            httpx.AsyncClient(base_url=mock_url, timeout=10) as m:

        async def post(what: str, body: Any, headers: dict | None = None, raw: bytes | None = None) -> httpx.Response:
            kw: dict[str, Any] = {"content": raw} if raw is not None else {"json": body}
            return cap.add(what, await c.post("/v1/chat/completions", headers=key if headers is None else headers,
                                              **kw))

        async def stream(what: str, body: Any) -> bytes:
            streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
            async with c.stream("POST", "/v1/chat/completions", headers=key, json=streamed) as r:
                data = await r.aread()
                cap.add(what, r, data)
                return data

        # SSE feed open for the whole run
        sse_chunks: list[bytes] = []

        async def watch() -> None:
            async with a.stream("GET", "/admin/events", headers=admin, timeout=None) as r:
                async for chunk in r.aiter_bytes():
                    sse_chunks.append(chunk)

        watcher = asyncio.create_task(watch())
        try:
            # successes
            assert (await post("ok", chat)).status_code == 200
            assert (await post("ok second key", chat, {"Authorization": f"Bearer {CLIENT_KEYS[1]}"})).status_code == 200
            assert (await post("anthropic-style key", chat, {"x-api-key": CLIENT_KEYS[0]})).status_code == 200
            assert (await post("google-style key", chat, {"x-goog-api-key": CLIENT_KEYS[1]})).status_code == 200
            assert b"[DONE]" in await stream("stream ok", chat)
            assert (await post("mixed", {**chat, "model": "mixed"})).status_code == 200   # gemini 400 -> anthropic
            assert (await post("relay", {**chat, "model": "relay"})).status_code == 200   # echo 401 -> anthropic
            await stream("relay stream", {**chat, "model": "relay"})                     # echo error mid-stream
            await stream("relay-only stream", {**chat, "model": "relay-only"})
            await post("relay-only", {**chat, "model": "relay-only"})                    # echo 401, nowhere to go
            # client mistakes and auth failures
            for what, headers in (("no key", {}), ("wrong key", {"Authorization": "Bearer pb-client-nope"}),
                                  ("basic", {"Authorization": f"Basic {CLIENT_KEYS[0]}"}),
                                  ("key in other header", {"api-key": CLIENT_KEYS[0]}),
                                  ("wrong x-api-key", {"x-api-key": "pb-client-nope"})):
                assert (await post(what, chat, headers)).status_code == 401
            assert (await post("bad json", None, raw=b"{nope")).status_code == 400
            assert (await post("unknown model", {**chat, "model": "gpt-5"})).status_code == 404
            assert (await post("too big", None, raw=b'{"x": "' + b"y" * 40_000 + b'"}')).status_code == 413
            assert (await post("bad field", {**chat, "temperature": "hot"})).status_code == 400
            cap.add("models", await c.get("/v1/models", headers=key))
            cap.add("models no key", await c.get("/v1/models"))
            cap.add("healthz", await c.get("/healthz"))
            # vendor failures and failovers
            await m.post("/_mock/faults", json={"model": "gpt-4.1", "fault": "error:503"})
            for i in range(4):                       # opens the breaker on the way
                assert (await post(f"failover {i}", chat)).status_code == 200
            await m.post("/_mock/faults", json={"model": "deepseek-chat", "fault": "auth"})
            await post("all down", chat)
            await m.post("/_mock/faults", json={"model": "deepseek-chat", "fault": "cut:2"})
            await stream("cut", chat)
            await m.delete("/_mock/faults")
            # operator changes (written to the overrides file) and history
            for what, method, path, body in [
                ("order", "POST", "/admin/routes/chat/order", {"order": ["deepseek/deepseek-chat", "openai/gpt-4.1"]}),
                ("disable", "POST", f"/admin/targets/{quote('openai/gpt-4.1', safe='')}/disable", {"reason": "test"}),
                ("enable", "POST", "/admin/targets/openai/gpt-4.1/enable", {}),
                ("vendor off", "POST", "/admin/vendors/gemini/disable", {"reason": "bad key"}),
                ("vendor on", "POST", "/admin/vendors/gemini/enable", {}),
                ("drill", "POST", "/admin/drills", {"target": "deepseek/deepseek-chat", "fault": "error:503",
                                                    "duration": 1, "traffic": 5}),
            ]:
                r = cap.add(what, await a.request(method, path, headers=admin, json=body))
                assert r.status_code in (200, 201), r.text
            drill_id = r.json()["id"]
            await asyncio.sleep(1.5)
            cap.add("drill get", await a.get(f"/admin/drills/{drill_id}", headers=admin))
            cap.add("drills", await a.get("/admin/drills", headers=admin))
            cap.add("state", await a.get("/admin/state", headers=admin))
            reqs = cap.add("requests", await a.get("/admin/requests?limit=200", headers=admin)).json()["requests"]
            for row in reqs[:40]:
                cap.add("request detail", await a.get(f"/admin/requests/{row['id']}", headers=admin))
            cap.add("events recent", await a.get("/admin/events/recent?limit=500", headers=admin))
            metrics = cap.add("metrics", await a.get("/metrics", headers=admin))
            assert metrics.status_code == 200 and "patchbay_requests_total" in metrics.text
            cap.add("wrong admin token", await a.get("/admin/state", headers={"Authorization": "Bearer nope"}))
            cap.add("unknown admin path", await a.get("/admin/nope", headers=admin))
            await asyncio.sleep(1.2)                  # one more SSE state tick
        finally:
            watcher.cancel()
            try:
                await watcher
            except (asyncio.CancelledError, httpx.HTTPError):
                pass
        cap.blobs.append(("admin SSE", b"".join(sse_chunks).decode("utf-8", "replace")))
        assert b"event: state" in b"".join(sse_chunks)


def scan_database(db: Path) -> list[str]:
    found: list[str] = []
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "requests" in tables and "attempts" in tables
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"'):
                found += leaks(" | ".join(map(str, row)), f"table {t}")
        n_attempt_errors = con.execute("SELECT count(*) FROM attempts WHERE error LIKE '%Incorrect API key%'"
                                       ).fetchone()[0]
        assert n_attempt_errors >= 1       # the echoing relay's errors were recorded (redacted), not dropped
    for suffix in ("", "-wal", "-shm"):
        f = Path(f"{db}{suffix}")
        if f.exists():
            found += leaks(f.read_bytes(), f.name)
    return found


# --------------------------------------------------------------------------- tests


async def test_no_secret_reaches_logs_responses_or_the_database_in_process(
        tmp_path: Path, start_gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    mock = await start_mock(keys=VENDOR_ACCEPTS)
    relay, relay_url = await start_echo_relay()
    try:
        raw = secret_config(mock.url, relay_url, tmp_path)
        gw = await start_gateway(raw, env=dict(ENV), with_prober=True)
        cap = Capture()
        await drive(gw.url, gw.admin_url, mock.url, cap)
        assert mock.stats["chat"]                 # the keys really were used against the vendors
        await gw.stop()                           # flush every row before reading the file
    finally:
        await relay.cleanup()
        await mock.stop()

    found: list[str] = []
    for what, blob in cap.blobs:
        found += leaks(blob, f"response: {what}")
    log_text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "Incorrect API key" in log_text or any("Incorrect API key" in b for _, b in cap.blobs)
    found += leaks(log_text, "log")
    found += scan_database(tmp_path / "patchbay.db")
    overrides = tmp_path / "patchbay.overrides.toml"
    assert overrides.exists()
    found += leaks(overrides.read_text(), "overrides file")
    assert not found, "\n".join(found)


async def test_no_secret_reaches_a_serve_process_stderr_or_its_database(tmp_path: Path) -> None:
    mock = await start_mock(keys=VENDOR_ACCEPTS)
    relay, relay_url = await start_echo_relay()
    gw = None
    try:
        raw = secret_config(mock.url, relay_url, tmp_path)
        gw = ServeProcess(write_config(tmp_path / "patchbay.toml", raw), env=ENV, log_level="debug")
        await asyncio.to_thread(gw.start)
        cap = Capture()
        await drive(gw.url, gw.admin_url, mock.url, cap)
        rc = await asyncio.to_thread(gw.stop)
        assert rc == 0, gw.stderr()
    finally:
        if gw is not None:
            gw.kill()
        await relay.cleanup()
        await mock.stop()
    stderr = gw.stderr()
    found: list[str] = []
    for what, blob in cap.blobs:
        found += leaks(blob, f"response: {what}")
    found += leaks(stderr, "stderr")
    found += scan_database(tmp_path / "patchbay.db")
    found += leaks((tmp_path / "patchbay.overrides.toml").read_text(), "overrides file")
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- the admin door

SAMPLE_PARAMS = {"route": "chat", "id": "openai/gpt-4.1", "vendor": "openai", "action": "disable"}


def admin_routes(gw: Any) -> list[tuple[str, str]]:
    """(method, concrete path) for every route of the running admin app."""
    apps = [r.app for r in gw._runners if ADMIN_KEY in r.app]
    assert len(apps) == 1
    out = []
    for route in apps[0].router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        # a new path parameter needs a sample value here (KeyError tells you which)
        path = info["path"] if "path" in info else info["formatter"].format(**SAMPLE_PARAMS)
        out.append((route.method, path))
    return out


async def test_admin_api_refuses_every_route_without_the_token(start_gateway, mock, tmp_path: Path) -> None:
    raw = base_config(mock.url, tmp_path)
    gw = await start_gateway(raw, env={"PATCHBAY_ADMIN_TOKEN": ADMIN_TOKEN})
    routes = admin_routes(gw)
    methods = {m for m, _ in routes}
    assert {"GET", "POST", "DELETE"} <= methods and len(routes) >= 12, routes
    before = copy.deepcopy({t.id: t.disabled for t in gw.runtime.targets.values()})
    order_before = {n: list(r.order) for n, r in gw.runtime.routes.items()}
    bad_auth = [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong-token"},
                {"Authorization": f"Basic {ADMIN_TOKEN}"}, {"Authorization": ADMIN_TOKEN},
                {"Authorization": f"Bearer {ADMIN_TOKEN}x"}, {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
                {"X-Api-Key": ADMIN_TOKEN}]
    body = {"order": ["deepseek/deepseek-chat", "openai/gpt-4.1"], "reason": "x", "target": "openai/gpt-4.1",
            "fault": "error:503", "duration": 1}
    async with httpx.AsyncClient(base_url=gw.admin_url, timeout=10) as a:
        checked = 0
        for method, path in [*routes, ("GET", "/admin/nope"), ("PUT", "/admin/state"), ("GET", "/")]:
            for headers in bad_auth:
                r = await a.request(method, path, headers=headers, json=body if method in ("POST", "DELETE") else None)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
                if method != "HEAD":
                    assert r.json()["error"]["code"] == "invalid_admin_token"
                    assert ADMIN_TOKEN not in r.text
                checked += 1
        # and the door does open with the token (so the 401s above were about the token)
        ok = await a.get("/admin/drills", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert ok.status_code == 200
        assert ok.json()["drills"] == []                                      # no drill slipped through
    assert checked >= len(routes) * len(bad_auth)
    assert {t.id: t.disabled for t in gw.runtime.targets.values()} == before     # nothing changed behind the 401s
    assert {n: list(r.order) for n, r in gw.runtime.routes.items()} == order_before


async def test_without_an_admin_token_the_admin_api_does_not_listen(start_gateway, mock, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """An empty token must mean "no admin API", never "an admin API anyone can use"."""
    raw = base_config(mock.url, tmp_path)
    gw = await start_gateway(raw, env={"PATCHBAY_ADMIN_TOKEN": ""})
    assert gw.admin_port is None and not any(ADMIN_KEY in r.app for r in gw._runners)
    assert "admin API" in caplog.text and "disabled" in caplog.text
