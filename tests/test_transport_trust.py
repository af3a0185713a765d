"""A misbehaving vendor costs one attempt, never another client's answer, the gateway's memory or its loop.

Each test puts a byte-scripted vendor (tests/scripted_vendor.py) in front of a
real gateway and drives it with real clients; each reproduces a finding of the
transport review and fails on the gateway before the fix.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from gateway.config_load import ConfigError, parse_config
from gateway.vendors.base import FRAGMENT_CHARS, REDACTED, scrub_text
from gateway.vendors.sse import EventTooLarge, SSEParser
from tests.scripted_vendor import ScriptedVendor, chunk, completion, http_json

MSG = [{"role": "user", "content": "x"}]
KEY = "sk-relay-7Hq2xLw9Pz4Rk8Vb3Nc6Md1Fg5Js0Ty"   # 38 characters


@pytest.fixture
async def scripted():
    started: list[ScriptedVendor] = []

    async def make(script) -> ScriptedVendor:
        v = await ScriptedVendor(script).start()
        started.append(v)
        return v

    yield make
    for v in started:
        await v.stop()


def route_to(cfg: dict, vendor: ScriptedVendor, *rest: dict, **vendor_keys) -> dict:
    cfg["vendors"]["relay"] = {"kind": "openai", "base_url": vendor.url + "/v1", **vendor_keys}
    cfg["routes"] = [{"name": "r", "targets": [{"vendor": "relay", "model": "m"}, *rest]},
                     {"name": "chat", "targets": [{"vendor": "deepseek", "model": "deepseek-chat"}]}]
    return cfg


DEEPSEEK = {"vendor": "deepseek", "model": "deepseek-chat"}


def fragments(secret: str, blob: str) -> list[str]:
    """Every run of FRAGMENT_CHARS characters of `secret` found in `blob`."""
    k = FRAGMENT_CHARS
    return sorted({secret[i:i + k] for i in range(len(secret) - k + 1) if secret[i:i + k] in blob})


# ----------------------------------------------------------------------------- 1xx


async def test_interim_1xx_responses_never_deliver_an_answer_to_another_client(gateway_cfg, scripted,
                                                                               start_gateway, recorder):
    """Every answer is preceded by 100 Continue and 103 Early Hints (split across packets): each client
    still gets its own answer, logged ok, and no connection carries an answer to the next request."""
    def script(req):
        token = req.json()["messages"][0]["content"]

        async def send(w):
            w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Ear")
            await w.drain()
            await asyncio.sleep(0.005)
            w.write(b"ly Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            await w.drain()
            w.write(http_json(completion(f"answer for {token}")))
            await w.drain()
        return send

    vendor = await scripted(script)
    gw = await start_gateway(route_to(gateway_cfg, vendor), store=recorder)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    tokens = [f"client-{i}" for i in range(12)]
    for batch in (tokens[:3], tokens[3:]):   # sequential (pooled connections reused) and concurrent
        answers = await asyncio.gather(*(client.chat.completions.create(
            model="r", messages=[{"role": "user", "content": t}]) for t in batch))
        assert [a.choices[0].message.content for a in answers] == [f"answer for {t}" for t in batch]
    await client.close()
    assert [a.outcome for a in recorder.attempts] == ["ok"] * 12
    assert len(vendor.received) == 12


# ----------------------------------------------------------------------------- SSE limits


@pytest.mark.timeout(60)
def test_sse_parser_is_linear_in_the_bytes_received():
    """A 32 MB line in 1 KB reads: linear, a few hundred ms; the old parser re-joined and rescanned its
    whole buffer on every read (about 0.5 TB of copying here), so this would never finish."""
    p = SSEParser(max_event_bytes=64 << 20)
    piece = b"y" * 1024
    p.feed(b"data: ")
    for _ in range(32 * 1024):
        assert p.feed(piece) == []
    assert p.feed(b"\n\n") == [(None, "y" * (32 << 20))]


def test_sse_parser_is_bounded_and_splits_anywhere():
    """An endless line is refused at the limit, having kept no more than the limit in memory; events come
    out the same however the bytes are split."""
    p = SSEParser(max_event_bytes=1 << 20)
    p.feed(b'data: {"a": 1}\n\n')
    piece = b"x" * 4096
    with pytest.raises(EventTooLarge):
        for _ in range(1000):   # 4 MB without a newline
            p.feed(piece)
    # a data event spread over many lines counts as a whole
    p = SSEParser(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        p.feed(b"data: 0123456789\n" * 20)
    # below the limit, split anywhere, the same events come out
    stream = b"event: a\ndata: one\r\ndata: two\n\n: comment\ndata: three\n\n"
    whole = SSEParser().feed(stream)
    for step in (1, 2, 3, 7):
        p = SSEParser()
        got = []
        for i in range(0, len(stream), step):
            got += p.feed(stream[i:i + step])
        assert got == whole == [("a", "one\ntwo"), (None, "three")]


async def test_an_endless_sse_line_costs_one_attempt_not_the_event_loop(gateway_cfg, scripted, start_gateway,
                                                                        recorder):
    """One token, then an endless line: the attempt is cut at the event limit (with the in-band error the
    client's SDK raises), and plain requests from other clients are served all along."""
    sent = {"bytes": 0}

    def script(req):
        async def send(w):
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            first = chunk({"role": "assistant", "content": "hel"})
            w.write(b"%x\r\n%s\r\n" % (len(first), first))
            w.write(b"6\r\ndata: \r\n")
            piece = b"a" * 65536
            for _ in range(160):   # up to 10 MB without a newline, then hold the connection
                w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent["bytes"] += len(piece)
                await w.drain()
            await asyncio.sleep(30)
        return send

    vendor = await scripted(script)
    cfg = route_to(gateway_cfg, vendor)
    cfg["upstream"] = {"max_event_bytes": 1 << 20}
    gw = await start_gateway(cfg, store=recorder)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        async def plain():
            r = await c.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
            return r.status_code

        stream = asyncio.create_task(c.post("/v1/chat/completions",
                                            json={"model": "r", "stream": True, "messages": MSG}))
        statuses = [await plain() for _ in range(5)]
        r = await stream
    assert statuses == [200] * 5
    assert '"content":"hel"' in r.text and "stream_interrupted" in r.text and "[DONE]" not in r.text
    cut = [a for a in recorder.attempts if a.target == "relay/m"]
    assert cut and cut[-1].outcome == "stream_cut" and "over 1048576 bytes" in cut[-1].error
    assert sent["bytes"] < 160 * 65536   # the gateway stopped reading: the vendor could not send it all


# ----------------------------------------------------------------------------- secrets


def test_scrub_removes_fragments_of_eight_or_more_characters():
    secrets = (KEY,)
    assert scrub_text(f"key={KEY}!", secrets) == f"key={REDACTED}!"
    cut = "quoted: " + KEY[:33]            # a relay truncated its own echo
    assert scrub_text(cut, secrets) == f"quoted: {REDACTED}"
    middle = "..." + KEY[10:18] + "..."    # exactly eight characters from the middle
    assert scrub_text(middle, secrets) == f"...{REDACTED}..."
    assert scrub_text("..." + KEY[10:17] + "...", secrets) == "..." + KEY[10:17] + "..."   # seven: kept
    assert scrub_text(KEY.encode(), (KEY.encode(),)) == REDACTED.encode()


async def test_a_key_quoted_near_the_cut_of_an_html_error_page_never_leaks_in_part(gateway_cfg, scripted,
                                                                                    start_gateway, recorder):
    head = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><p>upstream said no."
    head += "." * (290 - len(head) - len(" Authorization: Bearer "))
    page = head + f" Authorization: Bearer {KEY}</p></body></html>"
    assert 280 < page.index(KEY) < 300 < page.index(KEY) + len(KEY)   # straddles the adapter's 300-byte cut

    def script(req):
        body = page.encode()
        return (b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n" % len(body)
                + body)

    vendor = await scripted(script)
    cfg = route_to(gateway_cfg, vendor, api_key_env="RELAY_KEY")
    gw = await start_gateway(cfg, env={"RELAY_KEY": KEY}, store=recorder)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
    assert r.status_code == 503
    assert vendor.received[0].headers["authorization"] == f"Bearer {KEY}"
    places = {"client body": r.text,
              "requests rows": repr(recorder.requests), "attempts rows": repr(recorder.attempts),
              "health": repr(gw.runtime.targets["relay/m"].health.last_error)}
    assert "Bad Gateway" in places["attempts rows"]   # the page's text is kept, only the key goes
    assert {where: fragments(KEY, blob) for where, blob in places.items()} == {w: [] for w in places}


# ----------------------------------------------------------------------------- answer size


async def test_a_huge_answer_fails_over_at_the_body_limit(gateway_cfg, scripted, start_gateway, recorder):
    sent = {"bytes": 0}

    def script(req):
        async def send(w):
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n")
            piece = b" " * 65536
            for _ in range(1600):
                w.write(piece)
                sent["bytes"] += len(piece)
                await w.drain()
        return send

    vendor = await scripted(script)
    cfg = route_to(gateway_cfg, vendor, DEEPSEEK)
    cfg["upstream"] = {"max_body_bytes": 1 << 20}
    cfg["retry"]["max_attempts_per_target"] = 1
    gw = await start_gateway(cfg, store=recorder)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    resp = await client.chat.completions.create(model="r", messages=MSG)
    await client.close()
    assert resp.model == "deepseek-chat"
    first = recorder.attempts[0]
    assert (first.target, first.outcome) == ("relay/m", "protocol") and "limit" in first.error
    assert sent["bytes"] < 100 * (1 << 20)
    assert gw.runtime.targets["relay/m"].breaker.failures == 1


# ----------------------------------------------------------------------------- budget


def trickle(req):
    async def send(w):
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(1000):
            w.write(b" ")
            await w.drain()
            await asyncio.sleep(0.1)
    return send


@pytest.mark.parametrize("fallback", [False, True])
async def test_a_trickled_body_that_uses_the_whole_budget_is_a_timeout_charged_to_no_vendor(
        gateway_cfg, scripted, start_gateway, recorder, fallback):
    vendor = await scripted(trickle)
    cfg = route_to(gateway_cfg, vendor)
    cfg["timeouts"].update(idle=1, total=1.5)
    if fallback:
        cfg["routes"][0]["fallback_response"] = "Try again soon."
    gw = await start_gateway(cfg, store=recorder)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
    t = gw.runtime.targets["relay/m"]
    assert t.breaker.failures == 0 and t.health.last_error is None
    if fallback:
        assert r.status_code == 200 and r.headers["x-patchbay-fallback"] == "static"
        assert r.json()["choices"][0]["message"]["content"] == "Try again soon."
    else:
        assert r.status_code == 503 and r.json()["error"]["code"] == "timeout"
    assert recorder.requests[-1].outcome == ("fallback" if fallback else "error")


# ----------------------------------------------------------------------------- context windows


@pytest.mark.parametrize("windows, expect", [
    ((None, None), "deepseek-chat"),          # neither known: try it
    ((128000, None), "deepseek-chat"),        # next one unknown: try it
    ((None, 64000), "deepseek-chat"),         # failing one unknown: try it
    ((128000, 64000), "context_length_exceeded"),   # both known, next smaller: the client must shorten
])
async def test_context_length_fails_over_when_a_window_is_unknown(mock, gateway_cfg, start_gateway, recorder,
                                                                  windows, expect):
    first, second = ({"vendor": "openai", "model": "gpt-4.1"}, dict(DEEPSEEK))
    for t, w in zip((first, second), windows):
        if w is not None:
            t["context_window"] = w
    gateway_cfg["routes"][0]["targets"] = [first, second]
    mock.set_fault("context_length", model="gpt-4.1")
    gw = await start_gateway(gateway_cfg, store=recorder)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    try:
        resp = await client.chat.completions.create(model="chat", messages=MSG)
        got = resp.model
    except openai.BadRequestError as e:
        got = e.code
    finally:
        await client.close()
    assert got == expect


# ----------------------------------------------------------------------------- config


def test_header_values_and_proxy_settings_are_checked_at_load(tmp_path):
    raw = {"vendors": {"relay": {"kind": "openai", "base_url": "http://relay.internal/v1",
                                 "headers": {"x-team": "a\r\nx-injected: 1", "bad name": "v", "x-ok": "fine"},
                                 "proxy": "socks5://proxy:1080", "ca_file": "missing-ca.pem"}},
           "routes": [{"name": "r", "targets": [{"vendor": "relay", "model": "m"}]}]}
    with pytest.raises(ConfigError) as ei:
        parse_config(raw, str(tmp_path / "patchbay.toml"), {})
    problems = dict(ei.value.problems)
    assert "line break" in problems["vendors.relay.headers.x-team"]
    assert "header name" in problems["vendors.relay.headers.'bad name'"]
    assert "http:// proxy URL" in problems["vendors.relay.proxy"]
    assert "missing-ca.pem" in problems["vendors.relay.ca_file"]
    assert not any("x-ok" in k for k in problems)
    (tmp_path / "ca.pem").write_text("not checked here")
    raw["vendors"]["relay"].update(headers={"x-ok": "fine"}, proxy="http://user:pw@proxy:3128", ca_file="ca.pem")
    cfg = parse_config(raw, str(tmp_path / "patchbay.toml"), {})
    assert cfg.vendors["relay"].ca_file == str(tmp_path / "ca.pem")
    assert "pw@" not in repr(cfg.vendors["relay"])


# ----------------------------------------------------------------------------- proxies, one HTTP stack


async def test_traffic_and_probes_take_the_configured_proxy(gateway_cfg, scripted, start_gateway):
    """The vendor's `proxy` carries real traffic and probes alike (one HTTP stack): the proxy sees
    absolute-form requests for the vendor's host, which is not even resolvable."""
    def script(req):
        if req.line.startswith("GET "):
            return http_json({"object": "list", "data": [{"id": "m", "object": "model"}]})
        return http_json(completion("via proxy"))

    proxy = await scripted(script)
    cfg = gateway_cfg
    cfg["vendors"]["relay"] = {"kind": "openai", "base_url": "http://vendor.invalid:8080/v1",
                               "proxy": proxy.url}
    cfg["routes"] = [{"name": "r", "targets": [{"vendor": "relay", "model": "m"}]}]
    cfg["prober"] = {"enabled": True, "interval": 0.2, "mode": "models"}
    gw = await start_gateway(cfg, with_prober=True)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.json()["choices"][0]["message"]["content"] == "via proxy"
        for _ in range(100):
            if any(x.line.startswith("GET ") for x in proxy.received):
                break
            await asyncio.sleep(0.05)
    lines = {x.line for x in proxy.received}
    assert "POST http://vendor.invalid:8080/v1/chat/completions HTTP/1.1" in lines
    assert "GET http://vendor.invalid:8080/v1/models HTTP/1.1" in lines


async def test_https_proxy_from_the_environment_is_used_and_no_proxy_is_honoured(gateway_cfg, scripted,
                                                                                 start_gateway, mock):
    proxy = await scripted(lambda req: http_json(completion("via env proxy")))
    cfg = gateway_cfg
    cfg["vendors"]["relay"] = {"kind": "openai", "base_url": "http://vendor.invalid/v1"}
    cfg["routes"] = [{"name": "r", "targets": [{"vendor": "relay", "model": "m"}]},
                     {"name": "chat", "targets": [DEEPSEEK]}]
    gw = await start_gateway(cfg, env={"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1,localhost"})
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.json()["choices"][0]["message"]["content"] == "via env proxy"
        r = await c.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
        assert r.status_code == 200   # the fake vendor on 127.0.0.1 is in NO_PROXY: reached directly
    assert [x.line for x in proxy.received] == ["POST http://vendor.invalid/v1/chat/completions HTTP/1.1"]


# ----------------------------------------------------------------------------- shutdown


async def test_stop_with_streams_in_flight_ends_each_with_the_in_band_event(gateway_cfg, mock, start_gateway,
                                                                            recorder):
    mock.configure(token_interval_ms=200, tokens=50)   # long, slow generations
    gw = await start_gateway(gateway_cfg, store=recorder)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        started = [asyncio.Event() for _ in range(3)]

        async def one(first_token: asyncio.Event) -> str:
            parts = []
            async with c.stream("POST", "/v1/chat/completions",
                                json={"model": "chat", "stream": True, "messages": MSG, "max_tokens": 500}) as r:
                async for part in r.aiter_text():
                    parts.append(part)
                    if '"content"' in part:
                        first_token.set()
            return "".join(parts)

        streams = [asyncio.create_task(one(e)) for e in started]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 20)
        t0 = time.monotonic()
        await gw.stop()
        took = time.monotonic() - t0
        texts = await asyncio.gather(*streams)
    for text in texts:
        assert '"content"' in text and "stream_interrupted" in text and "shutting down" in text
        assert "[DONE]" not in text
    assert took < 5.0   # documented bound; streams no longer hold the stop for the 5 s grace
    assert [r.outcome for r in recorder.requests] == ["cut"] * 3
    assert gw.runtime is not None and gw.runtime.targets["openai/gpt-4.1"].breaker.failures == 0


