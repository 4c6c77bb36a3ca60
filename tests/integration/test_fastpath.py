"""The fast read path (beacon.agent.http.fastpath) answers exactly what aiohttp's path answers.

Every case sends the same request bytes twice to a real agent: on a fresh connection (the fast path
answers it when it can) and on a connection that already went to aiohttp (a ``/v1/status/peers``
first hands it over for good). Status line, every header but ``Date``, and the body must be equal;
``beacon_http_fast_answers_total`` proves which requests the fast path took.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request

import pytest

from tests.conftest import launch, wait_until

MGMT = "0f6e3c1a-8d5b-4b1e-9a57-3f2c4d1e5a01"
LIMITED = "1a2b3c4d-0000-4000-8000-00000000beef"
READER = "1a2b3c4d-0000-4000-8000-00000000cafe"   # reads every service and node
WEB_N1 = "1a2b3c4d-0000-4000-8000-00000000f00d"   # reads service web and node n1 only


class Conn:
    """A raw HTTP/1.1 keep-alive connection (no client library between the test and the bytes)."""

    def __init__(self, agent, via_aiohttp: bool = False) -> None:
        self.sock = socket.create_connection((agent.host, agent.http_port), timeout=30)
        self.buf = b""
        if via_aiohttp:  # a request the fast path never takes: the connection is aiohttp's from here on
            self.send("/v1/status/peers")
            assert self.read()[0].startswith(b"HTTP/1.1 200")

    def send(self, target: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes = b"") -> None:
        self.sock.sendall(request(target, headers, method, body))

    def read(self) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed before an answer"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(b":") for line in lines)]
        length = int(dict((n.lower(), v) for n, v in headers).get(b"content-length", b"0"))
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed mid-body"
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def call(self, target: str, headers: dict[str, str] | None = None) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        self.send(target, headers)
        return self.read()

    def close(self) -> None:
        self.sock.close()


def request(target: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def without_date(answer: tuple[bytes, list[tuple[bytes, bytes]], bytes]) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    status, headers, body = answer
    return status, [(n, v) for n, v in headers if n.lower() != b"date"], body


def metric(agent, name: str) -> float:
    req = urllib.request.Request(agent.http + "/v1/agent/metrics?format=prometheus", headers={"X-Consul-Token": MGMT})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def fast_answers(agent) -> int:
    return int(metric(agent, "beacon_http_fast_answers_total"))


def both(agent, target: str, headers: dict[str, str] | None = None, fast: bool = True):
    """The answer from a fresh connection and from an aiohttp connection; assert they are equal and
    that the fast path took the first exactly when ``fast``."""
    before = fast_answers(agent)
    conn = Conn(agent)
    first = conn.call(target, headers)
    conn.close()
    assert fast_answers(agent) - before == (1 if fast else 0), target
    slow = Conn(agent, via_aiohttp=True)
    reference = slow.call(target, headers)
    slow.close()
    assert without_date(first) == without_date(reference), target
    return first


def put(agent, path: str, body: bytes | str, token: str = MGMT) -> None:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(agent.http + path, data=data, method="PUT", headers={"X-Consul-Token": token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200, resp.read()


def register(agent, node: str, status: str, token: str = MGMT) -> None:
    put(agent, "/v1/catalog/register", json.dumps({
        "Node": node, "Address": "127.0.0.9", "Service": {"ID": "web", "Service": "web", "Port": 80, "Tags": ["a"]},
        "Check": {"CheckID": "alive", "Name": "alive", "Status": status, "ServiceID": "web"}}), token)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A bootstrapped single server with a data dir: compact JSON, no ACLs."""
    data = tmp_path_factory.mktemp("fast-server")
    agent = launch("-server", "-bootstrap-expect", "1", "-bind", "127.0.0.1", "-data-dir", str(data), "-node", "fast",
                   "-server-port", "0", "-server-rpc-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0",
                   dev=False)
    try:
        put(agent, "/v1/kv/foo", "bar")
        register(agent, "n1", "passing")
        register(agent, "n2", "critical")
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory):
    """-dev (pretty JSON) with ACLs on and default deny; LIMITED reads keys under app/ only."""
    cfg = tmp_path_factory.mktemp("fast-acl") / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                       "tokens": {"initial_management": MGMT}}}))
    agent = launch("-config-file", str(cfg))
    try:
        put(agent, "/v1/acl/policy", json.dumps({"Name": "app-read", "Rules": 'key_prefix "app/" { policy = "read" }'}))
        put(agent, "/v1/acl/token", json.dumps({"SecretID": LIMITED, "Policies": [{"Name": "app-read"}]}))
        for name, rules, secret in (
                ("all-read", 'service_prefix "" { policy = "read" } node_prefix "" { policy = "read" }', READER),
                ("web-n1", 'service "web" { policy = "read" } node "n1" { policy = "read" }', WEB_N1)):
            put(agent, "/v1/acl/policy", json.dumps({"Name": name, "Rules": rules}))
            put(agent, "/v1/acl/token", json.dumps({"SecretID": secret, "Policies": [{"Name": name}]}))
        put(agent, "/v1/kv/app/x", "1")
        put(agent, "/v1/kv/other/y", "2")
        register(agent, "n1", "passing")
        register(agent, "n2", "passing")
        yield agent
    finally:
        agent.stop()


