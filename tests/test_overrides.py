"""Operator overrides survive a restart; a broken overrides file never stops the gateway."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import httpx

from gateway.config_load import parse_config
from gateway.control.overrides import apply_overrides
from gateway.runtime import Runtime

TOKEN = "ovr-token-123456"
ENV = {"PATCHBAY_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def _three_targets(cfg: dict) -> dict:
    cfg["routes"] = [{"name": "chat", "targets": [
        {"vendor": "openai", "model": "gpt-4.1"}, {"vendor": "deepseek", "model": "deepseek-chat"},
        {"vendor": "anthropic", "model": "claude-sonnet-4-20250514", "prefill": True}]}]
    return cfg


async def test_order_and_disables_persist_across_a_restart(start_gateway, gateway_cfg, tmp_path):
    _three_targets(gateway_cfg)
    gw = await start_gateway(gateway_cfg, env=ENV)
    order = ["anthropic/claude-sonnet-4-20250514", "openai/gpt-4.1", "deepseek/deepseek-chat"]
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH) as admin:
        assert (await admin.post("/admin/routes/chat/order", json={"order": order})).status_code == 200
        r = await admin.post("/admin/targets/openai%2Fgpt-4.1/disable", json={"reason": "billing dispute"},
                             headers={"X-Patchbay-Operator": "carol"})
        assert r.status_code == 200 and r.json()["persisted"] is True
    path = Path(gw.config.overrides_path)
    assert path == tmp_path / "patchbay.overrides.toml"
    saved = tomllib.loads(path.read_text())
    assert saved["routes"]["chat"]["order"] == order
    assert saved["disabled"]["openai/gpt-4.1"]["reason"] == "billing dispute"
    assert saved["disabled"]["openai/gpt-4.1"]["by"] == "127.0.0.1 (carol)"
    assert not list(tmp_path.glob(".patchbay.overrides.*.tmp"))   # the temp file was replaced, not left
    await gw.stop()

    gw2 = await start_gateway(gateway_cfg, env=ENV)
    async with httpx.AsyncClient(base_url=gw2.admin_url, headers=AUTH) as admin, \
            httpx.AsyncClient(base_url=gw2.url) as data:
        st = (await admin.get("/admin/state")).json()
        assert st["routes"][0]["order"] == order and st["routes"][0]["overridden"] is True
        t = next(x for x in st["targets"] if x["id"] == "openai/gpt-4.1")
        assert (t["disabled"], t["disabled_reason"], t["disabled_by"]) == (True, "billing dispute", "127.0.0.1 (carol)")
        assert st["overrides"]["ok"] is True and st["overrides"]["loaded"] is True
        r = await data.post("/v1/chat/completions", json=CHAT)
        assert r.headers["x-patchbay-target"] == "anthropic/claude-sonnet-4-20250514"
        # back to the config: the file then holds nothing
        await admin.post("/admin/targets/openai/gpt-4.1/enable")
        await admin.post("/admin/routes/chat/order",
                         json={"order": ["openai/gpt-4.1", "deepseek/deepseek-chat",
                                         "anthropic/claude-sonnet-4-20250514"]})
    assert tomllib.loads(path.read_text()) == {}


async def test_corrupt_overrides_file_is_reported_and_never_crashes(start_gateway, gateway_cfg, tmp_path, caplog):
    path = tmp_path / "patchbay.overrides.toml"
    path.write_text('[routes.chat]\norder = ["openai/gpt-4.1", \n  this is not toml ===\n')
    caplog.set_level(logging.WARNING)
    gw = await start_gateway(gateway_cfg, env=ENV)
    assert any("overrides" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
               if r.levelno >= logging.ERROR)
    async with httpx.AsyncClient(base_url=gw.admin_url, headers=AUTH) as admin, \
            httpx.AsyncClient(base_url=gw.url) as data:
        st = (await admin.get("/admin/state")).json()
        assert st["overrides"]["ok"] is False
        assert str(path) in st["overrides"]["error"] and "not valid TOML" in st["overrides"]["error"]
        assert st["routes"][0]["order"] == ["openai/gpt-4.1", "deepseek/deepseek-chat"]   # the config alone
        assert (await data.post("/v1/chat/completions", json=CHAT)).status_code == 200
        # the next change keeps the broken file aside and writes a good one
        r = await admin.post("/admin/targets/deepseek%2Fdeepseek-chat/disable", json={"reason": "x"})
        assert r.status_code == 200 and r.json()["persisted"] is True
        st = (await admin.get("/admin/state")).json()
        assert st["overrides"]["ok"] is True
    assert "this is not toml" in (tmp_path / "patchbay.overrides.toml.bad").read_text()
    assert tomllib.loads(path.read_text())["disabled"]["deepseek/deepseek-chat"]["reason"] == "x"


def test_entries_for_unknown_routes_and_targets_are_skipped_with_warnings(gateway_cfg, tmp_path, caplog):
    _three_targets(gateway_cfg)
    (tmp_path / "patchbay.overrides.toml").write_text(
        'surprise = 1\n'
        '[routes.chat]\norder = ["deepseek/deepseek-chat", "gone/model"]\n'
        '[routes.retired]\norder = ["openai/gpt-4.1"]\n'
        '[disabled."gone/model"]\nreason = "old"\n'
        '[disabled."anthropic/claude-sonnet-4-20250514"]\nreason = "kept"\n')
    cfg = parse_config(gateway_cfg, str(tmp_path / "patchbay.toml"), {})
    rt = Runtime(cfg)
    caplog.set_level(logging.WARNING)
    status = apply_overrides(rt)
    assert status["ok"] is True and status["loaded"] is True
    text = " | ".join(status["warnings"])
    for words in ("gone/model not in this route", "routes.retired: no such route", "disabled.gone/model",
                  "appended in config order", "unknown key 'surprise'"):
        assert words in text, words
    # known parts still apply: listed first in saved order, the rest in config order
    assert rt.routes["chat"].order == ["deepseek/deepseek-chat", "openai/gpt-4.1", "anthropic/claude-sonnet-4-20250514"]
    assert rt.targets["anthropic/claude-sonnet-4-20250514"].disabled_reason == "kept"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == len(status["warnings"])


def test_wrong_types_in_a_valid_toml_file_do_not_crash(gateway_cfg, tmp_path):
    (tmp_path / "patchbay.overrides.toml").write_text('routes = 3\ndisabled = "all"\n')
    cfg = parse_config(gateway_cfg, str(tmp_path / "patchbay.toml"), {})
    rt = Runtime(cfg)
    status = apply_overrides(rt)
    assert len(status["warnings"]) == 2
    assert rt.routes["chat"].order == ["openai/gpt-4.1", "deepseek/deepseek-chat"]
    assert not any(t.disabled for t in rt.targets.values())