# Found in review: the states a stop must also cut (before the first token; a continuation being opened).

SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")


def _c(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def two_relays(cfg: dict, a: ScriptedVendor, b: ScriptedVendor) -> dict:
    cfg["vendors"]["a"] = {"kind": "openai", "base_url": a.url + "/v1"}
    cfg["vendors"]["b"] = {"kind": "openai", "base_url": b.url + "/v1"}
    cfg["routes"] = [{"name": "r", "targets": [{"vendor": "a", "model": "m"},
                                               {"vendor": "b", "model": "m", "prefill": True}]}]
    cfg["timeouts"].update(first_byte=10, idle=10, total=60)
    return cfg


def one_token_then_cut(req):
    async def send(w):
        w.write(SSE_HEAD + _c(chunk({"role": "assistant", "content": "Hel"})))
        await w.drain()
        await asyncio.sleep(0.3)
        w.transport.abort()           # cut after a token: the router continues on b (prefill)
    return send


def first_token_never(req):
    async def send(w):
        w.write(SSE_HEAD)              # headers, then silence: still waiting for the first token
        await w.drain()
        await asyncio.sleep(60)
    return send


def never_answers(req):
    async def send(w):
        await asyncio.sleep(60)        # no headers within first_byte (10 s)
    return send


async def _stream(c: httpx.AsyncClient, seen: asyncio.Event | None = None) -> str:
    parts = []
    try:
        async with c.stream("POST", "/v1/chat/completions",
                            json={"model": "r", "stream": True, "messages": MSG}) as r:
            async for part in r.aiter_text():
                parts.append(part)
                if seen is not None and '"content"' in part:
                    seen.set()
    except httpx.HTTPError as e:
        parts.append(f"<<{type(e).__name__}>>")
    return "".join(parts)


async def test_stop_during_a_prefill_continuation_still_ends_in_band_within_5s(gateway_cfg, scripted,
                                                                                start_gateway, recorder):
    a = await scripted(one_token_then_cut)
    b = await scripted(never_answers)
    gw = await start_gateway(two_relays(gateway_cfg, a, b), store=recorder)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        seen = asyncio.Event()
        task = asyncio.create_task(_stream(c, seen))
        await asyncio.wait_for(seen.wait(), 5)
        for _ in range(100):                       # wait until the continuation request reached b
            if b.received:
                break
            await asyncio.sleep(0.05)
        assert b.received
        t0 = time.monotonic()
        await gw.stop()
        took = time.monotonic() - t0
        text = await task
    assert "stream_interrupted" in text, text[-300:]
    assert took < 5.0, took


async def test_stop_before_the_first_token_charges_no_vendor_and_starts_no_failover(gateway_cfg, scripted,
                                                                                     start_gateway, recorder):
    a = await scripted(first_token_never)
    b = await scripted(never_answers)
    gw = await start_gateway(two_relays(gateway_cfg, a, b), store=recorder)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        task = asyncio.create_task(_stream(c))
        for _ in range(100):
            if a.received:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        ta = gw.runtime.targets["a/m"]
        await gw.stop()
        await task
    assert ta.breaker.failures == 0 and ta.health.last_error is None, ta.health.last_error
    assert not b.received, "a failover to b was started while stopping"
