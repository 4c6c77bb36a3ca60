"""Gossip.start from agent settings: LAN on every agent, WAN on servers, joins, leave, and -dev without
serf. Real serf processes."""

from __future__ import annotations

import json
import os

import pytest

from beacon.config import AgentConfig
from beacon.gossip import SerfClient, SerfConnectionError, SerfError, SerfNotFound
from beacon.gossip.pools import Gossip, GossipSettings
from beacon.gossip.supervisor import free_port
from tests.gossip.conftest import needs_serf, new_key, next_addr, wait_for

pytestmark = needs_serf


def settings(name: str, tmp: str, **kw: object) -> GossipSettings:
    addr = next_addr()
    base: dict[str, object] = dict(node_name=name, node_id=f"id-{name}", data_dir=os.path.join(tmp, name),
                                   bind_addr=addr, lan_port=free_port(addr, udp=True),
                                   wan_port=free_port(addr, udp=True), retry_interval=0.5)
    base.update(kw)
    return GossipSettings(**base)  # type: ignore[arg-type]


async def test_client_retry_joins_a_server_found_by_tags_and_leaves(tmp_path) -> None:
    key = new_key()
    server_s = settings("s1", str(tmp_path), server=True, bootstrap_expect=1, encrypt=key)
    # The client starts first: its retry-join fails until the server is up, then succeeds by itself.
    client = await Gossip.start(settings("c1", str(tmp_path), encrypt=key,
                                         retry_join=[f"{server_s.bind_addr}:{server_s.lan_port}"]))
    server = None
    try:
        assert client is not None and client.wan is None
        server = await Gossip.start(server_s)
        assert server is not None and server.wan is not None

        async def client_sees_server() -> list:
            return await client.lan.servers()

        found = await wait_for(client_sees_server, 30, what="the client finds the server from gossip tags")
        assert [(s.name, s.node_id, s.rpc_addr, s.expect) for s in found] == [
            ("s1", "id-s1", f"{server_s.bind_addr}:8300", 1)]
        wan = await server.wan.consul_members()
        assert [(m["Name"], m["Tags"]["role"], m["Tags"]["dc"]) for m in wan] == [("s1.dc1", "consul", "dc1")]
        assert "segment" not in wan[0]["Tags"]
        with pytest.raises(SerfError, match="no WAN pool"):
            await client.join(["127.0.0.1:1"], wan=True)
        await client.stop(leave=True)

        async def client_left() -> bool:
            m = await server.lan.member("c1")
            return m is not None and m.status == "left"

        await wait_for(client_left, 30, what="the server sees the client left")
    finally:
        for g in (client, server):
            if g is not None:
                await g.stop()


async def test_a_failed_join_at_start_fails_start_and_leaves_nothing_running(tmp_path) -> None:
    dead = next_addr()
    s = settings("j1", str(tmp_path), join=[f"{dead}:{free_port(dead, udp=True)}"])
    with pytest.raises(SerfError, match="join"):
        await Gossip.start(s)
    # The child did start (its config is there), and is gone: its RPC port no longer answers.
    with open(os.path.join(s.data_dir, "serf", "lan.json")) as f:
        conf = json.load(f)
    assert conf["node_name"] == "j1"
    host, port = conf["rpc_addr"].rsplit(":", 1)
    with pytest.raises(SerfConnectionError, match="cannot connect"):
        await SerfClient.connect(host, int(port), conf["rpc_auth"], timeout=2)


async def test_dev_without_serf_runs_alone_and_others_fail_with_the_package_name(tmp_path) -> None:
    missing = str(tmp_path / "no-serf")
    assert await Gossip.start(settings("d1", str(tmp_path), dev=True, serf_bin=missing)) is None
    with pytest.raises(SerfNotFound, match="`serf`"):
        await Gossip.start(settings("d2", str(tmp_path), serf_bin=missing))


def test_settings_from_agent_config(tmp_path) -> None:
    cfg = AgentConfig(node_name="a1", datacenter="dc7", server=True, bootstrap_expect=3, bind_addr="127.0.0.9",
                      serf_lan_port=18301, server_port=18300, data_dir=str(tmp_path), encrypt=new_key(),
                      retry_join=["127.0.0.10"], reconnect_timeout=60.0)
    s = GossipSettings.from_agent_config(cfg, "nid", retry_interval=1.0)
    assert (s.node_name, s.node_id, s.datacenter, s.server, s.bootstrap_expect, s.lan_port, s.server_port) == (
        "a1", "nid", "dc7", True, 3, 18301, 18300)
    assert (s.wan_port, s.retry_join, s.retry_interval, s.encrypt) == (8302, ["127.0.0.10"], 1.0, cfg.encrypt)
