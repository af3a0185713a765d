"""The seams where parts plug into a gateway, as Protocols: the store, started components, the gateway itself.

The control plane (admin API, drills) is written against `GatewayView`, not
against `gateway.app.Gateway`, so nothing imports back up the stack and any
store (SQLite today, PostgreSQL in fleet mode) fits the same seam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from gateway.control.prober import Prober
    from gateway.runtime import Runtime
    from gateway.vendors.http import Pool


class Store(Protocol):
    """Where request-log rows go: `put` never blocks (rows are queued), `stats` says how that is going."""

    # put and close may return something (the SQLite store says whether the row was queued, whether
    # closing left nothing behind); callers do not rely on it
    def put(self, row: Any) -> object: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> object: ...


class Component(Protocol):
    """Something a gateway started and must stop (drills, the prober)."""

    async def stop(self) -> None: ...


class GatewayView(Protocol):
    """What the control plane may use of a running gateway."""

    runtime: Runtime | None
    upstream: Pool | None
    port: int | None
    prober: Prober | None

    @property
    def url(self) -> str: ...

    def client_keys(self) -> list[str]: ...
