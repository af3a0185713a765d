"""Log output: text by default; `--log-format json` / `[server] log_format = "json"` for collectors."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from gateway.config_load import ConfigError, parse_config
from gateway.logs import JsonFormatter
from gateway.mock.server import start_mock
from tests.conftest import base_config
from tests.serve_proc import ServeProcess, write_config

KEYS = {"time", "level", "logger", "message"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_lines(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines
    out = [json.loads(ln) for ln in lines]   # every line is one JSON object
    for obj in out:
        assert isinstance(obj, dict) and KEYS <= set(obj), obj
        assert ISO.match(obj["time"]), obj["time"]
    return out


async def _serve(tmp_path: Path, log_format: str | None, args: list[str]) -> str:
    mock = await start_mock()
    try:
        raw = base_config(mock.url, tmp_path)
        raw["server"]["listen"] = raw["server"]["admin_listen"] = "127.0.0.1:0"
        if log_format is not None:
            raw["server"]["log_format"] = log_format
        proc = ServeProcess(write_config(tmp_path / "patchbay.toml", raw), args=args)
        proc.start()
        try:
            async with httpx.AsyncClient(timeout=10) as c:
                r = await c.post(proc.url + "/v1/chat/completions",
                                 json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
        finally:
            assert proc.stop() == 0
        return proc.stderr()
    finally:
        await mock.stop()


@pytest.mark.parametrize("log_format, args", [("json", []), (None, ["--log-format", "json"])],
                         ids=["config", "flag"])
async def test_serve_writes_one_json_object_per_line(tmp_path: Path, log_format, args):
    objs = json_lines(await _serve(tmp_path, log_format, args))
    messages = [o["message"] for o in objs]
    assert any(m.startswith("patchbay listening on http://127.0.0.1:") for m in messages), messages
    assert any("admin token env" in m for m in messages)   # a warning, with its level and logger
    warn = next(o for o in objs if "admin token env" in o["message"])
    assert warn["level"] == "WARNING" and warn["logger"] == "patchbay"
    assert any(m.startswith("stopping:") for m in messages)


async def test_text_stays_the_default_and_the_flag_wins_over_the_config(tmp_path: Path):
    for log_format, args in ((None, []), ("json", ["--log-format", "text"])):
        err = await _serve(tmp_path, log_format, args)
        line = next(ln for ln in err.splitlines() if "patchbay listening on" in ln)
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO patchbay: patchbay listening on ", line), line
        assert not line.lstrip().startswith("{")


def test_log_format_is_checked_with_the_config(tmp_path: Path):
    raw = base_config("http://127.0.0.1:9", tmp_path)
    raw["server"]["log_format"] = "xml"
    with pytest.raises(ConfigError) as e:
        parse_config(raw, str(tmp_path / "patchbay.toml"), {})
    assert "server.log_format" in e.value.render() and "text, json" in e.value.render()
    raw["server"]["log_format"] = "json"
    assert parse_config(raw, str(tmp_path / "patchbay.toml"), {}).server.log_format == "json"


async def test_a_log_line_written_while_handling_a_request_carries_its_id(start_gateway, gateway_cfg):
    gw = await start_gateway(gateway_cfg)
    adapter = gw.runtime.targets["openai/gpt-4.1"].adapter

    def broken(data: bytes):
        raise RuntimeError("an answer nobody foresaw")

    adapter.parse_chat = broken   # the router logs it, fails this attempt and moves on
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("patchbay")
    logger.addHandler(handler)
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(gw.url + "/v1/chat/completions",
                             json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200 and r.headers["x-patchbay-target"] == "deepseek/deepseek-chat"
            # after the request, nothing leaks its id into unrelated lines
            logger.warning("between requests")
    finally:
        logger.removeHandler(handler)
    objs = json_lines(buf.getvalue())
    err = next(o for o in objs if "unexpected error handling openai/gpt-4.1" in o["message"])
    assert err["request_id"] == r.headers["x-request-id"]
    assert err["level"] == "ERROR" and "RuntimeError: an answer nobody foresaw" in err["exception"]
    assert "request_id" not in next(o for o in objs if o["message"] == "between requests")
