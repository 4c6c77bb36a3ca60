"""More of the Docker Engine API for runc containers: rename, pause/unpause, top, stats, export, cp
(``/archive``), update, networks and ``system df``.

cp and export read the container's root filesystem from the host side: the overlay mount while the
container runs, or a temporary mount of the same layers while it is stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beacon.runtime._errors import Conflict, InvalidParameter, NotFound, NotImplementedByEngine
from beacon.runtime._http import Request, Response, Stream
from beacon.runtime._layers import LayerError, mount_overlay, resolve_in, umount
from beacon.runtime._model import NAME_RE, optional_str, str_labels

if TYPE_CHECKING:
    from beacon.runtime._api import ApiServer
    from beacon.runtime._engine import Engine, _Slot

CGROUP = Path("/sys/fs/cgroup")
STATS_INTERVAL = 1.0


def routes(api: ApiServer) -> list[tuple[str, str, Any]]:
    h = Extra(api.engine)
    c = r"/containers/(?P<id>[^/]+)"
    return [
        ("POST", c + "/rename", h.rename), ("POST", c + "/pause", h.pause), ("POST", c + "/unpause", h.unpause),
        ("GET", c + "/top", h.top), ("GET", c + "/stats", h.stats), ("GET", c + "/export", h.export),
        ("GET", c + "/archive", h.archive_get), ("HEAD", c + "/archive", h.archive_get),
        ("PUT", c + "/archive", h.archive_put), ("POST", c + "/update", h.update),
        ("GET", r"/networks", h.networks), ("POST", r"/networks/create", h.network_create),
        ("POST", r"/networks/prune", h.network_prune),
        ("POST", r"/networks/(?P<id>[^/]+)/connect", h.network_connect),
        ("POST", r"/networks/(?P<id>[^/]+)/disconnect", h.network_disconnect),
        ("GET", r"/networks/(?P<id>[^/]+)", h.network_inspect), ("DELETE", r"/networks/(?P<id>[^/]+)", h.network_rm),
        ("GET", r"/system/df", h.system_df),
    ]


class Extra:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _runc(self) -> Any:
        from beacon.runtime._runc import RuncIsolation

        backend = self.engine.backend
        if not isinstance(backend, RuncIsolation):
            raise NotImplementedByEngine(f"not available in {self.engine.isolation} isolation (needs runc)")
        return backend

    def _running(self, ref: str) -> _Slot:
        slot = self.engine.resolve(ref)
        if slot.c.state.status != "running" or slot.spawned is None:
            raise Conflict(f"Container {slot.c.id} is not running")
        return slot

    # -- small state changes -------------------------------------------------------------------

    async def rename(self, req: Request, args: dict[str, str]) -> Response:
        slot = self.engine.resolve(args["id"])
        name = (req.q("name") or "").lstrip("/")
        if not name or not NAME_RE.match(name):
            raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        for other in self.engine.slots.values():
            if other.c.name == name and other is not slot:
                raise Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                               f'"{other.c.id}". You have to remove (or rename) that container to be able to '
                               "reuse that name.")
        old, slot.c.name = slot.c.name, name
        self.engine.save_container(slot.c)
        self.engine.emit_event(slot.c, "rename", oldName="/" + old)
        return Response(204)

    async def _pause(self, ref: str, resume: bool) -> Response:
        backend = self._runc()
        slot = self._running(ref)
        if slot.c.state.paused != resume:
            raise Conflict(f"Container {slot.c.id} is {'not ' if resume else ''}paused")
        await backend.pause(slot.spawned, resume)
        slot.c.state.paused = not resume
        self.engine.save_container(slot.c)
        self.engine.emit_event(slot.c, "unpause" if resume else "pause")
        return Response(204)

    async def pause(self, req: Request, args: dict[str, str]) -> Response:
        return await self._pause(args["id"], resume=False)

    async def unpause(self, req: Request, args: dict[str, str]) -> Response:
        return await self._pause(args["id"], resume=True)

    async def update(self, req: Request, args: dict[str, str]) -> Response:
        slot = self.engine.resolve(args["id"])
        body = req.json(default={}) or {}
        if not isinstance(body, dict):
            raise InvalidParameter("invalid JSON: update config must be an object")
        c = slot.c
        memory, cpus, pids = (int(body.get(k) or 0) for k in ("Memory", "NanoCpus", "PidsLimit"))
        if min(memory, cpus, pids) < 0:
            raise InvalidParameter("limits must not be negative")
        if c.state.status == "running" and slot.spawned is not None and (memory or cpus or pids):
            await self._runc().update(slot.spawned, memory, cpus, pids)
        c.memory, c.nano_cpus, c.pids_limit = memory or c.memory, cpus or c.nano_cpus, pids or c.pids_limit
        policy = body.get("RestartPolicy")
        if isinstance(policy, dict) and policy.get("Name"):
            c.restart_policy = {"Name": str(policy["Name"]),
                                "MaximumRetryCount": int(policy.get("MaximumRetryCount") or 0)}
        self.engine.save_container(c)
        self.engine.emit_event(c, "update")
        return Response(200, {"Warnings": []})

    # -- processes and stats -------------------------------------------------------------------

    async def top(self, req: Request, args: dict[str, str]) -> Response:
        self._runc()
        slot = self._running(args["id"])
        pids = _cgroup_pids(slot.c.id)
        ps_args = (req.q("ps_args") or "-ef").split()
        proc = await asyncio.create_subprocess_exec("ps", *ps_args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise InvalidParameter(f"ps: {err.decode(errors='replace').strip()}")
        lines = out.decode(errors="replace").splitlines()
        titles = lines[0].split()
        if "PID" not in titles:
            raise InvalidParameter("Couldn't find PID field in ps output")
        at = titles.index("PID")
        rows = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > at and fields[at].isdigit() and int(fields[at]) in pids:
                rows.append(fields)
        return Response(200, {"Titles": titles, "Processes": rows})

    def _sample(self, slot: _Slot, previous: dict[str, Any] | None) -> dict[str, Any]:
        c = slot.c
        cid = c.id
        mem = _read_int(CGROUP / "memory" / "beacon" / cid / "memory.usage_in_bytes")
        limit = _read_int(CGROUP / "memory" / "beacon" / cid / "memory.limit_in_bytes")
        cpu = _read_int(CGROUP / "cpuacct" / "beacon" / cid / "cpuacct.usage")
        system = _system_cpu_ns()
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        ncpu = os.cpu_count() or 1
        sample = {
            "read": now, "preread": (previous or {}).get("read", "0001-01-01T00:00:00Z"),
            "name": "/" + c.name, "id": cid, "num_procs": 0,
            "pids_stats": {"current": _read_int(CGROUP / "pids" / "beacon" / cid / "pids.current"),
                           **({"limit": c.pids_limit} if c.pids_limit else {})},
            "cpu_stats": {"cpu_usage": {"total_usage": cpu, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                          "system_cpu_usage": system, "online_cpus": ncpu, "throttling_data": {}},
            "precpu_stats": (previous or {}).get("cpu_stats") or {"cpu_usage": {"total_usage": 0},
                                                                  "throttling_data": {}},
            "memory_stats": {"usage": mem, "limit": min(limit, _mem_total()) if limit else _mem_total(),
                             "stats": {}},
            "blkio_stats": {}, "storage_stats": {}, "networks": _net_dev(slot),
        }
        return sample

    async def stats(self, req: Request, args: dict[str, str]) -> Response | Stream:
        self._runc()
        slot = self.engine.resolve(args["id"])
        if not req.flag("stream", True) or req.flag("one-shot"):
            first = self._sample(slot, None)
            if req.flag("one-shot"):
                return Response(200, first)
            await asyncio.sleep(0.2 if slot.c.state.status == "running" else 0)
            return Response(200, self._sample(slot, first))

        async def body() -> AsyncIterator[bytes]:
            previous = None
            while True:
                sample = self._sample(slot, previous)
                yield json.dumps(sample).encode() + b"\n"
                previous = sample
                if slot.c.state.status != "running":
                    return
                await asyncio.sleep(STATS_INTERVAL)

        return Stream(body())

    # -- files ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _rootfs(self, slot: _Slot) -> Iterator[str]:
        """The container's merged root filesystem as a host path (mounted for the duration if stopped)."""
        backend = self._runc()
        c = slot.c
        cdir = self.engine.data_dir / "containers" / c.id
        rootfs = cdir / "bundle" / "rootfs"
        if c.state.status == "running" and slot.spawned is not None and slot.spawned.ns_pid:
            yield f"/proc/{slot.spawned.ns_pid}/root"  # the container's own view, its mounts included
            return
        if not backend.overlay_ok:
            yield str(rootfs)
            return
        lowers = self.engine.images.layer_dirs(c.image_id) if c.image_id else []
        if not lowers:
            yield str(rootfs)
            return
        mount_overlay(lowers, cdir / "upper", cdir / "work", rootfs)
        try:
            yield str(rootfs)
        finally:
            umount(rootfs)

    async def archive_get(self, req: Request, args: dict[str, str]) -> Response | Stream:
        slot = self.engine.resolve(args["id"])
        path = req.q("path") or ""
        if not path:
            raise InvalidParameter("path is required")
        stack = contextlib.ExitStack()
        root = stack.enter_context(self._rootfs(slot))
        try:
            target = resolve_in(root, path, follow_last=False)
            st = os.lstat(target)
        except (OSError, LayerError):
            stack.close()
            raise NotFound(f"Could not find the file {path} in container {slot.c.name}") from None
        info = {"name": os.path.basename(path.rstrip("/")) or "/", "size": st.st_size,
                "mode": _go_mode(st.st_mode), "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
                "linkTarget": os.readlink(target) if stat.S_ISLNK(st.st_mode) else ""}
        header = {"X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(info).encode()).decode()}
        if req.method == "HEAD":
            stack.close()
            return Response(200, None, headers=header)
        parent, name = os.path.split(target.rstrip("/") or "/")
        return await _tar_stream(parent, name or ".", stack, header)

    async def archive_put(self, req: Request, args: dict[str, str]) -> Response:
        slot = self.engine.resolve(args["id"])
        path = req.q("path") or ""
        with self._rootfs(slot) as root:
            try:
                dest = resolve_in(root, path)
            except LayerError as exc:
                raise InvalidParameter(str(exc)) from exc
            if not os.path.isdir(dest):
                raise NotFound(f"Could not find the file {path} in container {slot.c.name}")
            await asyncio.get_running_loop().run_in_executor(None, _extract_into, req.body, root, dest)
        return Response(200, None)

    async def export(self, req: Request, args: dict[str, str]) -> Stream:
        slot = self.engine.resolve(args["id"])
        stack = contextlib.ExitStack()
        root = stack.enter_context(self._rootfs(slot))
        return await _tar_stream(root, ".", stack)

    # -- networks ------------------------------------------------------------------------------

    async def networks(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, [self.engine.networks.view(n, self.engine) for n in self.engine.networks.all()])

    async def network_inspect(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, self.engine.networks.view(self.engine.networks.get(args["id"]), self.engine))

    async def network_create(self, req: Request, args: dict[str, str]) -> Response:
        body = req.json(default={}) or {}
        if not isinstance(body, dict) or not isinstance(body.get("Name"), str):
            raise InvalidParameter("network create needs a Name")
        net = self.engine.networks.create(body["Name"], optional_str(body, "Driver", "bridge"), str_labels(body))
        self.engine.events.emit("network", "create", net["Id"], {"name": net["Name"], "type": "bridge"})
        return Response(201, {"Id": net["Id"], "Warning": ""})

    async def network_rm(self, req: Request, args: dict[str, str]) -> Response:
        net = self.engine.networks.get(args["id"])
        users = [c.name for c in self.engine.containers() if c.network_mode == net["Name"] and
                 c.state.status == "running"]
        self.engine.networks.remove(net, users)
        self.engine.events.emit("network", "destroy", net["Id"], {"name": net["Name"], "type": "bridge"})
        return Response(204)

    def _endpoint(self, req: Request, args: dict[str, str]) -> tuple[dict[str, Any], _Slot, dict[str, Any]]:
        net = self.engine.networks.get(args["id"])
        body = req.json(default={}) or {}
        if not isinstance(body, dict) or not isinstance(body.get("Container"), str):
            raise InvalidParameter("network connect needs a Container")
        return net, self.engine.resolve(body["Container"]), body

    async def network_connect(self, req: Request, args: dict[str, str]) -> Response:
        """A container has one network, chosen at create: connecting it to that one again (as
        docker-compose does) only updates its aliases; any other network is refused."""
        net, slot, body = self._endpoint(req, args)
        if slot.c.network_mode != net["Name"]:
            raise NotImplementedByEngine("beacon containers have one network, chosen with --network at create: "
                                         f"cannot also connect {slot.c.name} to {net['Name']}")
        aliases = (body.get("EndpointConfig") or {}).get("Aliases") or []
        slot.c.aliases = sorted({*slot.c.aliases, *(a for a in aliases if isinstance(a, str))})
        self.engine.save_container(slot.c)
        return Response(200, None)

    async def network_disconnect(self, req: Request, args: dict[str, str]) -> Response:
        net, slot, _ = self._endpoint(req, args)
        if slot.c.network_mode != net["Name"]:
            raise Conflict(f"container {slot.c.id} is not connected to network {net['Name']}")
        if slot.c.state.status == "running":
            raise NotImplementedByEngine("disconnecting a running container is not supported")
        return Response(200, None)

    async def network_prune(self, req: Request, args: dict[str, str]) -> Response:
        deleted = []
        for net in list(self.engine.networks.all()):
            if net.get("builtin"):
                continue
            if any(c.network_mode == net["Name"] for c in self.engine.containers()):
                continue
            self.engine.networks.remove(net, [])
            deleted.append(net["Name"])
        return Response(200, {"NetworksDeleted": deleted})

    # -- system df -----------------------------------------------------------------------------

    async def system_df(self, req: Request, args: dict[str, str]) -> Response:
        store, used = self.engine.images, self.engine.images_in_use()
        images = [store.summary(i, len(used.get(i, []))) for i in sorted(store.ids())]
        layers = sum(store.size(i) for i in store.ids())
        from beacon.runtime import _views as views

        containers = [{**views.summary(c, self.engine.isolation), "SizeRw": 0, "SizeRootFs": 0}
                      for c in self.engine.containers()]
        volumes = [{**v, "UsageData": {"Size": -1, "RefCount": 0}} for v in self.engine.volumes.list()]
        return Response(200, {"LayersSize": layers, "Images": images, "Containers": containers,
                              "Volumes": volumes, "BuildCache": []})


def _extract_into(data: bytes, root: str, dest: str) -> None:
    import io

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            name = os.path.normpath(member.name.lstrip("/"))
            if name.startswith("..") or name == ".":
                continue
            parent = resolve_in(root, os.path.relpath(os.path.join(dest, os.path.dirname(name)), root))
            os.makedirs(parent, exist_ok=True)
            member.name = os.path.relpath(os.path.join(parent, os.path.basename(name)), dest)
            if member.islnk():
                continue  # hard links in cp uploads are rare; skipped rather than trusted
            target = os.path.join(parent, os.path.basename(name))
            if os.path.islink(target) or (os.path.lexists(target) and not member.isdir()):
                # Replace, never write through: a symlink the container planted (say /tmp/x -> /etc/shadow)
                # would otherwise be followed from the host's side.
                if os.path.isdir(target) and not os.path.islink(target):
                    continue
                os.unlink(target)
            tar.extract(member, dest, numeric_owner=True, filter="fully_trusted")


def _go_mode(mode: int) -> int:
    """A Go os.FileMode, which the CLI decodes from the path-stat header."""
    out = mode & 0o777
    if stat.S_ISDIR(mode):
        out |= 1 << 31
    elif stat.S_ISLNK(mode):
        out |= 1 << 27
    return out


def _net_dev(slot: _Slot) -> dict[str, dict[str, int]]:
    """Interface counters as the container sees them (its network namespace's /proc/net/dev)."""
    spawned = slot.spawned
    if spawned is None or not spawned.ns_pid or spawned.netns_fd < 0:
        return {}
    out = {}
    try:
        with open(f"/proc/{spawned.ns_pid}/net/dev") as f:
            for line in f.readlines()[2:]:
                name, _, rest = line.partition(":")
                v = [int(x) for x in rest.split()]
                if name.strip() != "lo" and len(v) >= 16:
                    out[name.strip()] = {"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                                         "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10],
                                         "tx_dropped": v[11]}
    except (OSError, ValueError):
        return {}
    return out


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _cgroup_pids(cid: str) -> set[int]:
    try:
        return {int(x) for x in (CGROUP / "pids" / "beacon" / cid / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _system_cpu_ns() -> int:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:8]
        return sum(int(x) for x in fields) * 10_000_000  # USER_HZ 100 -> ns
    except (OSError, ValueError):
        return 0


def _mem_total() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0



async def _tar_stream(directory: str, name: str, stack: contextlib.ExitStack,
                      headers: dict[str, str] | None = None) -> Stream:
    """Stream ``tar -C directory -c name``; ``stack`` (the mounted rootfs) closes when the body ends."""
    proc = await asyncio.create_subprocess_exec(
        "tar", "-C", directory, "-cf", "-", "--numeric-owner", name, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)

    async def body() -> AsyncIterator[bytes]:
        try:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                yield chunk
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            stack.close()

    return Stream(body(), content_type="application/x-tar", headers=headers or {})
