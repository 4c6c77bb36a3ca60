"""Config entries: the replicated table, decoding with Consul's key rules, and per-kind validation.

Entries are stored in Consul's JSON shape (PascalCase keys, ``Kind``, ``Name``, ``CreateIndex``,
``ModifyIndex``) in ``store.extra["config"]`` keyed ``"<kind>/<name>"``. Commands, all
``(MessageType.CONFIG_ENTRY, {"op": ..., ...})``:

* ``set``    ``{"entry": {...}, "cas": N | None}``: write (``cas`` 0 = create only, N = only if the
  entry's ModifyIndex is N); the result is ``True``/``False``.
* ``delete`` ``{"kind", "name", "cas": N | None}``: the result is whether it was deleted.

The proposer decodes and validates each entry alone (:func:`decode`, :func:`validate`); apply checks
what depends on the other entries, as Consul's state store does: a service with a router or splitter
must speak an HTTP-family protocol (``service-defaults`` ``Protocol``, else the ``proxy-defaults``
``Config.protocol``, else ``tcp``).
"""

from __future__ import annotations

import re
from typing import Any

from beacon.errors import Failed, Invalid
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

TABLE = "config"
KINDS = ("service-defaults", "proxy-defaults", "service-router", "service-splitter", "service-resolver",
         "ingress-gateway", "terminating-gateway", "service-intentions")
CHAIN_KINDS = ("service-router", "service-splitter", "service-resolver")
HTTP_PROTOCOLS = ("http", "http2", "grpc")
PROXY_DEFAULTS_NAME = "global"

# Consul decodes config entries case-insensitively with snake_case aliases; these are the field names
# it writes back. A key not listed is kept as sent (Beacon does not reject unknown fields).
_FIELDS = """Kind Name Namespace Partition Meta Protocol Mode TransparentProxy OutboundListenerPort
DialedDirectly MutualTLSMode MeshGateway Expose Checks Paths Path LocalPathPort ListenerPort ExternalSNI
UpstreamConfig Overrides Defaults Limits MaxConnections MaxPendingRequests MaxConcurrentRequests
PassiveHealthCheck Interval MaxFailures EnforcingConsecutive5xx MaxEjectionPercent BaseEjectionTime
ConnectTimeoutMs BalanceOutboundConnections Destination Addresses Port MaxInboundConnections
LocalConnectTimeoutMs LocalRequestTimeoutMs BalanceInboundConnections RateLimits InstanceLevel
RequestsPerSecond RequestsMaxBurst Routes EnvoyExtensions Required Arguments ConsulVersion EnvoyVersion
Config AccessLogs Enabled DisableListenerLogs Type JSONFormat TextFormat FailoverPolicy Regions
PrioritizeByLocality Match HTTP PathExact PathPrefix PathRegex Header QueryParam Methods Present Exact
Prefix Suffix Contains Regex IgnoreCase Invert Service ServiceSubset Datacenter Peer PrefixRewrite
RequestTimeout IdleTimeout NumRetries RetryOnConnectFailure RetryOnStatusCodes RetryOn RequestHeaders
ResponseHeaders Add Set Remove Splits Weight DefaultSubset Subsets Filter OnlyPassing Redirect Failover
Targets Datacenters ConnectTimeout LoadBalancer Policy RingHashConfig MinimumRingSize MaximumRingSize
LeastRequestConfig ChoiceCount HashPolicies Field FieldValue CookieConfig Session TTL Terminal SourceIP
TLS SDS ClusterName CertResource TLSMinVersion TLSMaxVersion CipherSuites Listeners Services Hosts
Gateway CAFile CertFile KeyFile SNI AllowHostnames Sources Action Permissions Precedence Description
LegacyID LegacyMeta LegacyCreateTime LegacyUpdateTime JWT Providers VerifyClaims SamenessGroup
HTTPHeaderName Methods""".split()
_CANON = {name.lower(): name for name in _FIELDS}
# Fields whose keys are user data (kept as sent) or user-named maps of structured values.
_OPAQUE = {"Meta", "Config", "LegacyMeta", "Add", "Set", "Arguments"}
_NAMED_MAPS = {"Subsets", "Failover"}
_SUBSET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def rows(store: StateStore) -> dict[str, dict[str, Any]]:
    return store.extra.setdefault(TABLE, {})


def _canon_key(key: str) -> str:
    return _CANON.get(key.replace("_", "").replace("-", "").lower(), key)


