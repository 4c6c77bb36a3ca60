"""The README's walkthrough as a test: a real `beacon agent -dev`, real curl, real dig."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import dig, wait_until


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_register_with_curl_then_find_with_dig(start_agent) -> None:
    agent = start_agent("-node", "walk")
    r = subprocess.run(["curl", "-sS", "-X", "PUT", "--data", '{"Name":"files","Port":8000}',
                        f"127.0.0.1:{agent.http_port}/v1/agent/service/register"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout == ""
    assert dig(agent.dns_port, "files.service.consul", "+short").strip() == "127.0.0.1"
    assert dig(agent.dns_port, "files.service.consul", "SRV", "+short").strip() == "1 1 8000 walk.node.dc1.consul."
    full = dig(agent.dns_port, "nosuch.service.consul")
    assert "status: NXDOMAIN" in full and "SOA" in full


def test_dns_garbage_does_not_stop_the_server(start_agent) -> None:
    import socket

    agent = start_agent("-node", "garb")
    agent.json("PUT", "/v1/agent/service/register", {"Name": "g", "Port": 1})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for payload in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\x01\x00\x00\x01" + b"\x00" * 6 + b"\x05ab",
                        bytes(range(256)) * 4):
            s.sendto(payload, ("127.0.0.1", agent.dns_port))
    with socket.create_connection(("127.0.0.1", agent.dns_port), timeout=3) as t:
        t.sendall(b"\x00\x05abc")  # a TCP frame cut short
    wait_until(lambda: dig(agent.dns_port, "g.service.consul", "+short").strip() == "127.0.0.1", timeout=5)
    assert dig(agent.dns_port, "g.service.consul", "+tcp", "+short").strip() == "127.0.0.1"
