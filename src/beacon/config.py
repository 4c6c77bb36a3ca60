"""Agent configuration: defaults < config files (JSON or YAML, Consul's keys) < command-line flags.

`load_config` returns one :class:`AgentConfig`. Unknown keys in files are warned about (and kept out);
a value of the wrong shape fails with :class:`ConfigError` naming the key and the file. Library code
never exits: the CLI turns ConfigError into one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from beacon.numbers import ascii_int

log = logging.getLogger("beacon.config")

LogLevel = Literal["trace", "debug", "info", "warn", "error"]
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "err", "error")


class ConfigError(Exception):
    pass


# `registrator` config keys besides `enabled` (the standalone command's flags, snake_case)
REGISTRATOR_KEYS = ("resync", "cleanup", "deregister", "internal", "explicit", "ip", "tags", "hostname")


@dataclass
class AgentConfig:
    node_name: str = ""
    datacenter: str = "dc1"
    primary_datacenter: str = ""  # ACLs: where tokens come from (empty: this datacenter)
    server: bool = False
    dev: bool = False
    bootstrap_expect: int = 0
    bootstrap: bool = False  # Consul's -bootstrap: this server elects itself (single-server bootstrap)
    bind_addr: str = "127.0.0.1"
    advertise_addr: str = ""
    client_addr: str = "127.0.0.1"
    http_port: int = 8500
    https_port: int = -1  # ports.https / -https-port; Consul's default is off (-1) too
    dns_port: int = 8600
    server_port: int = 8300
    serf_lan_port: int = 8301
    serf_wan_port: int = 8302
    server_rpc_port: int = 8303           # the servers' internal RPC (8300 is the etcd peer port)
    serf_bin: str = ""                    # the serf binary (default: serf from PATH)
    http_addr: str = ""  # addresses.http overrides client_addr for HTTP
    dns_addr: str = ""
    data_dir: str = ""
    domain: str = "consul"
    recursors: list[str] = field(default_factory=list)
    dns_config: dict[str, Any] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    log_level: str = "info"
    log_json: bool = False
    pid_file: str = ""
    retry_join: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)          # -join: must succeed at start
    join_wan: list[str] = field(default_factory=list)
    retry_join_wan: list[str] = field(default_factory=list)
    retry_interval: float = 30.0
    rejoin: bool = False                  # -rejoin: rejoin after a graceful leave too
    encrypt: str = ""
    etcd_bin: str = ""                     # the etcd binary a server supervises (default: from PATH)
    etcd_endpoints: list[str] = field(default_factory=list)  # use this etcd cluster; start no member
    etcd_ca_file: str = ""                 # TLS material for etcd (default: derived from -encrypt)
    etcd_cert_file: str = ""
    etcd_key_file: str = ""
    raft_snapshot_threshold: int = 16384   # log revisions between snapshots (then etcd is compacted)
    tombstone_ttl: float = 900.0           # deleted KV keys' tombstones are reaped after this (Consul: 15m)
    node_meta: dict[str, str] = field(default_factory=dict)
    check_update_interval: float = 300.0
    check_reap_interval: float = 30.0
    deregister_critical_service_after_min: float = 60.0
    check_output_max_size: int = 4096
    reconnect_timeout: float = 72 * 3600.0
    autopilot: dict[str, Any] = field(default_factory=dict)  # Consul's autopilot block, PascalCase keys
    leave_on_terminate: bool | None = None      # default: clients yes, servers no (Consul's)
    skip_leave_on_interrupt: bool | None = None  # default: clients no, servers yes
    default_query_time: float = 300.0
    max_query_time: float = 600.0
    kv_max_value_size: int = 512 * 1024
    http_max_conns_per_client: int = 200
    http_read_header_timeout: float = 10.0
    http_idle_timeout: float = 90.0
    session_ttl_min: float = 10.0
    ui: bool = True
    engine_enabled: bool = False
    engine_socket: str = ""
    engine_isolation: str = "auto"
    registrator_enabled: bool = False
    registrator_options: dict[str, Any] = field(default_factory=dict)  # resync, cleanup, deregister, ...
    config_files: list[str] = field(default_factory=list)
    # Raw `tls` and `acl` blocks (Consul's keys), checked and typed by beacon.tls / beacon.acl.config.
    tls: dict[str, Any] = field(default_factory=dict)
    acl: dict[str, Any] = field(default_factory=dict)

    @property
    def http_bind(self) -> str:
        return self.http_addr or self.client_addr

    @property
    def dns_bind(self) -> str:
        return self.dns_addr or self.client_addr

    @property
    def advertise(self) -> str:
        return self.advertise_addr or self.bind_addr


def _bool(key: str, v: Any, src: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ConfigError(f"{src}: '{key}' must be a boolean, got {v!r}")


def _int(key: str, v: Any, src: str, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, str) and (n := ascii_int(v, signed=True)) is not None:
            v = n
        else:
            raise ConfigError(f"{src}: '{key}' must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise ConfigError(f"{src}: '{key}' must be >= {minimum}, got {v}")
    return v


def _str(key: str, v: Any, src: str) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{src}: '{key}' must be a string, got {v!r}")
    return v


def _str_list(key: str, v: Any, src: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{src}: '{key}' must be a list of strings, got {v!r}")
    return list(v)


def _duration(key: str, v: Any, src: str) -> float:
    from beacon.durations import parse_duration

    try:
        return parse_duration(v)
    except ValueError as exc:
        raise ConfigError(f"{src}: '{key}': {exc}") from exc


def _port(key: str, v: Any, src: str) -> int:
    port = _int(key, v, src, minimum=-1)
    if port > 65535:
        raise ConfigError(f"{src}: '{key}' must be a port number (or -1 to disable), got {port}")
    return port


def _dict(key: str, v: Any, src: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"{src}: '{key}' must be an object, got {v!r}")
    return v


def read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        if path.endswith((".yaml", ".yml")):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold an object at the top level")
    return data


def config_dir_files(path: str) -> list[str]:
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(f"cannot read config dir {path}: {exc.strerror}") from exc
    return [os.path.join(path, n) for n in names
            if n.endswith((".json", ".yaml", ".yml")) and os.path.isfile(os.path.join(path, n))]


def apply_file(cfg: AgentConfig, data: dict[str, Any], src: str) -> None:
    """Merge one file's keys into cfg: later scalars win, lists append (Consul's rule)."""
    for key, value in data.items():
        k = key.lower()
        if k in ("datacenter",):
            cfg.datacenter = _str(key, value, src).lower()
        elif k in ("primary_datacenter", "acl_datacenter"):  # acl_datacenter: Consul's pre-1.4 name
            cfg.primary_datacenter = _str(key, value, src).lower()
        elif k == "node_name":
            cfg.node_name = _str(key, value, src)
        elif k == "server":
            cfg.server = _bool(key, value, src)
        elif k == "bootstrap_expect":
            cfg.bootstrap_expect = _int(key, value, src, minimum=0)
        elif k == "bootstrap":
            cfg.bootstrap = _bool(key, value, src)
        elif k == "bind_addr":
            cfg.bind_addr = _str(key, value, src)
        elif k == "advertise_addr":
            cfg.advertise_addr = _str(key, value, src)
        elif k == "client_addr":
            cfg.client_addr = _str(key, value, src)
        elif k == "ports":
            for pk, pv in _dict(key, value, src).items():
                name = f"ports.{pk}"
                if pk == "http":
                    cfg.http_port = _port(name, pv, src)
                elif pk == "dns":
                    cfg.dns_port = _port(name, pv, src)
                elif pk == "server":
                    cfg.server_port = _port(name, pv, src)
                elif pk == "serf_lan":
                    cfg.serf_lan_port = _port(name, pv, src)
                elif pk == "https":
                    cfg.https_port = _port(name, pv, src)
                elif pk == "serf_wan":
                    cfg.serf_wan_port = _port(name, pv, src)
                elif pk == "server_rpc":
                    cfg.server_rpc_port = _port(name, pv, src)
                elif pk in ("grpc", "grpc_tls", "sidecar_min_port",
                            "sidecar_max_port", "expose_min_port", "expose_max_port"):
                    _port(name, pv, src)
                else:
                    log.warning("%s: unknown key '%s' ignored", src, name)
        elif k == "addresses":
            for ak, av in _dict(key, value, src).items():
                if ak == "http":
                    cfg.http_addr = _str(f"addresses.{ak}", av, src)
                elif ak == "dns":
                    cfg.dns_addr = _str(f"addresses.{ak}", av, src)
                elif ak in ("https", "grpc", "grpc_tls"):
                    _str(f"addresses.{ak}", av, src)
                else:
                    log.warning("%s: unknown key 'addresses.%s' ignored", src, ak)
        elif k == "data_dir":
            cfg.data_dir = _str(key, value, src)
        elif k == "domain":
            cfg.domain = _str(key, value, src).strip(".").lower()
        elif k == "recursors":
            cfg.recursors += _str_list(key, value, src)
        elif k == "dns_config":
            from beacon.dns import DNSConfig

            merged = {**cfg.dns_config, **_dict(key, value, src)}
            try:
                DNSConfig.from_consul_json(merged)
            except ValueError as exc:
                raise ConfigError(f"{src}: dns_config: {exc}") from exc
            cfg.dns_config = merged
        elif k in ("service", "services"):
            items = value if isinstance(value, list) else [value]
            for item in items:
                cfg.services.append(_dict(key, item, src))
        elif k in ("check", "checks"):
            items = value if isinstance(value, list) else [value]
            for item in items:
                cfg.checks.append(_dict(key, item, src))
        elif k == "enable_script_checks":
            cfg.enable_script_checks = _bool(key, value, src)
        elif k == "enable_local_script_checks":
            cfg.enable_local_script_checks = _bool(key, value, src)
        elif k == "log_level":
            cfg.log_level = _log_level(_str(key, value, src), f"{src}: '{key}'")
        elif k == "log_json":
            cfg.log_json = _bool(key, value, src)
        elif k == "pid_file":
            cfg.pid_file = _str(key, value, src)
        elif k == "retry_join":
            cfg.retry_join += _str_list(key, value, src)
        elif k == "start_join":
            cfg.join += _str_list(key, value, src)
        elif k == "retry_join_wan":
            cfg.retry_join_wan += _str_list(key, value, src)
        elif k == "start_join_wan":
            cfg.join_wan += _str_list(key, value, src)
        elif k == "retry_interval":
            cfg.retry_interval = _duration(key, value, src)
        elif k == "rejoin_after_leave":
            cfg.rejoin = _bool(key, value, src)
        elif k == "encrypt":
            cfg.encrypt = _str(key, value, src)
        elif k in ("etcd_bin", "etcd_ca_file", "etcd_cert_file", "etcd_key_file"):
            setattr(cfg, k, _str(key, value, src))
        elif k == "etcd_endpoints":
            cfg.etcd_endpoints += _str_list(key, value, src)
        elif k == "tombstone_ttl":
            cfg.tombstone_ttl = _duration(key, value, src)
        elif k == "raft_snapshot_threshold":
            cfg.raft_snapshot_threshold = _int(key, value, src, minimum=16)
        elif k == "node_meta":
            cfg.node_meta.update({str(a): _str(f"node_meta.{a}", b, src)
                                  for a, b in _dict(key, value, src).items()})
        elif k == "check_update_interval":
            cfg.check_update_interval = _duration(key, value, src)
        elif k == "check_reap_interval":
            cfg.check_reap_interval = _duration(key, value, src)
        elif k == "deregister_critical_service_after_min":
            cfg.deregister_critical_service_after_min = _duration(key, value, src)
        elif k == "check_output_max_size":
            cfg.check_output_max_size = _int(key, value, src, minimum=1)
        elif k == "reconnect_timeout":
            cfg.reconnect_timeout = _duration(key, value, src)
        elif k == "autopilot":
            from beacon.server import autopilot

            try:
                cfg.autopilot = autopilot.from_agent_config({**cfg.autopilot, **_dict(key, value, src)})
            except ValueError as exc:
                raise ConfigError(f"{src}: autopilot: {exc}") from exc
        elif k == "leave_on_terminate":
            cfg.leave_on_terminate = _bool(key, value, src)
        elif k == "skip_leave_on_interrupt":
            cfg.skip_leave_on_interrupt = _bool(key, value, src)
        elif k == "default_query_time":
            cfg.default_query_time = _duration(key, value, src)
        elif k == "max_query_time":
            cfg.max_query_time = _duration(key, value, src)
        elif k == "session_ttl_min":
            cfg.session_ttl_min = _duration(key, value, src)
        elif k == "limits":
            for lk, lv in _dict(key, value, src).items():
                if lk == "kv_max_value_size":
                    cfg.kv_max_value_size = _int(f"limits.{lk}", lv, src, minimum=1)
                elif lk == "http_max_conns_per_client":
                    cfg.http_max_conns_per_client = _int(f"limits.{lk}", lv, src, minimum=0)
        elif k == "http_config":
            for hk, hv in _dict(key, value, src).items():
                if hk == "read_header_timeout":
                    cfg.http_read_header_timeout = _duration(f"http_config.{hk}", hv, src)
                elif hk == "idle_timeout":
                    cfg.http_idle_timeout = _duration(f"http_config.{hk}", hv, src)
        elif k == "ui":
            cfg.ui = _bool(key, value, src)
        elif k == "ui_config":
            cfg.ui = _bool("ui_config.enabled", _dict(key, value, src).get("enabled", True), src)
        elif k == "engine":
            for ek, ev in _dict(key, value, src).items():
                if ek == "enabled":
                    cfg.engine_enabled = _bool(f"engine.{ek}", ev, src)
                elif ek == "socket":
                    cfg.engine_socket = _str(f"engine.{ek}", ev, src)
                elif ek == "isolation":
                    cfg.engine_isolation = _choice(f"engine.{ek}", ev, src, ("auto", "runc", "netns", "process"))
                else:
                    log.warning("%s: unknown key 'engine.%s' ignored", src, ek)
        elif k == "registrator":
            opts = dict(_dict(key, value, src))
            if "enabled" in opts:  # absent: -dev's default (on with the engine) stands
                cfg.registrator_enabled = _bool("registrator.enabled", opts.pop("enabled"), src)
            for rk in list(opts):
                if rk not in REGISTRATOR_KEYS:
                    log.warning("%s: unknown key 'registrator.%s' ignored", src, rk)
                    opts.pop(rk)
            if opts.get("deregister", "always") not in ("always", "on-success", "never", "maintenance"):
                raise ConfigError(f"{src}: 'registrator.deregister' must be one of always, on-success, never, "
                                  f"maintenance, got {opts['deregister']!r}")
            cfg.registrator_options.update(opts)
        elif k == "tls":
            from beacon.tls.config import merge_tls_block

            merge_tls_block(cfg.tls, _dict(key, value, src), src)
        elif k in ("ca_file", "cert_file", "key_file", "verify_incoming", "verify_outgoing",
                   "verify_server_hostname"):  # Consul's pre-1.12 top-level TLS keys
            cfg.tls.setdefault("defaults", {})[k] = value
        elif k == "acl":
            from beacon.acl.config import merge_acl_block

            merge_acl_block(cfg.acl, _dict(key, value, src), src)
        elif k in ("log_file", "rejoin_after_leave",
                   "disable_update_check", "performance", "telemetry",
                   "connect", "enable_debug", "disable_host_node_id", "raft_protocol"):
            log.debug("%s: key '%s' accepted and not used by Beacon", src, key)
        else:
            log.warning("%s: unknown key '%s' ignored", src, key)


def _choice(key: str, v: Any, src: str, choices: tuple[str, ...]) -> str:
    s = _str(key, v, src)
    if s not in choices:
        raise ConfigError(f"{src}: '{key}' must be one of {', '.join(choices)}, got {s!r}")
    return s


def _log_level(value: str, where: str) -> str:
    v = value.lower()
    if v not in LOG_LEVELS:
        raise ConfigError(f"{where} must be one of trace, debug, info, warn, error; got {value!r}")
    return {"warning": "warn", "err": "error"}.get(v, v)


def validate(cfg: AgentConfig) -> None:
    if not cfg.node_name:
        cfg.node_name = socket.gethostname().split(".")[0] or "beacon"
    if cfg.dev:
        cfg.server = True
    if not cfg.dev and not cfg.data_dir:
        raise ConfigError("data_dir is required unless -dev is given (-data-dir DIR)")
    if cfg.http_port == -1 and cfg.dns_port == -1:
        log.warning("both the HTTP API and DNS are disabled")
    from beacon.acl.config import acl_config
    from beacon.tls.config import tls_config

    tls_config(cfg)  # raises ConfigError on a bad TLS block or unreadable files
    acl_config(cfg)
    if cfg.bootstrap_expect and not cfg.server:
        raise ConfigError("bootstrap_expect requires server mode (-server)")
    if cfg.bootstrap:
        if not cfg.server:
            raise ConfigError("bootstrap requires server mode (-server)")
        if cfg.bootstrap_expect > 1:
            raise ConfigError("'bootstrap_expect > 1' and 'bootstrap = true' are mutually exclusive")
        cfg.bootstrap_expect = 1  # Consul's bootstrap mode: a one-server quorum
    if cfg.encrypt:
        from beacon.agent.cluster import validate_key

        try:
            validate_key(cfg.encrypt)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    tls_files = (cfg.etcd_ca_file, cfg.etcd_cert_file, cfg.etcd_key_file)
    if any(tls_files) and not all(tls_files):
        raise ConfigError("-etcd-ca-file, -etcd-cert-file and -etcd-key-file go together (got "
                          + ", ".join(f"-etcd-{n}-file" for n, v in zip(("ca", "cert", "key"), tls_files, strict=True) if v)
                          + ")")
    exposed = [a for a in (cfg.bind_addr, cfg.advertise_addr) if a and not _is_loopback(a)]
    if not cfg.dev and exposed and not cfg.encrypt:
        raise ConfigError(
            f"refusing to start: {exposed[0]} is not a loopback address (bound or advertised) and there is no "
            "cluster key, so there is no TLS material for etcd's peer and client traffic and nothing to "
            "authenticate the cluster RPC port with. Generate a key with `beacon keygen` and pass it to every "
            "agent with -encrypt (Beacon derives the etcd CA and certificates from it), or use loopback "
            "addresses only.")
    if cfg.leave_on_terminate is None:
        cfg.leave_on_terminate = not cfg.server
    if cfg.skip_leave_on_interrupt is None:
        cfg.skip_leave_on_interrupt = cfg.server
    if cfg.default_query_time > cfg.max_query_time:
        raise ConfigError(f"default_query_time ({cfg.default_query_time}s) cannot exceed "
                          f"max_query_time ({cfg.max_query_time}s)")


def _is_loopback(addr: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return addr == "localhost"
