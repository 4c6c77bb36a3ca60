"""Container records, specs and parsing: plain dataclasses and pure functions, no I/O."""

from __future__ import annotations

import dataclasses
import re
import secrets
import signal
from dataclasses import dataclass, field
from typing import Any, Literal

from beacon.numbers import ascii_int
from beacon.runtime._errors import InvalidParameter

Status = Literal["created", "running", "restarting", "exited", "removing", "dead"]
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

# Docker names containers adjective_scientist; these lists are our own, shorter ones.
_ADJECTIVES = (
    "brave calm clever dazzling eager elegant festive focused gallant happy hopeful jolly keen "
    "loving modest nifty optimistic quirky relaxed serene sharp stoic tender upbeat vibrant wizardly"
).split()
_SURNAMES = (
    "babbage bohr curie darwin dijkstra einstein euler faraday fermi gauss hopper hypatia kepler "
    "knuth lamport lovelace maxwell meitner newton noether pascal ritchie shannon tesla turing"
).split()


def new_id() -> str:
    return secrets.token_hex(32)


def random_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SURNAMES)}"


def port_key(spec: str) -> tuple[int, str]:
    """Parse ``"80/tcp"`` (or ``"80"``) into ``(80, "tcp")``; raise InvalidParameter otherwise."""
    port, _, proto = str(spec).partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidParameter(f"invalid proto: {proto!r} (beacon relays tcp and udp)")
    number = ascii_int(port, 5) or 0
    if not 0 < number < 65536:
        raise InvalidParameter(f"invalid port specification: {spec!r}")
    return number, proto


def host_port(value: Any) -> int:
    text = str(value or "").strip()
    if text == "":
        return 0
    number = ascii_int(text, 5)
    if number is None or not 0 <= number < 65536:
        raise InvalidParameter(f"invalid port specification: {text!r}")
    return number


def parse_publish(spec: str) -> tuple[str, dict[str, str]]:
    """Parse a ``-p`` flag (``[ip:][hostPort:]containerPort[/proto]``) into a key and a binding."""
    rest, ip = spec, ""
    if rest.startswith("["):
        ip, sep, rest = rest[1:].partition("]:")
        if not sep:
            raise InvalidParameter(f"invalid port specification: {spec!r}")
    parts = rest.split(":")
    if ip:
        parts = [ip, *parts]
    if len(parts) == 1:
        ip, hport, cport = "", "", parts[0]
    elif len(parts) == 2:
        ip, hport, cport = "", parts[0], parts[1]
    elif len(parts) == 3:
        ip, hport, cport = parts
    else:
        raise InvalidParameter(f"invalid port specification: {spec!r}")
    port, proto = port_key(cport)
    host_port(hport)
    return f"{port}/{proto}", {"HostIp": ip, "HostPort": hport}


def parse_restart(spec: str) -> dict[str, Any]:
    """Parse ``--restart`` (``no``, ``on-failure[:N]``, ``always``, ``unless-stopped``)."""
    name, _, count = (spec or "no").partition(":")
    if name not in RESTART_POLICIES:
        raise InvalidParameter(f"invalid restart policy {name!r}")
    if count and (name != "on-failure" or ascii_int(count, 9) is None):
        raise InvalidParameter(f"invalid restart policy format {spec!r}: maximum retry count only for on-failure")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def signal_number(value: str | int | None) -> int:
    if value in (None, ""):
        return signal.SIGKILL
    text = str(value).upper()
    num = ascii_int(text, 9)
    if num is not None:
        if 0 < num < signal.NSIG:
            return num
    else:
        name = text if text.startswith("SIG") else "SIG" + text
        if hasattr(signal.Signals, name):
            return int(signal.Signals[name])
    raise InvalidParameter(f"Invalid signal: {value}")


