"""The fast KV write path (beacon.agent.http.fastwrite) does exactly what aiohttp's path does.

Each case runs the same write twice from the same starting state of the key: on a fresh connection
(the fast path takes it when it can) and on a connection that already went to aiohttp. The answers
(status line, every header but ``Date``, body) and the key's resulting entry (but its indexes) must
be equal; ``beacon_http_fast_answers_total`` proves which path took the first.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.conftest import launch
from tests.integration.test_fastpath import MGMT, Conn, fast_answers, put, request, without_date

pytestmark = pytest.mark.integration

LIMIT = 1024  # limits.kv_max_value_size of both agents
WRITER = "1a2b3c4d-0000-4000-8000-00000000aaaa"  # key write under app/
READ_ONLY = "1a2b3c4d-0000-4000-8000-00000000bbbb"  # key read under app/


def entry(agent, key: str) -> object:
    """The key's entry without its indexes (404: None)."""
    req = urllib.request.Request(agent.http + "/v1/kv/" + key, headers={"X-Consul-Token": MGMT})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            got = json.loads(resp.read())[0]
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return None
    return {k: v for k, v in got.items() if not k.endswith("Index")}


def modify_index(agent, key: str) -> int:
    req = urllib.request.Request(agent.http + "/v1/kv/" + key, headers={"X-Consul-Token": MGMT})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())[0]["ModifyIndex"]


def reset(agent, key: str, value: bytes | None) -> None:
    """The key's starting state: absent, or holding ``value``."""
    req = urllib.request.Request(agent.http + "/v1/kv/" + key, method="DELETE", headers={"X-Consul-Token": MGMT})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    if value is not None:
        put(agent, "/v1/kv/" + key, value)


def both_write(agent, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
               fast: bool = True, start: bytes | None = b"old", raw: bytes | None = None):
    """Run one write from the same start on both paths; assert equal answers and entries. ``target``
    may hold ``{index}``: the key's ModifyIndex at the start. ``raw``: send these bytes instead."""
    key = target.split("?")[0][len("/v1/kv/"):]
    results = []
    for via_aiohttp in (False, True):
        reset(agent, key, start)
        concrete = target.format(index=modify_index(agent, key) if start is not None else 0)
        conn = Conn(agent, via_aiohttp=via_aiohttp)
        before = fast_answers(agent)
        conn.sock.sendall(raw if raw is not None else request(concrete, headers, method, body))
        answer = without_date(conn.read())
        if not via_aiohttp:
            assert fast_answers(agent) - before == (1 if fast else 0), (method, target)
        conn.close()
        results.append((answer, entry(agent, key)))
    assert results[0] == results[1], (method, target)
    return results[0]


