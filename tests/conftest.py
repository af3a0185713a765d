"""Shared fixtures: real fake vendors and a real gateway on 127.0.0.1, port 0.

`gateway_cfg` builds a config dict pointing at the fake vendors; tests tweak
it and start a `Gateway` with `start_gateway`. Everything started is stopped
by the fixture, even when a test fails.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config_load import parse_config
from gateway.mock.server import start_mock, vendor_configs

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "openai-openapi.yaml"


def base_config(mock_url: str, tmp_path: Path) -> dict[str, Any]:
    """Four vendors on one fake server; route "chat" falls back openai -> deepseek."""
    return {
        "server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
        "store": {"path": str(tmp_path / "patchbay.db")},
        "timeouts": {"connect": 1, "first_byte": 2, "idle": 2, "total": 20},
        "retry": {"max_attempts_per_target": 2, "backoff_base": 0.01, "backoff_max": 0.05,
                  "retry_after_max": 2},
        "breaker": {"failures_to_open": 3, "cooldown": 30},
        "prober": {"enabled": False},
        "vendors": vendor_configs(mock_url),
        "routes": [
            {"name": "chat", "targets": [
                {"vendor": "openai", "model": "gpt-4.1"},
                {"vendor": "deepseek", "model": "deepseek-chat"},
            ]},
        ],
        "prices": {
            "openai/gpt-4.1": {"input": 2.0, "output": 8.0},
            "deepseek/deepseek-chat": {"input": 0.27, "output": 1.10},
        },
    }


@pytest.fixture
async def mock():
    server = await start_mock()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def gateway_cfg(mock, tmp_path) -> dict[str, Any]:
    return base_config(mock.url, tmp_path)


@pytest.fixture
async def start_gateway(tmp_path):
    """Factory: `gw = await start_gateway(cfg_dict, env={...}, store=...)`."""
    started: list[Gateway] = []

    async def start(raw: dict[str, Any], env: dict[str, str] | None = None, **kw: Any) -> Gateway:
        env = dict(env or {})
        cfg = parse_config(copy.deepcopy(raw), str(tmp_path / "patchbay.toml"), env)
        kw.setdefault("with_prober", False)
        gw = Gateway(cfg, env=env, **kw)
        await gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in reversed(started):
        await gw.stop()


class RecordingStore:
    """Keeps rows in memory so a test can read the attempt chain without waiting for a flush."""

    def __init__(self) -> None:
        self.rows: list[Any] = []

    def put(self, row: Any) -> None:
        self.rows.append(row)

    def of(self, kind: str) -> list[Any]:
        return [r for r in self.rows if type(r).__name__ == kind]

    @property
    def requests(self) -> list[Any]:
        return self.of("RequestRow")

    @property
    def attempts(self) -> list[Any]:
        return self.of("AttemptRow")

    def stats(self) -> dict:
        return {"ok": True, "rows_not_written": 0, "queue_dropped": 0, "queued": 0, "last_error": None}

    def close(self) -> None:
        pass


@pytest.fixture
def recorder() -> RecordingStore:
    return RecordingStore()


class BackgroundLoop:
    """An event loop in a thread, for driving sync SDK clients against async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def bg_stack(tmp_path):
    """Sync tests: fake vendors + gateway running on a background loop.

    Yields a callable `make(mutate=None, env=None, store=None) -> (mock, gateway)`.
    """
    bg = BackgroundLoop()
    owned: list[Any] = []

    def make(mutate: Callable[[dict], None] | None = None, env: dict | None = None, **kw: Any):
        mock_srv = bg.run(start_mock())
        owned.append(mock_srv)
        raw = base_config(mock_srv.url, tmp_path)
        if mutate:
            mutate(raw)
        cfg = parse_config(raw, str(tmp_path / "patchbay.toml"), dict(env or {}))
        kw.setdefault("with_prober", False)
        gw = Gateway(cfg, env=dict(env or {}), **kw)
        bg.run(gw.start())
        owned.append(gw)
        return mock_srv, gw

    yield make
    for thing in reversed(owned):
        bg.run(thing.stop())
    bg.close()