def _int(value: Any, what: str, default: int = 0) -> int:
    """A non-negative JSON integer (None or 0 meaning ``default``), else InvalidParameter."""
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidParameter(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParameter(f"{what} must be an object")
    return value


@dataclass
class HealthSpec:
    test: list[str]
    interval_ns: int = 30_000_000_000
    timeout_ns: int = 30_000_000_000
    retries: int = 3
    start_period_ns: int = 0

    def argv(self) -> list[str] | None:
        """The probe's argv, or None when the check is disabled (``NONE``)."""
        if not self.test or self.test[0] == "NONE":
            return None
        if self.test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", " ".join(self.test[1:])]
        if self.test[0] == "CMD":
            return list(self.test[1:])
        return list(self.test)

    def to_api(self) -> dict[str, Any]:
        return {"Test": self.test, "Interval": self.interval_ns, "Timeout": self.timeout_ns,
                "Retries": self.retries, "StartPeriod": self.start_period_ns}

    @classmethod
    def from_api(cls, data: Any) -> HealthSpec | None:
        data = _object(data, "Healthcheck")
        if not data.get("Test"):
            return None
        test = data["Test"]
        if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
            raise InvalidParameter("Healthcheck.Test must be a list of strings")
        return cls(test=test, interval_ns=_int(data.get("Interval"), "Healthcheck.Interval", 30_000_000_000),
                   timeout_ns=_int(data.get("Timeout"), "Healthcheck.Timeout", 30_000_000_000),
                   retries=_int(data.get("Retries"), "Healthcheck.Retries", 3),
                   start_period_ns=_int(data.get("StartPeriod"), "Healthcheck.StartPeriod"))


@dataclass
class ContainerState:
    status: Status = "created"
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    restart_count: int = 0
    manually_stopped: bool = False
    health_status: str = ""
    failing_streak: int = 0
    health_log: list[dict[str, Any]] = field(default_factory=list)
    oom_killed: bool = False
    paused: bool = False
    started_unix: float = 0.0
    finished_unix: float = 0.0


@dataclass
class Container:
    """One container: its spec (from create) and its state (from the supervisor)."""

    id: str
    name: str
    image: str
    cmd: list[str]
    created: str
    created_unix: float
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    hostname: str = ""
    exposed_ports: list[str] = field(default_factory=list)
    port_bindings: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    publish_all: bool = False
    restart_policy: dict[str, Any] = field(default_factory=lambda: {"Name": "no", "MaximumRetryCount": 0})
    auto_remove: bool = False
    health: HealthSpec | None = None
    tty: bool = False
    entrypoint: list[str] | None = None
    stop_signal: str = ""
    stop_timeout: int | None = None
    state: ContainerState = field(default_factory=ContainerState)
    # host port actually bound, per "80/tcp": [{"HostIp": ..., "HostPort": ...}]
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    address: str = ""  # "10.213.0.2/16" on the engine's private bridge while running
    # From the image (runc backend) and the HostConfig: what the OCI spec is made of.
    image_id: str = ""
    image_env: list[str] = field(default_factory=list)
    user: str = ""
    network_mode: str = "bridge"
    read_only: bool = False
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    tmpfs: dict[str, str] = field(default_factory=dict)
    memory: int = 0
    memory_swap: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    pids_limit: int = 0
    init: bool = False
    extra_hosts: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # names on a user network (compose services)
    open_stdin: bool = False
    stdin_once: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Container:
        data = dict(data)
        state = ContainerState(**data.pop("state", {}))
        health = data.pop("health", None)
        return cls(**data, state=state, health=HealthSpec(**health) if health else None)

    @property
    def argv(self) -> list[str]:
        return [*(self.entrypoint or []), *self.cmd]

    def process_env(self) -> dict[str, str]:
        """The environment the command starts with: a clean one, as in a container."""
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname, "HOME": "/root"}
        for item in [*self.image_env, *self.env]:
            key, sep, value = item.partition("=")
            if sep:
                env[key] = value
        return env

    def label_attributes(self) -> dict[str, str]:
        return {**self.labels, "image": self.image, "name": self.name}


def str_labels(body: dict[str, Any], key: str = "Labels") -> dict[str, str]:
    """``body[key]`` as Docker's ``map[string]string`` (absent or null: empty), else a 400."""
    labels = body.get(key) or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidParameter(f"{key} must be an object of strings")
    return labels


def optional_str(body: dict[str, Any], key: str, default: str = "") -> str:
    """``body[key]`` when it is a string, ``default`` when absent, null or empty, else a 400."""
    value = body.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise InvalidParameter(f"{key} must be a string")
    return value


