"""Container -> services: pure functions of a ``docker inspect`` object and the registrator's options.

Registrator's model (gliderlabs/registrator, documented in docs/registrator.md):

* one service per published port (``-internal``: per exposed port, with the container's IP);
* metadata from ``SERVICE_*`` env vars and labels (a label beats an env var of the same key), the
  part after ``SERVICE_`` lower-cased, ``SERVICE_<port>_<key>`` beating ``SERVICE_<key>`` for that port;
* name, ID, tags, Meta, checks as Registrator builds them, plus what Beacon adds: every check kind
  given is registered (not just the first), a Docker ``HEALTHCHECK`` becomes a TTL check the
  registrator drives from ``health_status`` events, and ``SERVICE_PORT`` registers a container that
  publishes nothing.

Nothing here does I/O or raises on bad container input: problems are returned as readable strings
for the caller to log, and the offending value is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from beacon.durations import format_duration, parse_duration
from beacon.numbers import ascii_int

__all__ = [
    "HEALTH_CHECK_SUFFIX",
    "CheckSpec",
    "MappingOptions",
    "ServiceSpec",
    "container_ip",
    "container_services",
    "health_check_id",
    "health_status_of",
    "image_basename",
    "split_tags",
]

HEALTH_CHECK_SUFFIX = ":docker-health"
# Registrator's own IDs: <hostname>:<container name>:<port>[:udp]
OWN_ID = re.compile(r"^(.+?):([a-zA-Z0-9][a-zA-Z0-9_.-]+):[0-9]+(?::udp)?$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PORT_KEY = re.compile(r"^(\d+)_(.+)$")
RESERVED = {"name", "id", "tags", "ignore", "port"}
CHECK_KINDS = ("http", "https", "tcp", "script", "ttl", "grpc", "cmd")
CHECK_MODIFIERS = {"interval", "timeout", "initial_status", "deregister_after", "http_method", "https_method",
                   "grpc_use_tls", "tls_skip_verify", "docker_health"}
DEFAULT_INTERVAL = "10s"
FALSEY = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class MappingOptions:
    hostname: str
    host_ip: str = ""             # address used when a binding is on 0.0.0.0 / ::
    forced_ip: str = ""           # -ip
    internal: bool = False        # -internal
    explicit: bool = False        # -explicit
    tags: tuple[str, ...] = ()    # -tags, already split
    ip_from_label: str = ""       # -useIpFromLabel
    health_ttl: float = 90.0      # TTL of the Docker HEALTHCHECK check (refreshed well before it runs out)


@dataclass(frozen=True)
class CheckSpec:
    """One Consul check definition, as sorted (key, value) pairs so specs compare and hash."""

    items: tuple[tuple[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.items}

    @property
    def check_id(self) -> str:
        return str(dict(self.items).get("CheckID", ""))


@dataclass(frozen=True)
class ServiceSpec:
    id: str
    name: str
    port: int
    address: str
    container_id: str
    container_name: str
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    checks: tuple[CheckSpec, ...] = ()
    health_check: bool = False   # carries the Docker HEALTHCHECK TTL check

    def registration(self, health_status: str | None = None, owner: str = "") -> dict[str, Any]:
        meta = dict(self.meta)
        if owner:
            meta["beacon-registrator"] = owner
        body: dict[str, Any] = {"ID": self.id, "Name": self.name, "Port": self.port, "Tags": list(self.tags),
                                "Meta": meta}
        if self.address:
            body["Address"] = self.address
        checks = [c.to_json() for c in self.checks]
        if self.health_check:
            for c in checks:
                if c.get("CheckID") == health_check_id(self.id):
                    c["Status"] = health_status or "critical"
        if checks:
            body["Checks"] = checks
        return body


def health_check_id(service_id: str) -> str:
    return f"service:{service_id}{HEALTH_CHECK_SUFFIX}"


def health_consul_status(docker_status: str | None) -> str:
    """healthy -> passing; starting, unhealthy, exited or unknown -> critical (no traffic yet)."""
    return "passing" if docker_status == "healthy" else "critical"


def health_status_of(inspect: dict[str, Any]) -> str | None:
    health = (inspect.get("State") or {}).get("Health")
    return str(health.get("Status")) if isinstance(health, dict) and health.get("Status") else None


def image_basename(image: str) -> str:
    """``gliderlabs/foobar:1.2`` -> ``foobar``; a digest or tag is dropped, the registry host too."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return base.split(":", 1)[0]


