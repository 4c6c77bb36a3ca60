"""Which request targets the fast read path takes (beacon.agent.http.fastparse.parse_target): only
those it can answer exactly as aiohttp's path does; everything else (None) goes to aiohttp."""

from __future__ import annotations

import pytest

from beacon.agent.http.fastparse import HEALTH, KV, SERVICES, HeadParser, parse_target


def test_the_hot_reads_and_their_options_are_taken() -> None:
    assert parse_target(b"/v1/kv/foo") == (KV, "foo", False, 0, None, 0, False)
    assert parse_target(b"/v1/kv/a/b.json?index=42&wait=5s") == (KV, "a/b.json", False, 42, 5.0, 0, False)
    assert parse_target(b"/v1/health/service/web?passing") == (HEALTH, "web", True, 0, None, 0, False)
    assert parse_target(b"/v1/health/service/web?passing=false&stale") == (HEALTH, "web", False, 0, None, 1, False)
    assert parse_target(b"/v1/catalog/services?consistent&pretty&") == (SERVICES, "", False, 0, None, 2, True)


@pytest.mark.parametrize("target", [
    b"/v1/kv/", b"/v1/kv/a%2Fb", b"/v1/kv/a//b", b"/v1/kv/./a", b"/v1/kv/../v1/acl/tokens", b"/v1/kv/a#b",
    b"/v1/kv/a+b", "/v1/kv/\u00e9".encode(), b"/v1/kv/foo?raw", b"/v1/kv/foo?recurse", b"/v1/kv/foo?token=x",
    b"/v1/kv/foo?dc=dc2", b"/v1/kv/foo?index=1&index=2", b"/v1/kv/foo?index=-1", b"/v1/kv/foo?index=",
    b"/v1/kv/foo?wait=30", b"/v1/kv/foo?stale&consistent", b"/v1/kv/foo?passing", b"/v1/kv/foo?cached",
    b"/v1/health/service/", b"/v1/health/service/web?passing=maybe", b"/v1/health/service/web?tag=a",
    b"/v1/health/service/web?near=_agent", b"/v1/health/service/web?filter=x", b"/v1/catalog/services?node-meta=a:b",
    b"/v1/catalog/nodes", b"http://127.0.0.1/v1/kv/foo", b"*",
])
def test_anything_else_goes_to_aiohttp(target: bytes) -> None:
    assert parse_target(target) is None


def test_one_shared_head_parser_takes_only_plain_keep_alive_gets_and_survives_the_rest() -> None:
    heads = HeadParser()
    get = b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\n\r\n"
    for other in (
        b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /v1/kv/foo HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"PUT /v1/kv/foo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
        b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\nX-Consul-Token: a\r\nX-Consul-Token: b\r\n\r\n",
        b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\nX-Consul-Namespace: ns\r\n\r\n",
        b"GET /v1/kv/foo HTTP/1.1\r\nHost x\r\n\r\n",  # malformed
        b"HEAD /v1/kv/foo HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        assert heads.parse(other) is None, other
        assert heads.parse(get) == (b"/v1/kv/foo", {}), other  # the next connection's head still parses
    assert heads.parse(b"GET /v1/kv/foo?index=3 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n"
                       b"x-consul-token: t\r\nAccept-Encoding: gzip\r\n\r\n") == (
        b"/v1/kv/foo?index=3", {b"x-consul-token": b"t", b"accept-encoding": b"gzip"})
