"""Compile a service's discovery chain from config entries, as Consul's ``discoverychain.Compile`` does.

The chain is a graph: an optional **router** (``service-router``: ordered HTTP routes, plus a
catch-all route to the service itself), then **splitters** (``service-splitter``: weighted splits;
a split to a service that has its own splitter is flattened into it, weights multiplied), ending in
**resolvers** (``service-resolver``: subsets, redirect, failover, connect timeout). Every resolver
ends at a **target** ``[<subset>.]<service>.<namespace>.<partition>.<datacenter>``.

Node names are ``router:<service>.default.default``, ``splitter:<service>.default.default`` and
``resolver:<target>``. ``StartNode`` is the router if one exists, else the splitter, else the
resolver of the service's default subset. A router or splitter needs an HTTP-family protocol
(enforced when entries are written); with ``tcp`` the chain is resolvers only.

The target ``SNI`` uses the trust domain of Beacon's built-in Connect CA (beacon.server.connect_ca),
which is derived from the datacenter name (a stable UUID), not a random CA cluster ID.
"""

from __future__ import annotations

import uuid
from typing import Any

from beacon.server.config_entries import CHAIN_KINDS, HTTP_PROTOCOLS, protocol_of

NAMESPACE = "default"
PARTITION = "default"
DEFAULT_CONNECT_TIMEOUT = "5s"


class ChainError(Exception):
    pass


def trust_domain(datacenter: str) -> str:
    return f"{uuid.uuid5(uuid.NAMESPACE_DNS, 'beacon.' + datacenter)}.consul"


def target_id(service: str, subset: str, datacenter: str) -> str:
    base = f"{service}.{NAMESPACE}.{PARTITION}.{datacenter}"
    return f"{subset}.{base}" if subset else base


