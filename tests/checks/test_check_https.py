"""HTTPS checks: certificate verification, TLSSkipVerify and TLSServerName (SNI)."""

import asyncio
import ssl

import pytest
from aiohttp import web
from tests.checks._checks_helpers import self_signed_cert

from beacon.checks import CheckDefinition


@pytest.fixture
async def https_target(tmp_path):
    cert, key = self_signed_cert(tmp_path, "beacon.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    ctx.sni_callback = lambda sock, name, context: server_names.append(name)

    async def ok(request):
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"https://127.0.0.1:{port}/", server_names
    async with asyncio.timeout(5):
        await runner.cleanup()


async def test_untrusted_certificate_is_critical_unless_verification_is_skipped(scheduler, recorder, https_target):
    url, _ = https_target
    scheduler.add(CheckDefinition.from_json({"ID": "strict", "HTTP": url, "Interval": "50ms"}))
    got = await recorder.wait_status("strict", "critical")
    assert got.output.startswith(f'Get "{url}": dial tcp 127.0.0.1:')
    assert "tls: certificate verify failed: self-signed certificate" in got.output
    scheduler.add(CheckDefinition.from_json({"ID": "lax", "HTTP": url, "Interval": "50ms", "TLSSkipVerify": True}))
    got = await recorder.wait_status("lax", "passing")
    assert got.output == f"HTTP GET {url}: 200 OK Output: secure"


async def test_tls_server_name_is_sent_as_sni(scheduler, recorder, https_target):
    url, server_names = https_target
    scheduler.add(CheckDefinition.from_json(
        {"ID": "sni", "HTTP": url, "Interval": "50ms", "TLSSkipVerify": True, "TLSServerName": "beacon.test"}))
    await recorder.wait_status("sni", "passing")
    assert "beacon.test" in server_names
