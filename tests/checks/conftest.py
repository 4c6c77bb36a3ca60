"""Fixtures for the check tests: a recording notifier and real loopback targets.

Every server binds port 0 itself and is ready when the fixture returns; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from _checks_helpers import Recorder
from aiohttp import web
from aiohttp.test_utils import TestServer

from beacon.checks import CheckScheduler


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def scheduler(recorder: Recorder) -> AsyncIterator[CheckScheduler]:
    sched = CheckScheduler(recorder, min_interval=0.01, rng=random.Random(7))
    yield sched
    async with asyncio.timeout(10):
        await sched.stop()


@dataclass
class HTTPTarget:
    server: TestServer
    hits: dict[str, list[float]] = field(default_factory=dict)
    sequence: list[int] = field(default_factory=list)
    mode: dict[str, int] = field(default_factory=lambda: {"status": 200})
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def http_target() -> AsyncIterator[HTTPTarget]:
    target: HTTPTarget

    def hit(request: web.Request) -> None:
        target.hits.setdefault(request.path, []).append(time.monotonic())

    async def fixed(request: web.Request) -> web.Response:
        hit(request)
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"answer {code}")

    async def mode(request: web.Request) -> web.Response:
        hit(request)
        return web.Response(status=target.mode["status"], text=f"mode {target.mode['status']}")

    async def sequence(request: web.Request) -> web.Response:
        hit(request)
        code = target.sequence.pop(0) if target.sequence else 200
        return web.Response(status=code, text=f"seq {code}")

    async def slow(request: web.Request) -> web.Response:
        hit(request)
        target.in_flight += 1
        target.max_in_flight = max(target.max_in_flight, target.in_flight)
        try:
            await asyncio.sleep(float(request.query.get("delay", "1")))
        finally:
            target.in_flight -= 1
        return web.Response(text="slow")

    async def big(request: web.Request) -> web.Response:
        hit(request)
        return web.Response(text="A" * 10_000 + "END")

    async def echo(request: web.Request) -> web.Response:
        hit(request)
        body = await request.text()
        return web.Response(text=(f"method={request.method} ua={request.headers.get('User-Agent')} "
                                  f"accept={request.headers.get('Accept')} "
                                  f"x={','.join(request.headers.getall('X-Custom', []))} "
                                  f"host={request.headers.get('Host')} body={body}"))

    async def redirect(request: web.Request) -> web.Response:
        hit(request)
        raise web.HTTPFound("/status/200")

    app = web.Application()
    app.router.add_route("*", "/status/{code}", fixed)
    app.router.add_route("*", "/mode", mode)
    app.router.add_route("*", "/sequence", sequence)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/redirect", redirect)
    server = TestServer(app, host="127.0.0.1", port=0)
    async with asyncio.timeout(5):
        await server.start_server()
    target = HTTPTarget(server)
    yield target
    async with asyncio.timeout(5):
        await server.close()


@pytest.fixture
async def tcp_listener() -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    yield f"{host}:{port}"
    server.close()
    async with asyncio.timeout(5):
        await server.wait_closed()


@pytest.fixture
def refusing_tcp_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections to it are refused, and no
    other process can take it while the test runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()
