"""The agent may run on uvloop: every probe type must work there too."""

import asyncio
import random
import socket
import sys

import pytest
from _checks_helpers import Recorder
from aiohttp import web
from aiohttp.test_utils import TestServer

from beacon.checks import CheckDefinition, CheckScheduler

uvloop = pytest.importorskip("uvloop")


def test_all_probe_types_run_on_uvloop():
    async def main() -> dict[str, str]:
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", ok)
        http = TestServer(app, host="127.0.0.1", port=0)
        await http.start_server()
        tcp = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        tcp_port = tcp.sockets[0].getsockname()[1]
        refused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        refused.bind(("127.0.0.1", 0))
        udp_port = refused.getsockname()[1]
        refused.close()
        recorder = Recorder()
        sched = CheckScheduler(recorder, min_interval=0.01, rng=random.Random(1))
        bodies = {
            "http": {"HTTP": str(http.make_url("/")), "Interval": "20ms"},
            "tcp": {"TCP": f"127.0.0.1:{tcp_port}", "Interval": "20ms"},
            "udp": {"UDP": f"127.0.0.1:{udp_port}", "Interval": "20ms"},
            "script": {"Args": [sys.executable, "-c", "raise SystemExit(1)"], "Interval": "20ms"},
            "ttl": {"TTL": "20ms"},
        }
        try:
            for check_id, body in bodies.items():
                sched.add(CheckDefinition.from_json({"ID": check_id, **body}))
            await recorder.wait_until(lambda: all(recorder.of(c) for c in bodies), timeout=5)
        finally:
            async with asyncio.timeout(5):
                await sched.stop()
                await http.close()
                tcp.close()
        return {c: recorder.of(c)[0].status for c in bodies}

    assert uvloop.run(main()) == {"http": "passing", "tcp": "passing", "udp": "critical",
                                  "script": "warning", "ttl": "critical"}
