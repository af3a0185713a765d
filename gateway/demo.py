"""`patchbay demo`: fake vendors, a gateway wired to them, synthetic traffic and the control panel.

No API keys, nothing to configure: what a newcomer runs first. The engine
(fake vendors, gateway, traffic, a little chaos) runs on a background event
loop; the TUI, which talks to it only through the admin API like it would to
a production gateway, owns the terminal. `--no-tui` prints a live summary
instead, for a terminal without a TUI or a quick smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.app import Gateway
from gateway.config_load import parse_config
from gateway.mock.server import MockServer, start_mock, vendor_configs

PROMPTS = ["Summarise the incident in one line.", "Translate 'failover' to French.", "Write a haiku about latency.",
           "What is a circuit breaker?", "Suggest a name for an on-call rotation."]

# Each fake model's usual latency (ms before answering), so the panel has something to draw.
BASELINE_MS = {"gpt-4.1": 420, "gpt-4.1-mini": 180, "claude-sonnet-4-20250514": 650, "gemini-2.0-flash": 240,
               "deepseek-chat": 520}

# Vendors and the faults the chaos loop may switch on, each for a few seconds.
CHAOS: list[tuple[str, dict[str, Any]]] = [
    ("gpt-4.1", {"fault": "error", "status": 503}), ("gpt-4.1", {"fault": "latency", "ms": 900}),
    ("claude-sonnet-4-20250514", {"fault": "error", "status": 529}),
    ("gemini-2.0-flash", {"fault": "error", "status": 429, "retry_after": 5}),
    ("deepseek-chat", {"fault": "hang"}), ("gpt-4.1-mini", {"fault": "cut", "n": 4})]


def _port_free(port: int) -> bool:
    """Can the gateway listen there? With SO_REUSEADDR, as the gateway itself binds: a demo
    restarted within a minute (its old connections in TIME_WAIT) keeps ports 4000/4001."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


def demo_config(mock_url: str, workdir: Path, port: int, admin_port: int) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin_port}",
                   "client_keys_env": "PATCHBAY_DEMO_CLIENT_KEYS", "admin_token_env": "PATCHBAY_DEMO_ADMIN_TOKEN"},
        "store": {"path": str(workdir / "patchbay-demo.db"), "retention_days": 1},
        "timeouts": {"connect": 1, "first_byte": 3, "idle": 3, "total": 20},
        "retry": {"max_attempts_per_target": 2, "backoff_base": 0.1, "backoff_max": 0.5, "retry_after_max": 2},
        "breaker": {"failures_to_open": 3, "cooldown": 10},
        "prober": {"interval": 5, "mode": "models"},
        "vendors": vendor_configs(mock_url),
        "routes": [
            {"name": "chat", "targets": [
                {"vendor": "openai", "model": "gpt-4.1"},
                {"vendor": "anthropic", "model": "claude-sonnet-4-20250514", "prefill": True},
                {"vendor": "gemini", "model": "gemini-2.0-flash"},
                {"vendor": "deepseek", "model": "deepseek-chat"},
            ], "fallback_response": "The assistant is briefly unavailable. Please retry."},
            {"name": "fast", "targets": [
                {"vendor": "openai", "model": "gpt-4.1-mini"},
                {"vendor": "gemini", "model": "gemini-2.0-flash"},
            ]},
        ],
        "prices": {
            "openai/gpt-4.1": {"input": 2.0, "output": 8.0},
            "openai/gpt-4.1-mini": {"input": 0.4, "output": 1.6},
            "anthropic/claude-sonnet-4-20250514": {"input": 3.0, "output": 15.0},
            "gemini/gemini-2.0-flash": {"input": 0.1, "output": 0.4},
            "deepseek/deepseek-chat": {"input": 0.27, "output": 1.1},
        },
    }


