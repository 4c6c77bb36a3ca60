"""Reading a request head for the fast paths (reads: :mod:`beacon.agent.http.fastpath`, KV writes:
:mod:`beacon.agent.http.fastwrite`): which
targets and headers it may answer, decided from the bytes alone. Anything not recognised here is
aiohttp's to answer, so every rule errs towards handing over."""

from __future__ import annotations

from typing import Any

import httptools

from beacon.agent.http.core import FALSE_WORDS, TRUE_WORDS
from beacon.durations import parse_duration

# Route kinds, and the route labels aiohttp's path gives the same requests in the request metrics.
KV, HEALTH, SERVICES = 0, 1, 2
LABELS = {KV: "/v1/kv/{key}", HEALTH: "/v1/health/service/{service}", SERVICES: "/v1/catalog/services"}
_KNOWN = {b"index", b"wait", b"stale", b"consistent", b"pretty", b"passing"}
_TRUE = frozenset(w.encode() for w in TRUE_WORDS)
_FALSE = frozenset(w.encode() for w in FALSE_WORDS)


class Request:
    """What the fast path needs of one parsed request: its view and how to answer it."""

    __slots__ = ("kind", "arg", "passing", "index", "wait", "consistency", "pretty", "t0", "coding", "authz")

    def __init__(self, kind: int, arg: str, passing: bool, index: int, wait: float, consistency: int,
                 pretty: bool, t0: float, coding: str = "") -> None:
        self.kind = kind
        self.arg = arg
        self.passing = passing
        self.index = index
        self.wait = wait
        self.consistency = consistency
        self.pretty = pretty
        self.t0 = t0
        self.coding = coding  # "gzip"/"deflate": what aiohttp's path would compress a large body with
        self.authz: Any = None  # an ACL authorizer whose reply must be checked item by item (FastACL.readable)


def plain_url(url: bytes) -> bool:
    """A target aiohttp would route as its bytes read: no escapes, dot segments, empty segments,
    ``+`` (a space in a query) or fragment."""
    return not (b"%" in url or b"#" in url or b"/." in url or b"//" in url or b"+" in url) and url.isascii()


def parse_target(url: bytes) -> tuple[int, str, bool, int, float | None, int, bool] | None:
    """(kind, argument, passing, index, wait, consistency, pretty) of a request target the fast path
    answers, or None for anything aiohttp must see: escapes, dot segments, unknown or repeated
    parameters, values aiohttp would refuse with a 400."""
    if not plain_url(url):
        return None
    path, _, query = url.partition(b"?")
    if path == b"/v1/catalog/services":
        kind, arg = SERVICES, ""
    elif path.startswith(b"/v1/kv/") and len(path) > 7:
        kind, arg = KV, path[7:].decode()
    elif path.startswith(b"/v1/health/service/") and len(path) > 19:
        kind, arg = HEALTH, path[19:].decode()
    else:
        return None
    index, wait, consistency, pretty, passing = 0, None, 0, False, False
    if query:
        seen: set[bytes] = set()
        for part in query.split(b"&"):
            if not part:
                continue
            name, _, value = part.partition(b"=")
            if name not in _KNOWN or name in seen or (name == b"passing" and kind != HEALTH):
                return None
            seen.add(name)
            if name == b"index":
                if not value.isdigit():
                    return None
                index = int(value)
            elif name == b"wait":
                try:
                    wait = parse_duration(value.decode())
                except ValueError:
                    return None
            elif name == b"stale":
                consistency = 1
            elif name == b"consistent":
                consistency = 2
            elif name == b"pretty":
                pretty = True
            elif value in _TRUE:
                passing = True
            elif value not in _FALSE:
                return None
        if b"stale" in seen and b"consistent" in seen:
            return None
    return kind, arg, passing, index, wait, consistency, pretty


class HeadParser:
    """One httptools parser shared by every fast connection of an agent: a head is fed whole and
    parsed synchronously, so one parser serves them all in turn, and a parked watcher keeps no
    parser of its own (about 0.5 KiB each). A head that leaves the parser mid-message (a body
    follows: its bytes are framed by Content-Length, never fed here), closed (``Connection: close``,
    HTTP/1.0) or failed gets a fresh parser."""

    __slots__ = ("parser", "url", "plain", "headers", "length", "done")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.plain = True   # no header that needs aiohttp's path
        self.headers: dict[bytes, bytes] = {}  # X-Consul-Token, Authorization, Accept-Encoding, when sent
        self.length: bytes | None = None  # Content-Length, when sent
        self.done = False   # the head was a whole message (no body)

    def _feed(self, head: bytes) -> bool:
        self.url = b""
        self.plain = True
        if self.headers:
            self.headers = {}
        self.length = None
        self.done = False
        try:
            self.parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.parser = httptools.HttpRequestParser(self)
            return False
        return True

    def parse(self, head: bytes) -> tuple[bytes, dict[bytes, bytes]] | None:
        """(target, headers of interest) of a plain keep-alive HTTP/1.1 GET, else None."""
        if not self._feed(head):
            return None
        parser = self.parser
        if not (self.done and self.plain and self.length in (None, b"0") and parser.get_method() == b"GET"
                and parser.get_http_version() == "1.1" and parser.should_keep_alive()):
            self.parser = httptools.HttpRequestParser(self)
            return None
        return self.url, self.headers

    def parse_write(self, head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes], int] | None:
        """(method, target, headers of interest, body length) of a plain keep-alive HTTP/1.1 PUT or
        DELETE whose body (if any) is framed by Content-Length, else None."""
        if not self._feed(head):
            return None
        parser = self.parser
        method = parser.get_method()
        length = self.length
        ok = (self.plain and method in (b"PUT", b"DELETE") and parser.get_http_version() == "1.1"
              and parser.should_keep_alive() and (length is None or length.isdigit()))
        if not (ok and self.done):
            self.parser = httptools.HttpRequestParser(self)  # mid-body (or refused): never reused
        if not ok:
            return None
        return method, self.url, self.headers, int(length) if length else 0

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n in (b"x-consul-token", b"authorization", b"accept-encoding"):
            if n in self.headers or not value.isascii():
                self.plain = False  # repeated or odd: aiohttp's own first-wins lookup and decoding decide
            self.headers[n] = value
        elif n == b"content-length":
            if self.length is not None:
                self.plain = False
            self.length = value.strip()
        elif n in (b"x-consul-namespace", b"expect", b"upgrade", b"transfer-encoding") or (
                n == b"connection" and value.strip().lower() != b"keep-alive"):
            # Connection: close (and its parser state after the message) is left to aiohttp; httptools'
            # should_keep_alive() does not see it once the message is complete.
            self.plain = False

    def on_message_complete(self) -> None:
        self.done = True


def token_of(headers: dict[bytes, bytes]) -> str | None:
    """acl_enforce.token_of for the headers seen (``?token=`` is never taken here)."""
    tok = headers.get(b"x-consul-token", b"")
    if not tok:
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            tok = auth[7:].strip()
    return tok.decode() if tok.isascii() else None  # aiohttp's own decoding decides the rest
