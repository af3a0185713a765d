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
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from gateway.config import Config, split_hostport
from gateway.control.metrics import Metrics
from gateway.doors.server import make_data_app
from gateway.parts import Component, Store
from gateway.routing.router import Router, pool_for
from gateway.runtime import Runtime

if TYPE_CHECKING:  # pragma: no cover
    from gateway.control.prober import Prober
from gateway.vendors.http import Pool

log = logging.getLogger("patchbay")


def otlp_traces_endpoint(env: Any) -> str | None:
    """Where spans go, from the standard OTel variables; None (tracing off, nothing imported) when unset.

    `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as it is; `OTEL_EXPORTER_OTLP_ENDPOINT` gets the
    signal path `/v1/traces` appended, as the OTLP exporter specification says. `OTEL_SDK_DISABLED=true`
    or `OTEL_TRACES_EXPORTER=none` switch tracing off even with an endpoint set.
    """
    if str(env.get("OTEL_SDK_DISABLED", "")).strip().lower() == "true":
        return None
    if str(env.get("OTEL_TRACES_EXPORTER", "otlp")).strip().lower() == "none":
        return None
    traces = str(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")).strip()
    if traces:
        return traces
    base = str(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")).strip()
    if base:
        return base.rstrip("/") + "/v1/traces"
    return None


def open_store(config: Config) -> Store:
    from store.writer import Store

    store = Store(config.store.path, retention_days=config.store.retention_days)
    store.start()
    return store


class Gateway:
    def __init__(self, config: Config, *, store: Store | None = None, env: dict[str, str] | None = None,
                 with_admin: bool = True, with_prober: bool = True):
        self.config = config
        self.env = os.environ if env is None else env
        self._own_store = store is None
        self.store = store
        self.with_admin = with_admin
        self.with_prober = with_prober
        self.runtime: Runtime | None = None
        self.router: Router | None = None
        self.upstream: Pool | None = None
        self._runners: list[web.AppRunner] = []
        self.port: int | None = None
        self.admin_port: int | None = None
        self.extras: list[Component] = []   # started components with an async stop()
        self.prober: Prober | None = None
        self.metrics: Metrics | None = None
        self.tracing: Any = None      # gateway.control.tracing.Tracing when OTEL_EXPORTER_OTLP_*ENDPOINT is set

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
        self.runtime = Runtime(self.config, self.store, env=self.env)
        self.metrics = Metrics(self.runtime)
        self.runtime.request_observers.append(self.metrics.observe)
        endpoint = otlp_traces_endpoint(self.env)
        if endpoint is not None:
            from gateway.control.tracing import Tracing  # opentelemetry is imported only here

            self.tracing = Tracing(self.runtime, endpoint, self.env)
            self.runtime.request_observers.append(self.tracing.observe)
            log.info("tracing: spans go to %s over OTLP/HTTP", endpoint)
        # One HTTP client for everything that leaves the gateway: traffic, probes, drills.
        self.upstream = pool_for(self.config, self.env)
        self.router = Router(self.runtime, self.upstream)
        self._apply_overrides(self.runtime)
        keys = self.client_keys()
        if not keys:
            log.warning("no client keys set (env %s is empty): the API on %s accepts any caller",
                        self.config.server.client_keys_env, self.config.server.listen)
        data_app = make_data_app(self.runtime, self.router, keys, trace_headers=self.tracing is not None)
        self.port = await self._listen(data_app, self.config.server.listen)
        if self.with_admin:
            await self._start_admin()
        if self.with_prober and self.config.prober.enabled:
            await self._start_prober(self.runtime, self.router)

    def _apply_overrides(self, runtime: Runtime) -> None:
        from gateway.control.overrides import apply_overrides

        apply_overrides(runtime)

    async def _start_admin(self) -> None:
        from gateway.control.admin import ADMIN_KEY, make_admin_app

        token_env = self.config.server.admin_token_env
        token = self.env.get(token_env, "")
        if not token:
            log.warning("admin token env %s is empty: the admin API on %s is disabled", token_env,
                        self.config.server.admin_listen)
            return
        app = make_admin_app(self, token)
        self.extras.append(app[ADMIN_KEY].drills)   # stop() ends running drills
        app.router.add_get("/metrics", self._get_metrics)   # behind the admin app's token middleware
        self.admin_port = await self._listen(app, self.config.server.admin_listen)

    async def _get_metrics(self, request: web.Request) -> web.Response:
        """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
        assert self.metrics is not None   # start() makes it before the admin app listens
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.metrics.registry), headers={"Content-Type": content_type})

    async def _start_prober(self, runtime: Runtime, router: Router) -> None:
        from gateway.control.prober import Prober

        prober = Prober(runtime, router)
        prober.start()
        self.prober = prober
        self.extras.append(prober)

    async def _listen(self, app: web.Application, hostport: str) -> int:
        host, port = split_hostport(hostport)
        # keepalive_timeout also bounds how long a connection may take to send a request's headers
        # (aiohttp arms it when the connection opens), which is the slowloris guard.
        # aiohttp waits shutdown_timeout for handlers, then cancels and may wait as long again: 2.5 s keeps a
        # stop within the documented 5 s (streams are cut at once by Router.begin_shutdown).
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.5,
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
        """Within about 5 s: open streams end at once with the in-band `stream_interrupted` event (those still
        waiting for a first token get a 503 `shutting_down`), other in-flight requests get 2.5 s to finish,
        both listeners shut down together, the log is flushed."""
        if self.router is not None:
            self.router.begin_shutdown()
        for extra in reversed(self.extras):
            try:
                await extra.stop()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception("error stopping %r", extra)
        self.extras.clear()
        # stop accepting, wait for in-flight handlers (shutdown_timeout), both listeners at once
        await asyncio.gather(*(runner.cleanup() for runner in reversed(self._runners)))
        self._runners.clear()
        if self.upstream is not None:
            await self.upstream.close()
            self.upstream = None
        if self.tracing is not None:
            # export what the batch processor still holds (bounded by the exporter's own timeout)
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)
            self.tracing = None
        if self._own_store and self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
            stats = self.store.stats()
            if stats.get("rows_not_written"):
                # the operator's last word on a failing log: how much of it is gone
                log.error("request log: %d rows could not be written to %s (last error: %s)",
                          stats["rows_not_written"], self.config.store.path, stats.get("last_error"))
            self.store = None

    async def __aenter__(self) -> Gateway:
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
