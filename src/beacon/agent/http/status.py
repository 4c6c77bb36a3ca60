"""/v1/status/*, /v1/operator/raft/* and /v1/operator/autopilot/*."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, query_options, read_json
from beacon.durations import format_duration
from beacon.endpoints import operator as operator_endpoint
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


@router.put("/v1/operator/raft/transfer-leader")  # and POST, which Consul uses
async def raft_transfer_leader(req: web.Request, agent: Agent) -> Reply:
    """Hand leadership to the server named by ``?id=`` (its address or node name), or to any other.
    A server that is not the leader passes the request to the one that is, as Consul forwards it."""
    raft = agent.raft
    if raft is None:
        raise HTTPError(500, "cannot transfer leadership: this agent does not run a multi-server cluster")
    wanted = req.query.get("id", "")
    target = ""
    if wanted:
        for server in raft.configuration():
            if wanted in (server.get("ID"), server.get("Address"), server.get("Node")):
                target = server["Address"]
        if not target:
            raise HTTPError(400, f"cannot find server {wanted!r} in the Raft configuration")
    if not raft.is_leader():
        if req.headers.get(FORWARDED):
            raise NoLeaderError("not the leader (leadership moved while the request was forwarded)")
        return await _to_leader(req, agent)
    try:
        await raft.transfer_leadership(target)
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None
    return Reply({"Success": True})


FORWARDED = "X-Beacon-Forwarded"


async def _to_leader(req: web.Request, agent: Agent) -> Reply:
    import aiohttp

    last = "no server answered"
    for target in agent.server_http_targets():
        try:
            async with agent.forward_session.post(f"http://{target}{req.rel_url}", headers={FORWARDED: "1"}) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = f"{target}: {exc or type(exc).__name__}"
            continue
        if resp.status == 200:
            return Reply(body, raw=True)
        last = body.decode(errors="replace").strip()
        if resp.status == 400:
            raise HTTPError(400, last)
    raise NoLeaderError(f"could not reach the leader: {last}")


# ---------------------------------------------------------------------- autopilot
# The configuration is replicated (beacon.server.autopilot); Beacon's autopilot acts on
# CleanupDeadServers and MinQuorum (the leader's reconciler, beacon.agent.reconcile). The health
# endpoints report what gossip and etcd say about each server.

@router.get("/v1/operator/autopilot/configuration")
async def autopilot_configuration(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    await agent.consistent_read(opts.stale, opts.consistent)
    if not opts.stale and not agent.consensus.known_leader():
        raise NoLeaderError()
    config = agent.autopilot_config()
    # Beacon's own field: how long a failed server stays before autopilot removes it.
    config["DeadServerReconnectTimeout"] = format_duration(agent.config.reconnect_timeout)
    return Reply(config)


@router.put("/v1/operator/autopilot/configuration")
async def autopilot_set_configuration(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    cas = None
    if "cas" in req.query:
        try:
            cas = int(req.query["cas"])
            if cas < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, f"Error parsing cas value: {req.query['cas']!r}") from None
    body = await read_json(req)
    return Reply(await operator_endpoint.set_autopilot(agent.submit, body, cas))


async def _health(agent: Agent) -> list[dict]:
    rec = agent.cluster.reconciler if agent.cluster is not None else None
    if rec is None:
        return []
    await agent.cluster.refresh()  # Serf's view now, not the last poll's
    return rec.server_health()


@router.get("/v1/operator/autopilot/health")
async def autopilot_health(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    servers = await _health(agent)
    healthy = sum(1 for s in servers if s["Healthy"])
    quorum = len(servers) // 2 + 1
    body = {"Healthy": bool(servers) and healthy == len(servers), "FailureTolerance": max(0, healthy - quorum),
            "Servers": servers}
    return Reply(body, status=200 if body["Healthy"] else 429)


@router.get("/v1/operator/autopilot/state")
async def autopilot_state(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    servers = await _health(agent)
    healthy = sum(1 for s in servers if s["Healthy"])
    quorum = len(servers) // 2 + 1
    leader = next((s["ID"] for s in servers if s["Leader"]), "")
    return Reply({"Healthy": bool(servers) and healthy == len(servers), "FailureTolerance": max(0, healthy - quorum),
                  "OptimisticFailureTolerance": max(0, healthy - quorum), "Leader": leader,
                  "Voters": [s["ID"] for s in servers],
                  "Servers": {s["ID"]: {**s, "Status": "leader" if s["Leader"] else "voter",
                                        "Health": {"Healthy": s["Healthy"], "SerfStatus": s["SerfStatus"]}}
                              for s in servers}})
