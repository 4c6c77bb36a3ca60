"""The bytes the fast HTTP paths (:mod:`beacon.agent.http.fastpath`, :mod:`beacon.agent.http.fastwrite`)
write: status line and headers in the order and spelling aiohttp writes them for the same reply
(``core.render`` through ``web.Response``), so a client cannot tell which path answered."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp.http import SERVER_SOFTWARE

from beacon.agent.http.core import Encoded

if TYPE_CHECKING:
    from beacon.agent.http.fastparse import Request

JOIN_BELOW = 16 * 1024   # bodies up to this size are sent in one buffer with their head (larger: not copied)
COMPRESS_ABOVE = 1024    # core.render compresses a JSON body over this size when the client accepts gzip

_CONSISTENCY = (b"leader", b"stale", b"consistent")
_SERVER = b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n\r\n"
_HEAD = (b"HTTP/1.1 %s\r\nX-Consul-Index: %d\r\nX-Consul-KnownLeader: %s\r\nX-Consul-LastContact: %d\r\n"
         b"X-Consul-Effective-Consistency: %s\r\n%sContent-Length: %d\r\nDate: %s\r\n" + _SERVER)
_HEAD_CODED = _HEAD.replace(b"Content-Length: %d\r\n", b"Content-Length: %d\r\nContent-Encoding: %s\r\n")
# A reply without X-Consul-* headers (KV writes' true/false, error texts).
_PLAIN = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\n" + _SERVER
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class Clock:
    """The Date header, formatted once per second."""

    __slots__ = ("_date",)

    def __init__(self) -> None:
        self._date = (0, b"")

    def date(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]


def render_read(consensus: Any, dev: bool, req: Request, index: int, body: Encoded | None,
                date: bytes) -> tuple[bytes, bytes, int]:
    """(head, body, status) of a read as core.render writes them for the same reply."""
    leader = b"true" if consensus.known_leader() else b"false"
    contact = consensus.last_contact_ms()
    if index < 1:
        index = 1
    if body is None:  # KV miss: 404, empty, no Content-Type
        return (_HEAD % (b"404 Not Found", index, leader, contact, _CONSISTENCY[req.consistency], b"", 0, date),
                b"", 404)
    pretty = dev or req.pretty
    data = body.pretty() if pretty else body.compact()
    content = b"Content-Type: application/json\r\n"
    if req.coding and len(data) > COMPRESS_ABOVE:  # core.render's rule; the bytes made once per view
        data = body.compressed(pretty, req.coding)
        head = _HEAD_CODED % (b"200 OK", index, leader, contact, _CONSISTENCY[req.consistency], content,
                              len(data), req.coding.encode(), date)
    else:
        head = _HEAD % (b"200 OK", index, leader, contact, _CONSISTENCY[req.consistency], content, len(data), date)
    if len(data) <= JOIN_BELOW:  # one buffer, one send: what a woken watcher's answer costs
        return head + data, b"", 200
    return head, data, 200


def plain_answer(status: int, content_type: bytes, body: bytes, date: bytes) -> bytes:
    """A whole reply with no X-Consul-* headers: ``web.Response(status, body, content_type)``."""
    return _PLAIN % (status, _REASONS[status], content_type, len(body), date) + body
