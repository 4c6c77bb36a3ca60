"""DNS through a client agent answers under the *client's* token (its ``dns`` token, else its
``default`` token, else anonymous), as Consul's does, over UDP and TCP; the server's own DNS uses its
own. A client agent with ACLs off still relays raw packets to a server's DNS listener."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
import struct
import time
import uuid

import aiohttp
import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSServer

from beacon.agent.cluster import Codec
from tests.conftest import AgentProcess, launch, spawn, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MGMT = "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a"
WEB, DB = "10.1.1.1", "10.1.1.2"


def ask(agent: AgentProcess, name: str, tcp: bool = False, timeout: float = 3.0) -> tuple[str, set[str]]:
    """(rcode, A addresses) of one query to the agent's DNS listener; ("timeout", set()) without answer."""
    q = DNSRecord.question(name, "A")
    q.header.id = random.randint(1, 65535)
    data = q.pack()
    try:
        if tcp:
            with socket.create_connection((agent.host, agent.dns_port), timeout=timeout) as s:
                s.sendall(struct.pack("!H", len(data)) + data)
                head = _read(s, 2)
                wire = _read(s, struct.unpack("!H", head)[0])
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(data, (agent.host, agent.dns_port))
                wire = s.recv(65535)
    except TimeoutError:
        return "timeout", set()
    reply = DNSRecord.parse(wire)
    assert reply.header.id == q.header.id
    return RCODE[reply.header.rcode], {str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A}


def _read(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def sees(agent: AgentProcess, tcp: bool = False) -> set[str]:
    """Which of web and db the agent's DNS answers."""
    return {name for name, addr in (("web", WEB), ("db", DB))
            if addr in ask(agent, f"{name}.service.consul", tcp=tcp)[1]}


def put_token(agent: AgentProcess, kind: str, secret: str) -> None:
    status, _, body = agent.request("PUT", f"/v1/agent/token/{kind}?token={MGMT}", {"Token": secret})
    assert status == 200, body


class _External(BaseResolver):
    """The servers' recursor: ext.example. is 192.0.2.7."""

    def resolve(self, request, handler):
        reply = request.reply()
        if str(request.q.qname).lower() == "ext.example.":
            reply.add_answer(*RR.fromZone("ext.example. 0 A 192.0.2.7"))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def _addrs() -> tuple[str, str]:
    block = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
    return f"{block}.10", f"{block}.20"


@pytest.fixture
def acl_pair(tmp_path, request):
    """A default-deny server and a client agent with ACLs; services web and db; tokens that may read
    one of them each (and every node). Parametrized indirectly with True: a cluster key (-encrypt), so
    the DNS stream's messages are Fernet tokens rather than checked by the peer's uid."""
    srv_addr, cli_addr = _addrs()
    key = ("-encrypt", base64.b64encode(os.urandom(32)).decode()) if getattr(request, "param", False) else ()
    cfg = tmp_path / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                       "tokens": {"initial_management": MGMT}}}))
    upstream = DNSServer(_External(), address="127.0.0.1", port=0)
    upstream.start_thread()
    recursor = f"127.0.0.1:{upstream.server.server_address[1]}"
    client = None
    servers: list[AgentProcess] = []

    def start_server() -> AgentProcess:  # also the test's way to bring the server back
        servers.append(launch("-server", "-bootstrap-expect", "1", "-node", "srv", "-bind", srv_addr, "-client",
                              srv_addr, "-retry-join", srv_addr, "-data-dir", str(tmp_path / "srv"),
                              "-config-file", str(cfg), "-recursor", recursor, *key, dev=False))
        return servers[-1]

    try:
        server = start_server()
        client = launch("-node", "cli", "-bind", cli_addr, "-client", cli_addr, "-data-dir", str(tmp_path / "cli"),
                        "-retry-join", srv_addr, "-config-file", str(cfg), *key, dev=False)
        wait_until(lambda: client.request("GET", f"/v1/acl/token/self?token={MGMT}")[0] == 200, timeout=60,
                   interval=0.2)
        for name, addr in (("web", WEB), ("db", DB)):
            status, _, body = server.request("PUT", f"/v1/catalog/register?token={MGMT}", {
                "Node": f"n-{name}", "Address": addr, "Service": {"Service": name}})
            assert status == 200, body
        secrets = {}
        for name in ("web", "db"):
            status, _, body = server.request("PUT", f"/v1/acl/policy?token={MGMT}", {
                "Name": f"read-{name}",
                "Rules": f'service "{name}" {{ policy = "read" }}\nnode_prefix "" {{ policy = "read" }}'})
            assert status == 200, body
            status, _, body = server.request("PUT", f"/v1/acl/token?token={MGMT}",
                                             {"Policies": [{"Name": f"read-{name}"}]})
            assert status == 200, body
            secrets[name] = json.loads(body)["SecretID"]
        yield server, client, secrets, start_server
    finally:
        if client is not None:
            client.stop()
        for server in servers:
            server.stop()
        upstream.stop()


