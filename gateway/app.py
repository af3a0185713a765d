"""One gateway process: data listener, admin listener, prober, store writer.

`Gateway` is what `patchbay serve`, the demo, the tests and the benchmarks
all start, so they exercise the same wiring. Stopping it closes listeners,
lets in-flight requests finish (bounded) and flushes every log row.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import Config, split_hostport
from gateway.router import Router
from gateway.runtime import Runtime
from gateway.server import make_data_app
from gateway.upstream import Pool

log = logging.getLogger("patchbay")


def open_store(config: Config) -> Any:
    from store.writer import Store

    store = Store(config.store.path, retention_days=config.store.retention_days)
    store.start()
    return store


class Gateway:
    def __init__(self, config: Config, *, store: Any = None, env: dict[str, str] | None = None,
                 with_admin: bool = True, with_prober: bool = True):
        self.config = config
        self.env = os.environ if env is None else env
        self._own_store = store is None
        self.store = store
        self.with_admin = with_admin
        self.with_prober = with_prober
        self.runtime: Runtime | None = None
        self.router: Router | None = None
        self.session: aiohttp.ClientSession | None = None
        self.upstream: Pool | None = None
        self._runners: list[web.AppRunner] = []
        self.port: int | None = None
        self.admin_port: int | None = None
        self.extras: list[Any] = []   # started components with an async stop()

    @property
    def url(self) -> str:
        host, _ = split_hostport(self.config.server.listen)
        return f"http://{host}:{self.port}"

    @property
    def admin_url(self) -> str:
        host, _ = split_hostport(self.config.server.admin_listen)
        return f"http://{host}:{self.admin_port}"

    def client_keys(self) -> list[str]:
        env_name = self.config.server.client_keys_env
        raw = self.env.get(env_name, "") if env_name else ""
        return [k.strip() for k in raw.split(",") if k.strip()]

    async def start(self) -> None:
        if self.store is None:
            self.store = open_store(self.config)
        self.runtime = Runtime(self.config, self.store)
        t = self.config.timeouts
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            # sock_connect bounds new connections only; the router's own timer bounds everything else,
            # so a pooled request arms no extra aiohttp timer.
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect),
            auto_decompress=True, skip_auto_headers=("User-Agent",))
        self.upstream = Pool(t.connect)
        self.router = Router(self.runtime, self.session, self.upstream)
        self._apply_overrides()
        keys = self.client_keys()
        if not keys:
            log.warning("no client keys set (env %s is empty): the API on %s accepts any caller",
                        self.config.server.client_keys_env, self.config.server.listen)
        data_app = make_data_app(self.runtime, self.router, keys)
        self.port = await self._listen(data_app, self.config.server.listen)
        if self.with_admin:
            await self._start_admin()
        if self.with_prober and self.config.prober.enabled:
            await self._start_prober()

    def _apply_overrides(self) -> None:
        from gateway.overrides import apply_overrides

        apply_overrides(self.runtime)

    async def _start_admin(self) -> None:
        from gateway.admin import make_admin_app

        token_env = self.config.server.admin_token_env
        token = self.env.get(token_env, "")
        if not token:
            log.warning("admin token env %s is empty: the admin API on %s is disabled", token_env,
                        self.config.server.admin_listen)
            return
        app = make_admin_app(self, token)
        self.admin_port = await self._listen(app, self.config.server.admin_listen)

    async def _start_prober(self) -> None:
        from gateway.prober import Prober

        prober = Prober(self.runtime, self.session)
        prober.start()
        self.extras.append(prober)

    async def _listen(self, app: web.Application, hostport: str) -> int:
        host, port = split_hostport(hostport)
        # keepalive_timeout also bounds how long a connection may take to send a request's headers
        # (aiohttp arms it when the connection opens), which is the slowloris guard.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0,
                               keepalive_timeout=self.config.server.keepalive_timeout)
        await runner.setup()
        # a deep accept queue: a burst of thousands of new streams must not overflow it
        site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            key = "server.admin_listen" if hostport == self.config.server.admin_listen else "server.listen"
            why = os.strerror(e.errno) if e.errno else str(e)
            raise ListenError(f"cannot listen on {hostport} ({key}): {why}"
                              + ("; another process holds that port: stop it or change "
                                 f"{key} in {self.config.path}" if e.errno == errno.EADDRINUSE else "")) from None
        self._runners.append(runner)
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        return sock.getsockname()[1]

    async def stop(self) -> None:
        for extra in reversed(self.extras):
            try:
                await extra.stop()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception("error stopping %r", extra)
        self.extras.clear()
        for runner in reversed(self._runners):
            await runner.cleanup()   # stops accepting, waits for in-flight handlers (shutdown_timeout)
        self._runners.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.upstream is not None:
            await self.upstream.close()
            self.upstream = None
        if self._own_store and self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
            stats = self.store.stats()
            if stats.get("rows_not_written"):
                # the operator's last word on a failing log: how much of it is gone
                log.error("request log: %d rows could not be written to %s (last error: %s)",
                          stats["rows_not_written"], self.config.store.path, stats.get("last_error"))
            self.store = None

    async def __aenter__(self) -> "Gateway":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def raise_fd_limit() -> None:
    """Every stream holds two sockets; lift the soft open-files limit to the hard one (best effort)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform without it
        pass


def tune_gc() -> None:
    """Fewer, cheaper garbage collections on the request path.

    Every request allocates short-lived dicts and rows; with Python's default
    gen-0 threshold (700) the collector runs every few requests and rescans the
    long-lived server objects each time. Freezing what exists after start-up
    and raising the threshold cut the gateway's CPU per request by about 10%
    in bench/overhead.py.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


class ListenError(OSError):
    """A listener could not bind; the message is one line an operator can act on."""


async def serve_forever(config: Config) -> None:
    """Run until SIGTERM/SIGINT, then stop cleanly (flushing the store)."""
    import signal

    raise_fd_limit()
    gw = Gateway(config)
    try:
        await gw.start()
    except ListenError:
        await gw.stop()        # flushes and closes the store the start opened
        raise
    tune_gc()
    log.info("patchbay listening on %s (admin %s)", gw.url,
             gw.admin_url if gw.admin_port else "disabled")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping: finishing in-flight requests and flushing the request log")
        await gw.stop()
