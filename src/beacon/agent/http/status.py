"""/v1/status/* and /v1/operator/raft/*."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, query_options
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


@router.delete("/v1/operator/raft/peer")
async def raft_remove_peer(req: web.Request, agent: Agent) -> Reply:
    address = req.query.get("address") or req.query.get("id")
    if not address:
        raise HTTPError(400, "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
    raft = agent.raft
    if raft is None:
        raise HTTPError(500, "this agent does not run a multi-server cluster")
    if address not in raft.peers():
        raise HTTPError(500, f"address \"{address}\" was not found in the Raft configuration")
    # etcd's MemberRemove works through any member: no need to find the leader first.
    await raft.remove_server(address)
    return Reply(empty=True)
