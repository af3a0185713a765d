"""One attempt's outcome, recorded one way: the request log row, the target's health, its breaker.

First attempts, mid-stream continuations and probes all end here, so a 429 or
a reset means the same to health and breaker whoever met it (the copies this
replaces had drifted: a 429 during a continuation skipped health).
"""

from __future__ import annotations

from gateway.routing.call import Call
from gateway.routing.verdicts import NO_VERDICT, TOO_LARGE
from gateway.runtime import Runtime, Target
from gateway.vendors.base import ErrorClass, VendorError, scrub
from gateway.vendors.http_errors import (
    ConnectFailed,
    ConnectionLost,
    InvalidHeader,
    ProtocolError,
    ResponseTooLarge,
    UpstreamError,
)

# Failures talking to a vendor (the upstream client) and to a client (aiohttp writes surface as OSError).
NET_ERRORS: tuple[type[BaseException], ...] = (UpstreamError, ConnectionError, OSError)


def net_error(exc: BaseException, before_headers: bool) -> VendorError:
    """A transport failure as a row of the failover contract."""
    if isinstance(exc, InvalidHeader):   # our request cannot be sent as configured: not the vendor's health
        return VendorError(ErrorClass.MISCONFIGURED, str(exc))
    if isinstance(exc, ConnectFailed):
        return VendorError(ErrorClass.CONNECT, str(exc))
    if isinstance(exc, ConnectionLost):
        return VendorError(ErrorClass.RESET, str(exc))
    if isinstance(exc, ResponseTooLarge):
        return VendorError(ErrorClass.PROTOCOL, str(exc), code=TOO_LARGE)
    if isinstance(exc, ProtocolError):
        return VendorError(ErrorClass.PROTOCOL, str(exc))
    what = "before response headers" if before_headers else "while reading the response"
    return VendorError(ErrorClass.RESET, f"connection lost {what} ({type(exc).__name__})")


def settle(rt: Runtime, t: Target, err: VendorError | None, lat_ms: float, *, owner: object,
           call: Call | None = None, ts: float = 0.0, status: int | None = None, continuation: bool = False,
           verdict: bool = True, probe: bool = False, observe_ok: bool = True, cost: float | None = None,
           why: str = "") -> None:
    """Record one attempt on `t`.

    owner: who holds the breaker's half-open trial (the call, or a probe's token).
    verdict: False when this outcome may not move the breaker (a probe while a trial runs elsewhere).
    observe_ok: False for a stream's first token (its health is observed when the stream ends).
    """
    if err is not None:
        scrub(err, t.secrets)   # whatever path built it (an HTTP error line, a proxy's refusal, ...)
    if call is not None:
        call.add_attempt(t, ts, lat_ms, err, status, continuation)
    b = t.breaker
    if err is None:
        if observe_ok:
            t.health.observe(True, lat_ms, cost=cost or 0.0, probe=probe)
        if verdict:
            rt.breaker_changed(t, b.success(owner), why or ("probe succeeded" if probe else "request succeeded"))
        return
    if err.code in NO_VERDICT:
        b.release(owner)   # the client's budget ran out, or we are stopping: no verdict on this target
        return
    text = f"probe: {err}" if probe else str(err)
    t.health.observe(False, lat_ms, text[:300], err.cls, probe=probe, retry_after=err.retry_after)
    if err.cls.counts_against_health and verdict:
        rt.breaker_changed(t, b.failure(owner), (f"probe failed: {err}" if probe else str(err))[:200])
    else:
        b.release(owner)