def split_tags(value: str) -> list[str]:
    """Comma list where ``\\,`` keeps a literal comma; empty items are dropped (Registrator's rule)."""
    out, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] == ",":
            cur.append(",")
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return [t for t in out if t]


def _metadata(config: dict[str, Any]) -> dict[str, str]:
    """SERVICE_* from env then labels (labels win), prefix stripped and lower-cased; empty values unset."""
    found: dict[str, str] = {}
    for entry in config.get("Env") or []:
        key, sep, value = str(entry).partition("=")
        if sep and key.startswith("SERVICE_") and value:
            found[key[len("SERVICE_"):].lower()] = value
    for key, value in (config.get("Labels") or {}).items():
        if str(key).startswith("SERVICE_") and value:
            found[str(key)[len("SERVICE_"):].lower()] = str(value)
    return found


def _for_port(metadata: dict[str, str], port: str) -> tuple[dict[str, str], set[str]]:
    """The metadata one container port sees, and which keys came from SERVICE_<port>_*."""
    generic = {k: v for k, v in metadata.items() if not _PORT_KEY.match(k)}
    specific: dict[str, str] = {}
    for k, v in metadata.items():
        m = _PORT_KEY.match(k)
        if m and m.group(1) == port:
            specific[m.group(2)] = v
    return {**generic, **specific}, set(specific)


@dataclass
class _Port:
    exposed: str        # container port
    proto: str
    host_ip: str
    host_port: str


def _ports(inspect: dict[str, Any]) -> list[_Port]:
    config = inspect.get("Config") or {}
    net = inspect.get("NetworkSettings") or {}
    mode = str((inspect.get("HostConfig") or {}).get("NetworkMode") or "")
    found: dict[str, _Port] = {}
    if mode == "host":  # every exposed port is "published" on the same port (#608)
        for key in config.get("ExposedPorts") or {}:
            port, _, proto = str(key).partition("/")
            found[str(key)] = _Port(port, proto or "tcp", "0.0.0.0", port)
    for key in config.get("ExposedPorts") or {}:
        port, _, proto = str(key).partition("/")
        found.setdefault(str(key), _Port(port, proto or "tcp", "", ""))
    for key, bindings in (net.get("Ports") or {}).items():
        port, _, proto = str(key).partition("/")
        if bindings:
            b = bindings[0]
            found[str(key)] = _Port(port, proto or "tcp", str(b.get("HostIp") or ""), str(b.get("HostPort") or ""))
        else:
            found.setdefault(str(key), _Port(port, proto or "tcp", "", ""))
    return sorted(found.values(), key=lambda p: (ascii_int(p.exposed, 5) or 0, p.proto))


def container_ip(inspect: dict[str, Any]) -> str:
    net = inspect.get("NetworkSettings") or {}
    if net.get("IPAddress"):
        return str(net["IPAddress"])
    for network in (net.get("Networks") or {}).values():
        if isinstance(network, dict) and network.get("IPAddress"):
            return str(network["IPAddress"])
    return ""


@dataclass
class _Context:
    inspect: dict[str, Any]
    opts: MappingOptions
    problems: list[str] = field(default_factory=list)
    peer_ip: str = ""

    @property
    def cname(self) -> str:
        return str(self.inspect.get("Name") or "").lstrip("/") or str(self.inspect.get("Id", ""))[:12]

    def warn(self, message: str) -> None:
        self.problems.append(f"container {self.cname}: {message}")


