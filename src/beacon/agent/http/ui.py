"""The web UI: static files at /ui, ``/`` redirecting there, and Consul's ``/v1/internal/ui/*`` summaries.

The UI is plain HTML, CSS and JavaScript modules shipped in ``beacon/ui/static`` (no build step).
``/ui/assets/<file>`` serves a file from there; every other ``/ui/...`` path serves ``index.html`` so
that the client-side router can handle deep links (``/ui/services/web``) and reloads.

The summaries are what Consul's own UI reads: one blocking query gives every service with its health
counts (``/v1/internal/ui/services``), every node with its services and checks
(``/v1/internal/ui/nodes``), or one node (``/v1/internal/ui/node/<name>``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import Encoded, Reply, Router, apply_filter, blocking_query, query_options
from beacon.agent.http.views import ui_node_summary, views_of

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()

STATIC_DIR = Path(str(resources.files("beacon.ui") / "static"))
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CATALOG_KEYS = ("nodes", "services", "checks")

# The UI loads nothing from elsewhere and renders data as text, never as markup.
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
          ".png": "image/png", ".ico": "image/x-icon", ".json": "application/json"}


async def root_redirect(request: web.Request) -> web.StreamResponse:
    # 302, not Consul's 301: a browser would keep a permanent redirect after the UI is turned off.
    raise web.HTTPFound("/ui/")


async def ui_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/ui/")


def _file(path: Path) -> web.FileResponse:
    resp = web.FileResponse(path, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})
    resp.content_type = _TYPES.get(path.suffix, "application/octet-stream")
    return resp


async def ui_page(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    tail = request.match_info.get("path", "")
    if tail.startswith("assets/"):
        name = tail[len("assets/"):]
        path = STATIC_DIR / name
        if not _ASSET_NAME.match(name) or not path.is_file():
            raise web.HTTPNotFound(text="asset not found")
        return _file(path)
    return _file(STATIC_DIR / "index.html")


# ---------------------------------------------------------------------------------------------- summaries

@router.get("/v1/internal/ui/services")
async def ui_services(req: web.Request, agent: Agent) -> Reply:
    """Every service with its tags, nodes, instance count and check counts (node checks included)."""
    return await _summaries(req, agent, views_of(agent).ui_services)


@router.get("/v1/internal/ui/nodes")
async def ui_nodes(req: web.Request, agent: Agent) -> Reply:
    return await _summaries(req, agent, views_of(agent).ui_nodes)


async def _summaries(req: web.Request, agent: Agent, view: Callable[[], tuple[int, Encoded]]) -> Reply:
    opts = query_options(req, agent)

    def read() -> tuple[int, Any]:
        idx, listing = view()
        return (idx, listing) if opts.filter is None else (idx, apply_filter(opts, listing.value))

    idx, body = await blocking_query(agent, opts, _CATALOG_KEYS, read)
    return Reply(body, index=idx)


@router.get("/v1/internal/ui/node/{node:.+}")
async def ui_node(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    store = agent.store
    name = req.match_info["node"]

    def read() -> tuple[int, dict[str, Any] | None]:
        with store.lock:
            idx, node, _ = store.node_services(name)
            return idx, None if node is None else ui_node_summary(store, node)

    idx, body = await blocking_query(agent, opts, ["node:" + name.lower(), "nodes"], read)
    if body is None:
        return Reply(None, status=404, index=idx, empty=True)
    return Reply(body, index=idx)


def install(app: web.Application) -> None:
    router.install(app)
    app.router.add_get("/", root_redirect)
    app.router.add_get("/ui", ui_redirect)
    app.router.add_route("*", "/ui/{path:.*}", ui_page)
