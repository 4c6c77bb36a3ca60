"""Config entry writes (Consul's ConfigEntry.Apply and ConfigEntry.Delete)."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit, apply
from beacon.errors import Failed, Invalid
from beacon.server import commands as cmd
from beacon.server import config_entries as ce
from beacon.server.discovery_chain import ChainError, compile_chain
from beacon.server.fsm import StateStore


async def set_entry(submit: Submit, store: StateStore, datacenter: str, entry: dict[str, Any],
                    cas: int | None = None) -> bool:
    """Write ``entry`` (decoded); with ``cas``, only if its ModifyIndex still matches."""
    try:
        ce.validate(entry)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # A value of the wrong JSON type somewhere inside (a string where an object belongs).
        raise Invalid(f"Request decode failed: {exc}") from None
    check_compiles(store, datacenter, entry)
    return bool(await apply(submit, cmd.ConfigSet(entry=entry, cas=cas)))


async def delete(submit: Submit, store: StateStore, datacenter: str, kind: str, name: str,
                 cas: int | None = None) -> bool:
    check_compiles(store, datacenter, {"Kind": kind, "Name": name}, delete=True)
    return bool(await apply(submit, cmd.ConfigDelete(kind=kind, name=name, cas=cas)))


def check_compiles(store: StateStore, datacenter: str, entry: dict[str, Any], delete: bool = False) -> None:
    """Compile the chains the entry takes part in, as Consul does before accepting a write (or a
    delete): a shape the per-kind checks let through (a list where an object belongs) is Invalid
    here, never a broken chain later; a redirect loop or a protocol mismatch is refused with
    Consul's message."""
    key = f"{entry['Kind']}/{entry['Name']}"
    with store.lock:
        table = dict(ce.rows(store))
    if delete:
        table.pop(key, None)
    else:
        table[key] = entry
    names = {entry["Name"]} if entry["Kind"] != "proxy-defaults" else set()
    for other in table.values():
        if other["Kind"] in ce.CHAIN_KINDS:
            names.add(other["Name"])
    for name in sorted(names):
        try:
            compile_chain(table, name, datacenter)
        except ChainError as exc:
            raise Failed(str(exc)) from None
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise Invalid(f"Request decode failed: {entry['Kind']} \"{entry['Name']}\" is malformed: "
                          f"{exc}") from None
