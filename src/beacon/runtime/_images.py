"""The image store: content-addressed blobs, image configs, tags and digests, shared unpacked layers.

Layout under ``<data_dir>/images``::

    blobs/sha256/<hex>     image configs (the image ID is the digest of its config) and layer tars,
                           stored uncompressed, so a layer blob's digest is its diff ID
    layers/<hex>/          each layer unpacked once (overlay format, see ``_layers``), shared
    repositories.json      {"tags": {"busybox:latest": "sha256:..."},
                            "digests": {"reg/x@sha256:...": "sha256:..."}, "tagged_at": {...}}

Every method blocks (disk I/O, tar); the API calls them in a thread. One lock guards the metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from beacon.runtime import _dockerfile as dockerfile
from beacon.runtime._errors import Conflict, InvalidParameter, NotFound
from beacon.runtime._layers import LayerError, dir_size, store_tar, unpack

DEFAULT_TAG = "latest"
HUB_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/", "library/")


def arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def rfc3339_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 1_000_000_000:09d}Z"


def split_ref(ref: str) -> tuple[str, str, str]:
    """``name[:tag][@digest]`` -> (name, tag, digest), with Docker Hub's prefixes dropped."""
    ref = ref.strip()
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    for prefix in HUB_PREFIXES:
        if name.startswith(prefix) and "/" not in name[len(prefix):]:
            name = name[len(prefix):]
            break
    if not name or name != name.lower() or " " in name:
        raise InvalidParameter(f"invalid reference format: {ref!r}")
    return name, tag, digest