def test_reads_match_the_aiohttp_path(server) -> None:
    ok = both(server, "/v1/kv/foo")
    assert ok[0] == b"HTTP/1.1 200 OK" and json.loads(ok[2])[0]["Key"] == "foo"
    missing = both(server, "/v1/kv/nope")
    assert missing[0].startswith(b"HTTP/1.1 404") and int(dict(missing[1])[b"X-Consul-Index"]) >= 1
    passing = both(server, "/v1/health/service/web?passing")
    assert [e["Node"]["Node"] for e in json.loads(passing[2])] == ["n1"]
    assert len(json.loads(both(server, "/v1/health/service/web")[2])) == 2
    both(server, "/v1/health/service/web?passing=false")
    both(server, "/v1/health/service/nothing")
    assert "web" in json.loads(both(server, "/v1/catalog/services")[2])
    for query in ("?stale", "?consistent", "?pretty", "?index=0", "?wait=1s"):
        both(server, "/v1/kv/foo" + query)
    # Answered by aiohttp on both connections, equal all the same.
    for target in ("/v1/kv/foo?raw", "/v1/kv/foo?stale&consistent", "/v1/kv/foo?index=x",
                   "/v1/health/service/web?passing=maybe", "/v1/kv/fo%6f", "/v1/kv/foo?pretty&pretty",
                   "/v1/health/service/web?near=_agent"):
        both(server, target, fast=False)
    before = fast_answers(server)  # ?cached is stateful (MISS, then HIT): aiohttp's alone, not compared
    assert (b"X-Cache", b"MISS") in Conn(server).call("/v1/health/service/web?cached&x=1")[1]
    assert fast_answers(server) == before
    both(server, "/v1/kv/foo", {"X-Consul-Namespace": "ns1"}, fast=False)
    assert both(server, "/v1/status/leader")[2].startswith(b'"127.0.0.1:')  # polled between KV requests
    both(server, "/v1/status/leader?pretty", fast=False)
    assert (b"Connection", b"close") in both(server, "/v1/kv/foo", {"Connection": "close"}, fast=False)[1]
    # Compressed as aiohttp compresses a body over 1 KiB (deflate first when both are accepted).
    assert len(both(server, "/v1/health/service/web")[2]) > 1024
    for accept in ("gzip", "gzip, deflate", "br;q=1, GZIP", "deflate"):
        both(server, "/v1/health/service/web", {"Accept-Encoding": accept})
    coded = dict(both(server, "/v1/health/service/web", {"Accept-Encoding": "gzip"})[1])
    assert coded[b"Content-Encoding"] == b"gzip"


