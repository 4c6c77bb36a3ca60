"""What ``GET /v1/agent/host`` reports: the host's memory, CPUs, identity and root disk.

Consul collects this with gopsutil; the keys below are gopsutil's JSON names, so ``consul debug``-style
tooling reads the same document. Everything comes from ``/proc``, ``/sys`` and ``statvfs``; a part
that cannot be read is left ``null`` and its reason goes into ``Errors``, as Consul does.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

DISK_USAGE_PATH = "/"


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                value = int(parts[0])
                out[name] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def memory() -> dict[str, Any]:
    m = _meminfo()
    total, free = m.get("MemTotal", 0), m.get("MemFree", 0)
    buffers = m.get("Buffers", 0)
    cached = m.get("Cached", 0) + m.get("SReclaimable", 0)  # gopsutil counts reclaimable slab as cache
    available = m.get("MemAvailable", free + buffers + cached)
    used = max(0, total - free - buffers - cached)
    out: dict[str, Any] = {"total": total, "available": available, "used": used,
                           "usedPercent": (used / total * 100.0) if total else 0.0, "free": free,
                           "wired": 0, "laundry": 0, "buffers": buffers, "cached": cached}
    out.update((name, m.get(key, 0)) for name, key in _MEMINFO_FIELDS.items())
    return out


# gopsutil's VirtualMemoryStat field -> its /proc/meminfo line, for the fields read as they are
_MEMINFO_FIELDS = {
    "active": "Active", "inactive": "Inactive", "writeBack": "Writeback", "dirty": "Dirty",
    "writeBackTmp": "WritebackTmp", "shared": "Shmem", "slab": "Slab", "sreclaimable": "SReclaimable",
    "sunreclaim": "SUnreclaim", "pageTables": "PageTables", "swapCached": "SwapCached",
    "commitLimit": "CommitLimit", "committedAS": "Committed_AS", "highTotal": "HighTotal",
    "highFree": "HighFree", "lowTotal": "LowTotal", "lowFree": "LowFree", "swapTotal": "SwapTotal",
    "swapFree": "SwapFree", "mapped": "Mapped", "vmallocTotal": "VmallocTotal", "vmallocUsed": "VmallocUsed",
    "vmallocChunk": "VmallocChunk", "hugePagesTotal": "HugePages_Total", "hugePagesFree": "HugePages_Free",
    "hugePagesRsvd": "HugePages_Rsvd", "hugePagesSurp": "HugePages_Surp", "hugePageSize": "Hugepagesize",
    "anonHugePages": "AnonHugePages",
}


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def cpus() -> list[dict[str, Any]]:
    """One entry per logical CPU, from ``/proc/cpuinfo`` (gopsutil's ``cpu.Info``)."""
    out: list[dict[str, Any]] = []
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        blocks = f.read().strip().split("\n\n")
    for block in blocks:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "processor" not in fields:
            continue
        try:
            mhz = float(fields.get("cpu MHz", "0") or 0)
        except ValueError:
            mhz = 0.0
        cache = fields.get("cache size", "").split()
        out.append({
            "cpu": _int(fields["processor"]), "vendorId": fields.get("vendor_id", ""),
            "family": fields.get("cpu family", ""), "model": fields.get("model", ""),
            "stepping": _int(fields.get("stepping", "0")), "physicalId": fields.get("physical id", ""),
            "coreId": fields.get("core id", ""), "cores": 1,  # gopsutil: one entry per logical CPU
            "modelName": fields.get("model name", ""), "mhz": mhz,
            "cacheSize": _int(cache[0]) if cache else 0, "flags": fields.get("flags", "").split(),
            "microcode": fields.get("microcode", ""),
        })
    return out


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    key, _, value = line.strip().partition("=")
                    if key:
                        out[key] = value.strip().strip('"')
            return out
        except OSError:
            continue
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def host() -> dict[str, Any]:
    with open("/proc/uptime", encoding="ascii") as f:
        uptime = int(float(f.read().split()[0]))
    procs = sum(1 for name in os.listdir("/proc") if name.isdigit())
    release = _os_release()
    likes = (release.get("ID_LIKE") or release.get("ID") or "").split()
    family = likes[0] if likes else ""
    version = _read("/etc/debian_version") if release.get("ID") == "debian" else release.get("VERSION_ID", "")
    host_id = _read("/sys/class/dmi/id/product_uuid") or _read("/proc/sys/kernel/random/boot_id")
    return {
        "hostname": socket.gethostname(), "uptime": uptime, "bootTime": int(time.time()) - uptime,
        "procs": procs, "os": platform.system().lower(), "platform": release.get("ID", ""),
        "platformFamily": family, "platformVersion": version, "kernelVersion": platform.release(),
        "kernelArch": platform.machine(), "virtualizationSystem": "", "virtualizationRole": "",
        "hostId": host_id.lower(),
    }


def _fstype(path: str) -> str:
    """The type of the mount that holds ``path`` (the longest mount point that prefixes it)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        return ""
    return kind


def disk(path: str = DISK_USAGE_PATH) -> dict[str, Any]:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    inodes_used = st.f_files - st.f_ffree
    return {
        "path": path, "fstype": _fstype(path), "total": total, "free": free, "used": used,
        "usedPercent": (used / (used + free) * 100.0) if used + free else 0.0,
        "inodesTotal": st.f_files, "inodesUsed": inodes_used, "inodesFree": st.f_ffree,
        "inodesUsedPercent": (inodes_used / st.f_files * 100.0) if st.f_files else 0.0,
    }


def collect() -> dict[str, Any]:
    """Consul's ``HostInfo``: each part, or ``null`` with the reason in ``Errors``."""
    info: dict[str, Any] = {"Memory": None, "CPU": None, "Host": None, "Disk": None,
                            "CollectionTime": time.time_ns(), "Errors": None}
    errors: list[str] = []
    for key, part in (("Host", host), ("Memory", memory), ("Disk", disk), ("CPU", cpus)):
        try:
            info[key] = part()
        except (OSError, ValueError, IndexError) as exc:
            errors.append(f"{key.lower()}: {exc}")
    if errors:
        info["Errors"] = errors
    return info
