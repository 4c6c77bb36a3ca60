"""Docker's JSON shapes for containers, images and the daemon: pure functions of engine records."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import time
from collections.abc import Callable
from typing import Any

from beacon.runtime._model import DEFAULT_PATH, Container

API_VERSION = "1.47"
MIN_API_VERSION = "1.24"
ENGINE_VERSION = "28.0.0-beacon"


def human_duration(seconds: float) -> str:
    """Like Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def status_text(c: Container) -> str:
    st, now = c.state, time.time()
    if st.status == "running":
        health = f" ({st.health_status})" if st.health_status else ""
        if st.health_status == "starting":
            health = " (health: starting)"
        if st.paused:
            health = " (Paused)"
        return f"Up {human_duration(now - st.started_unix)}{health}"
    if st.status == "restarting":
        return f"Restarting ({st.exit_code}) {human_duration(now - st.finished_unix)} ago"
    if st.status == "exited" and st.started_unix:
        return f"Exited ({st.exit_code}) {human_duration(now - st.finished_unix)} ago"
    if st.status == "removing":
        return "Removal In Progress"
    return "Created"


def image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _env(c: Container) -> list[str]:
    merged: dict[str, str] = {}
    for item in [*c.image_env, *c.env]:
        key, _, value = item.partition("=")
        merged[key] = value
    env = [f"{k}={v}" for k, v in merged.items()]
    return [*env, *([f"PATH={DEFAULT_PATH}"] if "PATH" not in merged else [])]


def network_name(c: Container, isolation: str) -> str:
    if isolation == "runc":
        return c.network_mode
    return "bridge" if isolation == "netns" else "host"


def _image_id(c: Container) -> str:
    return c.image_id or image_id(c.image)


def _mounts(c: Container) -> list[dict[str, Any]]:
    out = []
    for bind in c.binds:
        parts = bind.split(":")
        if len(parts) < 2:
            continue
        rw = not (len(parts) == 3 and "ro" in parts[2].split(","))
        if parts[0].startswith("/"):
            out.append({"Type": "bind", "Source": parts[0], "Destination": parts[1], "Mode": "", "RW": rw,
                        "Propagation": "rprivate"})
        else:
            out.append({"Type": "volume", "Name": parts[0], "Source": "", "Destination": parts[1],
                        "Driver": "local", "Mode": "z", "RW": rw, "Propagation": ""})
    return out


def _ports_map(c: Container) -> dict[str, Any]:
    ports: dict[str, Any] = {key: None for key in c.exposed_ports}
    if c.state.status == "running":
        ports.update(c.ports)
    return ports


def inspect(c: Container, isolation: str) -> dict[str, Any]:
    st = c.state
    running = st.status == "running"
    health = None
    if c.health and c.health.argv():
        health = {"Status": st.health_status or "unhealthy", "FailingStreak": st.failing_streak,
                  "Log": st.health_log}
    state: dict[str, Any] = {
        "Status": "paused" if running and st.paused else st.status, "Running": running, "Paused": st.paused,
        "Restarting": st.status == "restarting", "OOMKilled": st.oom_killed, "Dead": False, "Pid": st.pid if running else 0, "ExitCode": st.exit_code,
        "Error": st.error, "StartedAt": st.started_at, "FinishedAt": st.finished_at,
    }
    if health is not None:
        state["Health"] = health
    ip, _, prefix = c.address.partition("/")
    prefix_len = int(prefix or 0)
    gateway = "10.213.0.1" if ip else ""
    user_net = isolation == "runc" and c.network_mode not in ("bridge", "host", "none")
    aliases = [*c.aliases, c.id[:12]] if user_net else None  # dockerd adds the short ID on user networks
    network = {"IPAMConfig": None, "Links": None, "Aliases": aliases, "MacAddress": "", "NetworkID": isolation,
               "EndpointID": "", "Gateway": gateway, "IPAddress": ip, "IPPrefixLen": prefix_len, "IPv6Gateway": "",
               "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DriverOpts": None, "DNSNames": None}
    net = network_name(c, isolation)
    argv = c.argv
    return {
        "Id": c.id, "Created": c.created, "Path": argv[0], "Args": argv[1:], "State": state,
        "Image": _image_id(c), "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
        "LogPath": "", "Name": "/" + c.name, "RestartCount": st.restart_count, "Driver": "beacon",
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None,
        "HostConfig": {
            "NetworkMode": net, "PortBindings": c.port_bindings or {}, "RestartPolicy": c.restart_policy,
            "AutoRemove": c.auto_remove, "PublishAllPorts": c.publish_all, "Binds": c.binds or None, "LogConfig":
            {"Type": "json-file", "Config": {}}, "Privileged": c.privileged, "Isolation": "",
            "ReadonlyRootfs": c.read_only, "CapAdd": c.cap_add or None, "CapDrop": c.cap_drop or None,
            "Tmpfs": c.tmpfs or None, "Memory": c.memory, "MemorySwap": c.memory_swap, "NanoCpus": c.nano_cpus,
            "CpuShares": c.cpu_shares, "PidsLimit": c.pids_limit or None, "Init": c.init or None,
            "Mounts": c.mounts or None, "ExtraHosts": c.extra_hosts or None, "Dns": c.dns,
        },
        "GraphDriver": {"Name": "overlay2" if isolation == "runc" else "beacon", "Data": None},
        "Mounts": _mounts(c),
        "Config": {
            "Hostname": c.hostname, "Domainname": "", "User": c.user, "AttachStdin": False, "AttachStdout": False,
            "AttachStderr": False, "ExposedPorts": {k: {} for k in c.exposed_ports} or None, "Tty": c.tty,
            "OpenStdin": False, "StdinOnce": False, "Env": _env(c), "Cmd": c.cmd, "Image": c.image,
            "Volumes": None, "WorkingDir": c.working_dir, "Entrypoint": c.entrypoint, "OnBuild": None,
            "Labels": c.labels, **({"Healthcheck": c.health.to_api()} if c.health else {}),
            **({"StopSignal": c.stop_signal} if c.stop_signal else {}),
            **({"StopTimeout": c.stop_timeout} if c.stop_timeout is not None else {}),
        },
        "NetworkSettings": {
            "Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False, "Ports": _ports_map(c),
            "EndpointID": "", "Gateway": gateway, "IPAddress": ip, "IPPrefixLen": prefix_len, "MacAddress": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
            "Networks": {net: network},
        },
    }


