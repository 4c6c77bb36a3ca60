"""/v1/operator/usage: how much the catalog holds, as Consul reports it for licensing and capacity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from beacon.agent.http.core import Reply, Router, query_options
from beacon.server.consensus import NoLeaderError

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()

# Service kinds Consul counts apart from typical services (Connect proxies and gateways).
CONNECT_KINDS = ("api-gateway", "connect-native", "connect-proxy", "ingress-gateway", "mesh-gateway",
                 "terminating-gateway")


@router.get("/v1/operator/usage")
async def operator_usage(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    if not opts.stale and not agent.consensus.known_leader():
        raise NoLeaderError()
    store = agent.store
    with store.lock:
        index = store.index
        names = set()
        instances = 0
        billable = 0
        connect = dict.fromkeys(CONNECT_KINDS, 0)
        for svc in store.services.values():
            names.add(svc.service)
            instances += 1
            if svc.kind in connect:
                connect[svc.kind] += 1
            elif svc.service != "consul":  # Consul's own service is never billed
                billable += 1
        nodes = len(store.nodes)
    usage = {"Services": len(names), "ServiceInstances": instances, "ConnectServiceInstances": connect,
             "BillableServiceInstances": billable, "Nodes": nodes}
    return Reply({"Usage": {agent.config.datacenter: usage}}, index=index)
