"""GET /v1/agent/monitor?loglevel=info&logjson: stream the agent's log lines until the client leaves.

The stream starts with the lines still in the agent's buffer (at the requested level), then follows
new ones. A slow reader loses lines rather than slowing the agent, and is told how many.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from beacon import logs

_MONITORS: web.AppKey[set[logs.Subscription]] = web.AppKey("monitors", set)
_ALLOW = "GET, OPTIONS"
_BATCH = 256
_IDLE_CHECK = 2.0


async def agent_monitor(req: web.Request) -> web.StreamResponse:
    if req.method == "OPTIONS":
        return web.Response(status=200, headers={"Allow": _ALLOW})
    if req.method not in ("GET", "HEAD"):
        return web.Response(status=405, text=f"method {req.method} not allowed", headers={"Allow": _ALLOW})
    level = req.query.get("loglevel", "info") or "info"
    try:
        levelno = logs.parse_level(level)
    except ValueError:
        return web.Response(status=400, text=f"Unknown log level: {level}", content_type="text/plain")
    render = logs.format_json if "logjson" in req.query else logs.format_text
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache",
               "X-Content-Type-Options": "nosniff"}
    if req.method == "HEAD":
        return web.Response(status=200, headers=headers)
    logs.ensure_broadcasting()
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(req)
    sub = logs.BROADCASTER.subscribe(levelno)
    monitors = req.app[_MONITORS]
    monitors.add(sub)
    reported = 0
    try:
        while True:
            try:
                line = await asyncio.wait_for(sub.get(), _IDLE_CHECK)
            except TimeoutError:
                # aiohttp does not cancel a handler whose client left: look, so that a quiet stream
                # does not keep its subscription (and a lowered log level) forever.
                if req.transport is None or req.transport.is_closing():
                    break
                continue
            batch = [line]
            while line is not None and len(batch) < _BATCH and not sub.queue.empty():
                line = sub.queue.get_nowait()
                batch.append(line)
            out = []
            if sub.dropped > reported:
                note = logs.Line(logging.WARNING, time.time(), "agent.monitor",
                                 f"Monitor dropped {sub.dropped - reported} logs during monitor request")
                reported = sub.dropped
                out.append(render(note))
            ended = False
            for item in batch:
                if item is None:
                    ended = True
                    break
                out.append(render(item))
            if out:
                await resp.write(("\n".join(out) + "\n").encode())
            if ended:
                break
    except ConnectionError:
        pass  # the client hung up between two lines: the normal end of a monitor
    finally:
        monitors.discard(sub)
        sub.close()
    if req.transport is not None and not req.transport.is_closing():
        await resp.write_eof()
    return resp


async def _end_streams(app: web.Application) -> None:
    for sub in list(app[_MONITORS]):
        sub.end()


def install(app: web.Application) -> None:
    app[_MONITORS] = set()
    app.router.add_route("*", "/v1/agent/monitor", agent_monitor)
    app.on_shutdown.append(_end_streams)
