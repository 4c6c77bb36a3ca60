"""/v1/agent/*: the agent's own view (no Raft index headers)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import sys
from typing import TYPE_CHECKING

from aiohttp import web

from beacon import CONSUL_COMPAT_VERSION, __version__
from beacon.agent import hostinfo
from beacon.agent.http.core import (
    HTTPError,
    Reply,
    Router,
    apply_filter,
    parse_bool,
    query_options,
    read_json,
)
from beacon.agent.http.decode import Fields, decode_service
from beacon.agent.http.encode import agent_service_json, check_json
from beacon.model import SERVICE_MAINT_PREFIX, aggregate_status

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


def _unknown_service(sid: str) -> HTTPError:
    return HTTPError(404, f'Unknown service ID "{sid}". Ensure that the service ID is passed, not the service name.')


def _unknown_check(cid: str) -> HTTPError:
    return HTTPError(404, f'Unknown check ID "{cid}". Ensure that the check ID is passed, not the check name.')


@router.get("/v1/agent/self")
async def agent_self(req: web.Request, agent: Agent) -> Reply:
    cfg = agent.config
    consensus = agent.consensus
    members = agent.members()
    status_counts = {1: 0, 3: 0, 4: 0}
    for m in members:
        status_counts[m.get("Status", 1)] = status_counts.get(m.get("Status", 1), 0) + 1
    # Keys and string values as Consul's: clients read Stats.consul.leader_addr, Config.NodeName, ...
    stats = {
        "agent": {"checks": str(len(agent.local.live_checks())), "services": str(len(agent.local.live_services())),
                  "check_monitors": "0", "check_ttls": "0"},
        "build": {"prerelease": "", "revision": "beacon", "version": CONSUL_COMPAT_VERSION,
                  "version_metadata": f"beacon-{__version__}"},
        "consul": {"acl": "enabled" if agent.acl is not None else "disabled", "bootstrap": str(cfg.bootstrap_expect == 1).lower(),
                   "known_datacenters": "1", "leader": str(consensus.is_leader()).lower(),
                   "leader_addr": consensus.leader_address() if consensus.known_leader() else "",
                   "server": str(cfg.server).lower()},
        "raft": {"applied_index": str(agent.store.index), "commit_index": str(agent.store.index),
                 "last_log_index": str(agent.store.index), "last_contact": f"{consensus.last_contact_ms()}ms",
                 "num_peers": str(max(0, len(consensus.peers()) - 1)), "protocol_version": "3",
                 "state": "Leader" if consensus.is_leader() else "Follower"} if cfg.server else {},
        "runtime": {"arch": platform.machine(), "cpu_count": str(os.cpu_count() or 1), "os": sys.platform,
                    "version": f"python{platform.python_version()}"},
        "serf_lan": {"members": str(len(members)), "failed": str(status_counts.get(4, 0)),
                     "left": str(status_counts.get(3, 0)), "health_score": "0"},
    }
    return Reply({
        "Config": {"Datacenter": cfg.datacenter, "PrimaryDatacenter": cfg.datacenter,
                   "NodeName": cfg.node_name, "NodeID": agent.node_id, "Revision": "beacon",
                   "Server": cfg.server, "Version": CONSUL_COMPAT_VERSION, "BuildDate": "",
                   "BeaconVersion": __version__},
        "DebugConfig": {"Datacenter": cfg.datacenter, "NodeName": cfg.node_name, "NodeID": agent.node_id,
                        "Domain": cfg.domain, "ClientAddrs": [cfg.client_addr], "BindAddr": cfg.bind_addr,
                        "AdvertiseAddrLAN": cfg.advertise, "DataDir": cfg.data_dir, "DevMode": cfg.dev,
                        "ServerMode": cfg.server, "BootstrapExpect": cfg.bootstrap_expect,
                        "EnableScriptChecks": cfg.enable_script_checks,
                        "EnableLocalScriptChecks": cfg.enable_local_script_checks,
                        "HTTPPort": agent.http_port or cfg.http_port, "DNSPort": agent.dns_port or cfg.dns_port,
                        "HTTPMaxConnsPerClient": cfg.http_max_conns_per_client,
                        "KVMaxValueSize": cfg.kv_max_value_size, "ACLsEnabled": False},
        "Coord": None,
        "Member": next((m for m in members if m["Name"] == cfg.node_name), members[0]),
        # No service mesh here: no proxies are supported and no xDS port is open.
        "xDS": {"SupportedProxies": {"envoy": []}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}},
        "Stats": stats,
        "Meta": dict(cfg.node_meta),
    })


@router.get("/v1/agent/version")
async def agent_version(req: web.Request, agent: Agent) -> Reply:
    """Consul's build information; HumanVersion is the Consul API version Beacon answers as."""
    return Reply({"SHA": "", "BuildDate": "", "HumanVersion": CONSUL_COMPAT_VERSION, "FIPS": "",
                  "BeaconVersion": __version__})


