"""gRPC, H2PING and redirecting HTTP checks registered through py-consul on a real agent, seen in the
agent's health API (the probes themselves are unit-tested in tests/checks)."""

from __future__ import annotations

import asyncio
import threading

import consul
import pytest
from aiohttp import web

from tests.conftest import wait_until

grpc = pytest.importorskip("grpc")
health = pytest.importorskip("grpc_health.v1.health")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")

pytestmark = pytest.mark.integration


class Servers:
    """A gRPC health server and an HTTP server with a redirect, on a loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(15)

    async def _start(self) -> None:
        self.grpc = grpc.aio.server()
        self.servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.grpc)
        self.grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        await self.grpc.start()
        await self.servicer.set("orders", health_pb2.HealthCheckResponse.SERVING)

        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPFound("/ok")

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="fine")

        app = web.Application()
        app.router.add_get("/moved", moved)
        app.router.add_get("/ok", ok)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]

    def set_status(self, status: int) -> None:
        asyncio.run_coroutine_threadsafe(self.servicer.set("orders", status), self.loop).result(5)

    def stop(self) -> None:
        async def down() -> None:
            await self.grpc.stop(None)
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def status_of(client: consul.Consul, check_id: str) -> str | None:
    checks = client.agent.checks()
    return checks[check_id]["Status"] if check_id in checks else None


def test_grpc_h2ping_and_redirect_checks_through_the_agent(dev_agent) -> None:
    servers = Servers()
    try:
        client = consul.Consul(host="127.0.0.1", port=dev_agent.http_port)
        client.agent.service.register("orders", port=servers.grpc_port,
                                      check=consul.Check.grpc(f"127.0.0.1:{servers.grpc_port}/orders", "1s"))
        client.agent.check.register("h2", check={"H2PING": f"127.0.0.1:{servers.grpc_port}",
                                                 "H2PingUseTLS": False, "Interval": "1s"})
        url = f"http://127.0.0.1:{servers.http_port}/moved"
        client.agent.check.register("follows", check=consul.Check.http(url, "1s"))
        client.agent.check.register("stays", check={"HTTP": url, "Interval": "1s", "DisableRedirects": True})
        wait_until(lambda: status_of(client, "service:orders") == "passing", timeout=20)
        wait_until(lambda: status_of(client, "h2") == "passing", timeout=20)
        wait_until(lambda: status_of(client, "follows") == "passing", timeout=20)
        # A new check starts critical with no output: wait for the probe's own verdict, not the initial state.
        wait_until(lambda: "302" in client.agent.checks()["stays"]["Output"], timeout=20)
        assert status_of(client, "stays") == "critical"
        assert client.agent.checks()["service:orders"]["Type"] == "grpc"

        servers.set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        wait_until(lambda: status_of(client, "service:orders") == "critical", timeout=20)
        _, nodes = client.health.service("orders", passing=True)
        assert nodes == []
    finally:
        servers.stop()
