"""Unit layer: no sockets. Any attempt to open one fails the test that made it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


@pytest.fixture(autouse=True)
async def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    def refuse(*a: Any, **kw: Any) -> Any:
        pytest.fail("a unit test tried to open a socket (use tests.fake_transport.FakePool)")

    for name in ("create_connection", "create_server", "sock_connect", "getaddrinfo"):
        monkeypatch.setattr(loop, name, refuse)
