"""Networks as ``docker network`` shows them: the built-in ``bridge``, ``host`` and ``none``, and
user-defined bridge networks (``<data_dir>/networks.json``).

A user network shares the engine's one bridge (same subnet and gateway); what it adds is name
resolution: a container on it gets ``/etc/hosts`` entries for the other running containers of that
network (names and aliases, as of its start), which is what docker-compose services rely on.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beacon.runtime._bridge import GATEWAY, SUBNET
from beacon.runtime._errors import Conflict, InvalidParameter, NotFound

if TYPE_CHECKING:
    from beacon.runtime._engine import Engine

BUILTIN = ("bridge", "host", "none")


class Networks:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.user: dict[str, dict[str, Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.user = {}
        self.builtin = {name: {"Name": name, "Id": secrets.token_hex(32), "Driver": "null" if name == "none" else name,
                               "Labels": {}, "Created": _now(), "builtin": True} for name in BUILTIN}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.user))
        tmp.replace(self.path)

    def all(self) -> list[dict[str, Any]]:
        return [*self.builtin.values(), *self.user.values()]

    def get(self, ref: str) -> dict[str, Any]:
        for net in self.all():
            if ref in (net["Name"], net["Id"]) or (len(ref) >= 6 and net["Id"].startswith(ref)):
                return net
        raise NotFound(f"network {ref} not found")

    def create(self, name: str, driver: str, labels: dict[str, str]) -> dict[str, Any]:
        if driver not in ("bridge", ""):
            raise InvalidParameter(f"plugin \"{driver}\" not found (beacon networks are bridges)")
        if any(n["Name"] == name for n in self.all()):
            raise Conflict(f"network with name {name} already exists")
        net = {"Name": name, "Id": secrets.token_hex(32), "Driver": "bridge", "Labels": dict(labels),
               "Created": _now()}
        self.user[name] = net
        self._save()
        return net

    def remove(self, net: dict[str, Any], users: list[str]) -> None:
        if net.get("builtin"):
            raise InvalidParameter(f"{net['Name']} is a pre-defined network and cannot be removed")
        if users:
            raise Conflict(f"error while removing network: network {net['Name']} id {net['Id']} has active "
                           f"endpoints ({', '.join(users)})")
        self.user.pop(net["Name"], None)
        self._save()

    def view(self, net: dict[str, Any], engine: Engine) -> dict[str, Any]:
        bridged = net["Driver"] == "bridge"
        containers = {}
        for c in engine.containers():
            if c.state.status == "running" and c.network_mode == net["Name"]:
                containers[c.id] = {"Name": c.name, "EndpointID": "", "MacAddress": "",
                                    "IPv4Address": c.address, "IPv6Address": ""}
        return {"Name": net["Name"], "Id": net["Id"], "Created": net["Created"], "Scope": "local",
                "Driver": net["Driver"], "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None,
                         "Config": [{"Subnet": str(SUBNET), "Gateway": GATEWAY}] if bridged else []},
                "Internal": False, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
                "ConfigOnly": False, "Containers": containers, "Options": {}, "Labels": net.get("Labels") or {}}

    def lookup(self, engine: Engine, src: str, name: str) -> list[str] | None:
        """The engine's DNS for containers: names and aliases on the asker's user network."""
        asker = next((c for c in engine.containers() if c.address.partition("/")[0] == src), None)
        if asker is None or asker.network_mode in BUILTIN:
            return None
        short = name.removesuffix("." + asker.network_mode)
        found = [c.address.partition("/")[0] for c in engine.containers()
                 if c.network_mode == asker.network_mode and c.state.status == "running" and c.address
                 and short in (c.name, c.id[:12], *c.aliases)]
        return found or None

    def peers(self, engine: Engine, network: str, exclude: str) -> list[tuple[str, list[str]]]:
        """(address, names) of the running containers on a user network, for /etc/hosts."""
        if network in BUILTIN:
            return []
        out = []
        for c in engine.containers():
            if c.id != exclude and c.network_mode == network and c.state.status == "running" and c.address:
                out.append((c.address.partition("/")[0], [c.name, *c.aliases, c.id[:12]]))
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
