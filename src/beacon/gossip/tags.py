"""Gossip tags as Consul sets them, and the server metadata read back from them.

Consul tells members apart by tags, not by pools: ``role=consul`` marks a server (with its server RPC
``port``, ``expect``, ``bootstrap``, ``raft_vsn``), ``role=node`` a client; every member carries
``dc``, ``id`` (node ID), ``vsn``/``vsn_min``/``vsn_max`` (Consul protocol), ``build`` and, on the LAN,
``segment``. Clients find servers from these tags (Consul's ``metadata.IsConsulServer``), so they need
no static server list once they joined any member.
"""

from __future__ import annotations

from dataclasses import dataclass

from beacon import __version__

PROTOCOL_VERSION = "2"
PROTOCOL_MIN = "2"
PROTOCOL_MAX = "3"
RAFT_VERSION = "3"


def consul_tags(*, server: bool, datacenter: str, node_id: str, server_port: int = 8300, wan: bool = False,
                bootstrap_expect: int = 0, bootstrap: bool = False, build: str = "",
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags Consul's agent gives its Serf member (LAN unless `wan`; WAN members are servers)."""
    tags = {"role": "consul" if server else "node", "dc": datacenter, "id": node_id, "vsn": PROTOCOL_VERSION,
            "vsn_min": PROTOCOL_MIN, "vsn_max": PROTOCOL_MAX, "build": build or f"{__version__}:beacon"}
    if not wan:
        tags["segment"] = ""
    if server:
        tags["port"] = str(server_port)
        tags["raft_vsn"] = RAFT_VERSION
        if bootstrap:
            tags["bootstrap"] = "1"
        if bootstrap_expect:
            tags["expect"] = str(bootstrap_expect)
    if extra:
        tags.update(extra)
    return tags


def wan_member_name(node: str, datacenter: str) -> str:
    """WAN pool members are named ``<node>.<dc>`` so one name space holds every datacenter."""
    return f"{node}.{datacenter}"


def split_wan_name(name: str) -> tuple[str, str]:
    node, _, dc = name.rpartition(".")
    return (node, dc) if node else (name, "")


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A server as gossip describes it (Consul's metadata.Server, the parts Beacon uses)."""

    name: str
    node_id: str
    datacenter: str
    addr: str
    port: int             # server RPC port
    expect: int
    bootstrap: bool
    build: str
    status: str

    @property
    def rpc_addr(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


def server_info(name: str, addr: str, tags: dict[str, str], status: str) -> ServerInfo | None:
    """The server a member's tags describe, or None for a client or a member with bad tags."""
    if tags.get("role") != "consul":
        return None
    try:
        port = int(tags.get("port", ""))
        expect = int(tags.get("expect", "0") or 0)
    except ValueError:
        return None
    return ServerInfo(name=name, node_id=tags.get("id", ""), datacenter=tags.get("dc", ""), addr=addr, port=port,
                      expect=expect, bootstrap=tags.get("bootstrap") == "1", build=tags.get("build", ""),
                      status=status)
