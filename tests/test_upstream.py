"""The lean upstream client against real servers on 127.0.0.1: bodies, keep-alive, and every way a connection breaks."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.vendors.http import Pool
from gateway.vendors.http_errors import ConnectFailed, ConnectionLost, ProtocolError


@pytest.fixture
async def server():
    """An aiohttp server whose handlers each test installs; yields (app, base_url)."""
    app = web.Application()
    routes: dict[str, object] = {}

    async def dispatch(request: web.Request):
        return await routes[request.path](request)

    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield routes, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def raw_server(handler):
    """A bare TCP server, for responses no HTTP framework would send."""
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    return srv, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


async def test_content_length_body_and_headers(server):
    routes, base = server

    async def echo(request):
        body = await request.read()
        return web.Response(body=b"got:" + body, headers={"Retry-After": "2", "X-Two": "a"})
    routes["/echo"] = echo
    pool = Pool(env={})
    resp = await pool.request("POST", f"{base}/echo?x=1", {"content-type": "application/json"}, b'{"a":1}')
    assert resp.status == 200 and resp.headers["retry-after"] == "2"
    assert await resp.read() == b'got:{"a":1}'
    await pool.close()


async def test_chunked_stream_arrives_in_pieces_and_connection_is_reused(server):
    routes, base = server

    async def sse(request):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp
    routes["/sse"] = sse
    pool = Pool(env={})
    for _ in range(3):
        resp = await pool.request("GET", f"{base}/sse", {}, None)
        pieces = []
        while chunk := await resp.read_chunk():
            pieces.append(chunk)
        assert b"".join(pieces) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and len(pieces) >= 2
    assert pool.stats() == {"open": 1, "idle": 1}  # one keep-alive connection served all three
    await pool.close()


async def test_large_body_with_backpressure(server):
    routes, base = server
    blob = bytes(range(256)) * 20_000  # ~5 MB, beyond the pause threshold

    async def big(request):
        return web.Response(body=blob)
    routes["/big"] = big
    pool = Pool(env={})
    resp = await pool.request("GET", f"{base}/big", {}, None)
    await asyncio.sleep(0.2)  # let the vendor fill the buffer while nobody reads
    assert await resp.read() == blob
    await pool.close()


async def test_connection_refused_is_connect_failed(unused_tcp_port):
    pool = Pool(connect_timeout=1, env={})
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await pool.request("GET", f"http://127.0.0.1:{unused_tcp_port}/x", {}, None)


async def test_invalid_url_is_connect_failed():
    with pytest.raises(ConnectFailed, match="invalid vendor URL"):
        await Pool(env={}).request("GET", "ftp://example/x", {}, None)


async def test_reset_before_headers_is_connection_lost():
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()
    srv, base = await raw_server(handler)
    with pytest.raises(ConnectionLost) as ei:
        await Pool(env={}).request("GET", f"{base}/x", {}, None)
    assert ei.value.before_headers
    srv.close()


async def test_cut_mid_body_is_connection_lost_after_headers():
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a little")
        await writer.drain()
        writer.transport.abort()
    srv, base = await raw_server(handler)
    resp = await Pool(env={}).request("GET", f"{base}/x", {}, None)
    assert resp.status == 200
    with pytest.raises(ConnectionLost) as ei:
        await resp.read()
    assert not ei.value.before_headers
    srv.close()


async def test_malformed_http_is_protocol_error():
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not http\r\n\r\n")
        await writer.drain()
    srv, base = await raw_server(handler)
    with pytest.raises(ProtocolError, match="malformed HTTP") as ei:
        await Pool(env={}).request("GET", f"{base}/x", {}, None)
    assert ei.value.before_headers
    srv.close()


async def test_body_delimited_by_close():
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()
    srv, base = await raw_server(handler)
    resp = await Pool(env={}).request("GET", f"{base}/x", {}, None)
    assert await resp.read() == b"until the end"
    srv.close()


async def test_pooled_connection_closed_by_the_vendor_while_idle_is_not_used():
    served = []

    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # the vendor closes the keep-alive connection after answering
    srv, base = await raw_server(handler)
    pool = Pool(env={})
    resp = await pool.request("GET", f"{base}/x", {}, None)
    assert await resp.read() == b"ok"
    for _ in range(1000):  # wait (up to 5 s, not a fixed 50 ms) until the vendor's close reached the pool
        if pool.stats()["open"] == 0:
            break
        await asyncio.sleep(0.005)
    assert pool.stats() == {"open": 0, "idle": 1}
    resp = await pool.request("GET", f"{base}/x", {}, None)  # must not surface the dead socket
    assert await resp.read() == b"ok" and len(served) == 2
    srv.close()


async def test_cancel_mid_exchange_never_reuses_the_connection(server):
    routes, base = server

    async def slow(request):
        await asyncio.sleep(5)
        return web.Response(text="late")
    routes["/slow"] = slow
    pool = Pool(env={})
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await pool.request("GET", f"{base}/slow", {}, None)
    await asyncio.sleep(0.05)
    assert pool.stats() == {"open": 0, "idle": 0}
