"""Intention writes by source and destination (Consul's ``Intention.Apply`` on config entries): each
is a read-modify-write of the destination's ``service-intentions`` entry with a check-and-set on its
ModifyIndex, retried when another write got in between."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit
from beacon.endpoints import config as config_endpoint
from beacon.errors import Failed
from beacon.server import config_entries as ce
from beacon.server import intentions as ix
from beacon.server.fsm import StateStore

ATTEMPTS = 8


def _current(store: StateStore, destination: str) -> tuple[dict[str, Any] | None, int]:
    with store.lock:
        entry = ce.get(store, ix.KIND, destination)
        return (dict(entry), entry["ModifyIndex"]) if entry is not None else (None, 0)


async def upsert(submit: Submit, store: StateStore, datacenter: str, source: str, destination: str,
                 body: Any) -> bool:
    ix.check_name(source, "SourceName")
    ix.check_name(destination, "DestinationName")
    src = ix.source_from_body(body, source)
    for _ in range(ATTEMPTS):
        entry, index = _current(store, destination)
        if await config_endpoint.set_entry(submit, store, datacenter, ix.upserted(entry, destination, src), cas=index):
            return True
    raise Failed("intention upsert: the entry kept changing; try again")


async def delete(submit: Submit, store: StateStore, datacenter: str, source: str, destination: str) -> bool:
    for _ in range(ATTEMPTS):
        entry, index = _current(store, destination)
        if entry is None or ix.exact({f"{ix.KIND}/{destination}": entry}, source, destination) is None:
            return True  # Consul: deleting what is not there succeeds
        rest = ix.without(entry, source)
        if rest is None:
            done = await config_endpoint.delete(submit, store, datacenter, ix.KIND, destination, cas=index)
        else:
            done = await config_endpoint.set_entry(submit, store, datacenter, rest, cas=index)
        if done:
            return True
    raise Failed("intention delete: the entry kept changing; try again")


