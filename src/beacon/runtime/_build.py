"""The legacy builder (``POST /build``; ``DOCKER_BUILDKIT=0 docker build``, the SDK's ``images.build``,
docker-compose 1.29): a Dockerfile run one instruction at a time, a layer per RUN/COPY/ADD step.

Every step's result is an (untagged) image in the store, as with dockerd's legacy builder, and a cache
maps (parent image, instruction, copied content) to it, so an unchanged step is not run again. RUN
runs as a real container of the engine (runc) from the previous step's image; its layer is the
container's overlay upper directory, turned back into a tar with ``.wh.`` whiteouts.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beacon.runtime import _dockerfile as dockerfile
from beacon.runtime._errors import EngineError, InvalidParameter, NotFound
from beacon.runtime._images import arch, normalize, rfc3339_now
from beacon.runtime._layers import OPAQUE, OPAQUE_XATTR, WHITEOUT, resolve_in

if TYPE_CHECKING:
    from beacon.runtime._engine import Engine

Emit = Callable[[dict[str, Any]], None]
RUNTIME_FILES = {"etc/hosts", "etc/hostname", "etc/resolv.conf"}  # mount points runc leaves behind
RUNTIME_DIRS = {"proc", "sys", "dev"}


class Builder:
    def __init__(self, engine: Engine, emit: Emit) -> None:
        self.engine, self.store, self.emit = engine, engine.images, emit
        self.cache_path = engine.images.root / "build-cache.json"

    def say(self, text: str) -> None:
        self.emit({"stream": text})

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _cache(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.cache_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _cached(self, key: str) -> str | None:
        image_id = self._cache().get(key)
        return image_id if image_id and image_id in self.store.ids() else None

    def _remember(self, key: str, image_id: str) -> None:
        cache = self._cache()
        cache[key] = image_id
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(self.cache_path)

    async def build(self, context: Path, dockerfile_name: str, tags: list[str], build_args: dict[str, str],
                    labels: dict[str, str], nocache: bool) -> str:
        path = resolve_in(str(context), dockerfile_name or "Dockerfile")
        try:
            text = Path(path).read_text()
        except OSError:
            raise InvalidParameter(f"Cannot locate specified Dockerfile: {dockerfile_name or 'Dockerfile'}") from None
        steps = dockerfile.parse(text)
        if labels:
            steps.append(("LABEL", " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())))
        if not any(k == "FROM" for k, _ in steps):
            raise InvalidParameter("Dockerfile: no FROM instruction")
        args: dict[str, str] = {}
        image: dict[str, Any] | None = None
        image_id = ""
        for n, (keyword, raw) in enumerate(steps, 1):
            self.say(f"Step {n}/{len(steps)} : {keyword} {raw}\n")
            env = list((image or {}).get("config", {}).get("Env") or [])
            expanded = dockerfile.expand(raw, [*[f"{k}={v}" for k, v in args.items()], *env])
            if keyword == "ARG":
                name, sep, default = raw.partition("=")
                args[name.strip()] = build_args.get(name.strip(), default if sep else "")
                if image is None:
                    continue
            if keyword == "FROM":
                image_id, image = await self._from(expanded.split()[0])
            elif image is None:
                raise InvalidParameter(f"{keyword} before FROM")
            elif keyword == "RUN":
                image_id, image = await self._step(image_id, image, f"RUN {expanded}", nocache,
                                                   lambda img, e=expanded: self._run(img, e, args))
            elif keyword in ("COPY", "ADD"):
                digest = await self._io(_content_digest, context, expanded)
                image_id, image = await self._step(image_id, image, f"{keyword} {expanded} {digest}", nocache,
                                                   lambda img, e=expanded, k=keyword: self._copy(img, context, e,
                                                                                                 k == "ADD"))
            elif keyword != "ARG":
                image_id, image = await self._step(image_id, image, f"{keyword} {raw}", nocache,
                                                   lambda img, k=keyword, r=expanded: self._config(img, k, r))
            self.say(f" ---> {image_id[7:19]}\n")
        assert image is not None
        self.emit({"aux": {"ID": image_id}})
        self.say(f"Successfully built {image_id[7:19]}\n")
        for tag in tags:
            repo, _, t = normalize(tag).rpartition(":")
            self.store.tag(image_id, repo, t)
            self.say(f"Successfully tagged {normalize(tag)}\n")
        return image_id

    async def _from(self, ref: str) -> tuple[str, dict[str, Any]]:
        if ref == "scratch":
            return "", {"architecture": arch(), "os": "linux", "config": {}, "rootfs": {"type": "layers",
                                                                                      "diff_ids": []},
                        "history": []}
        try:
            image_id = self.store.resolve(ref)
        except NotFound:
            raise NotFound(f"pull access denied for {ref}: no such image in the engine "
                           "(beacon builds only FROM images it has: docker load/pull them first)") from None
        return image_id, json.loads(json.dumps(self.store.config(image_id)))

    async def _step(self, parent_id: str, image: dict[str, Any], what: str, nocache: bool,
                    make: Callable[[dict[str, Any]], Any]) -> tuple[str, dict[str, Any]]:
        key = hashlib.sha256(f"{parent_id}\n{what}".encode()).hexdigest()
        hit = None if nocache else self._cached(key)
        if hit is not None:
            self.say(" ---> Using cache\n")
            return hit, json.loads(json.dumps(self.store.config(hit)))
        new = json.loads(json.dumps(image))
        diff_id, created_by = await make(new)
        new["created"] = rfc3339_now()
        entry: dict[str, Any] = {"created": new["created"], "created_by": created_by}
        if diff_id:
            new.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(diff_id)
        else:
            entry["empty_layer"] = True
        new.setdefault("history", []).append(entry)
        new["config"] = dockerfile.strip_marks(new.get("config") or {})
        image_id = await self._io(self.store.add_image, new)
        self.store.mark_intermediate(image_id)  # until a tag names it, `docker images` shows it only with -a
        self._remember(key, image_id)
        return image_id, new

    async def _config(self, image: dict[str, Any], keyword: str, args: str) -> tuple[str, str]:
        dockerfile.apply(image.setdefault("config", {}), keyword, args)
        return "", f"/bin/sh -c #(nop)  {keyword} {args}"

    async def _run(self, image: dict[str, Any], command: str, args: dict[str, str]) -> tuple[str, str]:
        cfg = image.get("config") or {}
        form = dockerfile.exec_form(command)
        argv = form if form is not None else [*(cfg.get("Shell") or ["/bin/sh", "-c"]), command]
        parent = await self._io(self.store.add_image, dockerfile.strip_marks(image))  # the image so far
        body = {"Image": parent, "Cmd": argv, "Entrypoint": [], "Env": [f"{k}={v}" for k, v in args.items()],
                "WorkingDir": cfg.get("WorkingDir") or "", "User": cfg.get("User") or "",
                "Labels": {"org.beacon.build": "1"}, "HostConfig": {"NetworkMode": "bridge"}}
        cid, _ = await self.engine.create(body)
        self.say(f" ---> Running in {cid[:12]}\n")
        slot = self.engine.resolve(cid)
        queue = slot.logs.subscribe()
        try:
            await self.engine.start_container(cid)
            while (record := await queue.get()) is not None:
                self.say(record.data.decode(errors="replace"))
            code = await self.engine.wait(cid)
            if code != 0:
                raise EngineError(f"The command '{' '.join(argv)}' returned a non-zero code: {code}")
            upper = self.engine.data_dir / "containers" / cid / "upper"
            diff_id = await self._io(self._layer_from_upper, upper)
        finally:
            slot.logs.followers.discard(queue)
            await self.engine.remove(cid, force=True)
            self.say(f"Removing intermediate container {cid[:12]}\n")
        return diff_id, f"/bin/sh -c {command}"

    def _layer_from_upper(self, upper: Path) -> str:
        with tempfile.TemporaryFile() as tmp:
            with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add_upper(tar, upper)
            tmp.seek(0)
            return self.store.add_layer(tmp)

    async def _copy(self, image: dict[str, Any], context: Path, args: str, add: bool) -> tuple[str, str]:
        words = [w for w in args.split() if not w.startswith("--")]
        form = dockerfile.exec_form(args)
        if form is not None:
            words = form
        if len(words) < 2:
            raise InvalidParameter("COPY requires at least two arguments")
        *sources, dest = words
        workdir = (image.get("config") or {}).get("WorkingDir") or "/"
        dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)

        def make() -> str:
            with tempfile.TemporaryFile() as tmp:
                with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    matches = _sources(context, sources)
                    into_dir = dest.endswith("/") or len(matches) > 1 or any(os.path.isdir(m) for m in matches)
                    for src in matches:
                        rel = dest_abs.lstrip("/")
                        if add and os.path.isfile(src) and tarfile.is_tarfile(src):
                            _add_archive(tar, src, rel)  # ADD unpacks a local archive into the destination
                        elif os.path.isdir(src):
                            for child in sorted(os.listdir(src)):
                                tar.add(os.path.join(src, child), arcname=os.path.join(rel, child))
                        else:
                            name = os.path.join(rel, os.path.basename(src)) if into_dir else rel.rstrip("/")
                            tar.add(src, arcname=name)
                tmp.seek(0)
                return self.store.add_layer(tmp)

        diff_id = await self._io(make)
        return diff_id, f"/bin/sh -c #(nop) {'ADD' if add else 'COPY'} {args}"


def _add_archive(out: tarfile.TarFile, archive: str, dest: str) -> None:
    """The members of a (maybe compressed) tar, re-rooted under ``dest``; names leaving it are refused."""
    with tarfile.open(archive, "r:*") as src:
        for member in src:
            name = os.path.normpath(member.name.lstrip("/"))
            if name == "." or name.startswith(".."):
                continue
            member.name = os.path.join(dest, name)
            if member.islnk():
                member.linkname = os.path.join(dest, os.path.normpath(member.linkname.lstrip("/")))
            out.addfile(member, src.extractfile(member) if member.isreg() else None)


def _sources(context: Path, patterns: list[str]) -> list[str]:
    root = os.path.realpath(context)
    out = []
    for pattern in patterns:
        found = sorted(glob.glob(os.path.join(root, pattern.lstrip("/"))))
        if not found:
            raise InvalidParameter(f"COPY failed: file not found in build context: stat {pattern}: "
                                   "file does not exist")
        for f in found:
            real = os.path.realpath(f)
            if real != root and not real.startswith(root + "/"):
                raise InvalidParameter(f"COPY failed: forbidden path outside the build context: {pattern}")
            out.append(f)
    return out


def _content_digest(context: Path, args: str) -> str:
    """What the cache key of a COPY/ADD depends on: the names, modes and bytes it copies."""
    h = hashlib.sha256()
    words = [w for w in args.split() if not w.startswith("--")]
    for src in _sources(context, words[:-1]):
        for dirpath, dirnames, files in os.walk(src) if os.path.isdir(src) else [(os.path.dirname(src), [],
                                                                                   [os.path.basename(src)])]:
            dirnames.sort()
            for name in sorted(files):
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                h.update(f"{os.path.relpath(p, context)}:{st.st_mode}\n".encode())
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _add_upper(tar: tarfile.TarFile, upper: Path) -> None:
    """An overlay upper directory as a layer tar: 0/0 character devices become ``.wh.`` files and
    opaque directories get a ``.wh..wh..opq`` entry."""
    for dirpath, dirnames, files in os.walk(upper):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, upper)
        for name in sorted(dirnames) + sorted(files):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if rel in RUNTIME_FILES and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                continue
            if rel in RUNTIME_DIRS and stat.S_ISDIR(st.st_mode) and not os.listdir(path):
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                tar.addfile(tarfile.TarInfo(os.path.normpath(os.path.join(rel_dir, WHITEOUT + name))))
                continue
            tar.add(path, arcname=rel, recursive=False)
            if stat.S_ISDIR(st.st_mode):
                try:
                    opaque = os.getxattr(path, OPAQUE_XATTR) == b"y"
                except OSError:
                    opaque = False
                if opaque:
                    info = tarfile.TarInfo(os.path.join(rel, OPAQUE))
                    tar.addfile(info)


async def build_from_request(engine: Engine, body: bytes, query: dict[str, list[str]], emit: Emit) -> None:
    def q(name: str, default: str = "") -> str:
        values = query.get(name)
        return values[-1] if values else default

    try:
        build_args = {k: str(v) for k, v in json.loads(q("buildargs") or "{}").items() if v is not None}
        labels = {k: str(v) for k, v in json.loads(q("labels") or "{}").items()}
    except (ValueError, AttributeError) as exc:
        raise InvalidParameter(f"invalid buildargs or labels: {exc}") from exc
    context = Path(tempfile.mkdtemp(prefix="beacon-build-"))
    try:
        await asyncio.get_running_loop().run_in_executor(None, _unpack_context, body, context)
        await Builder(engine, emit).build(context, q("dockerfile", "Dockerfile"), query.get("t", []), build_args,
                                          labels, q("nocache") in ("1", "true", "True"))
    finally:
        shutil.rmtree(context, ignore_errors=True)


def _unpack_context(body: bytes, dest: Path) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            tar.extractall(dest, filter="data")  # the context is the client's: no links out, no devices
    except tarfile.TarError as exc:
        raise InvalidParameter(f"invalid build context: {exc}") from exc