@pytest.mark.parametrize("acl_pair", [False, True], ids=["no-key", "cluster-key"], indirect=True)
def test_client_dns_answers_under_the_clients_token_not_the_servers(acl_pair) -> None:
    server, client, secrets, _ = acl_pair
    # Neither agent has a token yet: anonymous may read nothing, on either.
    assert ask(client, "web.service.consul")[0] == "NXDOMAIN"
    put_token(server, "default", secrets["web"])
    wait_until(lambda: sees(server) == {"web"}, timeout=10)
    # The server's default token reads web; the client (anonymous) still reads nothing, UDP and TCP.
    assert sees(client) == set()
    assert sees(client, tcp=True) == set()

    put_token(client, "default", secrets["db"])  # the reverse of the server's rights
    wait_until(lambda: sees(client) == {"db"}, timeout=10)
    assert sees(client, tcp=True) == {"db"}
    assert sees(server) == {"web"}  # the server's own DNS keeps its own token

    put_token(client, "default", secrets["web"])  # takes effect without a restart
    wait_until(lambda: sees(client) == {"web"}, timeout=10)
    assert sees(client, tcp=True) == {"web"}

    put_token(client, "dns", secrets["db"])  # the dns token goes before the default token
    wait_until(lambda: sees(client) == {"db"}, timeout=10)
    assert sees(client, tcp=True) == {"db"}

    put_token(server, "dns", secrets["db"])  # and on a server's own listener too
    wait_until(lambda: sees(server) == {"db"}, timeout=10)

    put_token(client, "dns", str(uuid.uuid4()))  # names no token: grants nothing
    wait_until(lambda: sees(client) == set(), timeout=10)
    assert ask(client, "web.service.consul")[0] == "NXDOMAIN"
    assert sees(client, tcp=True) == set()

    put_token(client, "dns", "")  # cleared: back to the default token (web)
    wait_until(lambda: sees(client) == {"web"}, timeout=10)


