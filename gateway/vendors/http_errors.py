"""The upstream client's exceptions, one class per way a call to a vendor can fail.

Their own module because every part of the client raises them (the connection
protocol, the proxy tunnel, the pool) and the router maps them onto the
failover contract; see gateway/vendors/http.py for what each one means.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """A network or protocol failure talking to a vendor."""


class ConnectFailed(UpstreamError):
    """Refused, DNS, TLS, proxy or connect timeout: nothing was sent."""


class InvalidHeader(ConnectFailed, ValueError):
    """A request header name or value that would break the request framing: refused, nothing was sent."""


class ConnectionLost(UpstreamError):
    """The connection broke; `before_headers` says whether any response had started."""

    def __init__(self, message: str, before_headers: bool):
        super().__init__(message)
        self.before_headers = before_headers


class ProtocolError(UpstreamError):
    """The vendor's bytes are not acceptable HTTP/1.1 (the connection is closed)."""

    def __init__(self, message: str, before_headers: bool = True):
        super().__init__(message)
        self.before_headers = before_headers


class ResponseTooLarge(UpstreamError):
    """The response body passed the request's body_limit (the connection is closed)."""

    before_headers = False
