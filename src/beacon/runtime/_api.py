"""The Docker Engine API on a unix socket: routes requests to the engine, errors to status codes.

Handlers return a ``Response`` or a ``Stream`` or raise an ``EngineError``; ``dispatch`` turns the
error into ``{"message": ...}`` with Docker's status code. Paths may carry a ``/v1.NN`` prefix.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from beacon.numbers import ascii_int
from beacon.runtime import _api_extra, _api_images, _stdio
from beacon.runtime import _views as views
from beacon.runtime._errors import Conflict, EngineError, InvalidParameter
from beacon.runtime._events import EventFilter
from beacon.runtime._http import HttpServer, Request, Response, Stream
from beacon.runtime._logs import LogRecord

if TYPE_CHECKING:
    from beacon.runtime._engine import Engine

VERSION_RE = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
MUX = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"
LIST_FILTERS = ("label", "name", "id", "status", "health", "exited", "ancestor")
Route = Callable[[Request, dict[str, str]], Awaitable[Response | Stream]]


def _frame(stream: int, data: bytes) -> bytes:
    return stream.to_bytes(1, "big") + b"\0\0\0" + len(data).to_bytes(4, "big") + data


def parse_filters(raw: str | None) -> dict[str, list[str]]:
    """``filters`` as JSON: ``{"label": ["a=b"]}`` or the older ``{"label": {"a=b": true}}``."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid filter: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParameter("invalid filter: want a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = [k for k, v in value.items() if v]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        else:
            raise InvalidParameter(f"invalid filter {key!r}")
    return out


def parse_time_ns(raw: str | None) -> int | None:
    """``since``/``until``: unix seconds with up to 9 decimals (what the CLI sends), or RFC 3339."""
    if raw in (None, ""):
        return None
    assert raw is not None
    secs, dot, frac = raw.partition(".")
    whole = ascii_int(secs, signed=True)
    if whole is not None and (not dot or (frac.isascii() and frac.isdigit())):
        return whole * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
    value = parse_time(raw)
    return None if value is None else int(value * 1e9)


def parse_time(raw: str | None) -> float | None:
    if raw in (None, ""):
        return None
    assert raw is not None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise InvalidParameter(f"invalid time value {raw!r}") from exc