def test_keep_alive_pipelining_and_a_hand_over_keep_the_order(server) -> None:
    conn = Conn(server)
    before = fast_answers(server)
    targets = ["/v1/kv/foo", "/v1/health/service/web?passing", "/v1/catalog/services"]
    conn.sock.sendall(b"".join(request(t) for t in targets))  # three requests in one segment
    answers = [conn.read() for _ in targets]
    assert fast_answers(server) - before == 3
    slow = Conn(server, via_aiohttp=True)
    assert [without_date(a) for a in answers] == [without_date(slow.call(t)) for t in targets]
    # A burst in one write (answered from one buffer, in order), ending in a partial head.
    before = fast_answers(server)
    burst = ["/v1/kv/foo?stale" if i % 2 else "/v1/health/service/web" for i in range(100)]
    tail = request("/v1/kv/foo")
    conn.sock.sendall(b"".join(request(t) for t in burst) + tail[:10])
    got = [conn.read() for _ in burst]
    conn.sock.sendall(tail[10:])
    got.append(conn.read())
    assert fast_answers(server) - before == 101
    assert [without_date(a) for a in got] == [without_date(slow.call(t)) for t in [*burst, "/v1/kv/foo"]]
    # A write (the fast write path's) and a read only aiohttp answers (?raw) pipelined behind it: in order.
    conn.sock.sendall(request("/v1/kv/foo", method="PUT", body=b"baz") + request("/v1/kv/foo?raw"))
    assert conn.read()[2] == b"true"
    assert conn.read()[2] == b"baz"
    assert without_date(conn.call("/v1/kv/foo")) == without_date(slow.call("/v1/kv/foo"))
    conn.close()
    slow.close()


def test_blocking_queries_wake_with_the_same_answer_and_a_closed_one_is_let_go(server) -> None:
    index = dict(Conn(server).call("/v1/kv/blk")[1])[b"X-Consul-Index"].decode()
    target = f"/v1/kv/blk?index={index}&wait=60s"
    parked = metric(server, "beacon_http_blocking_queries")
    fast, slow, gone = Conn(server), Conn(server, via_aiohttp=True), Conn(server)
    for conn in (fast, slow, gone):
        conn.send(target)
    wait_until(lambda: metric(server, "beacon_http_blocking_queries") >= parked + 3, timeout=20)
    gone.close()  # the client gives up: its parked query must not stay counted (or be written to)
    wait_until(lambda: metric(server, "beacon_http_blocking_queries") == parked + 2, timeout=20)
    before = fast_answers(server)
    put(server, "/v1/kv/blk", "woken")
    first, reference = fast.read(), slow.read()
    assert fast_answers(server) - before == 1
    assert without_date(first) == without_date(reference)
    assert json.loads(first[2])[0]["Key"] == "blk" and int(dict(first[1])[b"X-Consul-Index"]) > int(index)
    # Waits out: answered at its deadline (wait plus up to wait/16) with the unchanged view.
    timed = fast.call("/v1/health/service/web?index=999999&wait=1s")
    assert without_date(timed) == without_date(fast.call("/v1/health/service/web"))
    fast.close()
    slow.close()


