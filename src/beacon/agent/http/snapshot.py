"""GET /v1/snapshot (save an archive of the whole state) and PUT /v1/snapshot (restore one).

A restore is a logged command (``MessageType.SNAPSHOT_RESTORE``) carrying the decoded state, so every
replica and a restart from the command log end up with the same data; every blocking query wakes.
On the etcd log the state goes into chunk keys and the log entry names them (beacon.server.etcd_restore).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, query_options
from beacon.endpoints import snapshot as snapshot_endpoint
from beacon.server.archive import ArchiveError, read_archive, write_archive
from beacon.server.consensus import NoLeaderError

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024


async def snapshot_save(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    if not opts.stale and not agent.consensus.known_leader():
        raise NoLeaderError()
    snap = agent.store.snapshot(records=True)  # milliseconds under the store's lock; encoded off the loop
    # Encoding and gzip of a large catalog take seconds: off the event loop, which keeps serving.
    data = await asyncio.to_thread(write_archive, snap)
    return Reply(data, index=snap["index"], raw=True, content_type="application/x-gzip")


async def snapshot_restore(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    chunks: list[bytes] = []
    size = 0
    async for chunk in req.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > MAX_ARCHIVE_BYTES:
            raise HTTPError(413, f"snapshot archive larger than {MAX_ARCHIVE_BYTES} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        _, snap = await asyncio.to_thread(read_archive, data)
    except ArchiveError as exc:
        raise HTTPError(400, f"Invalid snapshot: {exc}") from None
    await snapshot_endpoint.restore(agent.submit, snap, time.time())
    return Reply(empty=True)


router.add("GET", "/v1/snapshot", snapshot_save)
router.add("PUT", "/v1/snapshot", snapshot_restore)
