"""`beacon snapshot save|restore|inspect FILE`: point-in-time archives of the whole state.

``save`` writes to ``FILE.tmp``, verifies the archive it wrote (checksums and decoding), and only then
renames it into place, so FILE is either a verified snapshot or untouched.
"""

from __future__ import annotations

import os

from beacon.cli.flags import FlagParser
from beacon.cli.http import Client, CLIError, add_http_flags, run_subcommand
from beacon.server.archive import ArchiveError, read_archive


def _save(argv: list[str]) -> int:
    p = FlagParser("beacon snapshot save")
    add_http_flags(p)
    p.add_argument("file")
    args = p.parse_args(argv)
    _, data = Client.from_args(args).call("GET", "/v1/snapshot" + ("?stale" if args.stale else ""))
    tmp = args.file + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        with open(tmp, "rb") as f:
            meta, _ = read_archive(f.read())
    except ArchiveError as exc:
        os.unlink(tmp)
        raise CLIError(f"Error verifying snapshot file: {exc}") from None
    os.replace(tmp, args.file)
    print(f"Saved and verified snapshot to index {meta['Index']}")
    return 0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CLIError(f"Error opening snapshot file: {exc.strerror}") from None


def _restore(argv: list[str]) -> int:
    p = FlagParser("beacon snapshot restore")
    add_http_flags(p)
    p.add_argument("file")
    args = p.parse_args(argv)
    data = _read(args.file)
    try:
        read_archive(data)
    except ArchiveError as exc:
        raise CLIError(f"Error verifying snapshot file: {exc}") from None
    Client.from_args(args).call("PUT", "/v1/snapshot", data)
    print("Restored snapshot")
    return 0


def _inspect(argv: list[str]) -> int:
    p = FlagParser("beacon snapshot inspect")
    p.add_argument("file")
    args = p.parse_args(argv)
    data = _read(args.file)
    try:
        meta, snap = read_archive(data)
    except ArchiveError as exc:
        raise CLIError(f"Error verifying snapshot file: {exc}") from None
    rows = [("Index", meta["Index"]), ("Term", meta.get("Term", 0)), ("Version", meta["Version"]),
            ("Size", len(data))]
    for name in ("nodes", "services", "checks", "kv", "sessions"):
        rows.append((name.capitalize() if name != "kv" else "KV", len(snap.get(name, []))))
    for k, v in rows:
        print(f"{k:<10}{v}")
    return 0


SUB = {"save": _save, "restore": _restore, "inspect": _inspect}


def run(argv: list[str]) -> int:
    return run_subcommand(SUB, "beacon snapshot <save|restore|inspect> [options] FILE", argv, error_prefix="Error! ")
