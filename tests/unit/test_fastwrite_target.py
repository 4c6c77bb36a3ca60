"""Which KV writes the fast write path takes (beacon.agent.http.fastwrite.parse_target and the shared
head parser's parse_write): only those kv_put/kv_delete answer from the key, ``cas``, ``flags`` and
the token alone; everything else (None) goes to aiohttp with the rest of the connection."""

from __future__ import annotations

import pytest

from beacon.agent.http.fastparse import HeadParser
from beacon.agent.http.fastwrite import parse_target


def test_plain_cas_and_flags_writes_are_taken() -> None:
    assert parse_target(b"PUT", b"/v1/kv/a/b.json") == ("a/b.json", None, 0, b"")
    assert parse_target(b"PUT", b"/v1/kv/k?cas=0") == ("k", 0, 0, b"")
    assert parse_target(b"PUT", b"/v1/kv/k?flags=42&cas=7&token=s3cret&") == ("k", 7, 42, b"s3cret")
    assert parse_target(b"PUT", b"/v1/kv/k?flags=18446744073709551615") == ("k", None, 2**64 - 1, b"")
    assert parse_target(b"DELETE", b"/v1/kv/k?cas=3") == ("k", 3, 0, b"")


@pytest.mark.parametrize(("method", "target"), [
    (b"PUT", b"/v1/kv/"), (b"PUT", b"/v1/kv/a%2Fb"), (b"PUT", b"/v1/kv/./a"), (b"PUT", b"/v1/kv/a+b"),
    (b"PUT", b"/v1/kv/k?acquire=abc"), (b"PUT", b"/v1/kv/k?release=abc"), (b"PUT", b"/v1/kv/k?cas=1&acquire=x"),
    (b"PUT", b"/v1/kv/k?cas=x"), (b"PUT", b"/v1/kv/k?cas="), (b"PUT", b"/v1/kv/k?cas"), (b"PUT", b"/v1/kv/k?cas=-1"),
    (b"PUT", b"/v1/kv/k?flags=18446744073709551616"), (b"PUT", b"/v1/kv/k?cas=1&cas=2"), (b"PUT", b"/v1/kv/k?dc=dc1"),
    (b"PUT", b"/v1/kv/k?token=a&token=b"), (b"PUT", b"/v1/kv/k?ns=x"), (b"DELETE", b"/v1/kv/k?recurse"),
    (b"DELETE", b"/v1/kv/k?flags=1"), (b"PUT", b"/v1/catalog/register"), (b"PUT", "/v1/kv/\u00e9".encode()),
])
def test_anything_else_goes_to_aiohttp(method: bytes, target: bytes) -> None:
    assert parse_target(method, target) is None


def test_the_shared_head_parser_frames_write_bodies_and_survives_every_refusal() -> None:
    heads = HeadParser()
    get = b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\n\r\n"
    assert heads.parse_write(b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Consul-Token: t\r\n\r\n") \
        == (b"PUT", b"/v1/kv/a", {b"x-consul-token": b"t"}, 3)
    assert heads.parse(get) == (b"/v1/kv/foo", {})  # a head left mid-body never leaves the parser there
    assert heads.parse_write(b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n") == (b"PUT", b"/v1/kv/a", {}, 0)
    assert heads.parse_write(b"DELETE /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n") == (b"DELETE", b"/v1/kv/a", {}, 0)
    for other in (
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Consul-Namespace: ns\r\n\r\n",
        b"POST /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
        b"PATCH /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost x\r\n\r\n",  # malformed
        get,
    ):
        assert heads.parse_write(other) is None, other
        assert heads.parse(get) == (b"/v1/kv/foo", {}), other
    # A GET with a body is still not a fast read.
    assert heads.parse(b"GET /v1/kv/foo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n") is None
    assert heads.parse(get) == (b"/v1/kv/foo", {})
