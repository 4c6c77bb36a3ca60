"""/v1/status/* and /v1/operator/raft/*."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from beacon.agent.http.core import Reply, Router, query_options
from beacon.server.consensus import NoLeaderError

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


@router.get("/v1/status/leader")
async def status_leader(req: web.Request, agent: Agent) -> Reply:
    return Reply(agent.consensus.leader_address() if agent.consensus.known_leader() else "")


@router.get("/v1/status/peers")
async def status_peers(req: web.Request, agent: Agent) -> Reply:
    return Reply(agent.consensus.peers())


@router.get("/v1/operator/raft/configuration")
async def raft_configuration(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    if not opts.stale and not agent.consensus.known_leader():
        raise NoLeaderError()
    return Reply({"Servers": agent.consensus.configuration(), "Index": agent.store.index})