def test_acl_decisions_match_the_aiohttp_path(acl_agent) -> None:
    both(acl_agent, "/v1/kv/app/x", {"X-Consul-Token": MGMT})
    both(acl_agent, "/v1/kv/app/x", {"X-Consul-Token": LIMITED})
    both(acl_agent, "/v1/kv/app/x", {"Authorization": f"Bearer {LIMITED}"})
    denied = both(acl_agent, "/v1/kv/other/y", {"X-Consul-Token": LIMITED}, fast=False)
    assert denied[0].startswith(b"HTTP/1.1 403")
    assert both(acl_agent, "/v1/kv/app/x", fast=False)[0].startswith(b"HTTP/1.1 403")  # anonymous
    both(acl_agent, "/v1/status/leader")  # needs no permission (and -dev's pretty JSON)
    both(acl_agent, "/v1/status/leader", {"X-Consul-Token": LIMITED})
    assert both(acl_agent, "/v1/status/leader", {"X-Consul-Token": "nope"}, fast=False)[0].startswith(b"HTTP/1.1 403")
    both(acl_agent, "/v1/health/service/web", {"X-Consul-Token": MGMT})
    filtered = both(acl_agent, "/v1/health/service/web", {"X-Consul-Token": LIMITED}, fast=False)
    assert (b"X-Consul-Results-Filtered-By-ACLs", b"true") in filtered[1] and json.loads(filtered[2]) == []
    both(acl_agent, "/v1/catalog/services", {"X-Consul-Token": LIMITED}, fast=False)
    # Lists the filter keeps whole are answered here; one it would thin goes to aiohttp.
    assert len(json.loads(both(acl_agent, "/v1/health/service/web", {"X-Consul-Token": READER})[2])) == 2
    both(acl_agent, "/v1/catalog/services", {"X-Consul-Token": READER})
    thinned = both(acl_agent, "/v1/health/service/web", {"X-Consul-Token": WEB_N1}, fast=False)
    assert (b"X-Consul-Results-Filtered-By-ACLs", b"true") in thinned[1]
    assert [e["Node"]["Node"] for e in json.loads(thinned[2])] == ["n1"]
    assert (b"X-Consul-Results-Filtered-By-ACLs", b"true") in both(
        acl_agent, "/v1/catalog/services", {"X-Consul-Token": WEB_N1}, fast=False)[1]
    # A blocking read by a token the filter must check item by item parks on aiohttp's path.
    index = dict(both(acl_agent, "/v1/health/service/web", {"X-Consul-Token": READER})[1])[b"X-Consul-Index"]
    before = fast_answers(acl_agent)
    watcher = Conn(acl_agent)
    watcher.send(f"/v1/health/service/web?index={index.decode()}&wait=1s", {"X-Consul-Token": READER})
    assert watcher.read()[0] == b"HTTP/1.1 200 OK" and fast_answers(acl_agent) == before
    watcher.close()
    # The token goes away: the next read is refused on both paths, not served from anything cached.
    req = urllib.request.Request(acl_agent.http + f"/v1/acl/token/{accessor(acl_agent)}", method="DELETE",
                                 headers={"X-Consul-Token": MGMT})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    gone = both(acl_agent, "/v1/kv/app/x", {"X-Consul-Token": LIMITED}, fast=False)
    assert gone[0].startswith(b"HTTP/1.1 403")


def accessor(agent) -> str:
    req = urllib.request.Request(agent.http + "/v1/acl/token/self", headers={"X-Consul-Token": LIMITED})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["AccessorID"]


def test_idle_fast_connections_close_after_the_idle_timeout_but_parked_ones_wait(tmp_path) -> None:
    cfg = tmp_path / "idle.json"
    cfg.write_text(json.dumps({"http_config": {"idle_timeout": "1s"}}))
    agent = launch("-config-file", str(cfg))
    try:
        before = fast_answers(agent)
        idle, parked = Conn(agent), Conn(agent)
        index = dict(idle.call("/v1/kv/idle")[1])[b"X-Consul-Index"].decode()
        assert fast_answers(agent) == before + 1  # armed: the fast path served this connection
        parked.send(f"/v1/kv/idle?index={index}&wait=3s")
        started = time.monotonic()
        idle.sock.settimeout(15)
        assert idle.sock.recv(1) == b""  # closed by the agent, not by us
        assert time.monotonic() - started < 10
        answer = parked.read()  # a parked query is not idle: it gets its answer at its deadline
        assert answer[0] == b"HTTP/1.1 404 Not Found"  # the key still does not exist
        assert time.monotonic() - started >= 2.5
        parked.close()
    finally:
        agent.stop()
