"""A lean HTTP/1.1 client for every call to a vendor: pooled keep-alive connections, llhttp parsing.

Why not aiohttp's client here: measured on this project's 2-core machine,
aiohttp's ClientSession costs about 80 µs of CPU per request, a bare asyncio
protocol about 13 µs; on a gateway whose own work is a few tens of µs that
difference is most of the overhead budget. The router, the prober and the
drills all use this one client, so what is tested here is what production
traffic, health probes and synthetic drills see alike (DESIGN.md: it is kept
only while it passes tests/test_transport_conformance.py).

This module holds the pool (routing, connecting, reuse, sending a request);
one connection and its response are gateway/vendors/http_conn.py, proxies and
the CONNECT tunnel gateway/vendors/http_proxy.py, the exceptions
gateway/vendors/http_errors.py.

Why it is strict: a pooled connection is shared by unrelated clients of the
gateway, so any doubt about where one response ends is a cross-client leak
(the next caller would read the previous caller's answer). Hence:

* Interim 1xx responses (100 Continue, 103 Early Hints, any number of them)
  are skipped, as RFC 9110 requires; a 101 we never asked for is an anomaly.
* A connection goes back to the pool only after a complete, well-formed final
  response with nothing after it. Bytes after the response (a longer body
  than Content-Length, pipelined garbage, a second response), bytes arriving
  while the connection idles in the pool, a parse error, a truncated body:
  the connection is dropped, and if the response was not complete, the
  caller gets an exception.
* Limits, so a misbehaving vendor cannot make the gateway buffer without
  bound: the response header block (including skipped 1xx blocks) and the
  body of a non-stream answer (per request: streams pass body_limit=None and
  are bounded by the router's timers). The body limit counts DECODED bytes.
* We always send `Accept-Encoding: identity` (callers should not set their
  own); a vendor that gzips/deflates anyway is decoded incrementally (a
  decompression bomb stops at the body limit) and the Content-Encoding /
  Content-Length headers are dropped from the response; any other encoding
  fails the response, and so do bytes after the end of the compressed stream
  (where that body ends is then unclear; zlib would also copy them, O(n²)).
* Idle connections are reused oldest first: a stray late answer then has the
  most time to arrive on an idle connection, and poison it, before it is taken.
* A stale pooled connection is replaced by a fresh one only when it is found
  dead before any byte of the request went out (closed while idle, or the
  write failed synchronously). Once a POST may have reached the vendor, a lost
  connection raises; the router's retry policy decides, not this module.
* Request header names/values with CR, LF or NUL are refused before anything
  is sent (the config loader checks too; this is defence in depth).

Routing: `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` (from the `env`
mapping given to the Pool, default os.environ, read once at construction) or a
per-request `proxy=` (a vendor's configured proxy; "" means direct, ignoring
the environment; NO_PROXY applies only to proxies taken from the environment).
https targets go through an HTTP CONNECT tunnel, http targets use the
absolute-form request target. Only http:// proxy URLs are supported. Proxy
credentials become Proxy-Authorization and never appear in error messages.
TLS uses ssl.create_default_context() (honours SSL_CERT_FILE/SSL_CERT_DIR) or
a per-request `ca_file` bundle; one SSLContext is cached per bundle.
Connections are pooled per (scheme, host, port, proxy, ca_file).

Exceptions (http_errors.py; all UpstreamError, which the router maps onto the failover contract):
  ConnectFailed     refused, DNS, TLS verification, proxy refusal, connect timeout,
                    invalid URL: nothing was sent.
  InvalidHeader     (a ConnectFailed and a ValueError) a request header name or
                    value with CR, LF or NUL: refused, nothing was sent.
  ConnectionLost    the connection broke; `before_headers` says whether the
                    response had started.
  ProtocolError     the vendor broke HTTP: malformed or oversized header block,
                    unexpected 101, a Content-Encoding we cannot decode, corrupt
                    compressed data. `before_headers` as for ConnectionLost.
  ResponseTooLarge  the body passed the request's body_limit (decoded bytes).
The router owns every timeout; the only timer here bounds connecting
(TCP + proxy CONNECT + TLS handshake). Happy eyeballs (RFC 8305, 250 ms) for
hosts with several addresses: the loop's own where it has one, a small race
here under uvloop, whose create_connection lacks it.

Not supported, on purpose (the router never needs them): HEAD (llhttp would
wait for the body a HEAD answer announces), request bodies other than bytes,
https:// or socks proxies, more than one request in flight per connection.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import socket
import ssl
import time
from asyncio import staggered
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.vendors.http_conn import Response, _Conn
from gateway.vendors.http_errors import ConnectFailed, InvalidHeader
from gateway.vendors.http_proxy import _host_port, _is_loopback, _NoProxy, _Proxy, _Tunnel

IDLE_TTL = 30.0           # drop pooled connections idle longer than this (vendors close ~60 s)
MAX_IDLE_PER_HOST = 512
HEADER_LIMIT = 64 << 10   # response header block, including skipped 1xx blocks
BODY_LIMIT = 32 << 20     # default limit on a (decoded) response body; None = unlimited (streams)
HAPPY_EYEBALLS_DELAY = 0.25

__all__ = ["BODY_LIMIT", "HEADER_LIMIT", "Pool"]

_DEFAULT: Any = object()      # body_limit not given: the pool's default
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class _Route:
    """Everything a URL + proxy + ca_file resolve to; cached, vendors use few URLs."""

    __slots__ = ("ca_file", "head", "host", "key", "port", "proxy", "tls", "where")

    def __init__(self, key: tuple, head: bytes, host: str, port: int, tls: bool,
                 proxy: _Proxy | None, ca_file: str | None):
        self.key, self.head, self.host, self.port, self.tls = key, head, host, port, tls
        self.proxy, self.ca_file = proxy, ca_file
        self.where = _host_port(host, port) + (f" via proxy {proxy.label}" if proxy else "")


class Pool:
    """Keep-alive connections per (scheme, host, port, proxy, ca_file); unlimited, like the router wants."""

    def __init__(self, connect_timeout: float = 3.0, *, env: Mapping[str, str] | None = None,
                 header_limit: int = HEADER_LIMIT, body_limit: int | None = BODY_LIMIT):
        self.connect_timeout = connect_timeout
        self.header_limit = header_limit
        self.body_limit = body_limit
        # oldest first (FIFO): a stray late answer has the longest time to arrive on an idle
        # connection, and poison it, before anyone takes it
        self._idle: dict[tuple, deque[_Conn]] = {}
        self._ssl: dict[str | None, ssl.SSLContext] = {}
        self._routes: dict[Any, _Route] = {}
        self._all: set[_Conn] = set()
        e = os.environ if env is None else env

        def get(*names: str) -> str:
            for n in names:
                v = e.get(n)
                if v and v.strip():
                    return v.strip()
            return ""
        fallback = get("all_proxy", "ALL_PROXY")
        self._env_proxy = {"https": get("https_proxy", "HTTPS_PROXY") or fallback,
                           "http": get("http_proxy", "HTTP_PROXY") or fallback}
        self._no_proxy = _NoProxy(get("no_proxy", "NO_PROXY"))
        self._he: bool | None = None

    # routing
    def _route(self, url: str, proxy: str | None, ca_file: str | None) -> _Route:
        try:
            u = urlsplit(url)
            hostname, port = u.hostname, u.port
        except ValueError:
            raise ConnectFailed(f"invalid vendor URL {url!r}") from None
        if u.scheme not in ("http", "https") or not hostname:
            raise ConnectFailed(f"invalid vendor URL {url!r}")
        tls = u.scheme == "https"
        port = port or (443 if tls else 80)
        default = port == (443 if tls else 80)
        host_hdr = _host_port(hostname, None if default else port)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        if proxy is None:
            spec = self._env_proxy[u.scheme]
            if spec and (_is_loopback(hostname) or self._no_proxy.bypass(hostname, port)):
                spec = ""
        else:
            spec = proxy
        px = _Proxy(spec) if spec else None
        target = f"{u.scheme}://{host_hdr}{path}" if px is not None and not tls else path
        # Some vendor front ends refuse requests without a User-Agent.
        head = f" {target} HTTP/1.1\r\nHost: {host_hdr}\r\nUser-Agent: patchbay/0.1\r\n" \
               "Accept-Encoding: identity\r\n".encode("latin-1")
        if px is not None and not tls and px.auth:
            head += px.auth
        key = (u.scheme, hostname, port, px.url if px else None, ca_file if tls else None)
        return _Route(key, head, hostname, port, tls, px, ca_file)

    def _ssl_context(self, ca_file: str | None) -> ssl.SSLContext:
        ctx = self._ssl.get(ca_file)
        if ctx is None:
            try:
                ctx = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise ConnectFailed(f"cannot load CA bundle {ca_file!r}: {e}") from None
            self._ssl[ca_file] = ctx
        return ctx

    async def _open(self, factory: Any, host: str, port: int, ctx: ssl.SSLContext | None,
                    server_hostname: str | None) -> tuple[asyncio.BaseTransport, Any]:
        """create_connection with happy eyeballs (RFC 8305) when a host has several addresses."""
        loop = asyncio.get_running_loop()
        if self._he is None:
            try:
                self._he = "happy_eyeballs_delay" in inspect.signature(loop.create_connection).parameters
            except (TypeError, ValueError):
                self._he = False
        if self._he:
            return await loop.create_connection(factory, host, port, ssl=ctx, server_hostname=server_hostname,
                                                happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1)
        # uvloop's create_connection has no happy eyeballs: race the addresses here, then hand it the socket.
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if len(infos) <= 1:
            return await loop.create_connection(factory, host, port, ssl=ctx, server_hostname=server_hostname)
        by_family: dict[int, list] = {}
        for info in infos:
            by_family.setdefault(info[0], []).append(info)
        queues = list(by_family.values())
        ordered = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
        socks: list[socket.socket] = []

        async def attempt(info: tuple) -> socket.socket:
            sock = socket.socket(info[0], info[1], info[2])
            socks.append(sock)
            sock.setblocking(False)
            await loop.sock_connect(sock, info[4])
            return sock
        winner = None
        try:
            winner, _, errors = await staggered.staggered_race(
                [functools.partial(attempt, i) for i in ordered], HAPPY_EYEBALLS_DELAY)
            if winner is None:
                first = next((e for e in errors if e is not None), None)
                raise OSError(f"no address of {host} answered ({first})")
            return await loop.create_connection(factory, sock=winner, ssl=ctx, server_hostname=server_hostname)
        except BaseException:
            winner = None
            raise
        finally:
            for sock in socks:
                if sock is not winner:
                    sock.close()

    async def _connect(self, r: _Route) -> _Conn:
        ctx = self._ssl_context(r.ca_file) if r.tls else None
        px = r.proxy
        tr: Any = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if px is None:
                    _, conn = await self._open(lambda: _Conn(r.key, self), r.host, r.port, ctx,
                                               r.host if ctx else None)
                elif not r.tls:
                    _, conn = await self._open(lambda: _Conn(r.key, self), px.host, px.port, None, None)
                else:
                    tr, tun = await self._open(lambda: _Tunnel(self.header_limit), px.host, px.port, None, None)
                    hp = _host_port(r.host, r.port).encode("latin-1")
                    tr.write(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%sUser-Agent: patchbay/0.1\r\n\r\n"
                             % (hp, hp, px.auth or b""))
                    await tun.done
                    head, _, rest = bytes(tun.buf).partition(b"\r\n\r\n")
                    line = head.split(b"\r\n", 1)[0].decode("latin-1")
                    parts = line.split(" ", 2)
                    code = parts[1] if len(parts) > 1 else ""
                    if not (parts[0].startswith("HTTP/1.") and code.isdigit() and len(code) == 3):
                        raise ConnectFailed(f"proxy {px.label} sent a malformed answer to CONNECT")
                    if not code.startswith("2"):
                        reason = parts[2][:60] if len(parts) > 2 else ""
                        raise ConnectFailed(f"proxy {px.label} refused CONNECT to {_host_port(r.host, r.port)}: "
                                            f"{code} {reason}".rstrip())
                    if rest:
                        raise ConnectFailed(f"proxy {px.label} sent data before the TLS handshake")
                    conn = _Conn(r.key, self)
                    assert ctx is not None   # r.tls: _ssl_context made one
                    tls_tr = await asyncio.get_running_loop().start_tls(tr, conn, ctx, server_hostname=r.host)
                    assert tls_tr is not None   # typeshed says Optional; asyncio always returns the TLS transport
                    conn.connection_made(tls_tr)
                    tr = None
        except TimeoutError:
            raise ConnectFailed(f"connect to {r.where} timed out after {self.connect_timeout:g}s") from None
        except ssl.SSLCertVerificationError as e:
            raise ConnectFailed(f"TLS verification of {r.where} failed: {e.verify_message or e.reason}") from None
        except ssl.SSLError as e:
            raise ConnectFailed(f"TLS handshake with {r.where} failed: {e.reason or e}") from None
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {r.where}: {e.strerror or e}") from None
        finally:
            if tr is not None:
                tr.abort()
        self._all.add(conn)
        return conn

    def _take_idle(self, key: tuple) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            c = idle.popleft()
            if not c.closed and now - c.idle_since < IDLE_TTL and not c.transport.is_closing():  # type: ignore
                c.idle = False
                return c
            c._abort()
            self._all.discard(c)
        return None

    def _put_back(self, c: _Conn) -> None:
        c._reset()
        c.idle = True
        c.idle_since = time.monotonic()
        idle = self._idle.get(c.key)
        if idle is None:
            idle = self._idle[c.key] = deque()
        if len(idle) < MAX_IDLE_PER_HOST:
            idle.append(c)
        else:
            c._abort()
            self._all.discard(c)

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None, *,
                      proxy: str | None = None, ca_file: str | None = None,
                      body_limit: int | None = _DEFAULT) -> Response:
        """Send a request; return once the final response headers are in.

        proxy: None = from the environment, "" = direct, else an http:// proxy URL.
        ca_file: a CA bundle for this vendor (https only). body_limit: None for
        streams, default the pool's (32 MiB); counts decoded bytes.
        """
        rkey: Any = url if proxy is None and ca_file is None else (url, proxy, ca_file)
        route = self._routes.get(rkey)
        if route is None:
            route = self._route(url, proxy, ca_file)
            if len(self._routes) < 10_000:
                self._routes[rkey] = route
        text = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
        n = len(headers)
        # One pass each instead of a check per header: any CR or LF beyond the n line ends is injected.
        if text.count("\r") != n or text.count("\n") != n or "\0" in text:
            raise InvalidHeader(f"request header {_bad_header(headers)!r} contains CR, LF or NUL; refused")
        if method not in _METHODS and not _TOKEN.fullmatch(method):
            raise InvalidHeader(f"invalid request method {method[:20]!r}")
        if body is not None:
            text += f"Content-Length: {len(body)}\r\n"
        payload = b"".join((method.encode("ascii"), route.head, text.encode("latin-1"), b"\r\n", body or b""))
        limit = self.body_limit if body_limit is _DEFAULT else body_limit
        while True:
            conn = self._take_idle(route.key)
            fresh = conn is None
            if conn is None:
                conn = await self._connect(route)
            conn.body_limit = limit
            t = conn.transport
            assert t is not None
            t.write(payload)
            if not fresh and t.is_closing():
                # The pooled connection died on this very write: nothing reached the vendor.
                conn._abort()
                self._all.discard(conn)
                continue
            break
        try:
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            conn._abort()  # failed, cancelled or timed out mid-exchange: never reuse
            self._all.discard(conn)
            raise
        return Response(conn, self)

    async def close(self) -> None:
        for c in list(self._all):
            c._abort()
        self._all.clear()
        self._idle.clear()

    def stats(self) -> dict[str, Any]:
        return {"open": sum(1 for c in self._all if not c.closed),
                "idle": sum(len(v) for v in self._idle.values())}


def _bad_header(headers: dict[str, str]) -> str:
    """The name of the first header with CR, LF or NUL in it (names only: a value may be a secret)."""
    for k, v in headers.items():
        if any(ch in f"{k}{v}" for ch in "\r\n\0"):
            return str(k)[:40]
    return "?"


_METHODS = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))