def normalize(ref: str) -> str:
    """``busybox`` -> ``busybox:latest``; digests are kept as ``name@sha256:...``."""
    name, tag, digest = split_ref(ref)
    if digest:
        return f"{name}@{digest}"
    return f"{name}:{tag or DEFAULT_TAG}"


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.layers = root / "layers"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.layers.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._repo_file = root / "repositories.json"
        try:
            repo = json.loads(self._repo_file.read_text())
        except (OSError, ValueError):
            repo = {}
        self.tags: dict[str, str] = repo.get("tags", {})
        self.digests: dict[str, str] = repo.get("digests", {})
        self.tagged_at: dict[str, str] = repo.get("tagged_at", {})
        self._configs: dict[str, dict[str, Any]] = {}
        for leftover in self.layers.glob("*.unpacking"):
            shutil.rmtree(leftover, ignore_errors=True)

    # -- persistence ---------------------------------------------------------------------------

    def _save(self) -> None:
        tmp = self._repo_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tags": self.tags, "digests": self.digests, "tagged_at": self.tagged_at}))
        os.replace(tmp, self._repo_file)

    def blob_path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise InvalidParameter(f"invalid digest {digest!r}")
        return self.blobs / hexd

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return digest

    # -- lookup --------------------------------------------------------------------------------

    def ids(self) -> set[str]:
        return {i for i in (*self.tags.values(), *self.digests.values())} | self._untagged()

    def _untagged(self) -> set[str]:
        marker = self.root / "untagged.json"
        try:
            return set(json.loads(marker.read_text()))
        except (OSError, ValueError):
            return set()

    def intermediates(self) -> set[str]:
        """Images the builder made for its steps: hidden from ``docker images`` without ``-a``."""
        try:
            return set(json.loads((self.root / "intermediate.json").read_text()))
        except (OSError, ValueError):
            return set()

    def mark_intermediate(self, image_id: str) -> None:
        with self.lock:
            marks = self.intermediates() & self.ids() | {image_id}
            (self.root / "intermediate.json").write_text(json.dumps(sorted(marks)))

    def _set_untagged(self, ids: set[str]) -> None:
        (self.root / "untagged.json").write_text(json.dumps(sorted(ids)))

    def resolve(self, ref: str) -> str:
        """An image ID for a tag, a digest reference, a full ID or an unambiguous ID prefix."""
        with self.lock:
            if not ref:
                raise NotFound("No such image: ")
            ids = self.ids()
            bare = ref.removeprefix("sha256:")
            if len(bare) == 64 and f"sha256:{bare}" in ids:
                return f"sha256:{bare}"
            try:
                key = normalize(ref)
            except InvalidParameter:
                key = ""
            if key in self.tags:
                return self.tags[key]
            if key in self.digests:
                return self.digests[key]
            if len(bare) >= 4 and all(c in "0123456789abcdef" for c in bare):
                found = [i for i in ids if i.removeprefix("sha256:").startswith(bare)]
                if len(found) == 1:
                    return found[0]
            raise NotFound(f"No such image: {ref}")

    def config(self, image_id: str) -> dict[str, Any]:
        cached = self._configs.get(image_id)
        if cached is None:
            try:
                cached = json.loads(self.blob_path(image_id).read_bytes())
            except (OSError, ValueError) as exc:
                raise NotFound(f"No such image: {image_id} ({exc})") from exc
            self._configs[image_id] = cached
        return cached

    def diff_ids(self, image_id: str) -> list[str]:
        return list((self.config(image_id).get("rootfs") or {}).get("diff_ids") or [])

    def layer_dirs(self, image_id: str) -> list[Path]:
        """The image's unpacked layers, top first (overlay's lowerdir order)."""
        return [self.layers / d.removeprefix("sha256:") for d in reversed(self.diff_ids(image_id))]

    def repo_tags(self, image_id: str) -> list[str]:
        return sorted(t for t, i in self.tags.items() if i == image_id)

    def repo_digests(self, image_id: str) -> list[str]:
        return sorted(d for d, i in self.digests.items() if i == image_id)

    def size(self, image_id: str) -> int:
        total = 0
        for d in self.diff_ids(image_id):
            meta = self.layers / (d.removeprefix("sha256:") + ".size")
            try:
                total += int(meta.read_text())
            except (OSError, ValueError):
                total += dir_size(self.layers / d.removeprefix("sha256:"))
        return total

    # -- adding --------------------------------------------------------------------------------

    def add_layer(self, stream: IO[bytes], expected: str = "") -> str:
        """Store and unpack a (maybe gzipped) layer tar; returns its diff ID. Already known layers are
        not unpacked again."""
        tmp = self.blobs / f"incoming.{os.getpid()}.{threading.get_ident()}"
        diff_id, _ = store_tar(stream, tmp)
        if expected and diff_id != expected:
            tmp.unlink(missing_ok=True)
            raise InvalidParameter(f"layer digest mismatch: got {diff_id}, want {expected}")
        hexd = diff_id.removeprefix("sha256:")
        with self.lock:
            os.replace(tmp, self.blobs / hexd)
            target = self.layers / hexd
            if not target.is_dir():
                try:
                    size = unpack(self.blobs / hexd, target)
                except LayerError as exc:
                    raise InvalidParameter(str(exc)) from exc
                (self.layers / f"{hexd}.size").write_text(str(size))
        return diff_id

    def add_image(self, config: dict[str, Any], tags: list[str] = (), digest_ref: str = "") -> str:  # type: ignore[assignment]
        for d in (config.get("rootfs") or {}).get("diff_ids") or []:
            if not (self.layers / d.removeprefix("sha256:")).is_dir():
                raise InvalidParameter(f"image config names layer {d} that is not in the store")
        data = json.dumps(config, separators=(",", ":")).encode()
        return self.add_config_bytes(data, tags, digest_ref)

    def add_config_bytes(self, data: bytes, tags: list[str] = (), digest_ref: str = "") -> str:  # type: ignore[assignment]
        with self.lock:
            image_id = self.put_blob(data)
            self._configs.pop(image_id, None)
            known = image_id in self.ids()
            for t in tags:
                self._tag_locked(image_id, t)  # may leave the tag's previous image dangling
            if digest_ref:
                self.digests[normalize(digest_ref)] = image_id
            untagged = self._untagged()  # read after tagging, which may have added to it
            if tags or digest_ref:
                untagged.discard(image_id)
            elif not known:
                untagged.add(image_id)
            self._set_untagged(untagged)
            self._save()
            return image_id

    def _tag_locked(self, image_id: str, ref: str) -> None:
        key = normalize(ref)
        if "@" in key:
            raise InvalidParameter(f"refusing to create a tag with a digest reference: {ref}")
        old = self.tags.get(key)
        self.tags[key] = image_id
        self.tagged_at[key] = rfc3339_now()
        if old and old != image_id and old not in self.tags.values() and old not in self.digests.values():
            untagged = self._untagged() | {old}  # the old image stays, dangling (as with Docker)
            self._set_untagged(untagged)

    def tag(self, source: str, repo: str, tag: str) -> None:
        image_id = self.resolve(source)
        target = f"{repo}:{tag}" if tag else repo
        with self.lock:
            self._tag_locked(image_id, target)
            untagged = self._untagged()
            untagged.discard(image_id)
            self._set_untagged(untagged)
            self._save()

    # -- removing ------------------------------------------------------------------------------

    def remove(self, ref: str, force: bool, in_use: dict[str, list[str]]) -> list[dict[str, str]]:
        """``docker rmi``: untag, and delete the image once no tag is left. ``in_use`` maps image IDs to
        the containers using them."""
        with self.lock:
            image_id = self.resolve(ref)
            try:
                key = normalize(ref)
            except InvalidParameter:
                key = ""
            by_name = key in self.tags or key in self.digests
            tags = self.repo_tags(image_id)
            digests = self.repo_digests(image_id)
            out: list[dict[str, str]] = []
            users = in_use.get(image_id, [])
            if by_name:
                if len(tags) + len(digests) > 1 or (users and force):
                    self.tags.pop(key, None)
                    self.digests.pop(key, None)
                    self._save()
                    if self.repo_tags(image_id) or self.repo_digests(image_id):
                        return [{"Untagged": key}]
                    self._set_untagged(self._untagged() | {image_id})
                    return [{"Untagged": key}]
                if users:
                    raise Conflict(f'conflict: unable to remove repository reference "{ref}" (must force) - '
                                   f"container {users[0][:12]} is using its referenced image {image_id[7:19]}")
            else:
                if users:
                    raise Conflict(f"conflict: unable to delete {image_id[7:19]} (cannot be forced) - "
                                   f"image is being used by running container {users[0][:12]}"
                                   if not force else
                                   f"conflict: unable to delete {image_id[7:19]} (must be forced) - "
                                   f"image is being used by stopped container {users[0][:12]}")
                if len(tags) > 1 and not force:
                    raise Conflict(f"conflict: unable to delete {image_id[7:19]} (must be forced) - image is "
                                   "referenced in multiple repositories")
            for t in tags:
                self.tags.pop(t, None)
                out.append({"Untagged": t})
            for d in digests:
                self.digests.pop(d, None)
                out.append({"Untagged": d})
            untagged = self._untagged()
            untagged.discard(image_id)
            self._set_untagged(untagged)
            self._save()
            out.append({"Deleted": image_id})
            self._gc_layers()
            return out

    def _gc_layers(self) -> None:
        wanted = {d.removeprefix("sha256:") for i in self.ids() for d in self.diff_ids(i)}
        keep_configs = {i.removeprefix("sha256:") for i in self.ids()}
        for entry in self.layers.iterdir():
            hexd = entry.name.split(".")[0]
            if hexd not in wanted:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        for blob in self.blobs.iterdir():
            if len(blob.name) == 64 and blob.name not in wanted and blob.name not in keep_configs:
                blob.unlink(missing_ok=True)
        self._configs = {k: v for k, v in self._configs.items() if k in self.ids()}

    def prune(self, all_unused: bool, in_use: dict[str, list[str]],
              wanted: Callable[[str], bool] = lambda _: True) -> tuple[list[dict[str, str]], int]:
        deleted: list[dict[str, str]] = []
        reclaimed = 0
        with self.lock:
            candidates = self._untagged() if not all_unused else self.ids()
            for image_id in sorted(candidates):
                if in_use.get(image_id) or not wanted(image_id):
                    continue
                reclaimed += self.size(image_id)
                deleted += self.remove(image_id, True, in_use)
        return deleted, reclaimed

    # -- views ---------------------------------------------------------------------------------

    def summary(self, image_id: str, containers: int) -> dict[str, Any]:
        cfg = self.config(image_id)
        size = self.size(image_id)
        return {"Id": image_id, "ParentId": "", "RepoTags": self.repo_tags(image_id),
                "RepoDigests": self.repo_digests(image_id), "Created": _unix(cfg.get("created")),
                "Size": size, "SharedSize": -1, "VirtualSize": size,
                "Labels": (cfg.get("config") or {}).get("Labels") or {}, "Containers": containers}

    def inspect(self, image_id: str) -> dict[str, Any]:
        cfg = self.config(image_id)
        inner = dict(cfg.get("config") or {})
        config = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
                  "AttachStderr": False, "ExposedPorts": None, "Tty": False, "OpenStdin": False,
                  "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
                  "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None, **inner}
        tags = self.repo_tags(image_id)
        size = self.size(image_id)
        return {"Id": image_id, "RepoTags": tags, "RepoDigests": self.repo_digests(image_id), "Parent": "",
                "Comment": (cfg.get("history") or [{}])[-1].get("comment", ""),
                "Created": cfg.get("created") or "1970-01-01T00:00:00Z", "DockerVersion": "",
                "Author": cfg.get("author", ""), "Config": config,
                "Architecture": cfg.get("architecture", arch()), "Os": cfg.get("os", "linux"),
                "Size": size, "VirtualSize": size,
                "GraphDriver": {"Name": "overlay2", "Data": {
                    "LowerDir": ":".join(str(p) for p in self.layer_dirs(image_id))}},
                "RootFS": {"Type": "layers", "Layers": self.diff_ids(image_id)},
                "Metadata": {"LastTagTime": max((self.tagged_at.get(t, "") for t in tags), default="")
                             or "0001-01-01T00:00:00Z"}}

    # -- load / save / import ------------------------------------------------------------------

    def load(self, data: IO[bytes]) -> list[str]:
        """``docker load``: a ``docker save`` archive (manifest.json; the OCI layout docker 25+ writes
        carries one too). Returns the "Loaded image..." lines."""
        try:
            tar = tarfile.open(fileobj=data, mode="r:*")
        except tarfile.TarError as exc:
            raise InvalidParameter(f"invalid archive: {exc}") from exc
        with tar:
            try:
                manifest = json.loads(_member(tar, "manifest.json"))
            except (KeyError, ValueError) as exc:
                raise InvalidParameter(f"invalid archive: no usable manifest.json ({exc})") from exc
            lines = []
            for entry in manifest:
                config_bytes = _member(tar, entry["Config"])
                config = json.loads(config_bytes)
                diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
                if len(diff_ids) != len(entry.get("Layers") or []):
                    raise InvalidParameter("invalid archive: layer count does not match the config")
                for path, diff_id in zip(entry["Layers"], diff_ids, strict=True):
                    if (self.layers / diff_id.removeprefix("sha256:")).is_dir():
                        continue
                    member = tar.extractfile(_resolve_member(tar, path))
                    if member is None:
                        raise InvalidParameter(f"invalid archive: {path} is not a file")
                    self.add_layer(member, diff_id)
                tags = [normalize(t) for t in entry.get("RepoTags") or []]
                image_id = self.add_config_bytes(config_bytes, tags)
                lines += [f"Loaded image: {t}" for t in tags] or [f"Loaded image ID: {image_id}"]
            return lines

    def save(self, refs: list[str], out: IO[bytes]) -> None:
        """``docker save``: the classic docker-archive layout (manifest.json, config, layer.tar each)."""
        entries: list[tuple[str, list[str]]] = []
        for ref in refs:
            image_id = self.resolve(ref)
            tags = [normalize(ref)] if "@" not in ref and not ref.startswith("sha256:") and \
                normalize(ref) in self.tags else ([] if ref.startswith("sha256:") else self.repo_tags(image_id))
            entries.append((image_id, tags))
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            manifest = []
            written: set[str] = set()
            for image_id, tags in entries:
                hexid = image_id.removeprefix("sha256:")
                layers = []
                for d in self.diff_ids(image_id):
                    hexd = d.removeprefix("sha256:")
                    name = f"{hexd}/layer.tar"
                    layers.append(name)
                    if name not in written:
                        tar.add(self.blobs / hexd, arcname=name)
                        written.add(name)
                if hexid not in written:
                    tar.add(self.blob_path(image_id), arcname=f"{hexid}.json")
                    written.add(hexid)
                manifest.append({"Config": f"{hexid}.json", "RepoTags": tags or None, "Layers": layers})
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())

    def import_tar(self, data: IO[bytes], ref: str, changes: list[str], message: str = "") -> str:
        """``docker import``: one layer from a filesystem tar, config from ``--change`` lines."""
        diff_id = self.add_layer(data)
        inner: dict[str, Any] = {}
        for line in changes:
            for keyword, args in dockerfile.parse(line):
                dockerfile.apply(inner, keyword, args)
        now = rfc3339_now()
        config = {"architecture": arch(), "os": "linux", "created": now,
                  "config": dockerfile.strip_marks(inner),
                  "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                  "history": [{"created": now, "comment": message or "Imported from -"}]}
        return self.add_image(config, [ref] if ref else [])


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(_resolve_member(tar, name))
    if f is None:
        raise KeyError(name)
    return f.read()


def _resolve_member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    info = tar.getmember(name)
    for _ in range(10):  # docker 25+ archives link the legacy paths to blobs/sha256/...
        if info.issym():
            info = tar.getmember(os.path.normpath(os.path.join(os.path.dirname(info.name), info.linkname)))
        elif info.islnk():
            info = tar.getmember(info.linkname)
        else:
            return info
    raise KeyError(name)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _unix(created: Any) -> int:
    if not isinstance(created, str) or len(created) < 19:
        return 0
    try:
        return int(time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone)
    except ValueError:
        return 0


def merge_image(store: ImageStore, spec: dict[str, Any]) -> None:
    """Fill what a create request left out from its image's config, as dockerd does."""
    from beacon.runtime._model import HealthSpec

    try:
        image_id = store.resolve(spec["image"])
    except NotFound:
        raise NotFound(f"No such image: {normalize(spec['image'])}") from None
    cfg = store.config(image_id).get("config") or {}
    spec["image_id"] = image_id
    if spec["entrypoint"] is None:
        spec["entrypoint"] = list(cfg.get("Entrypoint") or []) or None
        if not spec["cmd"]:
            spec["cmd"] = list(cfg.get("Cmd") or [])
    spec["image_env"] = list(cfg.get("Env") or [])
    spec["working_dir"] = spec["working_dir"] or cfg.get("WorkingDir") or ""
    spec["user"] = spec["user"] or cfg.get("User") or ""
    spec["labels"] = {**(cfg.get("Labels") or {}), **spec["labels"]}
    for port in cfg.get("ExposedPorts") or {}:
        if port not in spec["exposed_ports"]:
            spec["exposed_ports"].append(port)
    if spec["health"] is None and cfg.get("Healthcheck"):
        spec["health"] = HealthSpec.from_api(cfg["Healthcheck"])
    spec["stop_signal"] = spec["stop_signal"] or cfg.get("StopSignal") or ""
    # The image's VOLUMEs and --mount volumes without a name get anonymous volumes, named now so that
    # every start of the container finds the same ones (dockerd does the same).
    for m in spec["mounts"]:
        if m.get("Type", "volume") == "volume" and not m.get("Source"):
            m["Source"] = os.urandom(32).hex()
    taken = {b.split(":")[1] for b in spec["binds"] if ":" in b} | {str(m.get("Target")) for m in spec["mounts"]}
    for path in cfg.get("Volumes") or {}:
        if path not in taken:
            spec["binds"].append(f"{os.urandom(32).hex()}:{path}")
