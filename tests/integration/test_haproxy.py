"""HAProxy balances over Beacon's DNS SRV records, unchanged: the way HAProxy's Consul integration works.

`server-template` slots filled from `_web._tcp.service.consul` SRV answers (targets resolved from
the additional section, else by asking A for them), re-resolved every second: instances registered
in the agent get traffic, and one that is deregistered or put in maintenance stops getting it.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import AgentProcess, wait_until

HAPROXY = shutil.which("haproxy")


class Backend:
    """A real HTTP server on loopback that answers with its own name."""

    def __init__(self, name: str) -> None:
        me = name.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Length", str(len(me)))
                self.end_headers()
                self.wfile.write(me)

            def log_message(self, *args: object) -> None:
                pass

        self.name = name
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HAProxy:
    def __init__(self, dns_port: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="beacon-haproxy-")
        self.port = _free_port()
        self.admin = os.path.join(self.dir, "admin.sock")
        cfg = f"""
global
    stats socket {self.admin} mode 600 level admin

resolvers beacon
    nameserver agent 127.0.0.1:{dns_port}
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold obsolete 1s

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{self.port}
    default_backend be

backend be
    balance roundrobin
    server-template web 6 _web._tcp.service.consul resolvers beacon resolve-prefer ipv4 init-addr none check inter 500ms
"""
        self.config = os.path.join(self.dir, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(cfg)
        check = subprocess.run([HAPROXY, "-c", "-f", self.config], capture_output=True, text=True)  # type: ignore[list-item]
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.config], stdout=subprocess.PIPE,  # type: ignore[list-item]
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        wait_until(lambda: os.path.exists(self.admin) or self.proc.poll() is not None, timeout=10)
        assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.admin)
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def up_ports(self) -> set[int]:
        """The ports of the template's servers that resolution filled and health checks found up."""
        lines = self.command("show servers state be").splitlines()
        header = next(line for line in lines if line.startswith("# "))[2:].split()
        ports = set()
        for line in lines:
            if not line or line.startswith("#") or len(line.split()) != len(header):
                continue
            row = dict(zip(header, line.split(), strict=True))
            if row["srv_op_state"] == "2" and row["srv_addr"] not in ("-", "0.0.0.0"):
                ports.add(int(row["srv_port"]))
        return ports

    def get(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    made = [Backend(f"web-{i}") for i in range(1, 5)]
    yield made
    for b in made:
        b.close()


def test_haproxy_server_template_follows_the_catalog(start_agent, backends: list[Backend]) -> None:
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    agent: AgentProcess = start_agent()

    def register(b: Backend) -> None:
        agent.json("PUT", "/v1/agent/service/register",
                   {"Name": "web", "ID": b.name, "Address": "127.0.0.1", "Port": b.port})

    for b in backends[:3]:
        register(b)
    proxy = HAProxy(agent.dns_port)  # type: ignore[arg-type]
    try:
        def serving(expected: list[Backend]) -> None:
            want = {b.port for b in expected}
            try:
                wait_until(lambda: proxy.up_ports() == want, timeout=20, interval=0.1)
            except AssertionError:
                pytest.fail(f"HAProxy's servers {sorted(proxy.up_ports())}, wanted {sorted(want)}:\n"
                            + proxy.command("show servers state be"))
            # Round robin over exactly those: every one answers, no other does.
            seen = {proxy.get() for _ in range(4 * len(expected))}
            assert seen == {b.name for b in expected}

        serving(backends[:3])

        # Deregistered: its SRV record goes, HAProxy frees the slot.
        agent.json("PUT", f"/v1/agent/service/deregister/{backends[0].name}")
        serving(backends[1:3])

        # Maintenance mode makes the instance critical: DNS answers only passing instances.
        agent.json("PUT", f"/v1/agent/service/maintenance/{backends[1].name}?enable=true&reason=test")
        serving(backends[2:3])

        # New and returning instances get slots and traffic.
        register(backends[3])
        agent.json("PUT", f"/v1/agent/service/maintenance/{backends[1].name}?enable=false")
        serving(backends[1:4])
    finally:
        proxy.stop()