@router.get("/v1/agent/host")
async def agent_host(req: web.Request, agent: Agent) -> Reply:
    """Memory, CPUs, host identity and root disk, with gopsutil's keys (operator:read with ACLs)."""
    return Reply(await asyncio.to_thread(hostinfo.collect))


@router.get("/v1/agent/members")
async def agent_members(req: web.Request, agent: Agent) -> Reply:
    if "segment" in req.query and "wan" in req.query:
        raise HTTPError(400, "Cannot provide a segment with wan=true")
    if _truthy(req.query.get("wan")):
        return Reply(await agent.wan_members())
    return Reply(await agent.live_members())


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() not in ("0", "false")


@router.get("/v1/agent/services")
async def agent_services(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    dc = agent.config.datacenter
    items = {sid: agent_service_json(s, dc) for sid, s in sorted(agent.local.live_services().items())}
    if opts.filter is not None:
        items = {k: v for k, v in items.items() if opts.filter(v)}
    return Reply(items)


@router.get("/v1/agent/service/{id:.+}")
async def agent_service(req: web.Request, agent: Agent) -> Reply:
    sid = req.match_info["id"]
    svc = agent.local.live_services().get(sid)
    if svc is None:
        raise HTTPError(404, f"unknown service ID: {sid}")
    body = agent_service_json(svc, agent.config.datacenter)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    body["ContentHash"] = digest
    return Reply(body, headers={"X-Consul-ContentHash": digest})


@router.put("/v1/agent/service/register")
async def service_register(req: web.Request, agent: Agent) -> Reply:
    body = await read_json(req)
    svc, checks = decode_service(body)
    replace = False
    if "replace-existing-checks" in req.query:
        replace = parse_bool(req.query["replace-existing-checks"], "replace-existing-checks")
    await agent.services.register_service(svc, checks, source="api", replace_existing_checks=replace)
    return Reply(empty=True)


@router.put("/v1/agent/service/deregister/{id:.+}")
async def service_deregister(req: web.Request, agent: Agent) -> Reply:
    sid = req.match_info["id"]
    try:
        await agent.services.deregister_service(sid)
    except KeyError:
        raise _unknown_service(sid) from None
    return Reply(empty=True)


@router.put("/v1/agent/service/maintenance/{id:.+}")
async def service_maintenance(req: web.Request, agent: Agent) -> Reply:
    sid = req.match_info["id"]
    if "enable" not in req.query:
        raise HTTPError(400, "Missing value for enable")
    enable = parse_bool(req.query["enable"], "enable")
    try:
        await agent.services.set_service_maintenance(sid, enable, req.query.get("reason", ""))
    except KeyError:
        raise HTTPError(404, f'Unknown service ID "{sid}"') from None
    return Reply(empty=True)


@router.put("/v1/agent/maintenance")
async def node_maintenance(req: web.Request, agent: Agent) -> Reply:
    if "enable" not in req.query:
        raise HTTPError(400, "Missing value for enable")
    enable = parse_bool(req.query["enable"], "enable")
    await agent.services.set_node_maintenance(enable, req.query.get("reason", ""))
    return Reply(empty=True)


@router.get("/v1/agent/checks")
async def agent_checks(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    items = {cid: check_json(c) for cid, c in sorted(agent.local.live_checks().items())}
    if opts.filter is not None:
        items = {k: v for k, v in items.items() if opts.filter(v)}
    return Reply(items)


@router.put("/v1/agent/check/register")
async def check_register(req: web.Request, agent: Agent) -> Reply:
    body = await read_json(req)
    f = Fields(body)
    if not f.str("Name"):
        raise HTTPError(400, "Missing check name")
    await agent.services.register_check(body, source="api")
    return Reply(empty=True)


@router.put("/v1/agent/check/deregister/{id:.+}")
async def check_deregister(req: web.Request, agent: Agent) -> Reply:
    cid = req.match_info["id"]
    try:
        await agent.services.deregister_check(cid)
    except KeyError:
        raise _unknown_check(cid) from None
    return Reply(empty=True)


async def _ttl(req: web.Request, agent: Agent, status: str, output: str) -> Reply:
    cid = req.match_info["id"]
    try:
        await agent.services.ttl_update(cid, status, output)
    except KeyError:
        raise _unknown_check(cid) from None
    except TypeError:
        raise HTTPError(500, f'CheckID "{cid}" does not have associated TTL') from None
    return Reply(empty=True)


for _verb, _status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
    async def _handler(req: web.Request, agent: Agent, status: str = _status) -> Reply:
        return await _ttl(req, agent, status, req.query.get("note", ""))
    router.add("PUT", f"/v1/agent/check/{_verb}/{{id:.+}}", _handler)
    router.add("GET", f"/v1/agent/check/{_verb}/{{id:.+}}", _handler)


@router.put("/v1/agent/check/update/{id:.+}")
async def check_update(req: web.Request, agent: Agent) -> Reply:
    f = Fields(await read_json(req))
    status = f.str("Status")
    if status not in ("passing", "warning", "critical"):
        raise HTTPError(400, f"Invalid check status: '{status}'")
    return await _ttl(req, agent, status, f.str("Output"))


def _local_health(agent: Agent, sid: str) -> tuple[str, list[dict]]:
    checks = [c for c in agent.local.live_checks().values() if c.service_id == sid or not c.service_id]
    status = aggregate_status(checks)
    if any(c.check_id.startswith(SERVICE_MAINT_PREFIX) for c in checks if c.service_id == sid):
        status = "critical"
    return status, [check_json(c) for c in checks]


_CODES = {"passing": 200, "warning": 429, "critical": 503, "maintenance": 503}


def _health_reply(req: web.Request, status: str, body: object) -> Reply:
    text = req.query.get("format") == "text" or req.headers.get("Accept", "").startswith("text/plain")
    if text:
        return Reply(status, status=_CODES[status], raw=True, content_type="text/plain")
    return Reply(body, status=_CODES[status])


@router.get("/v1/agent/health/service/id/{id:.+}")
async def health_by_id(req: web.Request, agent: Agent) -> Reply:
    sid = req.match_info["id"]
    svc = agent.local.live_services().get(sid)
    if svc is None:
        raise HTTPError(404, f"ServiceId {sid} not found")
    status, checks = _local_health(agent, sid)
    return _health_reply(req, status, {"AggregatedStatus": status,
                                       "Service": agent_service_json(svc, agent.config.datacenter),
                                       "Checks": checks})


@router.get("/v1/agent/health/service/name/{name:.+}")
async def health_by_name(req: web.Request, agent: Agent) -> Reply:
    name = req.match_info["name"]
    out = []
    worst = "passing"
    for sid, svc in sorted(agent.local.live_services().items()):
        if svc.service != name:
            continue
        status, checks = _local_health(agent, sid)
        if _CODES[status] > _CODES[worst] or (status == "warning" and worst == "passing"):
            worst = status
        out.append({"AggregatedStatus": status, "Service": agent_service_json(svc, agent.config.datacenter),
                    "Checks": checks})
    if not out:
        raise HTTPError(404, f"ServiceName {name} Not Found")
    return _health_reply(req, worst, out)


@router.put("/v1/agent/join/{address:.+}")
async def agent_join(req: web.Request, agent: Agent) -> Reply:
    await agent.join(req.match_info["address"], wan=_truthy(req.query.get("wan")))
    return Reply(empty=True)


@router.put("/v1/agent/leave")
async def agent_leave(req: web.Request, agent: Agent) -> Reply:
    agent.request_leave()
    return Reply(empty=True)


@router.put("/v1/agent/force-leave/{node:.+}")
async def agent_force_leave(req: web.Request, agent: Agent) -> Reply:
    await agent.force_leave(req.match_info["node"], prune="prune" in req.query)
    return Reply(empty=True)


@router.put("/v1/agent/reload")
async def agent_reload(req: web.Request, agent: Agent) -> Reply:
    await agent.reload()
    return Reply(empty=True)


__all__ = ["router", "apply_filter"]
