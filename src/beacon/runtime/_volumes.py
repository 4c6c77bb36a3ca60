"""Named volumes (``<data_dir>/volumes/<name>/_data``) and the bind mounts of ``-v``/``--mount``."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beacon.runtime._errors import Conflict, InvalidParameter, NotFound
from beacon.runtime._layers import resolve_in

if TYPE_CHECKING:
    from beacon.runtime._model import Container

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
NAME_MAX = 255  # a volume is a directory named after it: one path component


class Volumes:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _meta(self, name: str) -> Path:
        return self.root / name / "meta.json"

    def _exists(self, name: str) -> bool:
        # A longer name cannot be a directory here, and stat would fail with ENAMETOOLONG.
        return len(name.encode()) <= NAME_MAX and self._meta(name).exists()

    def create(self, name: str, labels: dict[str, str] | None = None, driver: str = "local") -> dict[str, Any]:
        if driver not in ("", "local"):
            raise InvalidParameter(f"volume driver {driver!r} is not supported (only local)")
        if not name:
            name = os.urandom(32).hex()
        if not NAME_RE.match(name):
            raise InvalidParameter(f'"{name}" includes invalid characters for a local volume name, only '
                                   '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed')
        if len(name) > NAME_MAX:
            raise InvalidParameter(f"volume name is too long ({len(name)} characters, at most {NAME_MAX})")
        if not self._exists(name):
            (self.root / name / "_data").mkdir(parents=True, exist_ok=True)
            self._meta(name).write_text(json.dumps({"Labels": labels or {}, "CreatedAt": _now()}))
        return self.inspect(name)

    def inspect(self, name: str) -> dict[str, Any]:
        try:
            meta = json.loads(self._meta(name).read_text())
        except (OSError, ValueError):
            raise NotFound(f"get {name}: no such volume") from None
        return {"Name": name, "Driver": "local", "Mountpoint": str(self.root / name / "_data"),
                "CreatedAt": meta.get("CreatedAt", ""), "Labels": meta.get("Labels") or {}, "Scope": "local",
                "Options": {}}

    def list(self) -> list[dict[str, Any]]:
        return [self.inspect(p.name) for p in sorted(self.root.iterdir()) if (p / "meta.json").exists()]

    def remove(self, name: str, users: list[str], force: bool = False) -> None:
        if not self._exists(name):
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        shutil.rmtree(self.root / name)

    def names_used(self, c: Container) -> list[str]:
        try:
            return [src for src, _, _ in _parse_binds(c) if not src.startswith("/")]
        except InvalidParameter:  # a process-mode container's binds are kept, never checked
            return []

    def remove_anonymous(self, c: Container, still_used: set[str]) -> None:
        """``rm -v`` and ``--rm``: the container's anonymous volumes (64-hex names) go with it."""
        for name in self.names_used(c):
            if len(name) == 64 and all(ch in "0123456789abcdef" for ch in name) and name not in still_used:
                if self._exists(name):
                    shutil.rmtree(self.root / name, ignore_errors=True)

    def resolve_binds(self, c: Container, rootfs: str) -> list[tuple[str, str, bool]]:
        """(host source, container destination, read-only) for each bind and volume of ``c``. A new
        named volume is filled from the image's content at its mount point, as dockerd does."""
        out = []
        for src, dest, ro in _parse_binds(c):
            if src.startswith("/"):
                os.makedirs(src, exist_ok=True)  # dockerd creates a missing bind source for -v
                out.append((src, dest, ro))
                continue
            fresh = not self._exists(src)
            info = self.create(src)
            data = info["Mountpoint"]
            if fresh:
                seed = resolve_in(rootfs, dest)
                if os.path.isdir(seed):
                    shutil.copytree(seed, data, symlinks=True, dirs_exist_ok=True)
            out.append((data, dest, ro))
        return out


def _parse_binds(c: Container) -> list[tuple[str, str, bool]]:
    out = []
    for bind in c.binds:
        parts = bind.split(":")
        if len(parts) < 2 or len(parts) > 3 or not parts[1].startswith("/"):
            raise InvalidParameter(f"invalid volume specification: '{bind}'")
        opts = parts[2].split(",") if len(parts) == 3 else []
        out.append((parts[0], parts[1], "ro" in opts))
    for m in c.mounts:
        kind, src, dest = m.get("Type", "volume"), m.get("Source", ""), m.get("Target", "")
        if kind == "tmpfs":
            continue
        if kind not in ("bind", "volume") or not str(dest).startswith("/"):
            raise InvalidParameter(f"invalid mount config: {m!r}")
        if kind == "bind" and not str(src).startswith("/"):
            raise InvalidParameter(f"invalid mount config for type \"bind\": invalid mount path: '{src}'")
        out.append((str(src), str(dest), bool(m.get("ReadOnly"))))
    return out


def validate_binds(binds: list[str], mounts: list[dict[str, Any]]) -> None:
    class _C:
        pass

    probe: Any = _C()
    probe.binds, probe.mounts = binds, mounts
    _parse_binds(probe)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
