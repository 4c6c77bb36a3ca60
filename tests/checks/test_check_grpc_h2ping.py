"""gRPC checks (grpc.health.v1 against a real grpcio server, plain and TLS) and H2PING checks (an HTTP/2
PING to the same server; an HTTP/1.1-only server fails it)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from tests.checks._checks_helpers import self_signed_cert

from beacon.checks import CheckDefinition

grpc = pytest.importorskip("grpc")
health = pytest.importorskip("grpc_health.v1.health")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _serve(credentials=None):
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, servicer, port


@pytest.fixture
async def grpc_server():
    server, servicer, port = await _serve()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def grpc_tls_server(tmp_path):
    cert, key = self_signed_cert(tmp_path, "grpc.test")
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server, servicer, port = await _serve(creds)
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


def check(**body):
    return CheckDefinition.from_json({"ID": "c", "Name": "c", "Interval": "50ms", "Timeout": "2s", **body})


async def test_grpc_check_follows_the_serving_status_of_the_named_service(scheduler, recorder, grpc_server):
    servicer, addr = grpc_server
    await servicer.set("billing", SERVING)
    scheduler.add(check(GRPC=f"{addr}/billing"))
    up = await recorder.wait_status("c", "passing", timeout=10)
    assert up.output == f"gRPC check {addr}/billing: success"
    await servicer.set("billing", NOT_SERVING)
    down = await recorder.wait_status("c", "critical", timeout=10)
    assert down.output == f"gRPC {addr}/billing serving status: NOT_SERVING"


async def test_grpc_check_of_an_unknown_service_or_a_dead_server_is_critical(scheduler, recorder, grpc_server,
                                                                          refusing_tcp_port):
    _, addr = grpc_server
    scheduler.add(check(GRPC=f"{addr}/nobody"))
    got = await recorder.wait_status("c", "critical", timeout=10)
    assert "NOT_FOUND" in got.output
    scheduler.add(check(ID="dead", GRPC=f"127.0.0.1:{refusing_tcp_port}"))
    dead = await recorder.wait_status("dead", "critical", timeout=15)
    assert "UNAVAILABLE" in dead.output


async def test_grpc_check_over_tls_verifies_unless_skipped(scheduler, recorder, grpc_tls_server):
    servicer, addr = grpc_tls_server
    await servicer.set("", SERVING)
    scheduler.add(check(ID="strict", GRPC=addr, GRPCUseTLS=True))
    strict = await recorder.wait_status("strict", "critical", timeout=10)
    assert "UNAVAILABLE" in strict.output
    scheduler.add(check(ID="lax", GRPC=addr, GRPCUseTLS=True, TLSSkipVerify=True))
    lax = await recorder.wait_status("lax", "passing", timeout=10)
    assert lax.output == f"gRPC check {addr}: success"


async def test_h2ping_passes_against_an_http2_server_and_fails_against_http1(scheduler, recorder, grpc_server,
                                                                             grpc_tls_server):
    _, addr = grpc_server
    scheduler.add(check(ID="h2c", H2PING=addr, H2PingUseTLS=False))
    got = await recorder.wait_status("h2c", "passing", timeout=10)
    assert got.output == "HTTP2 ping was successful"
    _, tls_addr = grpc_tls_server
    scheduler.add(check(ID="h2tls", H2PING=tls_addr, TLSSkipVerify=True))  # H2PingUseTLS defaults to true
    await recorder.wait_status("h2tls", "passing", timeout=10)
    scheduler.add(check(ID="h2strict", H2PING=tls_addr))
    strict = await recorder.wait_status("h2strict", "critical", timeout=10)
    assert "certificate verify failed" in strict.output

    async def http1_only(request: web.Request) -> web.Response:
        return web.Response(text="http/1.1 only")

    app = web.Application()
    app.router.add_get("/", http1_only)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        scheduler.add(check(ID="h1", H2PING=f"127.0.0.1:{port}", H2PingUseTLS=False))
        h1 = await recorder.wait_status("h1", "critical", timeout=10)
        assert h1.output.startswith("HTTP2 ping failed")
    finally:
        async with asyncio.timeout(5):
            await runner.cleanup()
