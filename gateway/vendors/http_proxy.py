"""Getting to a vendor through an HTTP proxy: which proxy (NO_PROXY), its URL, the CONNECT tunnel.

Proxy selection is read once per pool from the environment (or a vendor's
`proxy` key); these pieces parse it and open https tunnels. The rules they
follow are described in gateway/vendors/http.py, under "Routing".
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway.vendors.http_errors import ConnectFailed


def _host_port(host: str, port: int | None) -> str:
    """Host[:port] as it appears in Host, CONNECT and absolute URLs: IPv6 literals bracketed."""
    h = f"[{host}]" if ":" in host else host
    return h if port is None else f"{h}:{port}"


def _is_loopback(host: str) -> bool:
    """Loopback never goes through a proxy from the environment (as Go's net/http decides): a gateway
    beside a local model server (vLLM, Ollama) or its own drills must not be routed to a corporate proxy."""
    h = host.lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class _NoProxy:
    """NO_PROXY: hosts, domain suffixes (with or without a leading dot), '*', host:port, IPs and CIDRs."""

    def __init__(self, spec: str):
        self.all = False
        self.rules: list[tuple[Any, str, int | None]] = []
        for raw in spec.split(","):
            e = raw.strip().lower()
            if not e:
                continue
            if e == "*":
                self.all = True
                continue
            port = None
            if e.startswith("["):
                e, _, rest = e[1:].partition("]")
                if rest[:1] == ":" and rest[1:].isdigit():
                    port = int(rest[1:])
            elif e.count(":") == 1:
                h, _, p = e.partition(":")
                if p.isdigit():
                    e, port = h, int(p)
            try:
                net = ipaddress.ip_network(e, strict=False)
            except ValueError:
                net = None
            name = e[2:] if e.startswith("*.") else e.lstrip(".")
            self.rules.append((net, name.rstrip("."), port))

    def bypass(self, host: str, port: int) -> bool:
        if self.all:
            return True
        h = host.lower().rstrip(".")
        try:
            ip: Any = ipaddress.ip_address(h)
        except ValueError:
            ip = None
        for net, name, p in self.rules:
            if p is not None and p != port:
                continue
            if net is not None:
                if ip is not None and ip.version == net.version and ip in net:
                    return True
            elif name and (h == name or h.endswith("." + name)):
                return True
        return False


class _Proxy:
    __slots__ = ("auth", "host", "label", "port", "url")

    def __init__(self, url: str):
        self.url = url
        if "://" not in url:
            url = "http://" + url  # like curl: a bare host:port is an http proxy
        u = urlsplit(url)
        if u.scheme.lower() != "http":
            raise ConnectFailed(f"proxy scheme {u.scheme!r} is not supported (only http:// proxies)")
        try:
            host, port = u.hostname, u.port or 80
        except ValueError:
            host = None
        if not host:
            raise ConnectFailed("invalid proxy URL (not shown: it may hold credentials)")
        self.host, self.port = host, port
        self.label = f"http://{_host_port(host, port)}"  # never the credentials
        self.auth = None
        if u.username is not None or u.password is not None:
            cred = f"{unquote(u.username or '')}:{unquote(u.password or '')}".encode()
            self.auth = b"Proxy-Authorization: Basic " + base64.b64encode(cred) + b"\r\n"


class _Tunnel(asyncio.Protocol):
    """Reads a proxy's answer to CONNECT; the TLS session to the vendor then takes the transport over."""

    def __init__(self, limit: int):
        self.limit = limit
        self.buf = bytearray()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.buf += data  # bytes before our TLS hello: an anomaly, checked by the caller
            return
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            self.done.set_result(None)
        elif len(self.buf) > self.limit:
            self.done.set_exception(ConnectFailed("proxy's answer to CONNECT is too large"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectFailed("proxy closed the connection during CONNECT"))
