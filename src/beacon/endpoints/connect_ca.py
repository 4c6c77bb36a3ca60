"""The Connect CA's one write: install the datacenter's first root (Consul's leader initializes its
CA at startup; Beacon's first server asked for a root or a leaf does it, and the log keeps the
first root proposed)."""

from __future__ import annotations

from beacon.endpoints import Submit, apply
from beacon.server import commands as cmd
from beacon.server import connect_ca
from beacon.server.discovery_chain import trust_domain
from beacon.server.fsm import StateStore


async def ensure_root(submit: Submit, store: StateStore, datacenter: str) -> None:
    with store.lock:
        if connect_ca.active_root(store) is not None:
            return
    root, key = connect_ca.new_root(datacenter)
    await apply(submit, cmd.CAInit(root=root, key=key, trust_domain=trust_domain(datacenter)))