def container_services(inspect: dict[str, Any], opts: MappingOptions,
                       peer_ip: str = "") -> tuple[list[ServiceSpec], list[str]]:
    """The services a container yields and the problems met on the way (to be logged).

    ``peer_ip`` is the IP of the container whose network namespace this one shares
    (``NetworkMode: container:<id>``), looked up by the caller."""
    ctx = _Context(inspect, opts, peer_ip=peer_ip)
    config = inspect.get("Config") or {}
    metadata = _metadata(config)
    if metadata.get("ignore"):
        return [], []
    ports = _ports(inspect)
    candidates: list[_Port] = []
    for p in ports:
        if not opts.internal and not p.host_port:
            continue
        candidates.append(p)
    if not candidates and "port" in metadata:
        value = metadata["port"]
        if 0 < (ascii_int(value, 5) or 0) < 65536:
            candidates = [_Port(value, "tcp", "", value)]
        else:
            ctx.warn(f"SERVICE_PORT={value!r} is not a port number; no service registered")
    services = []
    group = len(candidates) > 1
    for p in candidates:
        spec = _service(ctx, metadata, p, group)
        if spec is not None:
            services.append(spec)
    return services, ctx.problems


def _address(ctx: _Context, p: _Port) -> str:
    inspect, opts = ctx.inspect, ctx.opts
    if opts.internal:
        return container_ip(inspect) or opts.forced_ip or opts.host_ip
    ip = p.host_ip
    if ip in ("", "0.0.0.0", "::"):
        ip = opts.host_ip
    if opts.forced_ip:
        ip = opts.forced_ip
    mode = str((inspect.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode.startswith("container:"):
        ip = ctx.peer_ip or ip
    elif mode and mode not in ("bridge", "default", "host"):
        network = ((inspect.get("NetworkSettings") or {}).get("Networks") or {}).get(mode) or {}
        ip = str(network.get("IPAddress") or "") or ip
    if opts.ip_from_label:
        label = ((inspect.get("Config") or {}).get("Labels") or {}).get(opts.ip_from_label)
        if label:
            ip = str(label).split("/", 1)[0]
        else:
            ctx.warn(f"label {opts.ip_from_label!r} not set; keeping address {ip}")
    return ip


def _service(ctx: _Context, metadata: dict[str, str], p: _Port, group: bool) -> ServiceSpec | None:
    opts = ctx.opts
    md, specific = _for_port(metadata, p.exposed)
    if md.get("ignore"):
        return None
    if opts.explicit and "name" not in md:
        return None
    name = md.get("name") or image_basename(str((ctx.inspect.get("Config") or {}).get("Image") or ""))
    if not name:
        ctx.warn(f"port {p.exposed}: no image name and no SERVICE_NAME; skipped")
        return None
    if group and "name" not in specific:
        name = f"{name}-{p.exposed}"
    sid = f"{opts.hostname}:{ctx.cname}:{p.exposed}" + (":udp" if p.proto == "udp" else "")
    if md.get("id"):
        sid = md["id"]
    port_s = p.exposed if opts.internal else p.host_port
    port = ascii_int(port_s, 5) or 0
    if not 0 < port < 65536:
        ctx.warn(f"port {p.exposed}: {'port' if opts.internal else 'host port'} {port_s!r} is not a port "
                 "number; skipped")
        return None
    address = _address(ctx, p)
    tags = split_tags(md.get("tags", "")) + list(opts.tags)
    if p.proto == "udp":
        tags.append("udp")
    meta = _meta(ctx, md)
    checks = _checks(ctx, md, sid, address, port, p.exposed)
    health = False
    hc = (ctx.inspect.get("Config") or {}).get("Healthcheck") or {}
    test = hc.get("Test") if isinstance(hc, dict) else None
    if test and test != ["NONE"] and md.get("check_docker_health", "").lower() not in FALSEY:
        checks.append(CheckSpec(tuple(sorted({
            "CheckID": health_check_id(sid), "Name": "Docker health check",
            "TTL": format_duration(opts.health_ttl)}.items()))))
        health = True
    return ServiceSpec(id=sid, name=name, port=port, address=address, container_id=str(ctx.inspect.get("Id", "")),
                       container_name=ctx.cname, tags=tuple(dict.fromkeys(tags)), meta=tuple(sorted(meta.items())),
                       checks=tuple(checks), health_check=health)


def _meta(ctx: _Context, md: dict[str, str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for key, value in sorted(md.items()):
        if key in RESERVED:
            continue
        if not _META_KEY.match(key) or len(key) > 128 or key.startswith("consul-"):
            ctx.warn(f"SERVICE_{key.upper()}: not a valid Consul meta key; left out of Meta")
            continue
        if len(value) > 512:
            ctx.warn(f"SERVICE_{key.upper()}: value longer than 512 characters; left out of Meta")
            continue
        if len(meta) >= 63:  # 64 is Consul's cap; one slot is the registrator's owner key
            ctx.warn(f"more than 63 SERVICE_* meta keys; SERVICE_{key.upper()} left out")
            continue
        meta[key] = value
    return meta


def _duration(ctx: _Context, md: dict[str, str], key: str) -> str | None:
    value = md.get(key)
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        ctx.warn(f"SERVICE_{key.upper()}={value!r} is not a duration (like 10s or 1m); ignored")
        return None
    if seconds <= 0:
        ctx.warn(f"SERVICE_{key.upper()}={value!r} must be positive; ignored")
        return None
    return value


def _checks(ctx: _Context, md: dict[str, str], sid: str, address: str, port: int, exposed: str) -> list[CheckSpec]:
    for key in md:
        if key.startswith("check_"):
            rest = key[len("check_"):]
            if rest not in CHECK_KINDS and rest not in CHECK_MODIFIERS:
                ctx.warn(f"SERVICE_{key.upper()}: unknown check setting (known kinds: "
                         f"{', '.join(k.upper() for k in CHECK_KINDS)}); ignored")
    interval = _duration(ctx, md, "check_interval") or DEFAULT_INTERVAL
    timeout = _duration(ctx, md, "check_timeout")
    deregister = _duration(ctx, md, "check_deregister_after")
    status = md.get("check_initial_status")
    if status is not None and status not in ("passing", "warning", "critical"):
        ctx.warn(f"SERVICE_CHECK_INITIAL_STATUS={status!r} must be passing, warning or critical; ignored")
        status = None
    kinds = [k for k in CHECK_KINDS if md.get(f"check_{k}")]
    built: list[tuple[str, dict[str, Any]]] = []
    for kind in kinds:
        value = md[f"check_{kind}"]
        check: dict[str, Any] = {"Name": f"Service '{sid}' check ({kind})"}
        if kind in ("http", "https"):
            path = value if value.startswith("/") else "/" + value
            check.update(HTTP=f"{kind}://{_hostport(address, port)}{path}", Interval=interval)
            method = md.get(f"check_{kind}_method")
            if method:
                check["Method"] = method
        elif kind == "tcp":
            check.update(TCP=_hostport(address, port), Interval=interval)
        elif kind == "grpc":
            check.update(GRPC=_hostport(address, port), Interval=interval)
            if md.get("check_grpc_use_tls"):
                check["GRPCUseTLS"] = True
                if md.get("check_tls_skip_verify"):
                    check["TLSSkipVerify"] = True
        elif kind == "script":
            cmd = value.replace("$SERVICE_IP", address).replace("$SERVICE_PORT", str(port))
            check.update(Args=("/bin/sh", "-c", cmd), Interval=interval)
        elif kind == "ttl":
            ttl = _duration(ctx, md, "check_ttl")
            if ttl is None:
                continue
            check["TTL"] = ttl
        elif kind == "cmd":
            ctx.warn("SERVICE_CHECK_CMD needs the old check-cmd helper image; use SERVICE_CHECK_SCRIPT; ignored")
            continue
        if timeout and kind not in ("ttl", "script"):
            check["Timeout"] = timeout
        if status:
            check["Status"] = status
        if deregister:
            check["DeregisterCriticalServiceAfter"] = deregister
        built.append((kind, check))
    out: list[CheckSpec] = []
    for kind, check in built:  # one check keeps Consul's plain ID; several get the kind appended
        check["CheckID"] = f"service:{sid}" if len(built) == 1 else f"service:{sid}:{kind}"
        out.append(CheckSpec(tuple(sorted((k, tuple(v) if isinstance(v, list | tuple) else v)
                                          for k, v in check.items()))))
    return out


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
