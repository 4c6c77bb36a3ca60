"""The OCI runtime spec (runc's ``config.json``) for a container: pure functions of the container's
settings, its image config and a few paths. Defaults follow dockerd's (moby ``oci/defaults.go``):
the same capability set, masked and read-only paths, /dev mounts and device rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from beacon.numbers import ascii_int
from beacon.runtime._errors import InvalidParameter

DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
ALL_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
            "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
            "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
            "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
            "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
            "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
            "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD = 100_000
INIT_PATH = "/sbin/docker-init"


def _dev_rule(kind: str, major: int | None, minor: int | None, access: str = "rwm") -> dict[str, Any]:
    return {"allow": True, "type": kind, "major": major, "minor": minor, "access": access}


DEFAULT_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    _dev_rule("c", None, None, "m"), _dev_rule("b", None, None, "m"),
    _dev_rule("c", 1, 3), _dev_rule("c", 1, 8), _dev_rule("c", 1, 7), _dev_rule("c", 5, 0),
    _dev_rule("c", 1, 5), _dev_rule("c", 1, 9), _dev_rule("c", 136, None), _dev_rule("c", 5, 2),
    _dev_rule("c", 10, 200),
]


@dataclass
class Settings:
    """What the spec needs from a container, gathered by the runc backend."""

    id: str
    argv: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    groups: list[int]
    hostname: str
    rootfs: str
    read_only: bool = False
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    netns_path: str | None = None  # None: the host's network
    files: dict[str, str] = field(default_factory=dict)  # /etc/hosts etc.: destination -> host file
    binds: list[tuple[str, str, bool]] = field(default_factory=list)  # (source, destination, read-only)
    tmpfs: dict[str, str] = field(default_factory=dict)
    memory: int = 0
    memory_swap: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    pids_limit: int = 0
    init_binary: str = ""  # host path of docker-init when --init
    tty: bool = False


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 37


def _bounding() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return (1 << 64) - 1


# The list is in capability-number order. --privileged gets what this kernel has and the engine may
# grant (its bounding set): asking runc for more fails the start ("unable to apply caps").
KERNEL_CAPS = [c for i, c in enumerate(ALL_CAPS[: _last_cap() + 1]) if _bounding() >> i & 1]


def capabilities(add: list[str], drop: list[str], privileged: bool) -> list[str]:
    if privileged:
        return list(KERNEL_CAPS)
    caps = list(DEFAULT_CAPS)

    def norm(name: str) -> str:
        name = name.upper()
        return name if name.startswith("CAP_") or name == "ALL" else "CAP_" + name

    adds, drops = [norm(c) for c in add], [norm(c) for c in drop]
    for name in adds + drops:
        if name != "CAP_ALL" and name != "ALL" and name not in ALL_CAPS:
            raise InvalidParameter(f"unknown capability: {name!r}")
    if "ALL" in drops or "CAP_ALL" in drops:
        caps = []
    else:
        caps = [c for c in caps if c not in drops]
    if "ALL" in adds or "CAP_ALL" in adds:
        caps = [c for c in KERNEL_CAPS if c not in drops]
    else:
        caps += [c for c in adds if c not in caps]
    return caps


def _tmpfs_options(raw: str) -> list[str]:
    opts = ["nosuid", "nodev", "noexec"]
    for opt in filter(None, (raw or "").split(",")):
        for clash in (("exec", "noexec"), ("suid", "nosuid"), ("dev", "nodev")):
            if opt == clash[0] and clash[1] in opts:
                opts.remove(clash[1])
        if opt not in opts:
            opts.append(opt)
    return opts


def build(s: Settings) -> dict[str, Any]:
    caps = capabilities(s.cap_add, s.cap_drop, s.privileged)
    argv = [INIT_PATH, "--", *s.argv] if s.init_binary else list(s.argv)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if s.privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if s.privileged else "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
    ]
    for dest, source in s.files.items():
        mounts.append({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rprivate"]})
    for source, dest, ro in s.binds:
        mounts.append({"destination": dest, "type": "bind", "source": source,
                       "options": ["rbind", "rprivate", *(["ro"] if ro else [])]})
    for dest, raw in s.tmpfs.items():
        mounts.append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": _tmpfs_options(raw)})
    if s.init_binary:
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": s.init_binary,
                       "options": ["rbind", "rprivate", "ro"]})
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if s.netns_path is not None:
        namespaces.append({"type": "network", "path": s.netns_path})
    resources: dict[str, Any] = {"devices": [{"allow": True, "access": "rwm"}] if s.privileged
                                 else DEFAULT_DEVICE_RULES}
    if s.memory:
        swap = s.memory_swap if s.memory_swap else 2 * s.memory  # dockerd's default: as much swap again
        resources["memory"] = {"limit": s.memory, **({"swap": swap} if swap > 0 else {})}
    cpu: dict[str, Any] = {}
    if s.nano_cpus:
        cpu.update(period=CPU_PERIOD, quota=s.nano_cpus * CPU_PERIOD // 1_000_000_000)
    if s.cpu_shares:
        cpu["shares"] = s.cpu_shares
    if cpu:
        resources["cpu"] = cpu
    if s.pids_limit:
        resources["pids"] = {"limit": s.pids_limit}
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": f"/beacon/{s.id}",
        "resources": resources,
    }
    if not s.privileged:
        linux["maskedPaths"] = MASKED_PATHS
        linux["readonlyPaths"] = READONLY_PATHS
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": s.tty,
            "user": {"uid": s.uid, "gid": s.gid, **({"additionalGids": s.groups} if s.groups else {})},
            "args": argv,
            "env": s.env,
            "cwd": s.cwd or "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": False,
            "oomScoreAdj": 0,
        },
        "root": {"path": s.rootfs, "readonly": s.read_only},
        "hostname": s.hostname,
        "mounts": mounts,
        "linux": linux,
    }


def lookup_user(rootfs: str, spec: str) -> tuple[int, int, list[int], str]:
    """``-u`` (``name|uid[:group|gid]``) against the image's /etc/passwd and /etc/group:
    (uid, gid, supplementary gids, home)."""
    user, _, group = (spec or "").partition(":")
    passwd = _read_db(os.path.join(rootfs, "etc/passwd"))
    groups_db = _read_db(os.path.join(rootfs, "etc/group"))
    uid, gid, home, name = 0, 0, "/", "root"
    if user == "" or ascii_int(user, 10) is not None:
        uid = ascii_int(user or "0", 10) or 0
        for row in passwd:
            if len(row) > 5 and row[2] == str(uid):
                gid, home, name = ascii_int(row[3], 10) or 0, row[5], row[0]
                break
        else:
            home = "/root" if uid == 0 else "/"
    else:
        for row in passwd:
            if row[0] == user and len(row) > 5:
                uid, gid, home, name = int(row[2]), int(row[3]), row[5], user
                break
        else:
            raise InvalidParameter(f"unable to find user {user}: no matching entries in passwd file")
    if group:
        if (number := ascii_int(group, 10)) is not None:
            gid = number
        else:
            for row in groups_db:
                if row[0] == group and len(row) > 2:
                    gid = int(row[2])
                    break
            else:
                raise InvalidParameter(f"unable to find group {group}: no matching entries in group file")
    extra = []
    for row in groups_db:
        if len(row) > 3 and name in row[3].split(",") and ascii_int(row[2], 10) not in (None, gid):
            extra.append(int(row[2]))
    return uid, gid, extra, home or "/"


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def merge_env(image_env: list[str], env: list[str], hostname: str, home: str) -> list[str]:
    """The process environment as dockerd builds it: PATH and HOSTNAME first, the image's, then the
    container's (later keys win), HOME from /etc/passwd unless set."""
    out: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for item in [*image_env, *env]:
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    out.setdefault("HOME", home)
    return [f"{k}={v}" for k, v in out.items()]
