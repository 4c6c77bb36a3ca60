"""Layer tarballs on disk: safe unpacking into overlayfs-format directories, and building a container's
root filesystem from them (overlayfs, or a copy where overlay mounts are not allowed).

A layer is unpacked once, into ``layers/<diff id>/``, and shared by every image and container that uses
it. Whiteouts are stored the way overlayfs reads them, so the layer directories can be stacked as
``lowerdir``s directly: ``.wh.NAME`` becomes a 0/0 character device ``NAME``, and ``.wh..wh..opq``
marks its directory opaque with the ``trusted.overlay.opaque`` xattr. The copy fallback applies the
same markers by hand.
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


class LayerError(Exception):
    pass


def decompressed(fileobj: IO[bytes]) -> IO[bytes]:
    """The stream itself, or a gzip reader over it when it starts with the gzip magic."""
    head = fileobj.read(2)
    rest = _Prefixed(head, fileobj)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=rest, mode="rb")  # type: ignore[return-value]
    return rest  # type: ignore[return-value]


class _Prefixed(io.RawIOBase):
    """A read-only stream that yields ``prefix`` and then the rest of ``inner``."""

    def __init__(self, prefix: bytes, inner: IO[bytes]) -> None:
        self.prefix, self.inner = prefix, inner

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.prefix:
            n = min(len(buf), len(self.prefix))
            buf[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        data = self.inner.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def store_tar(src: IO[bytes], dest: Path) -> tuple[str, int]:
    """Copy a (maybe gzipped) layer tarball to ``dest`` uncompressed; returns (sha256 digest, size).
    The digest of the uncompressed tar is the layer's diff ID."""
    h = hashlib.sha256()
    size = 0
    stream = decompressed(src)
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        while chunk := stream.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
    os.replace(tmp, dest)
    return "sha256:" + h.hexdigest(), size


def resolve_in(root: str, rel: str, follow_last: bool = True) -> str:
    """``rel`` resolved inside ``root`` as if ``root`` were ``/``: symlinks (absolute ones too) never
    lead out, as with chroot. The result is an absolute host path under ``root``."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        path = os.path.join(root, *done, part)
        if os.path.islink(path) and (parts or follow_last):
            hops += 1
            if hops > 40:
                raise LayerError(f"too many levels of symbolic links in {rel!r}")
            target = os.readlink(path)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return os.path.join(root, *done)


def unpack(tar_path: Path, dest: Path) -> int:
    """Unpack a layer tar into ``dest`` (which must not exist yet) in overlay format; returns the
    bytes of file content. Members that would land outside ``dest`` (absolute names, ``..``, or a
    path through a symlink pointing out) are refused: image layers are untrusted input."""
    tmp = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    root = os.path.realpath(tmp)
    size = 0
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                name = os.path.normpath(member.name.lstrip("/"))
                if name in (".", ""):
                    continue
                if name.startswith("../") or name == "..":
                    raise LayerError(f"layer member {member.name!r} points outside the layer")
                parent, base = os.path.split(name)
                parent_real = resolve_in(root, parent)
                name = os.path.relpath(os.path.join(parent_real, base), root)
                os.makedirs(parent_real, exist_ok=True)
                target = os.path.join(parent_real, base)
                if base == OPAQUE:
                    os.setxattr(parent_real, OPAQUE_XATTR, b"y")
                    continue
                if base.startswith(WHITEOUT):
                    victim = os.path.join(parent_real, base[len(WHITEOUT):])
                    _remove(victim)
                    os.mknod(victim, stat.S_IFCHR | 0o600, os.makedev(0, 0))
                    continue
                if member.islnk():
                    link = os.path.normpath(member.linkname.lstrip("/"))
                    if link.startswith("../") or link == "..":
                        raise LayerError(f"hard link {member.name!r} points outside the layer")
                member = _copy_info(member, name)
                if not member.isdir():
                    _remove(target)
                elif os.path.lexists(target) and not os.path.isdir(target):
                    _remove(target)
                tar.extract(member, root, set_attrs=not member.isdir(), numeric_owner=True,
                            filter="fully_trusted")
                if member.isdir():
                    dirs.append((target, member))
                elif member.isreg():
                    size += member.size
        for target, member in reversed(dirs):  # after their content, so mtimes stick
            os.chown(target, member.uid, member.gid)
            os.chmod(target, member.mode & 0o7777)
            os.utime(target, (member.mtime, member.mtime))
    except (tarfile.TarError, OSError, LayerError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LayerError(f"cannot unpack layer: {exc}") from exc
    os.rename(tmp, dest)
    return size


def _copy_info(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """The member under its normalised name (hard links keep their already checked target)."""
    return member.replace(name=name, deep=False)


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def mount_overlay(lowers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount ``lowers`` (top first) with ``upper`` at ``target``; raises OSError when overlay fails."""
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={':'.join(str(p) for p in lowers)},upperdir={upper},workdir={work}"
    if len(opts) >= 4000:
        raise OSError(errno.E2BIG, "too many layers for one overlay mount")
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay: {os.strerror(err)}")


def umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def copy_layers(lowers: list[Path], target: Path) -> None:
    """The copy fallback: apply the layers bottom-up into ``target``, honouring whiteouts."""
    target.mkdir(parents=True, exist_ok=True)
    for layer in reversed(lowers):
        for dirpath, dirnames, filenames in os.walk(layer):
            rel = os.path.relpath(dirpath, layer)
            out_dir = os.path.normpath(os.path.join(target, rel))
            try:
                opaque = os.getxattr(dirpath, OPAQUE_XATTR) == b"y"
            except OSError:
                opaque = False
            if opaque and rel != "." and os.path.isdir(out_dir):
                shutil.rmtree(out_dir)
            if not os.path.isdir(out_dir):
                _remove(out_dir)
                os.makedirs(out_dir)
                shutil.copystat(dirpath, out_dir, follow_symlinks=False)
                st = os.lstat(dirpath)
                os.chown(out_dir, st.st_uid, st.st_gid)
            for name in list(dirnames) + filenames:
                src, dst = os.path.join(dirpath, name), os.path.join(out_dir, name)
                st = os.lstat(src)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    _remove(dst)
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
                if stat.S_ISDIR(st.st_mode) and not os.path.islink(src):
                    continue
                _remove(dst)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copy2(src, dst)
                else:
                    os.mknod(dst, st.st_mode, st.st_rdev)
                os.lchown(dst, st.st_uid, st.st_gid)
