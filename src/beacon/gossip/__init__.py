"""Gossip membership on Serf."""

from beacon.gossip.coordinate import Coordinate, rtt, sort_by_rtt, sort_datacenters
from beacon.gossip.membership import (
    KeyringError,
    Member,
    MemberEvent,
    Membership,
    QueryEvent,
    Subscription,
    UserEvent,
)
from beacon.gossip.rpc import (
    SerfAuthError,
    SerfClient,
    SerfConnectionError,
    SerfError,
    SerfProtocolError,
    SerfRPCError,
    SerfTimeout,
)
from beacon.gossip.supervisor import LAN_PORT, WAN_PORT, SerfAgent, SerfConfig, SerfNotFound, find_serf
from beacon.gossip.tags import ServerInfo, consul_tags, server_info, wan_member_name

__all__ = [
    "LAN_PORT", "WAN_PORT", "Coordinate", "KeyringError", "Member", "MemberEvent", "Membership", "QueryEvent",
    "SerfAgent", "SerfAuthError", "SerfClient", "SerfConfig", "SerfConnectionError", "SerfError", "SerfNotFound",
    "SerfProtocolError", "SerfRPCError", "SerfTimeout", "ServerInfo", "Subscription", "UserEvent", "consul_tags",
    "find_serf", "rtt", "server_info", "sort_by_rtt", "sort_datacenters", "wan_member_name",
]