def summary(c: Container, isolation: str) -> dict[str, Any]:
    ports: list[dict[str, Any]] = []
    for key in c.exposed_ports:
        port, _, proto = key.partition("/")
        bound = c.ports.get(key) if c.state.status == "running" else None
        if bound:
            ports += [{"IP": b["HostIp"], "PrivatePort": int(port), "PublicPort": int(b["HostPort"]),
                       "Type": proto} for b in bound]
        else:
            ports.append({"PrivatePort": int(port), "Type": proto})
    net = network_name(c, isolation)
    return {
        "Id": c.id, "Names": ["/" + c.name], "Image": c.image, "ImageID": _image_id(c),
        "Command": " ".join(c.argv), "Created": int(c.created_unix), "Ports": ports, "Labels": c.labels,
        "State": "paused" if c.state.paused and c.state.status == "running" else c.state.status,
        "Status": status_text(c), "HostConfig": {"NetworkMode": net},
        "NetworkSettings": {"Networks": {net: {"IPAddress": c.address.partition("/")[0],
                                                        "NetworkID": isolation}}},
        "Mounts": _mounts(c),
    }


def version() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "Platform": {"Name": "Beacon Engine"}, "Version": ENGINE_VERSION, "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION, "GitCommit": "beacon", "GoVersion": "python" + platform.python_version(),
        "Os": "linux", "Arch": _arch(), "KernelVersion": uname.release, "BuildTime": "",
        "Components": [{"Name": "Engine", "Version": ENGINE_VERSION,
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
                                    "Arch": _arch(), "KernelVersion": uname.release}}],
    }


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def info(counts: dict[str, int], images: int, isolation: str, warnings: list[str], data_dir: str,
         engine_id: str) -> dict[str, Any]:
    uname = platform.uname()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    return {
        "ID": engine_id, **counts, "Images": images, "Driver": "beacon",
        "DriverStatus": [["Isolation", isolation],
                         ["Images", "image store + overlayfs" if isolation == "runc" else
                          "host filesystem (images are not used)"]],
        "Isolation": isolation, "MemoryLimit": isolation == "runc", "SwapLimit": isolation == "runc",
        "CpuCfsPeriod": isolation == "runc", "CpuCfsQuota": isolation == "runc", "IPv4Forwarding": False, "Debug": False, "NFd": 0, "NGoroutines": 0,
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs" if isolation == "runc" else "none",
        "CgroupVersion": "1" if isolation == "runc" else "", "NEventsListener": 0, "KernelVersion": uname.release,
        "OperatingSystem": "Beacon embedded engine", "OSVersion": "", "OSType": "linux", "Architecture": _arch(),
        "IndexServerAddress": "", "RegistryConfig": None, "NCPU": os.cpu_count() or 1, "MemTotal": mem,
        "DockerRootDir": data_dir, "Name": uname.node, "Labels": [], "ExperimentalBuild": False,
        "ServerVersion": ENGINE_VERSION, "Runtimes": {"runc": {"path": "runc"}} if isolation == "runc" else {"beacon": {"path": "beacon-init"}},
        "DefaultRuntime": "runc" if isolation == "runc" else "beacon", "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False},
        "LiveRestoreEnabled": False, "SecurityOptions": [], "Warnings": list(warnings),
    }


def _name_matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, "/" + name) is not None
    except re.error:
        return pattern.lstrip("/") in name


def _label_matches(labels: dict[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    return key in labels and (not sep or labels[key] == value)


def matches(c: Container, filters: dict[str, list[str]], show_all: bool) -> bool:
    """``GET /containers/json`` filtering: labels must all match, other keys match any value."""
    st = c.state
    if not show_all and st.status != "running" and "status" not in filters:
        return False
    checks: dict[str, Callable[[str], bool]] = {
        "label": lambda v: _label_matches(c.labels, v),
        "name": lambda v: _name_matches(v, c.name),
        "id": lambda v: c.id.startswith(v),
        "status": lambda v: st.status == v,
        "health": lambda v: (st.health_status or "none") == v,
        "exited": lambda v: st.status == "exited" and str(st.exit_code) == v,
        "ancestor": lambda v: c.image == v or c.image.partition(":")[0] == v,
    }
    for key, values in filters.items():
        if not values:
            continue
        check = checks[key]
        if not (all(map(check, values)) if key == "label" else any(map(check, values))):
            return False
    return True
