"""``api_middleware`` (metrics, error mapping and ``?peer`` in one layer) answers as the three separate
middlewares do, on a real aiohttp server over loopback."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from beacon.agent.http import metrics
from beacon.agent.http.core import AGENT_KEY, HTTPError, error_middleware
from beacon.agent.http.readopts import peer_middleware
from beacon.server.consensus import NoLeaderError


def _app(middlewares: list[Any]) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def bad(request: web.Request) -> web.Response:
        raise HTTPError(418, "teapot")

    async def no_leader(request: web.Request) -> web.Response:
        raise NoLeaderError()

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("kaput")

    app = web.Application(middlewares=middlewares)
    consensus = SimpleNamespace(known_leader=lambda: True)
    app[AGENT_KEY] = SimpleNamespace(consensus=consensus)  # type: ignore[assignment]
    for path, fn in (("/ok", ok), ("/bad", bad), ("/noleader", no_leader), ("/boom", boom),
                     ("/v1/catalog/services", ok), ("/v1/health/service/{name}", ok)):
        app.router.add_get(path, fn)
    return app


PATHS = ["/ok", "/bad", "/noleader", "/boom", "/missing", "/v1/catalog/services?peer=p",
         "/v1/health/service/web?peer=p", "/v1/catalog/services", "/ok?peer=p"]


async def _answers(middlewares: list[Any]) -> list[tuple[int, str, str | None]]:
    server = TestServer(_app(middlewares), host="127.0.0.1")
    await server.start_server()
    out = []
    try:
        async with aiohttp.ClientSession() as session:
            for path in PATHS:
                async with session.get(server.make_url(path)) as resp:
                    out.append((resp.status, await resp.text(), resp.headers.get("X-Consul-Index")))
    finally:
        await server.close()
    return out


def _count(endpoint: str, status: str) -> float:
    metrics.fold()
    for family in metrics.telemetry.REGISTRY.collect():
        for sample in family.samples:
            if (sample.name == "beacon_http_requests_total" and sample.labels.get("endpoint") == endpoint
                    and sample.labels.get("status") == status):
                return sample.value
    return 0.0


async def test_one_layer_answers_like_the_three() -> None:
    three = await _answers([metrics.metrics_middleware, error_middleware, peer_middleware])
    before = (_count("unmatched", "404"), _count("/bad", "418"), _count("/boom", "500"))
    one = await _answers([metrics.api_middleware])
    after = (_count("unmatched", "404"), _count("/bad", "418"), _count("/boom", "500"))
    assert one == three
    statuses = [status for status, _, _ in one]
    assert statuses == [200, 418, 500, 500, 404, 200, 200, 200, 200]
    assert one[1][1] == "teapot" and "kaput" in one[3][1]
    assert (one[5][1], one[6][1], one[5][2]) == ("{}", "[]", "1")  # ?peer: the empty result
    assert one[7][1] == "ok"  # no ?peer: the handler
    # Counted once each, unmatched paths under one label, errors by their mapped status.
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (1, 1, 1)


async def _serve_api(app: web.Application) -> tuple[web.AppRunner, int]:
    """The app served as the agent serves it: no middlewares, metrics.serve_api as the handler."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    metrics.serve_api(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_request_handler_answers_like_the_middleware() -> None:
    """The agent's handler (no aiohttp middlewares) gives the same answers, counts the same way
    (unmatched paths too, which never reach a route's handler), and honours Expect: 100-continue."""
    three = await _answers([metrics.metrics_middleware, error_middleware, peer_middleware])
    app = _app([])
    app[AGENT_KEY].acl = None  # type: ignore[attr-defined]

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app.router.add_put("/echo", echo)
    runner, port = await _serve_api(app)
    before = (_count("unmatched", "404"), _count("/bad", "418"), _count("/boom", "500"))
    try:
        out = []
        async with aiohttp.ClientSession() as session:
            for path in PATHS:
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    out.append((resp.status, await resp.text(), resp.headers.get("X-Consul-Index")))
        after = (_count("unmatched", "404"), _count("/bad", "418"), _count("/boom", "500"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(b"hello")
        final = await asyncio.wait_for(reader.readuntil(b"hello"), 10)
        writer.close()
    finally:
        await runner.cleanup()
    assert out == three
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (1, 1, 1)
    assert interim.startswith(b"HTTP/1.1 100 Continue") and final.startswith(b"HTTP/1.1 200 OK")


async def test_request_handler_refuses_apps_with_middlewares() -> None:
    runner = web.AppRunner(_app([error_middleware]), access_log=None)
    await runner.setup()
    try:
        with pytest.raises(RuntimeError):
            metrics.serve_api(runner)
    finally:
        await runner.cleanup()