def canonical(value: Any) -> Any:
    """Keys to Consul's spelling, recursively, leaving user maps alone."""
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        name = _canon_key(key)
        if name in _OPAQUE:
            out[name] = v
        elif name in _NAMED_MAPS and isinstance(v, dict):
            out[name] = {k: canonical(x) for k, x in v.items()}
        else:
            out[name] = canonical(v)
    return out


def decode(body: Any) -> dict[str, Any]:
    """A request body -> a canonical entry. Raises Invalid with Consul's messages."""
    if not isinstance(body, dict):
        raise Invalid("Request decode failed: body must be a JSON object")
    entry = canonical(body)
    kind = entry.get("Kind")
    if not kind or not isinstance(kind, str):
        raise Invalid("Request decode failed: Payload does not contain a kind/Kind key at the top level")
    if kind.lower() not in KINDS:
        raise Invalid(f"Request decode failed: invalid config entry kind: {kind}")
    entry["Kind"] = kind.lower()
    if entry["Kind"] in ("service-defaults", "proxy-defaults"):
        # Consul always writes these (non-pointer structs) back, empty or not.
        for key in ("TransparentProxy", "MeshGateway", "Expose"):
            entry.setdefault(key, {})
    entry.pop("CreateIndex", None)
    entry.pop("ModifyIndex", None)
    return entry


# ---------------------------------------------------------------------- per-kind validation
def _str(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key) or ""
    if not isinstance(value, str):
        raise Invalid(f"{key} must be a string")
    return value


def _validate_meta(entry: dict[str, Any]) -> None:
    meta = entry.get("Meta") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise Invalid("Meta must be a map of strings")
    if len(meta) > 64:
        raise Invalid(f"Meta exceeds maximum element count 64 ({len(meta)})")


def _validate_protocol(entry: dict[str, Any]) -> None:
    proto = entry.get("Protocol")
    if proto is not None and not isinstance(proto, str):
        raise Invalid("Protocol must be a string")


