"""What every HTTP endpoint shares: routing with Consul's 405/OPTIONS rules, typed errors, query
options, blocking queries and the X-Consul-* headers.

Handlers take ``(request, agent)`` and return a :class:`Reply` (or raise :class:`HTTPError`); one
middleware turns that into bytes, status and headers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from beacon.agent.http.bexpr import FilterError, compile_filter
from beacon.agent.http.decode import DecodeError
from beacon.durations import parse_duration
from beacon.errors import BeaconError
from beacon.server.consensus import NoLeaderError
from beacon.server.durable import NotDurableError

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.http")

AGENT_KEY: web.AppKey[Agent] = web.AppKey("agent")


# orjson (C): the whole HTTP path encodes with it. Non-string keys are allowed because json.dumps
# allowed them (it stringifies int keys); indentation is 2, not Consul's 4: clients don't care.
_COMPACT = orjson.OPT_NON_STR_KEYS
_PRETTY = orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def encode_compact(value: Any) -> bytes:
    return orjson.dumps(value, option=_COMPACT)


def encode_pretty(value: Any) -> bytes:
    return orjson.dumps(value, option=_PRETTY)


class Encoded:
    """A JSON-able value with its two encodings, each made once on first use and then shared.

    Cached views hand the same instance to every request and every woken blocking query, so a
    thousand readers of one unchanged view cost one encode.
    """

    __slots__ = ("value", "_compact", "_pretty", "_compressed")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._compact: bytes | None = None
        self._pretty: bytes | None = None
        self._compressed: dict[tuple[bool, str], bytes] | None = None

    def compact(self) -> bytes:
        b = self._compact
        if b is None:
            b = self._compact = encode_compact(self.value)
        return b

    def pretty(self) -> bytes:
        b = self._pretty
        if b is None:
            b = self._pretty = encode_pretty(self.value)
        return b

    def compressed(self, pretty: bool, coding: str) -> bytes:
        """One encoding compressed as aiohttp compresses a response body (``gzip`` or ``deflate``,
        zlib's default level), made once: the fast read path sends these bytes to every client that
        accepts them, where aiohttp's path compresses per request."""
        cache = self._compressed
        if cache is None:
            cache = self._compressed = {}
        b = cache.get((pretty, coding))
        if b is None:
            z = zlib.compressobj(wbits=(16 + zlib.MAX_WBITS) if coding == "gzip" else zlib.MAX_WBITS)
            b = cache[(pretty, coding)] = z.compress(self.pretty() if pretty else self.compact()) + z.flush()
        return b


# The one place a domain error becomes an HTTP status (Consul's codes for the same failures).
ERROR_STATUS: dict[str, int] = {
    "failed": 500, "invalid": 400, "not_found": 404, "permission_denied": 403, "conflict": 409,
    "too_large": 413, "unavailable": 500,
}


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Reply:
    body: Any = None              # JSON-able value, an Encoded, or bytes/str for raw bodies
    status: int = 200
    index: int | None = None      # sets X-Consul-Index (+ leader headers) when not None
    raw: bool = False             # body is already bytes/str
    content_type: str = "application/json"
    headers: dict[str, str] | None = None
    empty: bool = False           # 200 with an empty body (agent writes)


Handler = Callable[[web.Request, "Agent"], Awaitable[Reply]]


@dataclass
class QueryOptions:
    index: int = 0
    wait: float = 0.0
    stale: bool = False
    consistent: bool = False
    filter: Callable[[Any], bool] | None = None


def flag(request: web.Request, name: str) -> bool:
    """Presence-based flags: `?recurse`, `?recurse=false` (still true), as Consul does."""
    return name in request.query


# The words Go's strconv.ParseBool takes (what Consul parses query flags with); an empty value is true.
TRUE_WORDS = frozenset({"", "1", "t", "T", "TRUE", "true", "True"})
FALSE_WORDS = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(value: str, what: str) -> bool:
    v = value.strip()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    raise HTTPError(400, f"Invalid value for {what}")


def query_options(request: web.Request, agent: Agent) -> QueryOptions:
    opts = QueryOptions()
    if not request.query_string:  # the common case: nothing to parse
        if request.headers.get("X-Consul-Namespace"):
            raise HTTPError(400, 'Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature')
        return opts
    q = request.query
    if "ns" in q and q["ns"] or request.headers.get("X-Consul-Namespace"):
        raise HTTPError(400, 'Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature')
    dc = q.get("dc")
    if dc and dc.lower() != agent.config.datacenter:
        raise HTTPError(500, "No path to datacenter")
    if "index" in q:
        try:
            opts.index = int(q["index"])
            if opts.index < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, "Invalid index") from None
    if "wait" in q:
        try:
            opts.wait = parse_duration(q["wait"])
        except ValueError:
            raise HTTPError(400, "Invalid wait time") from None
    opts.stale = "stale" in q
    opts.consistent = "consistent" in q
    if opts.stale and opts.consistent:
        raise HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    if q.get("filter"):
        try:
            opts.filter = compile_filter(q["filter"])
        except FilterError as exc:
            raise HTTPError(400, str(exc)) from None
    return opts


def apply_filter(opts: QueryOptions, items: list[Any]) -> list[Any]:
    if opts.filter is None:
        return items
    return [x for x in items if opts.filter(x)]


