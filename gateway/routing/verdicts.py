"""Verdicts on an attempt that say nothing about the vendor, and the timeout verdict both the router and drills give.

Kept apart (it imports nothing of the gateway but the vendor error type) so the
fault gate, the router and the attempt bookkeeping can all use it.
"""

from __future__ import annotations

import time

from gateway.vendors.base import ErrorClass, VendorError

TOTAL_TIMEOUT = "total_timeout"   # VendorError.code when the client's whole budget ran out
SHUTDOWN = "shutdown"             # VendorError.code when the gateway cut an attempt to stop
NO_VERDICT = (TOTAL_TIMEOUT, SHUTDOWN)   # codes that say nothing about the vendor: no health, no breaker
TOO_LARGE = "response_too_large"  # a PROTOCOL error not worth a retry on the same target (it would pay it again)


def timeout_error(deadline: float, what: str, first_byte: float, total: float) -> VendorError:
    """Nothing in time: the client's whole budget (no verdict), or `first_byte` (a silent target)."""
    if time.perf_counter() >= deadline - 0.001:
        return VendorError(ErrorClass.TIMEOUT, f"request exceeded total timeout of {total:g}s", code=TOTAL_TIMEOUT)
    return VendorError(ErrorClass.TIMEOUT, f"{what} within first_byte={first_byte:g}s")