class ApiServer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.engine_id = secrets.token_hex(16).upper()
        self.http = HttpServer(self.dispatch, {
            "Api-Version": views.API_VERSION, "Docker-Experimental": "false", "Ostype": "linux",
            "Server": f"Docker/{views.ENGINE_VERSION} (linux)"})
        e = engine
        self.routes: list[tuple[str, re.Pattern[str], Route]] = [
            (m, re.compile(f"^{p}$"), h) for m, p, h in [
                ("GET", r"/_ping", self.ping), ("HEAD", r"/_ping", self.ping),
                ("GET", r"/version", self.version), ("GET", r"/info", self.info),
                ("POST", r"/containers/create", self.create), ("GET", r"/containers/json", self.list),
                ("POST", r"/containers/prune", self.prune),
                ("GET", r"/containers/(?P<id>[^/]+)/json", self.inspect),
                ("POST", r"/containers/(?P<id>[^/]+)/start", self._nocontent(lambda r, i: e.start_container(i))),
                ("POST", r"/containers/(?P<id>[^/]+)/stop",
                 self._nocontent(lambda r, i: e.stop_container(i, _timeout(r), r.q("signal")))),
                ("POST", r"/containers/(?P<id>[^/]+)/restart",
                 self._nocontent(lambda r, i: e.restart(i, _timeout(r)))),
                ("POST", r"/containers/(?P<id>[^/]+)/kill", self._nocontent(lambda r, i: e.kill(i, r.q("signal")))),
                ("POST", r"/containers/(?P<id>[^/]+)/wait", self.wait),
                ("POST", r"/containers/(?P<id>[^/]+)/resize", self._nocontent(self._resize)),
                ("GET", r"/containers/(?P<id>[^/]+)/logs", self.logs),
                ("POST", r"/containers/(?P<id>[^/]+)/attach", self.attach),
                ("DELETE", r"/containers/(?P<id>[^/]+)",
                 self._nocontent(lambda r, i: e.remove(i, force=r.flag("force"), volumes=r.flag("v")))),
                ("POST", r"/containers/(?P<id>[^/]+)/exec", self.exec_create),
                ("POST", r"/exec/(?P<id>[^/]+)/start", self.exec_start),
                ("POST", r"/exec/(?P<id>[^/]+)/resize",
                 self._nocontent(lambda r, i: _noop(e.exec.resize(i, _int_q(r, "h"), _int_q(r, "w"))))),
                ("GET", r"/exec/(?P<id>[^/]+)/json", self.exec_inspect),
                ("GET", r"/events", self.events),
                *_api_images.routes(self), *_api_extra.routes(self),
            ]]

    async def start(self, path: str) -> None:
        await self.http.start_unix(path)

    async def stop(self) -> None:
        await self.http.stop()

    async def dispatch(self, req: Request) -> Response | Stream:
        path = req.path
        m = VERSION_RE.match(path)
        if m:
            wanted, path = (int(m.group(1)), int(m.group(2))), m.group(3)
            top = tuple(int(x) for x in views.API_VERSION.split("."))
            low = tuple(int(x) for x in views.MIN_API_VERSION.split("."))
            if wanted > top:
                return _error(400, f"client version {m.group(1)}.{m.group(2)} is too new. "
                                   f"Maximum supported API version is {views.API_VERSION}")
            if wanted < low:
                return _error(400, f"client version {m.group(1)}.{m.group(2)} is too old. "
                                   f"Minimum supported API version is {views.MIN_API_VERSION}, "
                                   "please upgrade your client to a newer version")
        path = path.rstrip("/") or "/"
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match:
                allowed = True
                if method == req.method:
                    try:
                        return await handler(req, match.groupdict())
                    except EngineError as exc:
                        return _error(exc.status, exc.message)
        if allowed:
            return _error(405, f"method {req.method} not allowed for {path}")
        return _error(404, "page not found")

    def _nocontent(self, fn: Callable[[Request, str], Awaitable[Any]]) -> Route:
        async def handler(req: Request, args: dict[str, str]) -> Response:
            await fn(req, args["id"])
            return Response(204)

        return handler

    # -- system --------------------------------------------------------------------------------

    async def ping(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, b"OK", "text/plain; charset=utf-8",
                        {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache",
                         "Builder-Version": "1"})

    async def version(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, views.version())

    async def info(self, req: Request, args: dict[str, str]) -> Response:
        e = self.engine
        return Response(200, views.info(e.counts(), len(e.images.ids()), e.isolation, e.warnings,
                                        str(e.data_dir), self.engine_id))

    # -- containers ----------------------------------------------------------------------------

    async def create(self, req: Request, args: dict[str, str]) -> Response:
        cid, warnings = await self.engine.create(req.json(default=None), req.q("name"))
        return Response(201, {"Id": cid, "Warnings": warnings})

    async def list(self, req: Request, args: dict[str, str]) -> Response:
        filters = parse_filters(req.q("filters"))
        for key in filters:
            if key not in LIST_FILTERS:
                raise InvalidParameter(f"invalid filter '{key}'")
        show_all = req.flag("all")
        out = [views.summary(c, self.engine.isolation) for c in self.engine.containers()
               if views.matches(c, filters, show_all)]
        limit = ascii_int(req.q("limit") or "", signed=True)
        if limit is not None and limit > 0:
            out = out[:limit]
        return Response(200, out)

    async def prune(self, req: Request, args: dict[str, str]) -> Response:
        filters = parse_filters(req.q("filters"))
        for key in filters:
            if key != "label":
                raise InvalidParameter(f"invalid filter '{key}' (beacon prunes by label only)")
        deleted = []
        for c in self.engine.containers():
            if c.state.status in ("created", "exited") and views.matches(c, filters, show_all=True):
                await self.engine.remove(c.id)
                deleted.append(c.id)
        return Response(200, {"ContainersDeleted": deleted, "SpaceReclaimed": 0})

    async def inspect(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, views.inspect(self.engine.get(args["id"]), self.engine.isolation))

    async def wait(self, req: Request, args: dict[str, str]) -> Stream:
        target = self.engine.wait_target(args["id"], req.q("condition") or "not-running")

        async def body() -> AsyncIterator[bytes]:
            code = target if isinstance(target, int) else await asyncio.shield(target)
            yield json.dumps({"Error": None, "StatusCode": code}).encode() + b"\n"

        return Stream(body())

    async def logs(self, req: Request, args: dict[str, str]) -> Stream:
        slot = self.engine.resolve(args["id"])
        streams = {s for s, name in ((1, "stdout"), (2, "stderr")) if req.flag(name)}
        if not streams:
            raise InvalidParameter("Bad parameters: you must choose at least one stream")
        tail_raw = req.q("tail") or "all"
        tail = None if tail_raw == "all" else ascii_int(tail_raw)
        timestamps = req.flag("timestamps")
        running = slot.c.state.status == "running"
        follow = req.flag("follow")
        queue = slot.logs.subscribe() if follow and running else None
        records = slot.logs.read(follow=follow, tail=tail, since=parse_time(req.q("since")),
                                 until=parse_time(req.q("until")), streams=streams, running=running,
                                 queue=queue)

        tty = slot.c.tty

        async def body() -> AsyncIterator[bytes]:
            async for record in records:
                yield record.data if tty else record.frame(timestamps)

        return Stream(body(), content_type=RAW if tty else MUX, cleanup=_unsubscribe(slot.logs.followers, queue))

    async def attach(self, req: Request, args: dict[str, str]) -> Stream:
        slot = self.engine.resolve(args["id"])
        streams = {s for s, name in ((1, "stdout"), (2, "stderr")) if req.flag(name)}
        queue = slot.logs.subscribe()
        records: AsyncIterator[LogRecord] = slot.logs.read(
            follow=True, tail=None, since=None, until=None, streams=streams, running=True,
            history=req.flag("logs"), queue=queue)

        tty = slot.c.tty

        async def body() -> AsyncIterator[bytes]:
            async for record in records:
                yield record.data if tty else record.frame()

        stdin = slot.stdin if req.flag("stdin") else None
        on_input = (lambda reader: _stdio.collect(reader, stdin)) if stdin is not None else None
        return Stream(body(), content_type=RAW if tty or not req.wants_upgrade else MUX, hijack=True,
                      upgrade=req.wants_upgrade, cleanup=_unsubscribe(slot.logs.followers, queue),
                      on_input=on_input)

    async def _resize(self, req: Request, cid: str) -> None:
        slot = self.engine.resolve(cid)
        rows, cols = _int_q(req, "h"), _int_q(req, "w")
        slot.size = (rows or slot.size[0], cols or slot.size[1])
        if slot.spawned is not None and slot.spawned.console >= 0:
            _stdio.resize(slot.spawned.console, slot.spawned.pid, *slot.size)

    # -- exec ----------------------------------------------------------------------------------

    async def exec_create(self, req: Request, args: dict[str, str]) -> Response:
        return Response(201, {"Id": self.engine.exec.create(args["id"], req.json(default=None))})

    async def exec_start(self, req: Request, args: dict[str, str]) -> Response | Stream:
        body = req.json(default={}) or {}
        if not isinstance(body, dict):
            raise InvalidParameter("invalid JSON: exec start config must be an object")
        manager = self.engine.exec
        inst = manager.get(args["id"])
        if inst.started:
            raise Conflict(f"Exec {inst.id} has already started")
        slot = self.engine.resolve(inst.container_id)
        if slot.c.state.status != "running":
            raise Conflict(f"Container {slot.c.id} is not running")
        if body.get("Detach"):
            manager.start_detached(inst.id)
            return Response(200, None)
        chunks = manager.start(inst.id)
        tty = inst.tty

        async def frames() -> AsyncIterator[bytes]:
            async for stream, data in chunks:
                yield data if tty else _frame(stream, data)

        on_input = (lambda reader: _stdio.collect(reader, inst.stdin)) if inst.attach_stdin else None
        return Stream(frames(), content_type=MUX if req.wants_upgrade and not tty else RAW, hijack=True,
                      upgrade=req.wants_upgrade, on_input=on_input)

    async def exec_inspect(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, self.engine.exec.inspect(args["id"]))

    # -- events and images ---------------------------------------------------------------------

    async def events(self, req: Request, args: dict[str, str]) -> Stream:
        since, until = parse_time_ns(req.q("since")), parse_time_ns(req.q("until"))
        flt = EventFilter(parse_filters(req.q("filters")))
        events = self.engine.events.stream(since, until, flt)

        async def body() -> AsyncIterator[bytes]:
            async for event in events:
                yield json.dumps(event).encode() + b"\n"

        return Stream(body())


def _error(status: int, message: str) -> Response:
    if status == 304:
        return Response(304)
    return Response(status, {"message": message})


def _int_q(req: Request, name: str) -> int:
    raw = req.q(name) or "0"
    value = ascii_int(raw)
    if value is None:
        raise InvalidParameter(f"invalid {name}: {raw!r}")
    return value


def _timeout(req: Request) -> float | None:
    raw = req.q("t") or req.q("timeout")
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid value for t: {raw!r}") from exc
    return None if value < 0 else value


async def _noop(_: Any) -> None:
    return None


def _unsubscribe(followers: set[Any], queue: Any) -> Callable[[], None]:
    return lambda: followers.discard(queue)
