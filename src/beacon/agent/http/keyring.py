"""/v1/operator/keyring: list, install, use and remove gossip encryption keys, as Consul's.

GET answers one entry per pool (WAN first on servers, then LAN): ``{"WAN", "Datacenter", "Segment",
"Keys": {key: nodes holding it}, "NumNodes", "Messages"}``. POST installs a key on every member, PUT
makes it the primary (the one used to encrypt), DELETE removes it; each answers an empty 200, or 500
with the members' messages when some refused (e.g. removing the key in use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, query_options, read_json
from beacon.agent.http.gossip_common import gossip_failed, pools
from beacon.gossip import KeyringError, SerfError
from beacon.gossip.supervisor import validate_gossip_key

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


def _relay_factor(req: web.Request) -> None:
    raw = req.query.get("relay-factor", "")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, f"Error parsing relay factor: {raw}") from None
        if not 0 <= value <= 5:
            raise HTTPError(400, "Relay factor must be in range: [0, 5]")
    # Serf 0.8's RPC has no relay factor: answers come back directly (relay 0), which is Consul's default.


async def _key(req: web.Request) -> str:
    body = await read_json(req)
    if not isinstance(body, dict):
        raise HTTPError(400, "Request decode failed: expected a JSON object with a Key")
    key = next((v for k, v in body.items() if k.lower() == "key"), None)
    if not isinstance(key, str) or not key:
        raise HTTPError(400, "Missing Key")
    try:
        validate_gossip_key(key)
    except ValueError as exc:
        raise HTTPError(400, f"Invalid key: {exc}") from None
    return key


def _failure(exc: KeyringError) -> HTTPError:
    messages = "; ".join(f"{node}: {msg}" for node, msg in sorted(exc.response.get("Messages", {}).items()))
    return HTTPError(500, f"{exc}" + (f" ({messages})" if messages else ""))


@router.get("/v1/operator/keyring")
async def keyring_list(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    _relay_factor(req)
    out: list[dict[str, Any]] = []
    for pool in pools(agent):
        try:
            out.append(await pool.keyring_list())
        except KeyringError as exc:
            out.append(exc.response)  # partial answers are still answers, as Consul lists them
        except SerfError as exc:
            raise gossip_failed(exc) from None
    return Reply(out)


async def _change(req: web.Request, agent: Agent, op: str) -> Reply:
    query_options(req, agent)
    _relay_factor(req)
    key = await _key(req)
    for pool in pools(agent):
        try:
            await getattr(pool, f"keyring_{op}")(key)
        except KeyringError as exc:
            raise _failure(exc) from None
        except SerfError as exc:
            raise gossip_failed(exc) from None
    return Reply(empty=True)


async def keyring_install(req: web.Request, agent: Agent) -> Reply:
    return await _change(req, agent, "install")


@router.put("/v1/operator/keyring")
async def keyring_use(req: web.Request, agent: Agent) -> Reply:
    return await _change(req, agent, "use")


@router.delete("/v1/operator/keyring")
async def keyring_remove(req: web.Request, agent: Agent) -> Reply:
    return await _change(req, agent, "remove")


# POST installs while PUT switches the primary: registered explicitly, since the router would otherwise
# send POST to the PUT handler.
router.add("POST", "/v1/operator/keyring", keyring_install)
