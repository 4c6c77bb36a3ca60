"""Generated requests answer the same on the fast path's connections as on aiohttp's.

tests/integration/test_fastpath.py lists the cases the fast path was written for; here hypothesis
writes request heads around them (odd keys and escapes, repeated or malformed query parameters,
tokens, encodings, connection headers, methods) and sends each, as raw bytes, to a real agent twice:
on a fresh connection, which the fast path reads first, and on a connection already handed to
aiohttp. Status line, headers but ``Date`` and body must be equal, and the agent must still answer
afterwards. Blocking queries are left to the hand-written tests (a generated index past the current
one would only wait).
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import launch
from tests.integration.test_fastpath import MGMT, Conn, fast_answers, put, register, without_date

pytestmark = pytest.mark.integration

KEYS = ["foo", "app/x", "other/y", "nope", "a b", "caf\u00e9", "x%2Fy", "%66oo", "foo/", "", "..", "foo%00",
        "a?b", "\u00ff", "%", "%zz", "foo;bar", "web"]
PATHS = ["/v1/kv/", "/v1/health/service/", "/v1/catalog/services", "/v1/status/leader", "/v1/kv", "//v1/kv/",
         "/v1/health/service", "/V1/kv/"]
PARAMS = ["stale", "consistent", "pretty", "passing", "index", "wait", "raw", "keys", "recurse", "dc", "ns",
          "filter", "token", "tag", "node-meta", "separator", "x", ""]
VALUES = [None, "", "0", "1", "true", "false", "maybe", "1s", "-1", "10m", "5x", "%20", "dc1", "dc2",
          "\u00e9", "1" * 30, "ServiceName==web", MGMT, "00000000-0000-0000-0000-000000000000"]
HEADERS = [("X-Consul-Token", MGMT), ("X-Consul-Token", ""), ("X-Consul-Token", "nope"),
           ("Authorization", f"Bearer {MGMT}"), ("Authorization", "Basic abc"), ("Accept-Encoding", "gzip"),
           ("Accept-Encoding", "deflate, gzip"), ("Accept-Encoding", "br"), ("Accept-Encoding", "identity;q=0"),
           ("Connection", "keep-alive"), ("Connection", "close"), ("Content-Length", "0"),
           ("X-Consul-Namespace", "default"), ("Expect", "100-continue"), ("Cache-Control", "max-age=5"),
           ("Accept", "application/json"), ("Host", "example"), ("Transfer-Encoding", "chunked"),
           ("X-Forwarded-For", "10.1.2.3"), ("Content-Type", "text/plain")]
METHODS = ["GET", "GET", "GET", "HEAD", "OPTIONS", "get", "PATCH", "TRACE"]  # no writes: they would change what is compared


# Near what the fast path takes: its three reads, its parameters, harmless headers.
NEAR_PATHS = ["/v1/kv/", "/v1/health/service/", "/v1/catalog/services"]
NEAR_PARAMS = ["stale", "consistent", "pretty", "passing", "index", "wait"]
NEAR_VALUES = [None, None, None, "", "0", "1", "true", "false", "1s"]
NEAR_HEADERS = [("X-Consul-Token", MGMT), ("Accept-Encoding", "gzip"), ("Accept-Encoding", "deflate, gzip"),
                ("Connection", "keep-alive"), ("Accept", "application/json"), ("User-Agent", "fuzz/1.0")]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Request bytes: half of them near what the fast path answers (so that it does answer many), half
    anywhere."""
    near = draw(st.booleans())
    method = "GET" if near else draw(st.sampled_from(METHODS))
    path = draw(st.sampled_from(NEAR_PATHS if near else PATHS))
    if path.endswith("/"):
        path += draw(st.sampled_from(KEYS[:6] if near else KEYS))
    query = []
    for name in draw(st.lists(st.sampled_from(NEAR_PARAMS if near else PARAMS), max_size=3 if near else 4)):
        value = draw(st.sampled_from(NEAR_VALUES if near else VALUES))
        if name == "index" and value not in (None, "", "0", "-1", "5x", "maybe"):
            value = "1"  # never past the current index: that request would wait
        query.append(name if value is None else f"{name}={value}")
    target = path + ("?" + "&".join(query) if query else "")
    headers = draw(st.lists(st.sampled_from(NEAR_HEADERS if near else HEADERS), max_size=3, unique_by=lambda h: h[0]))
    lines = [f"{method} {target} HTTP/1.1"]
    if not any(n == "Host" for n, _ in headers):
        lines.append("Host: 127.0.0.1")
    body = b""
    chunked = any(n == "Transfer-Encoding" for n, _ in headers)
    if method == "PATCH" and not chunked and not any(n == "Content-Length" for n, _ in headers):
        lines.append("Content-Length: 0")
    lines += [f"{n}: {v}" for n, v in headers]
    if chunked:
        body = b"0\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    """A lone bootstrapped server (compact JSON) and a -dev agent (pretty JSON), each with some data."""
    data = tmp_path_factory.mktemp("fuzz-server")
    server = launch("-server", "-bootstrap-expect", "1", "-bind", "127.0.0.1", "-data-dir", str(data),
                    "-node", "fuzz", "-server-port", "0", "-server-rpc-port", "0", "-serf-lan-port", "0",
                    "-serf-wan-port", "0", dev=False)
    dev = launch()
    try:
        for agent in (server, dev):
            for key, value in (("foo", "bar"), ("app/x", "1"), ("other/y", "2"), ("a b", "space"),
                               ("caf\u00e9", "accent")):
                put(agent, "/v1/kv/" + key.replace(" ", "%20").replace("\u00e9", "%C3%A9"), value)
            register(agent, "n1", "passing")
            register(agent, "n2", "critical")
        yield server, dev
    finally:
        server.stop()
        dev.stop()


def _ask(agent, raw: bytes, via_aiohttp: bool, is_head: bool) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    conn = Conn(agent, via_aiohttp=via_aiohttp)
    try:
        conn.sock.sendall(raw)
        if is_head:  # no body follows a HEAD answer whatever its Content-Length says
            while b"\r\n\r\n" not in conn.buf:
                chunk = conn.sock.recv(65536)
                assert chunk, "connection closed before an answer"
                conn.buf += chunk
            head = conn.buf.partition(b"\r\n\r\n")[0]
            status, *lines = head.split(b"\r\n")
            return status, [(n.strip(), v.strip()) for n, _, v in (x.partition(b":") for x in lines)], b""
        return conn.read()
    finally:
        conn.close()


def _comparable(answer):
    status, headers, body = without_date(answer)
    # A 4xx from the parser may name the raw bytes; the JSON bodies must match exactly.
    return status, sorted(headers), body


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(req=requests(), which=st.sampled_from([0, 1]))
def test_generated_requests_answer_alike_on_both_paths(agents, req, which) -> None:
    raw = req
    agent = agents[which]
    is_head = raw.startswith(b"HEAD ")
    fresh = _ask(agent, raw, via_aiohttp=False, is_head=is_head)
    reference = _ask(agent, raw, via_aiohttp=True, is_head=is_head)
    assert _comparable(fresh) == _comparable(reference), raw


# ---------------------------------------------------------------------------------------- KV writes
WRITE_PARAMS = ["cas", "flags", "token", "acquire", "release", "recurse", "x", "dc", "cas"]
WRITE_VALUES = [None, "", "0", "1", "42", "own", "-1", "abc", "18446744073709551615", "18446744073709551616",
                MGMT, "dc1"]
WRITE_HEADERS = [("X-Consul-Token", MGMT), ("X-Consul-Token", "nope"), ("Content-Type", "application/json"),
                 ("Expect", "100-continue"), ("Transfer-Encoding", "chunked"), ("Connection", "close"),
                 ("User-Agent", "fuzz/1.0")]
BODIES = [b"", b"v", b"\x00\xff binary", b'{"json": true}', b"x" * 2000]
_case = iter(range(10**9))


@st.composite
def writes(draw: st.DrawFn) -> tuple[str, str, list[str], list[tuple[str, str]], bytes, bool]:
    """(method, key suffix, query parts with ``own`` for the key's own ModifyIndex, headers, body,
    whether the key exists first)."""
    near = draw(st.booleans())  # half near what the fast path takes, so that it takes many
    method = draw(st.sampled_from(["PUT", "PUT", "DELETE"]))
    suffix = draw(st.sampled_from(["k", "a/b"] if near else ["k", "k/", "a/b", "%6b", "caf%C3%A9", "sp%20ace"]))
    query = []
    params = ["cas", "flags", "token"] if near else WRITE_PARAMS
    values = ["0", "1", "42", "own", "own"] if near else WRITE_VALUES
    for name in draw(st.lists(st.sampled_from(params), max_size=2 if near else 3, unique=near)):
        value = MGMT if near and name == "token" else draw(st.sampled_from(values))
        query.append(name if value is None else f"{name}={value}")
    headers = draw(st.lists(st.sampled_from(WRITE_HEADERS[:1] + WRITE_HEADERS[-1:] if near else WRITE_HEADERS),
                            max_size=2, unique_by=lambda h: h[0]))
    if method == "PUT":
        body = draw(st.sampled_from(BODIES))
    else:
        body = b"" if near else draw(st.sampled_from([b"", b"", b"x"]))
    return method, suffix, query, headers, body, draw(st.booleans())


def _write_bytes(method: str, key: str, query: list[str], headers: list[tuple[str, str]], body: bytes) -> bytes:
    target = f"/v1/kv/{key}" + ("?" + "&".join(query) if query else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"] + [f"{n}: {v}" for n, v in headers]
    if any(n == "Transfer-Encoding" for n, _ in headers):
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _entry(agent, key: str) -> tuple[int, object]:
    status, _, body = agent.request("GET", f"/v1/kv/{key}")
    if status != 200:
        return status, None
    (e,) = json.loads(body)
    return status, (e["Value"], e["Flags"], e.get("Session"), e["LockIndex"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(w=writes(), which=st.sampled_from([0, 1]))
def test_generated_kv_writes_answer_and_store_alike_on_both_paths(agents, w, which) -> None:
    """The same write to two fresh keys, one through a fresh connection (the fast path's first look)
    and one through an aiohttp connection: equal answers and equal stored entries."""
    method, suffix, query, headers, body, exists = w
    agent = agents[which]
    n = next(_case)
    answers, entries = [], []
    for via_aiohttp, side in ((False, "fast"), (True, "slow")):
        key = f"wf/{n}/{side}/{suffix}"
        own = "0"
        if exists:
            put(agent, f"/v1/kv/{key}", "before")
            status, _, found = agent.request("GET", f"/v1/kv/{key}")
            assert status == 200, key
            own = str(json.loads(found)[0]["ModifyIndex"])
        raw = _write_bytes(method, key, [q.replace("cas=own", f"cas={own}").replace("=own", "=7") for q in query], headers, body)
        conn = Conn(agent, via_aiohttp=via_aiohttp)
        try:
            conn.sock.sendall(raw)
            answer = conn.read()
            while answer[0].startswith(b"HTTP/1.1 1"):  # "100 Continue" before the answer
                answer = conn.read()
            answers.append(_comparable(answer))
        finally:
            conn.close()
        entries.append(_entry(agent, key))
    assert answers[0] == answers[1], (method, suffix, query, headers, body, exists)
    assert entries[0] == entries[1], (method, suffix, query, headers, body, exists)


def test_the_agents_still_answer_after_the_fuzzing(agents) -> None:
    for agent in agents:
        # armed: the fast path did answer a share of the generated requests (not everything went to aiohttp)
        assert fast_answers(agent) >= 10, fast_answers(agent)
        status, _, body = agent.request("GET", "/v1/kv/foo")
        assert status == 200 and json.loads(body)[0]["Key"] == "foo"
        with socket.create_connection((agent.host, agent.http_port), timeout=5):
            pass
