"""/v1/agent/metrics (Consul's JSON, or Prometheus text) and the middleware that counts requests.

The JSON form keeps Consul's shape (``Timestamp``, ``Gauges``, ``Points``, ``Counters``,
``Samples``) with names written ``beacon.http.requests`` and labels as a map. Consul reports the last
10-second interval; Beacon reports cumulative values since start (``Count``/``Sum`` of counters and
histograms, ``Mean`` = Sum/Count). ``Min``, ``Max`` and ``Stddev`` are not tracked and are 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import MatchInfoError
from prometheus_client.exposition import choose_encoder, generate_latest

from beacon import telemetry
from beacon.agent.http.core import AGENT_KEY, Reply, encode_pretty, error_response, render
from beacon.agent.http.federation import forward_to_datacenter, wants_other_datacenter
from beacon.agent.http.readopts import peer_answer

log = logging.getLogger("beacon.agent.http")

# generate_latest() writes the classic 0.0.4 text format; newer prometheus-client versions label their
# "latest" content type 1.0.0, which older scrapers do not know.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})


def _wants_prometheus(req: web.Request) -> bool:
    if req.query.get("format") == "prometheus":
        return True
    accept = req.headers.get("Accept", "")
    return "application/openmetrics-text" in accept or "text/plain; version=0.4.0" in accept


async def agent_metrics(req: web.Request) -> web.StreamResponse:
    if req.method == "OPTIONS":
        return web.Response(status=200, headers={"Allow": "GET, OPTIONS"})
    if req.method not in ("GET", "HEAD"):
        return web.Response(status=405, text=f"method {req.method} not allowed", headers={"Allow": "GET, OPTIONS"})
    fold()
    if _wants_prometheus(req):
        accept = req.headers.get("Accept", "")
        if "application/openmetrics-text" in accept:
            encoder, content_type = choose_encoder(accept)
        else:
            encoder, content_type = generate_latest, TEXT_CONTENT_TYPE
        resp = web.Response(body=encoder(telemetry.REGISTRY))
        resp.headers["Content-Type"] = content_type
        return resp
    return render(req, Reply(metrics_json()))


# Consul streams one summary per 10-second interval of its in-memory sink.
STREAM_INTERVAL = 10.0
_STREAMS: web.AppKey[set[asyncio.Event]] = web.AppKey("metric_streams", set)


async def agent_metrics_stream(req: web.Request) -> web.StreamResponse:
    """GET /v1/agent/metrics/stream: the JSON summary, pretty-printed, now and then every interval.

    One JSON document per interval on a chunked response, as Consul's encoder writes them, until the
    client leaves or the agent shuts down."""
    if req.method == "OPTIONS":
        return web.Response(status=200, headers={"Allow": "GET, OPTIONS"})
    if req.method not in ("GET", "HEAD"):
        return web.Response(status=405, text=f"method {req.method} not allowed", headers={"Allow": "GET, OPTIONS"})
    headers = {"Content-Type": "application/json", "Cache-Control": "no-cache"}
    if req.method == "HEAD":
        return web.Response(status=200, headers=headers)
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(req)
    stop = asyncio.Event()
    streams = req.app[_STREAMS]
    streams.add(stop)
    try:
        while True:
            fold()
            await resp.write(encode_pretty(metrics_json()) + b"\n")
            try:
                await asyncio.wait_for(stop.wait(), STREAM_INTERVAL)
                break  # the agent is shutting down
            except TimeoutError:
                pass
            if req.transport is None or req.transport.is_closing():
                break
    except ConnectionError:
        pass  # the client left between two summaries
    finally:
        streams.discard(stop)
    if req.transport is not None and not req.transport.is_closing():
        await resp.write_eof()
    return resp


async def _end_streams(app: web.Application) -> None:
    for stop in list(app[_STREAMS]):
        stop.set()


def install(app: web.Application) -> None:
    app[_STREAMS] = set()
    app.router.add_route("*", "/v1/agent/metrics", agent_metrics)
    app.router.add_route("*", "/v1/agent/metrics/stream", agent_metrics_stream)
    app.on_shutdown.append(_end_streams)


def _json_name(name: str) -> str:
    return name.replace("_", ".")


def metrics_json() -> dict[str, Any]:
    """The registry in Consul's /v1/agent/metrics JSON shape."""
    gauges: list[dict[str, Any]] = []
    counters: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for family in telemetry.REGISTRY.collect():
        if family.type == "counter":
            for s in family.samples:
                if s.name.endswith("_total"):
                    counters.append(_aggregate(_json_name(family.name), s.labels, s.value, s.value))
        elif family.type == "histogram" or family.type == "summary":
            by_labels: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
            for s in family.samples:
                labels = {k: v for k, v in s.labels.items() if k not in ("le", "quantile")}
                key = tuple(sorted(labels.items()))
                if s.name.endswith("_count"):
                    by_labels.setdefault(key, {})["count"] = s.value
                elif s.name.endswith("_sum"):
                    by_labels.setdefault(key, {})["sum"] = s.value
            for key, agg in by_labels.items():
                samples.append(_aggregate(_json_name(family.name), dict(key), agg.get("count", 0.0),
                                          agg.get("sum", 0.0)))
        elif family.type in ("gauge", "untyped", "info"):
            for s in family.samples:
                gauges.append({"Name": _json_name(s.name), "Value": s.value, "Labels": dict(s.labels)})
    return {
        "Timestamp": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime()),
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": samples,
    }