def agent_with(tmp_path, acl: bool):
    config: dict[str, object] = {"limits": {"kv_max_value_size": LIMIT}}
    if acl:
        config["acl"] = {"enabled": True, "default_policy": "deny", "tokens": {"initial_management": MGMT}}
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps(config))
    if acl:  # -dev
        return launch("-config-file", str(cfg))
    return launch("-server", "-bootstrap-expect", "1", "-bind", "127.0.0.1", "-data-dir", str(tmp_path / "data"),
                  "-node", "fastw", "-server-port", "0", "-server-rpc-port", "0", "-serf-lan-port", "0",
                  "-serf-wan-port", "0", "-config-file", str(cfg), dev=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A bootstrapped single server with a data dir (its durable log), no ACLs."""
    agent = agent_with(tmp_path_factory.mktemp("fastw-server"), acl=False)
    try:
        yield agent
    finally:
        agent.stop()


def test_writes_match_the_aiohttp_path(server) -> None:
    answer, state = both_write(server, "PUT", "/v1/kv/w/plain", b"v1")
    assert answer[0] == b"HTTP/1.1 200 OK" and answer[2] == b"true" and state["Value"] == "djE="
    assert both_write(server, "PUT", "/v1/kv/w/empty", b"")[1]["Value"] is None
    assert both_write(server, "PUT", "/v1/kv/w/flags?flags=42", b"f")[1]["Flags"] == 42
    assert both_write(server, "PUT", "/v1/kv/w/cas?cas={index}", b"new")[0][2] == b"true"
    assert both_write(server, "PUT", "/v1/kv/w/cas?cas=1", b"new")[0][2] == b"false"  # stale index
    assert both_write(server, "PUT", "/v1/kv/w/cas?cas=0", b"new")[0][2] == b"false"  # exists
    assert both_write(server, "PUT", "/v1/kv/w/cas?cas=0&flags=7", b"new", start=None)[1]["Flags"] == 7
    assert both_write(server, "PUT", "/v1/kv/w/limit", b"x" * LIMIT)[0][2] == b"true"  # at the limit: taken
    assert both_write(server, "DELETE", "/v1/kv/w/del")[1] is None
    assert both_write(server, "DELETE", "/v1/kv/w/del?cas=1")[0][2] == b"false"
    assert both_write(server, "DELETE", "/v1/kv/w/del?cas={index}")[1] is None
    # aiohttp's on both connections, equal all the same.
    too_large = both_write(server, "PUT", "/v1/kv/w/big", b"x" * (LIMIT + 1), fast=False)
    assert too_large[0][0] == b"HTTP/1.1 413 Request Entity Too Large" and too_large[1]["Value"] == "b2xk"
    assert both_write(server, "PUT", "/v1/kv/w/bad?cas=x", b"v", fast=False)[0][0].startswith(b"HTTP/1.1 400")
    assert b"Conflicting" in both_write(server, "PUT", "/v1/kv/w/bad?cas=1&release=x", b"v", fast=False)[0][2]
    both_write(server, "PUT", "/v1/kv/w/ns", b"v", {"X-Consul-Namespace": "ns1"}, fast=False)
    both_write(server, "DELETE", "/v1/kv/w/tree?recurse", fast=False)
    chunked = (b"PUT /v1/kv/w/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")
    assert both_write(server, "PUT", "/v1/kv/w/chunked", fast=False, raw=chunked)[1]["Value"] == "YWJj"
    session = json.loads(server.request("PUT", "/v1/session/create", {"Name": "lock"})[2])["ID"]
    locked = both_write(server, "PUT", f"/v1/kv/w/lock?acquire={session}", b"mine", fast=False)
    assert locked[0][2] == b"true" and locked[1]["Session"] == session


def test_pipelined_writes_and_reads_keep_their_order_and_a_body_may_come_in_pieces(server) -> None:
    conn = Conn(server)
    before = fast_answers(server)
    conn.sock.sendall(b"".join((
        request("/v1/kv/p/a", method="PUT", body=b"1"), request("/v1/kv/p/a"),
        request("/v1/kv/p/a", method="PUT", body=b"2"), request("/v1/kv/p/a?cas=1", method="PUT", body=b"3"),
        request("/v1/kv/p/a"), request("/v1/kv/p/a", method="DELETE"), request("/v1/kv/p/a"))))
    answers = [conn.read() for _ in range(7)]
    assert fast_answers(server) - before == 7
    assert [a[2] for a in (answers[0], answers[2], answers[3])] == [b"true", b"true", b"false"]
    assert json.loads(answers[1][2])[0]["Value"] == "MQ==" and json.loads(answers[4][2])[0]["Value"] == "Mg=="
    assert answers[5][2] == b"true" and answers[6][0] == b"HTTP/1.1 404 Not Found"
    # A body in several TCP writes: nothing is answered before its last byte is in.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    whole = request("/v1/kv/p/split", method="PUT", body=b"abcdefghij" * 50)
    head_end = whole.index(b"\r\n\r\n") + 4
    prev = 0
    for cut in (head_end - 10, head_end, head_end + 100, head_end + 300):
        conn.sock.sendall(whole[prev:cut])
        prev = cut
    conn.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        conn.sock.recv(1)  # armed: this connection's earlier answers all came from the fast path
    conn.sock.settimeout(30)
    before = fast_answers(server)
    conn.sock.sendall(whole[head_end + 300:])
    assert conn.read()[2] == b"true"
    assert fast_answers(server) - before == 1
    assert server.request("GET", "/v1/kv/p/split?raw")[2] == b"abcdefghij" * 50
    # A write aiohttp must answer (acquire) hands the connection over; what follows stays in order.
    conn.sock.sendall(request("/v1/kv/p/a", method="PUT", body=b"4") + request("/v1/kv/p/a?acquire=nope",
                                                                               method="PUT", body=b"5")
                      + request("/v1/kv/p/a?raw"))
    assert [conn.read()[0][:12] for _ in range(3)] == [b"HTTP/1.1 200", b"HTTP/1.1 500", b"HTTP/1.1 200"]
    assert server.request("GET", "/v1/kv/p/a?raw")[2] == b"4"
    conn.close()


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory):
    """-dev with ACLs on and default deny; WRITER writes keys under app/, READ_ONLY reads them."""
    agent = agent_with(tmp_path_factory.mktemp("fastw-acl"), acl=True)
    try:
        for name, rules, secret in (("app-write", 'key_prefix "app/" { policy = "write" }', WRITER),
                                    ("app-read", 'key_prefix "app/" { policy = "read" }', READ_ONLY)):
            put(agent, "/v1/acl/policy", json.dumps({"Name": name, "Rules": rules}))
            put(agent, "/v1/acl/token", json.dumps({"SecretID": secret, "Policies": [{"Name": name}]}))
        yield agent
    finally:
        agent.stop()


def test_acl_decisions_match_the_aiohttp_path(acl_agent) -> None:
    both_write(acl_agent, "PUT", "/v1/kv/app/k", b"v", {"X-Consul-Token": MGMT})
    both_write(acl_agent, "PUT", "/v1/kv/app/k", b"v", {"X-Consul-Token": WRITER})
    both_write(acl_agent, "PUT", "/v1/kv/app/k?cas={index}", b"v", {"Authorization": f"Bearer {WRITER}"})
    both_write(acl_agent, "PUT", f"/v1/kv/app/k?token={WRITER}&flags=3", b"v")
    both_write(acl_agent, "DELETE", "/v1/kv/app/k", headers={"X-Consul-Token": WRITER})
    # The header wins over ?token=, as acl_enforce.token_of has it.
    denied = both_write(acl_agent, "PUT", f"/v1/kv/app/k?token={WRITER}", b"v", {"X-Consul-Token": READ_ONLY},
                        fast=False)
    assert denied[0][0] == b"HTTP/1.1 403 Forbidden" and b"key:write" in denied[0][2] and denied[1]["Value"] == "b2xk"
    for headers, target in (({"X-Consul-Token": WRITER}, "/v1/kv/other/k"), ({}, "/v1/kv/app/k"),
                            ({"X-Consul-Token": "no-such-token"}, "/v1/kv/app/k")):
        refused = both_write(acl_agent, "PUT", target, b"v", headers, fast=False)
        assert refused[0][0] == b"HTTP/1.1 403 Forbidden" and refused[1]["Value"] == "b2xk"
    assert both_write(acl_agent, "DELETE", "/v1/kv/other/k", headers={"X-Consul-Token": WRITER},
                      fast=False)[1] is not None
