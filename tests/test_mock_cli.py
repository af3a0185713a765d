"""The mock as a process (``python -m gateway.mock``), from a thread, and its fault-spec parser."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import openai
import pytest

from gateway.mock.faults import FaultError, FaultTable, parse_fault
from gateway.mock.server import MockVendorThread, start_mock

MSGS = [{"role": "user", "content": "hi"}]


def test_module_entry_point_serves_and_stops_on_sigterm():
    env = {**os.environ, "MOCK_KEYS": "k1,k2"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.mock", "--port", "0", "--keys-env", "MOCK_KEYS",
                             "--tokens", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        assert m, line + proc.stderr.read()
        url = m.group(1)
        bases = {}
        for _ in range(4):
            name, _, base = proc.stdout.readline().strip().partition(" base_url = ")
            bases[name.strip()] = base
        assert bases == {"openai": f"{url}/openai/v1", "deepseek": f"{url}/deepseek/v1",
                         "anthropic": f"{url}/anthropic", "gemini": f"{url}/gemini"}
        c = openai.OpenAI(base_url=bases["openai"], api_key="k2", max_retries=0)
        r = c.chat.completions.create(model="gpt-4.1", messages=MSGS)
        assert r.choices[0].message.content == "Hello from openai/gpt-4.1."  # --tokens 3
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=bases["openai"], api_key="nope", max_retries=0).models.list()
        assert httpx.get(f"{url}/_mock/stats").json()["chat"]["openai"] == {"gpt-4.1": 1}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        proc.stdout.close()
        proc.stderr.close()


def test_module_entry_point_refuses_empty_keys_env():
    env = {k: v for k, v in os.environ.items() if k != "MOCK_NO_KEYS"}
    r = subprocess.run([sys.executable, "-m", "gateway.mock", "--port", "0", "--keys-env", "MOCK_NO_KEYS"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "MOCK_NO_KEYS" in r.stderr


def test_thread_helper_controls_from_another_thread():
    with MockVendorThread(tokens=2) as mock:
        assert mock.url == f"http://127.0.0.1:{mock.port}"
        c = openai.OpenAI(base_url=mock.base_url("openai"), api_key="k", max_retries=0)
        assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "Hello from"
        f = mock.set_fault("error:500", model="m", times=1)
        assert f.fault == "error" and f.status == 500
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", messages=MSGS)
        mock.configure(tokens=None)
        assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == \
            "Hello from openai/m. You said: hi"
        mock.set_fault("hang")
        assert mock.clear_faults() == 1
        assert mock.stats["chat"]["openai"] == {"m": 3}
        mock.reset_stats()
        assert mock.stats["total"] == 0
    # stopped: the port no longer answers
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{mock.url}/_mock/health", timeout=2)


async def test_token_interval_streams_the_same_content():
    server = await start_mock(token_interval_ms=1)
    try:
        async with openai.AsyncOpenAI(base_url=server.base_url("openai"), api_key="k", max_retries=0) as c:
            s = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])
            assert text == "Hello from openai/gpt-4.1. You said: hi"
            server.configure(token_interval_ms=0)
            server.set_fault("latency", ms=0, interval_ms=2, tokens=5)
            s = await c.chat.completions.create(model="gpt-4.1", messages=MSGS, stream=True)
            pieces = [ch.choices[0].delta.content async for ch in s if ch.choices and ch.choices[0].delta.content]
            assert len(pieces) == 5
    finally:
        await server.stop()
        await server.stop()  # idempotent


async def test_stop_releases_hanging_and_stalled_requests():
    server = await start_mock()
    server.set_fault("hang")
    async with httpx.AsyncClient(timeout=30) as h:
        import asyncio
        pending = asyncio.ensure_future(h.post(server.base_url("openai") + "/chat/completions",
                                               json={"model": "x", "messages": MSGS}))
        while server.stats["total"] == 0:
            await asyncio.sleep(0.01)
        await server.stop()  # returns although the request never got an answer
        with pytest.raises(httpx.HTTPError):
            await pending


@pytest.mark.parametrize("spec,expect", [
    ({"fault": "error:503"}, {"fault": "error", "status": 503}),
    ({"fault": "error", "status": "429", "retry_after": "1.5"}, {"status": 429, "retry_after": 1.5}),
    ({"fault": "cut:3", "model": "gpt-4.1"}, {"fault": "cut", "n": 3, "model": "gpt-4.1"}),
    ({"fault": "latency:250"}, {"ms": 250.0}),
    ({"fault": "slow-first-token:100"}, {"fault": "slow_first_token", "ms": 100.0}),
    ({"fault": "malformed"}, {"fault": "malformed", "n": None}),
    ({"fault": "flap:5", "status": 502}, {"fault": "flap", "seconds": 5.0, "status": 502}),
    ({"fault": "error_event:0", "type": "api_error"}, {"n": 0, "error_type": "api_error"}),
    ({"fault": "ok", "dialect": "gemini"}, {"fault": "ok", "dialect": "gemini"}),
])
def test_parse_fault(spec, expect):
    f = parse_fault(spec)
    for k, v in expect.items():
        assert getattr(f, k) == v


@pytest.mark.parametrize("spec", [
    {"fault": "boom"}, {"fault": "error"}, {"fault": "error:200"}, {"fault": "latency"},
    {"fault": "stall"}, {"fault": "flap"}, {"fault": "hang:3"}, {"fault": "error:503", "times": 0},
    {"fault": "error:503", "scope": "everything"}, {"fault": "cut:-1"}, {"fault": "cut:x"},
    {"fault": "ok", "model": ""}, {"fault": 7}, {"fault": "error:503", "status": True}, "error",
])
def test_parse_fault_refuses(spec):
    with pytest.raises(FaultError):
        parse_fault(spec)


def test_fault_lookup_order_and_times():
    t = FaultTable()
    t.set(parse_fault({"fault": "error:500"}))
    t.set(parse_fault({"fault": "error:501", "model": "a"}))
    t.set(parse_fault({"fault": "error:502", "dialect": "gemini"}))
    t.set(parse_fault({"fault": "error:503", "dialect": "gemini", "model": "a", "times": 2}))
    assert t.take("openai", "b", "chat").status == 500
    assert t.take("openai", "a", "chat").status == 501
    assert t.take("gemini", "b", "chat").status == 502
    assert [t.take("gemini", "a", "chat").status for _ in range(3)] == [503, 503, 502]
    assert t.take("openai", "*", "models").status == 500  # list endpoints see wildcard faults only
    t.set(parse_fault({"fault": "ok"}))
    assert t.take("openai", "x", "chat") is None
    assert t.clear(dialect="gemini") == 1
    assert t.take("gemini", "a", "chat").status == 501


@pytest.mark.parametrize("path,headers", [
    ("/openai/v1/chat/completions", {}),
    ("/deepseek/v1/chat/completions", {}),
    ("/anthropic/v1/messages", {"anthropic-version": "2023-06-01"}),
    ("/gemini/v1beta/models/gemini-2.0-flash:generateContent", {}),
])
async def test_wrongly_shaped_fields_get_400_not_500(path, headers):
    """Whatever JSON arrives, a vendor answers 4xx in its own format, never a 500."""
    server = await start_mock()
    bodies = [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": [1, 2], "max_tokens": 5},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
         "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": [],
                                                                               "required": ["a"]}}}],
         "tool_choice": {"type": "function", "function": "f"}},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
         "tools": [{"name": "f", "input_schema": {"properties": 3, "required": ["x"]}}]},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": [],
         "toolConfig": "any"},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
         "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"required": ["a"], "properties": 1}}]}]},
        [], "text", 7, {"messages": {}, "contents": {}},
    ]
    try:
        async with httpx.AsyncClient(base_url=server.url) as h:
            for body in bodies:
                r = await h.post(path, json=body, headers=headers)
                assert r.status_code < 500, (body, r.text)
                if r.status_code >= 400:
                    assert "error" in r.json()
    finally:
        await server.stop()