def _aggregate(name: str, labels: dict[str, str], count: float, total: float) -> dict[str, Any]:
    return {"Name": name, "Count": int(count), "Rate": 0.0, "Sum": total, "Min": 0.0, "Max": 0.0,
            "Mean": total / count if count else 0.0, "Stddev": 0.0, "Labels": labels}


_labels: dict[Any, str] = {}  # route -> its pattern: the label, looked up once per route


def _endpoint(request: web.Request) -> str:
    """The route pattern that matched (bounded label values), never the raw path."""
    route = request.match_info.route
    label = _labels.get(route)
    if label is None:
        resource = route.resource
        if resource is None:  # 404/405: a new system route per request, never kept
            return "unmatched"
        label = _labels[route] = resource.canonical
    return label


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Requests are tallied here (a count, a latency sum and a bucket count per label set: a bisect and
# three additions) and folded into the Prometheus metrics when they are read, instead of taking the
# client library's locks twice per request on the hot path.
_BOUNDS = sorted(b for b in telemetry.HTTP_LATENCY._upper_bounds if b != float("inf"))
_tally: dict[tuple[str, str, int], list[Any]] = {}


def observe(method: str, endpoint: str, status: int, seconds: float) -> None:
    key = (method, endpoint, status)
    row = _tally.get(key)
    if row is None:
        row = _tally[key] = [0, 0.0, [0] * (len(_BOUNDS) + 1)]
    row[0] += 1
    row[1] += seconds
    row[2][bisect_left(_BOUNDS, seconds)] += 1


def fold() -> None:
    """Move the tallies into the Prometheus metrics (before every read of the registry)."""
    if not _tally:
        return
    rows = list(_tally.items())
    _tally.clear()
    for (method, endpoint, status), (count, total, buckets) in rows:
        telemetry.HTTP_REQUESTS.labels(method, endpoint, str(status)).inc(count)
        hist = telemetry.HTTP_LATENCY.labels(method, endpoint)
        # The child's sum and per-bucket values are what observe() itself adds to; there is no
        # public bulk observe.
        hist._sum.inc(total)
        for i, n in enumerate(buckets):
            if n:
                hist._buckets[i].inc(n)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by route pattern, method and status; time it. Installed outermost."""
    t0 = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's convention); blocking queries end this way
        raise
    finally:
        _finished(request, status, t0)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``metrics_middleware``, ``error_middleware``, ``peer_middleware`` and ?dc= federation as one
    aiohttp middleware (the agent itself serves through :func:`api_handler`, which does the same
    work without aiohttp's middleware machinery; this form stays for apps built with middlewares)."""
    return await _layer(request, None, handler, time.perf_counter())


async def _layer(request: web.Request, acl: Any, handler: Handler, t0: float) -> web.StreamResponse:
    """Counted, errors mapped, ``?peer`` answered, another datacenter's request relayed, ACLs
    enforced (when on), then the route's handler."""
    status = 500
    try:
        try:
            response = None
            if request.query_string or request.method == "PUT":  # the only requests these two answer
                response = peer_answer(request)
                if response is None and wants_other_datacenter(request):
                    response = await forward_to_datacenter(request)
            if response is None:
                response = await (handler(request) if acl is None else acl(request, handler))
        except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            response = error_response(request, exc)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's convention); blocking queries end this way
        raise
    finally:
        _finished(request, status, t0)


def api_handler(app: web.Application) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The agent's request handler: aiohttp's own ``Application._handle`` minus its middleware
    machinery, with :func:`_layer` as the one layer around every route, matched or not.

    Why not a middleware: with any middleware aiohttp adds its own ``_fix_request_current_app``
    layer, an ABC ``isinstance`` and a cached handler chain per request, and each layer is another
    coroutine for every request and a suspended frame for every parked blocking query. Served this
    way a KV GET costs about 3 µs less of the agent's CPU (bench/http_api.py); ACL enforcement is a
    function call inside the same layer instead of a second middleware.
    """
    if app.middlewares:
        raise RuntimeError("api_handler serves apps without middlewares (it is their layer)")
    router = app.router
    agent = app[AGENT_KEY]
    acl = None
    if agent.acl is not None:
        from beacon.agent.http.acl_enforce import enforcer

        acl = enforcer(agent)
    perf_counter = time.perf_counter
    expect = hdrs.EXPECT
    # (method, path) -> (match dict, route) of a matched route. The route table is fixed once the
    # agent serves, and the same few paths come again and again (a KV key, a service's health), so
    # resolving them is one dict lookup instead of aiohttp's walk up the path's prefixes and regexes.
    resolved: dict[tuple[str, str], tuple[dict[str, str], Any]] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        t0 = perf_counter()
        key = (request.method, request.rel_url.path_safe)
        hit = resolved.get(key)
        if hit is not None:
            match_info = web.UrlMappingMatchInfo(hit[0], hit[1])
        else:
            match_info = await router.resolve(request)
            if not isinstance(match_info, MatchInfoError):  # 404 and 405 are made per request
                if len(resolved) >= 8192:
                    resolved.clear()  # bounded: every distinct KV key is a distinct path
                resolved[key] = (dict(match_info), match_info.route)
        match_info.add_app(app)
        match_info.freeze()
        # What Application._handle does: the request's route (and with it request.app) is only
        # settable through this attribute.
        request._match_info = match_info
        if request.headers.get(expect):  # "Expect: 100-continue" before a body (curl, large PUTs)
            resp = await match_info.expect_handler(request)
            await request.writer.drain()
            if resp is not None:
                return resp
        return await _layer(request, acl, match_info.handler, t0)

    return handle


def serve_api(runner: web.AppRunner) -> None:
    """Make the runner's server (set up, not yet listening) answer through :func:`api_handler`."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    server.request_handler = api_handler(runner.app)


def _finished(request: web.Request, status: int, t0: float) -> None:
    seconds = time.perf_counter() - t0
    method = request.method if request.method in _METHODS else "OTHER"
    observe(method, _endpoint(request), status, seconds)
    if log.isEnabledFor(logging.DEBUG):  # never at info: this is the hot path
        log.debug("Request finished: method=%s url=%s from=%s status=%d latency=%.3fms", request.method,
                  request.path_qs, request.remote, status, seconds * 1000)