class DemoEngine:
    """Fake vendors + gateway + traffic + chaos on one background loop."""

    def __init__(self, rps: float, chaos: bool = True, workdir: Path | None = None):
        self.rps = rps
        self.chaos = chaos
        self._own_workdir = workdir is None     # a temporary folder of our own is removed on stop
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="patchbay-demo-"))
        # Your own token lets `patchbay status` / `drill` / `tui` in another terminal reach the demo;
        # otherwise a random one that is never shown.
        self.admin_token = os.environ.get("PATCHBAY_ADMIN_TOKEN") or secrets.token_urlsafe(24)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="patchbay-demo", daemon=True)
        self.mock: MockServer | None = None
        self.gateway: Gateway | None = None
        self.sent = 0
        self.failed = 0
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> None:
        self.mock = await start_mock(token_interval_ms=20)
        for model in BASELINE_MS:
            self._baseline(model)
        port = 4000 if _port_free(4000) else 0
        admin_port = 4001 if _port_free(4001) else 0
        raw = demo_config(self.mock.url, self.workdir, port, admin_port)
        env = {"PATCHBAY_DEMO_ADMIN_TOKEN": self.admin_token}
        cfg = parse_config(raw, str(self.workdir / "patchbay.toml"), env)
        self.gateway = Gateway(cfg, env=env)
        await self.gateway.start()
        self._tasks.append(asyncio.create_task(self._traffic()))
        if self.chaos:
            self._tasks.append(asyncio.create_task(self._chaos()))

    async def _traffic(self) -> None:
        """Synthetic clients: a mix of routes, streaming and not, at about `rps`."""
        assert self.gateway is not None
        url = f"{self.gateway.url}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            async def one() -> None:
                body = {"model": random.choice(["chat", "chat", "chat", "fast"]),
                        "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
                        "stream": random.random() < 0.4}
                try:
                    async with session.post(url, data=orjson.dumps(body),
                                            headers={"content-type": "application/json"}) as r:
                        await r.read()
                        if r.status != 200:
                            self.failed += 1
                except aiohttp.ClientError:
                    self.failed += 1
                self.sent += 1

            pending: set[asyncio.Task] = set()
            try:
                while not self._stopping:
                    if len(pending) < 200:  # bounded: never more than 200 requests in flight
                        t = asyncio.create_task(one())
                        pending.add(t)
                        t.add_done_callback(pending.discard)
                    await asyncio.sleep(random.expovariate(self.rps) if self.rps > 0 else 1.0)
            finally:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    def _baseline(self, model: str) -> None:
        assert self.mock is not None
        self.mock.set_fault("latency", model=model, ms=BASELINE_MS[model])

    async def _chaos(self) -> None:
        """Every so often one vendor misbehaves for a few seconds, so the panel has something to show."""
        assert self.mock is not None
        await asyncio.sleep(20)
        while not self._stopping:
            model, fault = random.choice(CHAOS)
            self.mock.set_fault(model=model, **fault)
            await asyncio.sleep(random.uniform(8, 15))
            self._baseline(model)
            await asyncio.sleep(random.uniform(20, 40))

    def summary(self) -> str:
        gw = self.gateway
        assert gw is not None and gw.runtime is not None
        rt = gw.runtime
        parts = [f"sent {self.sent} failed {self.failed}"]
        for tid, t in rt.targets.items():
            snap = t.health.snapshot()
            p50 = f"{snap['p50_ms']:.0f}ms" if snap["p50_ms"] is not None else "-"
            parts.append(f"{tid}: {rt.target_state(t)} p50 {p50} rpm {snap['rpm']:.0f}")
        return " | ".join(parts)

    def stop(self) -> None:
        async def _stop() -> None:
            self._stopping = True
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.gateway is not None:
                await self.gateway.stop()
            if self.mock is not None:
                await self.mock.stop()
        try:
            if self.thread.is_alive():   # a signal may stop the demo before it started
                asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(30)
        finally:
            if self.thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(10)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _log_to_file(path: Path) -> None:
    """The TUI owns the terminal: engine logs go to a file instead of corrupting the screen."""
    import logging

    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def run_demo(args: argparse.Namespace) -> int:
    use_tui = not args.no_tui and sys.stdout.isatty()
    if not args.no_tui and not use_tui:
        print("patchbay demo: standard output is not a terminal (piped or redirected), so the control panel "
              "is off and a text summary prints every 2 s instead; run `patchbay demo` straight in a terminal "
              "for the panel (or `patchbay demo --no-tui` to ask for this summary).", flush=True)

    def _hang_up(signum: int, frame: Any) -> None:
        # a closed terminal (SIGHUP) or `kill` (SIGTERM) still stops the engine and removes the folder
        raise SystemExit(128 + signum)

    # before anything is started, so a signal at any point after this still cleans up
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, _hang_up)
    engine = DemoEngine(rps=args.rps)
    try:
        return _run_started(engine, args, use_tui)
    except KeyboardInterrupt:
        return 0
    finally:
        engine.stop()
        print(f"demo stopped: {engine.sent} requests sent, {engine.failed} client-visible errors")


def _run_started(engine: DemoEngine, args: argparse.Namespace, use_tui: bool) -> int:
    if use_tui:
        _log_to_file(engine.workdir / "patchbay-demo.log")
    engine.start()
    gw = engine.gateway
    assert gw is not None
    print(f"Patchbay demo: gateway {gw.url}/v1 (OpenAI-compatible, no key needed), admin {gw.admin_url}")
    print(f"  try: curl {gw.url}/v1/chat/completions -H 'content-type: application/json' "
          "-d '{\"model\": \"chat\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'")
    print(f"  request log: {engine.workdir / 'patchbay-demo.db'} (removed when the demo stops)")
    if not os.environ.get("PATCHBAY_ADMIN_TOKEN"):
        print("  (export PATCHBAY_ADMIN_TOKEN=<anything> before `patchbay demo` to also drive it with "
              "`patchbay status`, `drill` and `tui` from another terminal)")
    deadline = time.monotonic() + args.duration if args.duration else None
    if not use_tui:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(2)
            print(engine.summary(), flush=True)
        return 0
    from tui.app import run_tui  # the one place the demo reaches for Textual
    os.environ["PATCHBAY_ADMIN_TOKEN"] = engine.admin_token
    return run_tui(gw.admin_url, engine.admin_token, False, 1.0)
