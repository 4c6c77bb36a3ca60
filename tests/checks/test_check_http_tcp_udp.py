"""HTTP, TCP and UDP checks against real loopback servers."""

import asyncio
import socket

import pytest

from beacon.checks import CheckDefinition


def http_check(url, **extra):
    return CheckDefinition.from_json({"ID": "web", "Name": "web", "HTTP": url, "Interval": "50ms", **extra})


async def test_http_check_moves_through_passing_warning_critical(scheduler, recorder, http_target):
    scheduler.add(http_check(http_target.url("/mode")))
    up = await recorder.wait_status("web", "passing")
    assert up.output == f"HTTP GET {http_target.url('/mode')}: 200 OK Output: mode 200"
    http_target.mode["status"] = 429
    n = len(recorder.of("web"))
    warn = await recorder.wait_status("web", "warning", after=n)
    assert "429 Too Many Requests Output: mode 429" in warn.output
    http_target.mode["status"] = 500
    n = len(recorder.of("web"))
    crit = await recorder.wait_status("web", "critical", after=n)
    assert "500 Internal Server Error Output: mode 500" in crit.output
    http_target.mode["status"] = 204
    n = len(recorder.of("web"))
    await recorder.wait_status("web", "passing", after=n)


async def test_http_check_sends_consul_headers_method_and_body(scheduler, recorder, http_target):
    scheduler.add(http_check(http_target.url("/echo"), Method="put", Body="ping",
                             Header={"X-Custom": ["a", "b"], "Host": ["svc.example"]}))
    got = await recorder.wait_status("web", "passing")
    assert "HTTP PUT" in got.output
    assert "method=PUT ua=Consul Health Check accept=text/plain, text/*, */*" in got.output
    assert "x=a,b host=svc.example body=ping" in got.output


async def test_user_agent_header_can_be_overridden(scheduler, recorder, http_target):
    scheduler.add(http_check(http_target.url("/echo"), Header={"User-Agent": ["mine"]}))
    got = await recorder.wait_status("web", "passing")
    assert "ua=mine " in got.output


async def test_redirects_are_followed_unless_disabled(scheduler, recorder, http_target):
    scheduler.add(http_check(http_target.url("/redirect")))
    followed = await recorder.wait_status("web", "passing")
    assert "200 OK Output: answer 200" in followed.output
    scheduler.add(http_check(http_target.url("/redirect"), ID="stay", DisableRedirects=True))
    got = await recorder.wait_status("stay", "critical")
    assert "302 Found" in got.output


async def test_http_body_in_output_is_capped(scheduler, recorder, http_target):
    scheduler.add(http_check(http_target.url("/big"), OutputMaxSize=100))
    got = await recorder.wait_status("web", "passing")
    body = got.output.split("Output: ", 1)[1]
    assert len(body) == 100 and body.endswith("END")


async def test_http_connection_refused_is_critical(scheduler, recorder, refusing_tcp_port):
    url = f"http://127.0.0.1:{refusing_tcp_port}/health"
    scheduler.add(http_check(url))
    got = await recorder.wait_status("web", "critical")
    assert got.output.startswith(f'Get "{url}": ')
    assert "refused" in got.output.lower()


async def test_http_timeout_is_critical_and_bounded(scheduler, recorder, http_target):
    scheduler.add(http_check(http_target.url("/slow") + "?delay=5", Timeout="200ms"))
    async with asyncio.timeout(3):  # the whole run, stagger included, ends well before the 5 s reply
        got = await recorder.wait_status("web", "critical", timeout=3)
    assert got.output.endswith("timed out after 200ms")


async def test_tcp_check_passing_then_critical_when_listener_goes(scheduler, recorder):
    async def handle(reader, writer):
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = f"127.0.0.1:{port}"
    scheduler.add(CheckDefinition.from_json({"Name": "db", "TCP": target, "Interval": "50ms"}))
    got = await recorder.wait_status("db", "passing")
    assert got.output == f"TCP connect {target}: Success"
    server.close()
    async with asyncio.timeout(5):
        await server.wait_closed()
    n = len(recorder.of("db"))
    crit = await recorder.wait_status("db", "critical", after=n)
    assert crit.output == f"dial tcp {target}: connect: connection refused"


async def test_tcp_check_on_ipv6_loopback(scheduler, recorder):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
    except OSError:
        pytest.skip("no ::1 on this host")
    port = server.sockets[0].getsockname()[1]
    scheduler.add(CheckDefinition.from_json({"Name": "v6", "TCP": f"[::1]:{port}", "Interval": "50ms"}))
    got = await recorder.wait_status("v6", "passing")
    assert got.output == f"TCP connect [::1]:{port}: Success"
    server.close()


async def test_tcp_check_with_bad_address_is_critical(scheduler, recorder):
    scheduler.add(CheckDefinition.from_json({"Name": "bad", "TCP": "no-port-here", "Interval": "50ms"}))
    got = await recorder.wait_status("bad", "critical")
    assert "missing port" in got.output


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, reply):
        self.reply = reply
        self.received = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append(data)
        if self.reply:
            self.transport.sendto(b"pong", addr)


@pytest.mark.parametrize("reply", [True, False], ids=["target-answers", "target-silent"])
async def test_udp_check_passes_when_datagram_is_sent_and_not_refused(scheduler, recorder, reply):
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _Echo(reply), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        scheduler.add(CheckDefinition.from_json(
            {"Name": "dns", "UDP": f"127.0.0.1:{port}", "Interval": "50ms", "Timeout": "200ms"}))
        got = await recorder.wait_status("dns", "passing")
        assert got.output == f"UDP connect 127.0.0.1:{port}: Success"
        assert proto.received and proto.received[0]
    finally:
        transport.close()


async def test_udp_check_is_critical_on_icmp_port_unreachable(scheduler, recorder):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens now: the kernel answers with port unreachable
    scheduler.add(CheckDefinition.from_json(
        {"Name": "dns", "UDP": f"127.0.0.1:{port}", "Interval": "50ms", "Timeout": "1s"}))
    got = await recorder.wait_status("dns", "critical")
    assert "refused" in got.output.lower()


async def test_agent_output_cap_applies_to_every_check(recorder, http_target):
    from beacon.checks import CheckScheduler

    sched = CheckScheduler(recorder, min_interval=0.01, max_output_size=50)
    try:
        sched.add(http_check(http_target.url("/big"), OutputMaxSize=100_000))
        got = await recorder.wait_status("web", "passing")
        assert len(got.output.split("Output: ", 1)[1]) == 50
        assert sched.definition("web").output_max_size == 50
    finally:
        async with asyncio.timeout(5):
            await sched.stop()