async def blocking_query(agent: Agent, opts: QueryOptions, keys: Iterable[str],
                         read: Callable[[], tuple[int, Any]], prefixes: Iterable[str] = ()) -> tuple[int, Any]:
    """Consul's blocking query: return at once for index 0 or a newer index; else wait for a change
    of what was read (the watch keys), up to `wait` (default 5m, cap 10m) plus up to wait/16 jitter."""
    await agent.consistent_read(opts.stale, opts.consistent)
    if not opts.stale and not agent.consensus.known_leader():
        raise NoLeaderError()
    index, result = read()
    if opts.index == 0 or index > opts.index:
        return index, result
    cfg = agent.config
    wait = opts.wait or cfg.default_query_time
    wait = min(wait, cfg.max_query_time)
    wait = min(wait + random.random() * wait / 16, cfg.max_query_time)
    keys = list(keys)
    prefixes = list(prefixes)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    hub = agent.hub
    while True:
        fut = hub.watch(keys, prefixes)
        index, result = read()  # after arming: a change between the read above and watch() wakes us
        if index > opts.index:
            hub.unwatch(fut, keys, prefixes)
            return index, result
        # A bare future and one timer per parked query (no asyncio.wait: its extra future and
        # callbacks cost memory per idle watcher and time per wake-up when thousands wake at once).
        timer = loop.call_at(deadline, _expire, fut)
        try:
            await fut
        finally:
            timer.cancel()
            hub.unwatch(fut, keys, prefixes)
        index, result = read()
        if index > opts.index or fut.result() is _TIMED_OUT:
            return index, result


_TIMED_OUT = object()


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)


class Router:
    """Path patterns -> {method: handler}. Unknown path 404, wrong method 405 with Allow."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.routes.setdefault(path, {})[method] = handler

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("GET", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("PUT", path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        return self._decorator("DELETE", path)

    def _decorator(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.add(method, path, fn)
            return fn
        return deco

    def install(self, app: web.Application) -> None:
        agent = app.get(AGENT_KEY)  # set before the routes are installed: no lookup per request
        for path, methods in self.routes.items():
            app.router.add_route("*", path, _dispatcher(methods, agent))


def _dispatcher(methods: dict[str, Handler], known: Agent | None = None,
                ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    allow = ", ".join(["OPTIONS", *sorted(methods)])
    # Consul's Go client always writes with PUT; some tools POST. Accept POST where PUT is.
    table = dict(methods)
    if "PUT" in table and "POST" not in table:
        table["POST"] = table["PUT"]
    if "GET" in table:
        table.setdefault("HEAD", table["GET"])

    async def dispatch(request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allow})
        handler = table.get(request.method)
        if handler is None:
            return web.Response(status=405, text=f"method {request.method} not allowed",
                                headers={"Allow": allow})
        agent = known if known is not None else request.app[AGENT_KEY]
        return render(request, await handler(request, agent), agent)

    return dispatch


_NO_QUERY: dict[str, str] = {}


def render(request: web.Request, reply: Reply, agent: Agent | None = None) -> web.StreamResponse:
    if agent is None:
        agent = request.app[AGENT_KEY]
    headers = dict(reply.headers) if reply.headers else {}
    # Most reads carry no query string: skip building the parsed query for them.
    query = request.query if request.query_string else _NO_QUERY
    if reply.index is not None:
        consensus = agent.consensus
        headers["X-Consul-Index"] = str(reply.index) if reply.index > 1 else "1"
        headers["X-Consul-KnownLeader"] = "true" if consensus.known_leader() else "false"
        headers["X-Consul-LastContact"] = str(consensus.last_contact_ms())
        headers["X-Consul-Effective-Consistency"] = (
            ("stale" if "stale" in query else "consistent" if "consistent" in query else "leader")
            if query else "leader")
    if reply.empty:
        return web.Response(status=reply.status, headers=headers)
    if reply.raw:
        body = reply.body if isinstance(reply.body, bytes) else str(reply.body).encode()
        return web.Response(status=reply.status, body=body, content_type=reply.content_type, headers=headers)
    body = reply.body
    if body is True or body is False:  # KV and catalog writes: skip the encoder entirely
        data = b"true" if body else b"false"
    elif agent.config.dev or "pretty" in query:
        # Consul's -dev always pretty-prints.
        data = body.pretty() if isinstance(body, Encoded) else encode_pretty(body)
    else:
        data = body.compact() if isinstance(body, Encoded) else encode_compact(body)
    resp = web.Response(status=reply.status, body=data, headers=headers, content_type="application/json")
    if len(data) > 1024 and "gzip" in request.headers.get("Accept-Encoding", ""):
        resp.enable_compression()
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    try:
        return await handler(request)
    except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        return error_response(request, exc)


def error_answer(exc: Exception) -> tuple[int, str] | None:
    """(status, text) of the errors handlers raise on purpose (domain, decode, consensus); None for
    anything else, a bug. The fast write path (fastwrite.py) answers its errors with the same words."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.message
    if isinstance(exc, BeaconError):
        return ERROR_STATUS.get(exc.kind, 500), exc.message
    if isinstance(exc, DecodeError | NoLeaderError):
        return (400 if isinstance(exc, DecodeError) else 500), str(exc)
    if isinstance(exc, NotDurableError):
        return 500, f"Write refused, nothing was changed: {exc}"
    return None


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The answer for an exception out of a handler. Call it from the ``except`` block (an
    unexpected error is logged with its traceback)."""
    answer = error_answer(exc)
    if answer is None:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        answer = 500, f"Internal error: {exc}"
    return web.Response(status=answer[0], text=answer[1], content_type="text/plain")


async def read_json(request: web.Request, required: bool = True) -> Any:
    body = await request.read()
    if not body.strip():
        if required:
            raise HTTPError(400, "Request decode failed: EOF")
        return None
    try:
        value = orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    except RecursionError:
        raise HTTPError(400, f"Request decode failed: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise HTTPError(400, f"Request decode failed: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# Bodies are walked recursively further in (decoding, filters); nothing Consul accepts nests this deep.
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest
