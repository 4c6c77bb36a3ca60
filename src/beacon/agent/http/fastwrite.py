"""KV writes taken before aiohttp builds a request: ``PUT /v1/kv/<key>`` and ``DELETE /v1/kv/<key>``.

Which requests: on the connections :mod:`beacon.agent.http.fastpath` serves (servers and ``-dev``,
where the KV endpoint submits the command through this agent's own consensus; client agents
forward writes to a server and are not served here), a plain keep-alive HTTP/1.1 PUT whose body
is framed by a Content-Length no larger than ``kv_max_value_size``, or a DELETE without a body,
with no query parameters but ``cas``, ``flags`` (PUT) and ``token``, each at most once with a
value the handler accepts, and a token with ``key:write`` on the key (ACLs on). Everything else —
``?acquire``/``?release``/``?recurse``, chunked bodies, ``Expect: 100-continue``, an oversized
value, a denied or unknown token, a value that would be a 400 — goes to aiohttp with the rest of
the connection, which answers it as it always has.

What it does is what :func:`beacon.agent.http.kv.kv_put` (``kv_delete``) does: the same endpoint
call (:mod:`beacon.endpoints.kv`) with the same ``submit``, and the same answer bytes ``true`` or
``false`` (or the same error text) under the same headers aiohttp writes for them. While a write
is in flight its connection answers nothing else, so pipelined requests are answered in order.

Why: a small write spends 1.1-1.5 ms of a ~4 ms sequential write in aiohttp's server, request
object, handler and response (docs/benchmarks.md, Raft KV); the bytes to parse are a head and a
short body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from beacon.agent.http.core import error_answer
from beacon.agent.http.fastanswer import plain_answer
from beacon.agent.http.fastparse import KV, LABELS, HeadParser, plain_url, token_of
from beacon.agent.http.metrics import observe
from beacon.endpoints import Submit
from beacon.endpoints import kv as kv_endpoint
from beacon.numbers import UINT64_MAX

if TYPE_CHECKING:
    from beacon.agent.http.fastacl import FastACL

log = logging.getLogger("beacon.agent.http")

MAX_BODY = 1024 * 1024  # buffered here at most; larger limits' bodies go to aiohttp (client_max_size 16 MiB)
HANDOFF, MORE = -1, -2  # FastWrites.take: aiohttp answers this request / its body is not all here yet

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"  # aiohttp's web.Response(text=..., content_type="text/plain")
_PUT_PARAMS = frozenset({b"cas", b"flags", b"token"})
_DELETE_PARAMS = frozenset({b"cas", b"token"})


class Write:
    """One parsed write on its way through consensus."""

    __slots__ = ("put", "key", "value", "cas", "flags", "t0")

    def __init__(self, put: bool, key: str, value: bytes | None, cas: int | None, flags: int, t0: float) -> None:
        self.put = put
        self.key = key
        self.value = value
        self.cas = cas
        self.flags = flags
        self.t0 = t0


class Writer(Protocol):
    """What a connection offers the write path (fastpath.FastProtocol): it holds its other
    requests while ``held`` is set, and writes the answer when told."""

    held: object

    def write_done(self, answer: bytes) -> None: ...


def parse_target(method: bytes, url: bytes) -> tuple[str, int | None, int, bytes] | None:
    """(key, cas, flags, ?token) of a write this path takes, or None for aiohttp's path: escapes,
    other or repeated parameters, values kv_put would refuse with a 400."""
    if not plain_url(url):
        return None
    path, _, query = url.partition(b"?")
    if not path.startswith(b"/v1/kv/") or len(path) == 7:
        return None
    cas: int | None = None
    flags, token = 0, b""
    if query:
        known = _PUT_PARAMS if method == b"PUT" else _DELETE_PARAMS
        seen: set[bytes] = set()
        for part in query.split(b"&"):
            if not part:
                continue
            name, _, value = part.partition(b"=")
            if name not in known or name in seen:
                return None
            seen.add(name)
            if name == b"token":
                token = value
                continue
            if not value.isdigit() or int(value) > UINT64_MAX:
                return None  # kv.py's _uint: a 400 aiohttp's path words
            if name == b"cas":
                cas = int(value)
            else:
                flags = int(value)
    return path[7:].decode(), cas, flags, token


class FastWrites:
    """One agent's fast KV writes: parsing, the ACL gate, the endpoint call and the answer. Gets
    the narrow collaborators it uses: the consensus ``submit``, the ACL decisions (None: ACLs off),
    the value size limit, the shared head parser and the Date header's clock."""

    def __init__(self, submit: Submit, acl: FastACL | None, limit: int, heads: HeadParser,
                 date: Callable[[], bytes], tasks: set[asyncio.Task[None]]) -> None:
        self.submit = submit
        self.acl = acl
        self.limit = min(limit, MAX_BODY)
        self.heads = heads
        self.date = date
        self.tasks = tasks  # cancelled when the fast path closes (agent stop)

    def take(self, conn: Writer, buf: bytes, pos: int, body_at: int) -> int:
        """The write whose head is ``buf[pos:body_at]``: started (the offset after its body, and
        ``conn.held`` set until :meth:`Writer.write_done`), :data:`MORE` bytes needed, or
        :data:`HANDOFF` to aiohttp."""
        parsed = self.heads.parse_write(buf[pos:body_at])
        if parsed is None:
            return HANDOFF
        method, url, headers, length = parsed
        if length > self.limit or (method == b"DELETE" and length):
            return HANDOFF  # kv_put's 413 (and aiohttp's own size limit) are aiohttp's to answer
        target = parse_target(method, url)
        if target is None:
            return HANDOFF
        key, cas, flags, query_token = target
        end = body_at + length
        if len(buf) < end:
            return MORE
        if self.acl is not None:
            secret = token_of(headers)  # acl_enforce.token_of: the headers first, then ?token=
            if secret is None or not query_token.isascii():
                return HANDOFF
            if not self.acl.may_write(secret or query_token.decode(), key):
                return HANDOFF  # aiohttp's path answers the 403
        value = buf[body_at:end] if length else None
        write = Write(method == b"PUT", key, value, cas, flags, time.perf_counter())
        conn.held = write
        task = asyncio.get_running_loop().create_task(self._run(conn, write))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return end

    async def _run(self, conn: Writer, write: Write) -> None:
        try:
            if write.put:
                done = await kv_endpoint.put(self.submit, write.key, write.value, write.flags, cas=write.cas)
            else:
                done = await kv_endpoint.delete(self.submit, write.key, cas=write.cas)
            status, ctype, body = 200, _JSON, b"true" if done else b"false"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # what core.error_response answers for the same exception
            answer = error_answer(exc)
            if answer is None:
                log.exception("unexpected error serving %s /v1/kv/%s", "PUT" if write.put else "DELETE", write.key)
                answer = 500, f"Internal error: {exc}"
            status, ctype, body = answer[0], _TEXT, answer[1].encode()
        conn.write_done(plain_answer(status, ctype, body, self.date()))
        observe("PUT" if write.put else "DELETE", LABELS[KV], status, time.perf_counter() - write.t0)
