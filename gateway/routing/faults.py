"""Faults injected by the gateway itself for a target (failover drills).

A drill sets a DrillFault on a target; every attempt and probe to that target sees
it exactly as if the vendor misbehaved, without touching the vendor.

- `error:<status>`: the vendor answers that status (429 carries Retry-After).
- `timeout`: the attempt times out at once, as if `first_byte` had expired.
- `hang`: the attempt really waits until `first_byte` expires.
- `latency:<ms>`: the real call, delayed by ms.
- `stream_cut`: the real call; a stream is cut after its first token, a
  non-streaming body is lost after the headers (a reset).

Not to be confused with the fake vendors' fault switches (`gateway/mock/faults.py`,
`patchbay mock`), which make a fake vendor itself misbehave and have their own grammar.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from gateway.routing.verdicts import timeout_error
from gateway.vendors.base import ErrorClass, VendorError, status_class

DRILL_FAULT_KINDS = ("error", "timeout", "hang", "latency", "stream_cut")


class DrillFaultError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DrillFault:
    kind: str
    status: int = 0
    ms: float = 0.0
    retry_after: float | None = None
    until: float = float("inf")   # time.monotonic() deadline
    drill_id: str | None = None

    @property
    def active(self) -> bool:
        return time.monotonic() < self.until

    @property
    def spec(self) -> str:
        if self.kind == "error":
            return f"error:{self.status}"
        if self.kind == "latency":
            return f"latency:{int(self.ms)}"
        return self.kind


def parse_drill_fault(spec: str, *, duration: float | None = None, drill_id: str | None = None,
                retry_after: float | None = None) -> DrillFault:
    """Parse "error:503", "error:429", "timeout", "hang", "latency:800", "stream_cut"."""
    if not isinstance(spec, str):
        raise DrillFaultError("fault must be a string like 'error:503'")
    kind, _, arg = spec.partition(":")
    until = time.monotonic() + duration if duration is not None else float("inf")
    if kind == "error":
        if not arg.isdigit() or not 400 <= int(arg) <= 599:
            raise DrillFaultError(f"fault {spec!r}: error needs an HTTP status 400-599, e.g. error:503")
        status = int(arg)
        ra = retry_after if retry_after is not None else (1.0 if status == 429 else None)
        return DrillFault("error", status=status, retry_after=ra, until=until, drill_id=drill_id)
    if kind == "latency":
        try:
            ms = float(arg)
        except ValueError:
            raise DrillFaultError(f"fault {spec!r}: latency needs milliseconds, e.g. latency:800") from None
        if not 0 <= ms <= 600_000:
            raise DrillFaultError(f"fault {spec!r}: latency must be 0..600000 ms")
        return DrillFault("latency", ms=ms, until=until, drill_id=drill_id)
    if kind in ("timeout", "hang", "stream_cut") and not arg:
        return DrillFault(kind, until=until, drill_id=drill_id)
    raise DrillFaultError(f"unknown fault {spec!r}; use error:<status>, timeout, hang, latency:<ms> or stream_cut")


async def apply_fault(fault: DrillFault | None, deadline: float, first_byte: float, total: float) -> None:
    """A drill's fault before the real call (or instead of it), as a misbehaving vendor would act."""
    if fault is None:
        return
    kind = fault.kind
    if kind == "error":
        raise VendorError(status_class(fault.status), f"drill: injected HTTP {fault.status}", fault.status,
                          fault.retry_after if fault.status == 429 else None)
    if kind == "timeout":
        raise VendorError(ErrorClass.TIMEOUT, "drill: injected timeout (no response headers)")
    if kind == "hang":
        wait = min(first_byte, max(0.0, deadline - time.perf_counter()))
        await asyncio.sleep(wait)
        raise VendorError(ErrorClass.TIMEOUT, f"drill: vendor hung, nothing within {wait:.1f}s")
    if kind == "latency":
        budget = min(first_byte, max(0.0, deadline - time.perf_counter()))
        if fault.ms / 1000 >= budget:  # as slow as a vendor that misses first_byte: same verdict
            await asyncio.sleep(budget)
            raise timeout_error(deadline, f"drill: {fault.ms:g} ms of injected latency, nothing", first_byte, total)
        await asyncio.sleep(fault.ms / 1000)