def _validate_splitter(entry: dict[str, Any]) -> None:
    splits = entry.get("Splits") or []
    if not isinstance(splits, list) or not splits:
        raise Invalid("no splits configured")
    seen = set()
    total = 0
    for split in splits:
        if not isinstance(split, dict):
            raise Invalid("Splits must be a list of objects")
        weight = split.get("Weight", 0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise Invalid("Weight must be a number")
        key = (split.get("Service") or entry["Name"], split.get("ServiceSubset") or "",
               split.get("Namespace") or "", split.get("Partition") or "")
        if key in seen:
            raise Invalid("split destination occurs more than once: service=\"{}\", subset=\"{}\", "
                               "namespace=\"{}\", partition=\"{}\"".format(*key))
        seen.add(key)
        total += round(weight * 100)
    if total != 10000:
        raise Invalid(f"the sum of all split weights must be 100, not {total / 100:f}")


def _validate_resolver(entry: dict[str, Any]) -> None:
    subsets = entry.get("Subsets") or {}
    if not isinstance(subsets, dict):
        raise Invalid("Subsets must be a map")
    for name, subset in subsets.items():
        if not name:
            raise Invalid("Subset defined with empty name")
        if not _SUBSET_NAME.match(name):
            raise Invalid(f"Subset \"{name}\" is invalid: must be a valid DNS label")
        if not isinstance(subset, dict):
            raise Invalid(f"Subset \"{name}\" must be an object")
        flt = subset.get("Filter") or ""
        if flt:
            from beacon.agent.http.bexpr import FilterError, compile_filter
            try:
                compile_filter(flt)
            except FilterError as exc:
                raise Invalid(f"Filter for subset \"{name}\" is not a valid expression: {exc}") from None
    default = entry.get("DefaultSubset") or ""
    if default and default not in subsets:
        raise Invalid(f"DefaultSubset \"{default}\" is not a valid subset")
    redirect = entry.get("Redirect")
    failover = entry.get("Failover") or {}
    if redirect:
        if failover:
            raise Invalid("Redirect and Failover cannot both be set")
        if not isinstance(redirect, dict) or not any(redirect.get(k) for k in (
                "Service", "ServiceSubset", "Namespace", "Partition", "Datacenter", "Peer")):
            raise Invalid("Redirect is empty")
        if not redirect.get("Service") and redirect.get("ServiceSubset"):
            raise Invalid("Redirect.ServiceSubset defined without Redirect.Service")
        sub = redirect.get("ServiceSubset") or ""
        if sub and redirect.get("Service") == entry["Name"] and sub not in subsets:
            raise Invalid(f"Redirect.ServiceSubset \"{sub}\" is not a valid subset of \"{entry['Name']}\"")
    if not isinstance(failover, dict):
        raise Invalid("Failover must be a map")
    for subset, f in failover.items():
        prefix = f"Bad Failover[\"{subset}\"]: "
        if subset != "*" and subset not in subsets:
            raise Invalid(prefix + "not a valid subset subset")
        if not isinstance(f, dict) or not any(f.get(k) for k in (
                "Service", "ServiceSubset", "Namespace", "Targets", "Datacenters")):
            raise Invalid(prefix + "one of Service, ServiceSubset, Namespace, Targets, or Datacenters "
                                        "is required")
        fsub = f.get("ServiceSubset") or ""
        if fsub and (not f.get("Service") or f.get("Service") == entry["Name"]) and fsub not in subsets:
            raise Invalid(f"{prefix}ServiceSubset \"{fsub}\" is not a valid subset of "
                               f"\"{f.get('Service') or ''}\"")
        if f.get("Datacenters") and f.get("Targets"):
            raise Invalid(f"Bad Failover[\"{subset}\"]: Targets cannot be set with Datacenters")
        for dc in f.get("Datacenters") or []:
            if not dc:
                raise Invalid(f"Bad Failover[\"{subset}\"].Datacenters: found empty datacenter")


def _validate_router(entry: dict[str, Any]) -> None:
    routes = entry.get("Routes") or []
    if not isinstance(routes, list):
        raise Invalid("Routes must be a list")
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            raise Invalid(f"Route[{i}] must be an object")
        http = (route.get("Match") or {}).get("HTTP") or {}
        paths = [k for k in ("PathExact", "PathPrefix", "PathRegex") if http.get(k)]
        if len(paths) > 1:
            raise Invalid(f"Route[{i}] should only contain at most one of PathExact, PathPrefix, or "
                               f"PathRegex")
        if http.get("PathExact") and not http["PathExact"].startswith("/"):
            raise Invalid(f"Route[{i}] PathExact doesn't start with '/': \"{http['PathExact']}\"")
        if http.get("PathPrefix") and not http["PathPrefix"].startswith("/"):
            raise Invalid(f"Route[{i}] PathPrefix doesn't start with '/': \"{http['PathPrefix']}\"")


def _validate_gateway(entry: dict[str, Any]) -> None:
    if entry["Kind"] == "ingress-gateway":
        seen = set()
        for listener in entry.get("Listeners") or []:
            port = listener.get("Port")
            if port in seen:
                raise Invalid(f"port {port} declared on two listeners")
            seen.add(port)
            proto = listener.get("Protocol") or "tcp"
            if proto not in ("tcp", "http", "http2", "grpc"):
                raise Invalid(f"protocol must be 'tcp', 'http', 'http2', or 'grpc'. '{proto}' is an "
                                   f"unsupported protocol")
            if proto == "tcp" and len(listener.get("Services") or []) > 1:
                raise Invalid(f"multiple services per listener are only supported for L7 protocols, "
                                   f"'http', 'grpc' and 'http2'; listener on port {port} uses 'tcp'")
    else:
        for svc in entry.get("Services") or []:
            if not (svc or {}).get("Name"):
                raise Invalid("Service name cannot be blank.")


def _validate_intentions(entry: dict[str, Any]) -> None:
    """Consul's checks, then its normalization: each source gets ``Type`` (``consul``) and the
    ``Precedence`` it is evaluated with (beacon.server.intentions)."""
    from beacon.server import intentions

    intentions.check_name(entry["Name"], "Name")
    sources = entry.get("Sources") or []
    if not isinstance(sources, list):
        raise Invalid("Sources must be a list")
    seen: set[tuple[str, str, str]] = set()
    for i, src in enumerate(sources):
        if not isinstance(src, dict) or not src.get("Name"):
            raise Invalid(f"Sources[{i}].Name is required")
        if not isinstance(src["Name"], str):
            raise Invalid(f"Sources[{i}].Name must be a string")
        intentions.check_name(src["Name"], f"Sources[{i}].Name")
        who = (src["Name"], str(src.get("Peer") or ""), str(src.get("SamenessGroup") or ""))
        if who in seen:
            raise Invalid(f"Sources[{i}] defines \"{src['Name']}\" more than once")
        seen.add(who)
        if (src.get("Type") or "consul") != "consul":
            raise Invalid(f"Sources[{i}].Type must be set to 'consul'")
        action = src.get("Action") or ""
        if src.get("Permissions"):
            if not isinstance(src["Permissions"], list):
                raise Invalid(f"Sources[{i}].Permissions must be a list")
            if action:
                raise Invalid(f"Sources[{i}].Action must be omitted if Permissions are specified")
        elif action not in ("allow", "deny"):
            raise Invalid(f"Sources[{i}].Action must be set to 'allow' or 'deny'")
        src["Type"] = "consul"
        src["Precedence"] = intentions.precedence(src["Name"], entry["Name"])


def validate(entry: dict[str, Any]) -> None:
    kind = entry["Kind"]
    name = _str(entry, "Name")
    if not name:
        raise Invalid("Name is required")
    _validate_meta(entry)
    if kind == "proxy-defaults" and name != PROXY_DEFAULTS_NAME:
        raise Invalid(f"invalid name (\"{name}\"), only \"{PROXY_DEFAULTS_NAME}\" is supported")
    if kind == "service-defaults":
        _validate_protocol(entry)
    elif kind == "service-splitter":
        _validate_splitter(entry)
    elif kind == "service-resolver":
        _validate_resolver(entry)
    elif kind == "service-router":
        _validate_router(entry)
    elif kind in ("ingress-gateway", "terminating-gateway"):
        _validate_gateway(entry)
    elif kind == "service-intentions":
        _validate_intentions(entry)


# ---------------------------------------------------------------------- reads shared with the chain
def get(store: StateStore, kind: str, name: str) -> dict[str, Any] | None:
    return rows(store).get(f"{kind}/{name}")


def protocol_of(table: dict[str, dict[str, Any]], service: str) -> str:
    defaults = table.get(f"service-defaults/{service}")
    if defaults and defaults.get("Protocol"):
        return str(defaults["Protocol"]).lower()
    proxy = table.get(f"proxy-defaults/{PROXY_DEFAULTS_NAME}")
    if proxy:
        cfg = proxy.get("Config") or {}
        proto = cfg.get("protocol") or cfg.get("Protocol")
        if proto:
            return str(proto).lower()
    return "tcp"


def check_graph(table: dict[str, dict[str, Any]]) -> None:
    """Routers and splitters need an HTTP-family protocol on their service (Consul's rule)."""
    for _key, entry in sorted(table.items()):
        if entry["Kind"] in ("service-router", "service-splitter"):
            proto = protocol_of(table, entry["Name"])
            if proto not in HTTP_PROTOCOLS:
                raise Failed(f"discovery chain \"{entry['Name']}\" uses a protocol \"{proto}\" that does "
                                   f"not permit advanced routing or splitting behavior")


# ---------------------------------------------------------------------- commands
class ConfigCommands:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def handlers(self) -> dict[type[Any], Any]:
        return {
            cmd.ConfigSet: lambda idx, c: self.set(idx, dict(c.entry), c.cas),
            cmd.ConfigDelete: lambda idx, c: self.delete(idx, c.kind, c.name, c.cas),
        }

    def set(self, idx: int, entry: dict[str, Any], cas: int | None) -> bool:
        table = rows(self.store)
        key = f"{entry['Kind']}/{entry['Name']}"
        old = table.get(key)
        if cas is not None and (old["ModifyIndex"] if old else 0) != cas:
            return False
        content = {k: v for k, v in entry.items() if k not in ("CreateIndex", "ModifyIndex")}
        if old is not None and {k: v for k, v in old.items() if k not in ("CreateIndex", "ModifyIndex")} == content:
            return True  # unchanged: keep the ModifyIndex, wake nobody
        check_graph({**table, key: entry})
        entry["CreateIndex"] = old["CreateIndex"] if old else idx
        entry["ModifyIndex"] = idx
        table[key] = entry
        self._bump(idx, entry["Kind"], entry["Name"])
        return True

    def delete(self, idx: int, kind: str, name: str, cas: int | None) -> bool:
        table = rows(self.store)
        key = f"{kind}/{name}"
        old = table.get(key)
        if cas is not None and (old is None or old["ModifyIndex"] != cas):
            return False
        if old is None:
            return True
        rest = {k: v for k, v in table.items() if k != key}
        check_graph(rest)
        del table[key]
        self._bump(idx, kind, name)
        return True

    def _bump(self, idx: int, kind: str, name: str) -> None:
        self.store.bump_table(TABLE, idx)
        self.store.touch(f"config:{kind}", f"config:{kind}/{name}")


def install(store: StateStore) -> None:
    store.register_handlers(ConfigCommands(store).handlers())
