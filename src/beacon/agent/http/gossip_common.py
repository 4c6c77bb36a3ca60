"""What the gossip-backed endpoints share: finding the agent's gossip pools.

The agent exposes its pools as ``agent.gossip_lan`` (every agent) and ``agent.gossip_wan`` (servers),
both :class:`beacon.gossip.Membership`. Until the agent runs on Serf (see beacon/gossip/__init__.py),
those attributes are absent and these endpoints answer 500 with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beacon.agent.http.core import HTTPError
from beacon.gossip import Membership, SerfError

if TYPE_CHECKING:
    from beacon.agent.agent import Agent


def lan_pool(agent: Agent) -> Membership:
    pool = getattr(agent, "gossip_lan", None)
    if pool is None:
        raise HTTPError(500, "gossip is not running on this agent (it needs the Debian package `serf`)")
    return pool


def wan_pool(agent: Agent) -> Membership | None:
    return getattr(agent, "gossip_wan", None)


def pools(agent: Agent) -> list[Membership]:
    """WAN first, then LAN, the order Consul's keyring operations report them in."""
    wan = wan_pool(agent)
    return ([wan] if wan is not None else []) + [lan_pool(agent)]


def gossip_failed(exc: SerfError) -> HTTPError:
    return HTTPError(500, f"gossip: {exc}")
