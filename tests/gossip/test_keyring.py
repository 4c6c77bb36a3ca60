"""Gossip key rotation through the facade's keyring operations, on real Serf agents."""

from __future__ import annotations

import asyncio
import json

import pytest

from beacon.gossip import KeyringError, SerfRPCError, UserEvent
from tests.gossip.conftest import Pool, needs_serf, new_key

pytestmark = needs_serf


async def _everyone_gets(pool: Pool, name: str) -> None:
    subs = [m.subscribe() for m in pool.members]
    await pool.members[-1].fire(name, b"")

    async def got(sub) -> None:
        while True:
            ev = await sub.get(30)
            if isinstance(ev, UserEvent) and ev.name == name:
                return

    await asyncio.gather(*(got(s) for s in subs))
    for s in subs:
        s.close()


async def test_key_rotation_leaves_every_member_able_to_gossip(pool: Pool) -> None:
    for _ in range(3):
        await pool.add()
    await pool.converge()
    old, new = pool.key, new_key()
    listing = await pool.members[0].keyring_list()
    assert listing == {"WAN": False, "Datacenter": "dc1", "Segment": "", "Messages": {}, "Keys": {old: 3},
                       "NumNodes": 3}

    installed = await pool.members[1].keyring_install(new)
    assert installed["NumNodes"] == 3
    assert (await pool.members[2].keyring_list())["Keys"] == {old: 3, new: 3}
    await pool.members[1].keyring_use(new)
    with pytest.raises(KeyringError) as info:  # Serf refuses to remove the key in use
        await pool.members[0].keyring_remove(new)
    assert info.value.response["NumNodes"] == 3
    await pool.members[0].keyring_remove(old)
    assert (await pool.members[0].keyring_list())["Keys"] == {new: 3}

    # Every member still gossips: an event from one reaches all.
    await _everyone_gets(pool, "after-rotation")
    # The keyring files followed (a restart keeps the new key), and the old key no longer gets in.
    for m in pool.members:
        with open(m.serf.keyring_path) as f:
            assert json.load(f) == [new]
    outsider = await pool.add("old-key", join=False, key=old)
    first = pool.members[0].serf.config
    with pytest.raises(SerfRPCError, match="Failed to join"):
        await outsider.join([f"{first.bind_addr}:{first.port}"])
    newcomer = await pool.add("new-key", join=False, key=new)
    assert await newcomer.join([f"{first.bind_addr}:{first.port}"]) == 1
    pool.members.remove(outsider)
    await outsider.stop()
    await pool.converge()