def test_the_dns_stream_answers_nothing_that_is_not_authenticated_with_the_cluster_key(tmp_path) -> None:
    """With a cluster key anyone may open the stream, but a message that is not a Fernet token of
    that key ends it unanswered (as /rpc/ answers 403)."""
    srv_addr, _ = _addrs()
    cfg = tmp_path / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "allow"}}))
    key = base64.b64encode(os.urandom(32)).decode()
    server = launch("-server", "-bootstrap-expect", "1", "-node", "srv", "-bind", srv_addr, "-client", srv_addr,
                    "-retry-join", srv_addr, "-data-dir", str(tmp_path / "srv"), "-config-file", str(cfg),
                    "-encrypt", key, dev=False)
    try:
        question = DNSRecord.question("consul.service.consul")
        query = base64.b64encode(question.pack()).decode()

        async def probe(body: bytes) -> list[bytes]:
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(f"http://{srv_addr}:8303/rpc-stream/dns") as ws:
                await ws.send_bytes(body)
                if body.startswith(b"["):
                    return [msg.data async for msg in ws]  # until the server closes
                return [(await ws.receive(timeout=5)).data]

        call = [[1, query, False, "anonymous"]]
        assert asyncio.run(asyncio.wait_for(probe(json.dumps(call).encode()), 10)) == []  # closed, unanswered
        codec = Codec(key)  # the same call, sealed with the key: answered
        (answer,) = asyncio.run(asyncio.wait_for(probe(codec.encode(call)), 10))
        (ident, wire), = codec.decode(answer)
        reply = DNSRecord.parse(base64.b64decode(wire))
        assert ident == 1 and reply.header.qr == 1 and reply.header.id == question.header.id
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_client_dns_follows_policy_changes_and_token_deletion(acl_pair) -> None:
    server, client, secrets, _ = acl_pair
    put_token(client, "default", secrets["web"])
    wait_until(lambda: sees(client) == {"web"}, timeout=10)
    pol = json.loads(server.request("GET", f"/v1/acl/policy/name/read-web?token={MGMT}")[2])
    status, _, _ = server.request("PUT", f"/v1/acl/policy/{pol['ID']}?token={MGMT}", {
        "Name": "read-web", "Rules": 'service "db" { policy = "read" }\nnode_prefix "" { policy = "read" }'})
    assert status == 200
    # The server's answer caches for that token are not served again once its rights changed.
    wait_until(lambda: sees(client) == {"db"}, timeout=10)
    tok = json.loads(server.request("GET", f"/v1/acl/token/self?token={secrets['web']}")[2])
    status, _, _ = server.request("DELETE", f"/v1/acl/token/{tok['AccessorID']}?token={MGMT}")
    assert status == 200
    wait_until(lambda: sees(client) == set(), timeout=10)


def test_client_dns_recurses_and_survives_garbage_and_a_lost_server(acl_pair) -> None:
    server, client, secrets, start_server = acl_pair
    put_token(client, "default", secrets["web"])
    wait_until(lambda: sees(client) == {"web"}, timeout=10)
    # Garbage and responses are dropped, as on a server's listener; the listener keeps answering.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        reply = DNSRecord.question("web.service.consul").reply().pack()
        for junk in (b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 40, reply):
            s.sendto(junk, (client.host, client.dns_port))
        with pytest.raises(TimeoutError):
            s.recv(65535)
    assert sees(client) == {"web"}
    assert sees(client, tcp=True) == {"web"}
    # Names outside the domain go to the servers' recursors, whatever the token.
    assert ask(client, "ext.example") == ("NOERROR", {"192.0.2.7"})
    assert ask(client, "nothing.example")[0] == "NXDOMAIN"

    server.stop()
    t0 = time.monotonic()
    assert ask(client, "web.service.consul")[0] == "SERVFAIL"
    assert ask(client, "web.service.consul", tcp=True)[0] == "SERVFAIL"
    assert time.monotonic() - t0 < 3.0
    assert client.proc.poll() is None
    # The server comes back (same data, same address): the client opens a new stream to it.
    server = start_server()
    wait_until(lambda: sees(client) == {"web"}, timeout=60, interval=0.2)
    assert sees(client, tcp=True) == {"web"}


def test_a_client_without_acls_relays_to_the_servers_listener(tmp_path) -> None:
    srv_addr, cli_addr = _addrs()
    starting = spawn("-server", "-bootstrap-expect", "1", "-node", "srv", "-bind", srv_addr, "-client", srv_addr,
                     "-retry-join", srv_addr, "-data-dir", str(tmp_path / "srv"), dev=False)
    server = starting.wait(20)
    client = None
    try:
        client = launch("-node", "cli", "-bind", cli_addr, "-client", cli_addr, "-data-dir", str(tmp_path / "cli"),
                        "-retry-join", srv_addr, dev=False)
        status, _, body = server.request("PUT", "/v1/catalog/register", {
            "Node": "n-web", "Address": WEB, "Service": {"Service": "web"}})
        assert status == 200, body
        wait_until(lambda: sees(client) == {"web"}, timeout=30, interval=0.2)
        assert sees(client, tcp=True) == {"web"}
        assert any("DNS: relaying queries to the servers' DNS listeners" in line for line in client.lines)
    finally:
        if client is not None:
            client.stop()
        server.stop()
