"""Any number of `beacon agent -dev` on one host: the first takes the shared dev engine directory, the
others get engines of their own in temporary directories that go away with them."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket

import pytest

from tests.conftest import launch

pytestmark = pytest.mark.integration


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def engine_socket(agent) -> str:
    for line in agent.lines:
        m = re.search(r"Container engine: unix://(\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError("no engine line:\n" + "\n".join(agent.lines[-30:]))


def ping(path: str) -> bytes:
    conn = UnixHTTP(path)
    conn.request("GET", "/_ping")
    return conn.getresponse().read()


def test_two_dev_agents_run_side_by_side_each_with_its_engine() -> None:
    first = launch(engine=True)
    try:
        second = launch(engine=True)
        try:
            a, b = engine_socket(first), engine_socket(second)
            assert a != b
            assert ping(a) == b"OK" and ping(b) == b"OK"
            for agent in (first, second):  # each is a whole agent of its own
                assert agent.request("PUT", "/v1/kv/who", agent.http_addr.encode())[0] == 200
            assert first.request("GET", "/v1/kv/who?raw")[2] == first.http_addr.encode()
            assert second.request("GET", "/v1/kv/who?raw")[2] == second.http_addr.encode()
            own_dir = os.path.dirname(b)
            assert os.path.isdir(own_dir)
        finally:
            assert second.stop(signal.SIGTERM) == 0
        assert not os.path.exists(own_dir)  # the second agent's engine directory went with it
        assert ping(a) == b"OK"
    finally:
        first.stop(signal.SIGTERM)


def test_a_dev_agent_whose_serf_port_is_taken_while_it_starts_picks_another(start_agent) -> None:
    # Stage the race between the agent's check that its gossip port is free and Serf binding it: a UDP
    # socket with SO_REUSEADDR lets the agent's check (which sets it too) bind beside it, but Serf's UDP
    # listener (without it) fails with "address already in use", as when another agent's Serf wins.
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 8301))
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", 8301))  # armed: the agent's own check will find the port free
        probe.close()
    except OSError:
        holder.close()
        pytest.skip("port 8301 is in use here: the race cannot be staged")
    try:
        agent = start_agent()
        status, _, body = agent.request("GET", "/v1/agent/members")
        assert status == 200 and b'"Status": 1' in body, body
        assert any("tries others" in line for line in agent.lines), agent.lines[-20:]
    finally:
        holder.close()
