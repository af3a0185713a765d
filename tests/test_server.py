"""The data plane's edges: client auth, bad input, /v1/models, /healthz, and sync SDK clients."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

MSG = [{"role": "user", "content": "hi"}]
KEYS = {"PATCHBAY_CLIENT_KEYS": "pb-key-one, pb-key-two"}


async def post(gw, **kw) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as hc:
        return await hc.post("/v1/chat/completions", **kw)


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


async def test_client_keys_are_required_when_set(gateway_cfg, start_gateway, caplog):
    gw = await start_gateway(gateway_cfg, env=KEYS)
    with pytest.raises(openai.AuthenticationError) as ei:
        await openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="chat", messages=MSG)
    assert ei.value.code == "invalid_api_key"
    r = await post(gw, json={"model": "chat", "messages": MSG})
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    for key in ("pb-key-one", "pb-key-two"):
        c = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
        resp = await c.chat.completions.create(model="chat", messages=MSG)
        assert resp.choices[0].message.content
    assert "pb-key-one" not in caplog.text


async def test_open_server_logs_a_warning(gateway_cfg, start_gateway, caplog):
    with caplog.at_level(logging.WARNING, logger="patchbay"):
        gw = await start_gateway(gateway_cfg)
    assert "accepts any caller" in caplog.text
    assert (await post(gw, json={"model": "chat", "messages": MSG})).status_code == 200


@pytest.mark.parametrize("body,status,code,fragment", [
    (b"{not json", 400, "invalid_json", "could not parse the JSON"),
    (b"[1, 2]", 400, None, "must be a JSON object"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "missing_required_parameter", "model"),
    (b'{"model": 5, "messages": []}', 400, "invalid_type", "'model'"),
    (b'{"model": "chat"}', 400, "missing_required_parameter", "'messages'"),
    (b'{"model": "chat", "messages": "hi"}', 400, "invalid_type", "'messages'"),
    (b'{"model": "chat", "messages": []}', 400, "empty_array", "empty array"),
    (b'{"model": "chat", "messages": [{"role": "wizard", "content": "x"}]}', 400, "invalid_value", "role"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": 5}]}', 400, "invalid_type", "content"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400,
     "invalid_type", "'temperature'"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400,
     "invalid_type", "'stream'"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": true}', 400,
     "invalid_type", "'max_tokens'"),
    (b'{"model": "gpt-5-turbo", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found",
     "Available: chat, openai/gpt-4.1, deepseek/deepseek-chat"),
])
async def test_bad_input_gets_openai_style_errors(mock, gateway_cfg, start_gateway, recorder, body, status, code,
                                                  fragment):
    gw = await start_gateway(gateway_cfg, store=recorder)
    r = await post(gw, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = error_of(r)
    assert err["code"] == code and fragment in err["message"]
    assert r.headers["x-request-id"] and r.headers["x-patchbay-target"] == "none"
    assert r.headers["x-patchbay-attempts"] == "0" and float(r.headers["x-patchbay-overhead-ms"]) >= 0
    assert mock.stats["total"] == 0  # no vendor saw it
    assert not recorder.of("AttemptRow")


async def test_oversize_body_is_413(gateway_cfg, start_gateway):
    gateway_cfg["server"]["max_body_bytes"] = 10_000
    gw = await start_gateway(gateway_cfg)
    big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 20_000}]}
    r = await post(gw, json=big)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    # chunked upload without a Content-Length is cut off the same way
    async def gen():
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"y" * 1000
        yield b'"}]}'
    r = await post(gw, content=gen())
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    r = await post(gw, json={"model": "chat", "messages": MSG})
    assert r.status_code == 200  # and the server is fine afterwards


async def test_unknown_paths_and_methods(gateway_cfg, start_gateway):
    gw = await start_gateway(gateway_cfg)
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        r = await hc.get("/v1/embeddings")
        assert r.status_code == 404 and error_of(r)["code"] == "unknown_url"
        r = await hc.get("/v1/chat/completions")
        assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"


async def test_models_lists_routes_and_targets(gateway_cfg, start_gateway):
    gw = await start_gateway(gateway_cfg)
    models = await openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0).models.list()
    ids = [m.id for m in models.data]
    assert ids == ["chat", "openai/gpt-4.1", "deepseek/deepseek-chat"]


async def test_healthz(gateway_cfg, start_gateway):
    gw = await start_gateway(gateway_cfg)
    async with httpx.AsyncClient(base_url=gw.url) as hc:
        r = await hc.get("/healthz")
    assert r.status_code == 200
    assert r.json()["routes"] == {"chat": "openai/gpt-4.1"} and r.json()["store"]["ok"] is True


def test_sync_openai_sdk_stream_and_not(bg_stack):
    mock, gw = bg_stack()
    mock.set_fault("error", model="gpt-4.1", status=503, times=2)
    c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
    resp = c.chat.completions.create(model="chat", messages=MSG)
    assert resp.model == "deepseek-chat"
    text = "".join(ch.choices[0].delta.content or "" for ch in
                   c.chat.completions.create(model="chat", messages=MSG, stream=True) if ch.choices)
    assert text.startswith("Hello from openai/gpt-4.1")