def parse_create(body: Any, name: str | None) -> dict[str, Any]:
    """Validate a ``POST /containers/create`` body; returns keyword arguments for Container."""
    if not isinstance(body, dict):
        raise InvalidParameter("invalid JSON: container config must be an object")
    host = _object(body.get("HostConfig"), "HostConfig")
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise InvalidParameter("config cannot be empty in order to create a container")
    cmd, entrypoint = body.get("Cmd"), body.get("Entrypoint")
    if isinstance(cmd, str):
        cmd = ["/bin/sh", "-c", cmd]
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    for value, what in ((cmd, "Cmd"), (entrypoint, "Entrypoint")):
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidParameter(f"{what} must be a list of strings")
    if name is not None and name != "" and not NAME_RE.match(name):
        raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    for key in ("WorkingDir", "Hostname"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise InvalidParameter(f"{key} must be a string")
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidParameter("Env must be a list of strings")
    labels = str_labels(body)
    exposed = [f"{p}/{t}" for p, t in (port_key(k) for k in _object(body.get("ExposedPorts"), "ExposedPorts"))]
    bindings: dict[str, list[dict[str, str]]] = {}
    for key, items in _object(host.get("PortBindings"), "PortBindings").items():
        port, proto = port_key(key)
        norm = f"{port}/{proto}"
        if items is not None and not isinstance(items, list):
            raise InvalidParameter(f"PortBindings[{key!r}] must be a list")
        for item in items or [{}]:
            if not isinstance(item, dict):
                raise InvalidParameter(f"invalid port binding for {key}")
            host_port(item.get("HostPort"))
            bindings.setdefault(norm, []).append(
                {"HostIp": str(item.get("HostIp") or ""), "HostPort": str(item.get("HostPort") or "")})
        if norm not in exposed:
            exposed.append(norm)
    policy = _object(host.get("RestartPolicy"), "RestartPolicy")
    policy_name = policy.get("Name") or "no"
    if not isinstance(policy_name, str) or policy_name not in RESTART_POLICIES:
        raise InvalidParameter(f"invalid restart policy {policy_name!r}")
    auto_remove = bool(host.get("AutoRemove"))
    if auto_remove and policy_name != "no":
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    return {
        # Entrypoint [] or [""] (``--entrypoint ""``) clears the image's; None keeps it
        "image": image, "cmd": list(cmd or []),
        "entrypoint": None if entrypoint is None else [e for e in entrypoint if e],
        "env": list(env), "labels": dict(labels), "working_dir": str(body.get("WorkingDir") or ""),
        "hostname": str(body.get("Hostname") or ""), "exposed_ports": exposed, "port_bindings": bindings,
        "publish_all": bool(host.get("PublishAllPorts")), "auto_remove": auto_remove,
        "restart_policy": {"Name": policy_name, "MaximumRetryCount": _int(policy.get("MaximumRetryCount"), "MaximumRetryCount")},
        "health": HealthSpec.from_api(body.get("Healthcheck")), "tty": bool(body.get("Tty")),
        "open_stdin": bool(body.get("OpenStdin")), "stdin_once": bool(body.get("StdinOnce")),
        "stop_signal": _stop_signal(body.get("StopSignal")),
        "stop_timeout": _stop_timeout(body.get("StopTimeout")),
        "user": _str(body.get("User"), "User"),
        "network_mode": _network_mode(host.get("NetworkMode")),
        "read_only": bool(host.get("ReadonlyRootfs")), "privileged": bool(host.get("Privileged")),
        "cap_add": _strs(host.get("CapAdd"), "CapAdd"), "cap_drop": _strs(host.get("CapDrop"), "CapDrop"),
        "binds": _strs(host.get("Binds"), "Binds"), "mounts": _mounts(host.get("Mounts")),
        "tmpfs": _tmpfs(host.get("Tmpfs"), host.get("Mounts")),
        "memory": _int(host.get("Memory"), "Memory"), "memory_swap": _swap(host.get("MemorySwap")),
        "nano_cpus": _int(host.get("NanoCpus"), "NanoCpus"), "cpu_shares": _int(host.get("CpuShares"), "CpuShares"),
        "pids_limit": max(0, int(host.get("PidsLimit") or 0)) if isinstance(host.get("PidsLimit") or 0, int) else 0,
        "init": bool(host.get("Init")),
        "extra_hosts": _strs(host.get("ExtraHosts"), "ExtraHosts"), "dns": _strs(host.get("Dns"), "Dns"),
        "aliases": _aliases(body.get("NetworkingConfig")),
    }


def _aliases(value: Any) -> list[str]:
    endpoints = _object(_object(value, "NetworkingConfig").get("EndpointsConfig"), "EndpointsConfig")
    out: list[str] = []
    for ep in endpoints.values():
        if isinstance(ep, dict):
            out += [a for a in ep.get("Aliases") or [] if isinstance(a, str)]
    return out


def _str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidParameter(f"{what} must be a string")
    return value


def _strs(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"{what} must be a list of strings")
    return list(value)


def _swap(value: Any) -> int:
    if value in (None, 0):
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise InvalidParameter(f"MemorySwap must be an integer >= -1, got {value!r}")
    return value


def _network_mode(value: Any) -> str:
    mode = value or "default"
    if not isinstance(mode, str):
        raise InvalidParameter("NetworkMode must be a string")
    if mode == "default":
        return "bridge"
    return mode


def _mounts(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise InvalidParameter("Mounts must be a list of objects")
    return [dict(m) for m in value]


def _tmpfs(value: Any, mounts: Any) -> dict[str, str]:
    out = {str(k): str(v or "") for k, v in _object(value, "Tmpfs").items()}
    for m in _mounts(mounts):
        if m.get("Type") == "tmpfs" and str(m.get("Target", "")).startswith("/"):
            size = (m.get("TmpfsOptions") or {}).get("SizeBytes")
            out[str(m["Target"])] = f"size={size}" if size else ""
    return out


def _stop_signal(value: Any) -> str:
    if not value:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InvalidParameter(f"Invalid signal: {value!r}")
    signal_number(value)  # rejects unknown names
    return str(value)


def _stop_timeout(value: Any) -> int | None:
    return None if value is None else _int(value, "StopTimeout")


def create_warnings(body: dict[str, Any]) -> list[str]:
    """Settings beacon accepts but cannot honour, reported back like dockerd's create warnings."""
    host = body.get("HostConfig") or {}
    warnings = []
    if body.get("User"):
        warnings.append("User is ignored in process isolation: the command runs as the engine's user")
    if host.get("Binds") or host.get("Mounts") or body.get("Volumes"):
        warnings.append("Volumes and binds are ignored in process isolation: containers see the host filesystem")
    if host.get("Memory") or host.get("NanoCpus") or host.get("CpuShares") or host.get("PidsLimit"):
        warnings.append("Resource limits are ignored in process isolation: no cgroups are used")
    return warnings