class Compiler:
    def __init__(self, table: dict[str, dict[str, Any]], service: str, datacenter: str,
                 override_protocol: str = "") -> None:
        self.table = table
        self.service = service
        self.dc = datacenter
        self.nodes: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, dict[str, Any]] = {}
        self.used_entries = False
        self.override_protocol = override_protocol.lower()
        self.protocol = self.protocol_of(service)

    def protocol_of(self, service: str) -> str:
        """``OverrideProtocol`` (POST) compiles the chain as if every service in it spoke that protocol."""
        return self.override_protocol or protocol_of(self.table, service)

    def entry(self, kind: str, name: str) -> dict[str, Any] | None:
        found = self.table.get(f"{kind}/{name}")
        if found is not None:
            self.used_entries = True
        return found

    # ------------------------------------------------------------------ targets and resolvers
    def target(self, service: str, subset: str, datacenter: str) -> str:
        tid = target_id(service, subset, datacenter)
        if tid in self.targets:
            return tid
        proto = self.protocol_of(service)
        if proto != self.protocol:
            # Every service a chain can end at (routes, splits, redirects, failover) must speak the
            # chain's protocol, as in Consul's compiler.
            raise ChainError(f"discovery chain \"{self.service}\" uses inconsistent protocols; service "
                             f"\"{service}\" has \"{proto}\" which is not \"{self.protocol}\"")
        resolver = self.entry("service-resolver", service) or {}
        subset_def = (resolver.get("Subsets") or {}).get(subset, {}) if subset else {}
        sni_base = f"{service}.{NAMESPACE}.{datacenter}.internal.{trust_domain(self.dc)}"
        sni = f"{subset}.{sni_base}" if subset else sni_base
        target: dict[str, Any] = {"ID": tid, "Service": service}
        if subset:
            target["ServiceSubset"] = subset
        target.update({
            "Namespace": NAMESPACE, "Partition": PARTITION, "Datacenter": datacenter, "MeshGateway": {},
            "Subset": {k: v for k, v in subset_def.items() if k in ("Filter", "OnlyPassing") and v},
            "ConnectTimeout": resolver.get("ConnectTimeout") or DEFAULT_CONNECT_TIMEOUT,
            "SNI": sni, "Name": sni,
        })
        self.targets[tid] = target
        return tid

    def resolve(self, service: str, subset: str = "", datacenter: str = "", seen: tuple[str, ...] = ()) -> str:
        """The resolver node for a (service, subset), following redirects; returns its node name."""
        datacenter = datacenter or self.dc
        key = f"{service}/{subset}/{datacenter}"
        if key in seen:
            raise ChainError(f"detected circular resolver redirect: [{' -> '.join((*seen, key))}]")
        resolver = self.entry("service-resolver", service)
        if resolver is not None and resolver.get("Redirect"):
            r = resolver["Redirect"]
            return self.resolve(r.get("Service") or service, r.get("ServiceSubset") or "",
                                r.get("Datacenter") or datacenter, (*seen, key))
        if not subset and resolver is not None:
            subset = resolver.get("DefaultSubset") or ""
        tid = self.target(service, subset, datacenter)
        name = f"resolver:{tid}"
        if name in self.nodes:
            return name
        body: dict[str, Any] = {"ConnectTimeout": (resolver or {}).get("ConnectTimeout") or DEFAULT_CONNECT_TIMEOUT}
        if resolver is None:
            body["Default"] = True
        body["Target"] = tid
        failover = (resolver or {}).get("Failover") or {}
        rule = failover.get(subset) if subset in failover else failover.get("*")
        if rule:
            targets = []
            for item in rule.get("Targets") or []:
                targets.append(self.target(item.get("Service") or service, item.get("ServiceSubset") or "",
                                           item.get("Datacenter") or datacenter))
            dcs = rule.get("Datacenters") or []
            fsvc = rule.get("Service") or service
            fsub = rule.get("ServiceSubset") or ("" if rule.get("Service") else subset)
            for dc in dcs:
                targets.append(self.target(fsvc, fsub, dc))
            if not dcs and not rule.get("Targets"):
                targets.append(self.target(fsvc, fsub, datacenter))
            body["Failover"] = {"Targets": [t for t in dict.fromkeys(targets) if t != tid]}
        self.nodes[name] = {"Type": "resolver", "Name": tid, "Resolver": body}
        return name

    # ------------------------------------------------------------------ splitters and routers
    def split_or_resolve(self, service: str, subset: str = "") -> str:
        if not subset and self.entry("service-splitter", service) is not None:
            return self.splitter(service, ())
        return self.resolve(service, subset)

    def _flat_splits(self, service: str, weight: float, seen: tuple[str, ...]) -> list[tuple[float, dict[str, Any]]]:
        if service in seen:
            raise ChainError(f"detected circular reference: [{' -> '.join((*seen, service))}]")
        splitter = self.entry("service-splitter", service)
        assert splitter is not None
        out: list[tuple[float, dict[str, Any]]] = []
        for split in splitter.get("Splits") or []:
            dest = split.get("Service") or service
            sub = split.get("ServiceSubset") or ""
            share = weight * float(split.get("Weight", 0)) / 100
            if dest != service and not sub and self.entry("service-splitter", dest) is not None:
                out.extend(self._flat_splits(dest, share, (*seen, service)))
            else:
                out.append((share, {**split, "Service": dest}))
        return out

    def splitter(self, service: str, seen: tuple[str, ...]) -> str:
        name = f"splitter:{service}.{NAMESPACE}.{PARTITION}"
        if name in self.nodes:
            return name
        splits = []
        for share, split in self._flat_splits(service, 100.0, seen):
            nxt = self.resolve(split["Service"], split.get("ServiceSubset") or "")
            weight = round(share, 2)
            # Consul's weights are float32 and print as 90, not 90.0.
            item: dict[str, Any] = {"Weight": int(weight) if weight == int(weight) else weight, "NextNode": nxt}
            for extra in ("RequestHeaders", "ResponseHeaders"):
                if split.get(extra):
                    item[extra] = split[extra]
            splits.append(item)
        self.nodes[name] = {"Type": "splitter", "Name": f"{service}.{NAMESPACE}.{PARTITION}", "Splits": splits}
        return name

    def router(self, router: dict[str, Any]) -> str:
        name = f"router:{self.service}.{NAMESPACE}.{PARTITION}"
        routes = []
        for route in list(router.get("Routes") or []) + [
                {"Match": {"HTTP": {"PathPrefix": "/"}}, "Destination": {"Service": self.service}}]:
            dest = dict(route.get("Destination") or {})
            dest.setdefault("Service", self.service)
            if not dest["Service"]:
                dest["Service"] = self.service
            definition = {"Match": route.get("Match") or {"HTTP": {"PathPrefix": "/"}}, "Destination": dest}
            routes.append({"Definition": definition,
                           "NextNode": self.split_or_resolve(dest["Service"], dest.get("ServiceSubset") or "")})
        self.nodes[name] = {"Type": "router", "Name": f"{self.service}.{NAMESPACE}.{PARTITION}", "Routes": routes}
        return name

    def compile(self) -> dict[str, Any]:
        protocol = self.protocol
        http = protocol in HTTP_PROTOCOLS
        router = self.entry("service-router", self.service) if http else None
        if router is not None:
            start = self.router(router)
        elif http and self.entry("service-splitter", self.service) is not None:
            start = self.splitter(self.service, ())
        else:
            start = self.resolve(self.service)
        if self.table.get(f"service-defaults/{self.service}") or self.table.get("proxy-defaults/global"):
            self.used_entries = True
        return {
            "ServiceName": self.service, "Namespace": NAMESPACE, "Partition": PARTITION, "Datacenter": self.dc,
            "Default": not self.used_entries, "Protocol": protocol, "ServiceMeta": {},
            "StartNode": start, "Nodes": dict(sorted(self.nodes.items())),
            "Targets": dict(sorted(self.targets.items())),
        }


def compile_chain(table: dict[str, dict[str, Any]], service: str, datacenter: str,
                  override_protocol: str = "", override_connect_timeout: str = "") -> dict[str, Any]:
    chain = Compiler(table, service, datacenter, override_protocol).compile()
    if override_connect_timeout:
        for node in chain["Nodes"].values():
            if node["Type"] == "resolver":
                node["Resolver"]["ConnectTimeout"] = override_connect_timeout
        for target in chain["Targets"].values():
            target["ConnectTimeout"] = override_connect_timeout
    return chain


__all__ = ["CHAIN_KINDS", "ChainError", "compile_chain", "target_id", "trust_domain"]
