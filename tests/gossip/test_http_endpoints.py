"""/v1/operator/keyring and /v1/coordinate/* served by a real (in-process, -dev) agent whose gossip pools
are real Serf members."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from beacon.agent.agent import Agent
from beacon.agent.http import coordinate, keyring
from beacon.agent.http.core import AGENT_KEY, error_middleware
from beacon.config import AgentConfig
from beacon.gossip import Membership, SerfConfig, UserEvent, consul_tags, wan_member_name
from beacon.gossip.supervisor import free_port
from tests.gossip.conftest import Pool, needs_serf, new_key, next_addr, wait_for

pytestmark = needs_serf


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        async with self.session.request(method, self.base + path, data=data) as resp:
            raw = await resp.read()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode()
            return resp.status, dict(resp.headers), parsed


@contextlib.asynccontextmanager
async def serve(lan: Membership | None, wan: Membership | None = None) -> AsyncIterator[Api]:
    # The agent's own Serf is not started (no binary at that path: -dev then runs alone); the test's
    # pools stand in for it.
    agent = Agent(AgentConfig(dev=True, node_name="n1", http_port=-1, dns_port=-1, ui=False,
                              serf_bin="/nonexistent/serf"))
    await agent.start()
    agent.cluster.lan, agent.cluster.wan = lan, wan
    app = web.Application(middlewares=[error_middleware])
    app[AGENT_KEY] = agent
    keyring.router.install(app)
    coordinate.router.install(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{port}", session)
    finally:
        await runner.cleanup()
        agent.cluster.lan = agent.cluster.wan = None  # the test stops its own pools
        await agent.stop()


@pytest.fixture
async def three(pool: Pool) -> Pool:
    for _ in range(3):
        await pool.add()
    await pool.converge()
    return pool


async def test_keyring_rotation_over_http(three: Pool) -> None:
    old, new = three.key, new_key()
    async with serve(three.members[0]) as api:
        status, _, body = await api.call("GET", "/v1/operator/keyring")
        assert status == 200
        assert body == [{"WAN": False, "Datacenter": "dc1", "Segment": "", "Messages": {}, "Keys": {old: 3},
                         "NumNodes": 3}]
        assert (await api.call("POST", "/v1/operator/keyring", {"Key": new}))[0] == 200
        assert (await api.call("PUT", "/v1/operator/keyring", {"Key": new}))[0] == 200
        status, _, text = await api.call("DELETE", "/v1/operator/keyring", {"Key": new})
        assert status == 500 and "nodes reported failure" in text   # the primary cannot be removed
        assert (await api.call("DELETE", "/v1/operator/keyring", {"Key": old}))[0] == 200
        _, _, body = await api.call("GET", "/v1/operator/keyring")
        assert body[0]["Keys"] == {new: 3}
        # bad input is a 400 with the reason, and changes nothing
        for bad, why in (({"Key": "bm90LWEta2V5"}, "16, 24 or 32"), ({}, "Missing Key"), (b"[", "decode"),
                         ({"Key": "%%%"}, "base64")):
            status, _, text = await api.call("POST", "/v1/operator/keyring", bad)
            assert status == 400 and why in text, (bad, status, text)
        status, _, text = await api.call("GET", "/v1/operator/keyring?relay-factor=9")
        assert status == 400 and "[0, 5]" in text
        assert (await api.call("GET", "/v1/operator/keyring"))[2][0]["Keys"] == {new: 3}


async def test_coordinate_endpoints_answer_consul_shapes(three: Pool) -> None:
    async with serve(three.members[0]) as api:
        async def all_three() -> Any:
            status, headers, body = await api.call("GET", "/v1/coordinate/nodes")
            assert status == 200 and int(headers["X-Consul-Index"]) >= 1
            return body if len(body) == 3 else None

        nodes = await wait_for(all_three, 30, what="coordinates for all three members")
        assert [n["Node"] for n in nodes] == ["n1", "n2", "n3"]
        for n in nodes:
            assert set(n) == {"Node", "Segment", "Coord"}
            assert set(n["Coord"]) == {"Vec", "Error", "Adjustment", "Height"} and len(n["Coord"]["Vec"]) == 8
        status, _, one = await api.call("GET", "/v1/coordinate/node/n2")
        assert status == 200 and [n["Node"] for n in one] == ["n2"]  # the value moves as Vivaldi converges
        assert one[0]["Coord"].keys() == nodes[1]["Coord"].keys()
        assert (await api.call("GET", "/v1/coordinate/node/nope"))[0] == 404
        status, _, filtered = await api.call("GET", '/v1/coordinate/nodes?filter=Node%20%3D%3D%20%22n3%22')
        assert status == 200 and [n["Node"] for n in filtered] == ["n3"]
        status, _, text = await api.call("GET", "/v1/coordinate/nodes?dc=dc9")
        assert status == 500 and text == "No path to datacenter"
        status, _, dcs = await api.call("GET", "/v1/coordinate/datacenters")
        assert (status, dcs) == (200, [])  # no WAN pool on this agent


@pytest.mark.slow
async def test_wan_pool_lists_datacenters_nearest_first(pool: Pool) -> None:
    wan: list[Membership] = []
    try:
        for dc in ("dc1", "dc2", "dc3"):
            addr = next_addr()
            cfg = SerfConfig(node_name=wan_member_name("s1", dc), data_dir=f"{pool.tmp}/wan-{dc}", bind_addr=addr,
                             port=free_port(addr, udp=True), pool="wan", encrypt=pool.key,
                             tags=consul_tags(server=True, datacenter=dc, node_id=f"id-{dc}", wan=True))
            m = await Membership.start_pool(cfg, datacenter=dc)
            wan.append(m)
            if len(wan) > 1:
                await m.join([f"{wan[0].serf.config.bind_addr}:{wan[0].serf.config.port}"])
        lan = await pool.add("s1")

        async def coords_for_all() -> bool:
            return len(await wan[0].coordinates()) == 3

        await wait_for(coords_for_all, 60, what="WAN coordinates for the three servers")
        dcs = await wan[0].datacenters()
        assert dcs[0] == "dc1" and sorted(dcs) == ["dc1", "dc2", "dc3"]
        async with serve(lan, wan[0]) as api:
            status, _, body = await api.call("GET", "/v1/coordinate/datacenters")
            assert status == 200
            assert [(d["Datacenter"], d["AreaID"], [c["Node"] for c in d["Coordinates"]]) for d in body] == [
                ("dc1", "wan", ["s1.dc1"]), ("dc2", "wan", ["s1.dc2"]), ("dc3", "wan", ["s1.dc3"])]
            _, _, keys = await api.call("GET", "/v1/operator/keyring")
            assert [(k["WAN"], k["NumNodes"]) for k in keys] == [(True, 3), (False, 1)]
            # One rotation through the API covers both pools, and the WAN still gossips afterwards.
            new = new_key()
            for method, key in (("POST", new), ("PUT", new), ("DELETE", pool.key)):
                status, _, text = await api.call(method, "/v1/operator/keyring", {"Key": key})
                assert status == 200, (method, text)
            _, _, keys = await api.call("GET", "/v1/operator/keyring")
            assert [(k["WAN"], k["Keys"]) for k in keys] == [(True, {new: 3}), (False, {new: 1})]
            sub = wan[0].subscribe()
            await wan[2].fire("after-wan-rotation")
            while True:
                ev = await sub.get(30)
                if isinstance(ev, UserEvent) and ev.name == "after-wan-rotation":
                    break
        servers = await wan[1].servers()
        assert sorted((s.datacenter, s.name, s.port) for s in servers) == [
            ("dc1", "s1.dc1", 8300), ("dc2", "s1.dc2", 8300), ("dc3", "s1.dc3", 8300)]
    finally:
        for m in wan:
            await m.stop()


async def test_without_gossip_the_endpoints_say_what_is_missing() -> None:
    async with serve(None) as api:
        status, _, text = await api.call("GET", "/v1/operator/keyring")
        assert status == 500 and "`serf`" in text
        assert (await api.call("GET", "/v1/coordinate/nodes"))[0] == 500
