"""Snapshot restores on the etcd log: the state goes into chunk keys, the log carries a reference.

A restore replaces the whole state, tens of MB for a large catalog, but etcd refuses a request above
its ``--max-request-bytes`` (1.5 MiB), so the state cannot ride in a log entry. The proposing server
first writes the state, zlib'd, into immutable keys ``restore/<ms>-<uuid>/<n>`` (1 MiB each, a name
used once), then appends one small :class:`~beacon.server.commands.SnapshotRestoreChunks` naming the
set, its size and SHA-256. The restore stays one ordered step in the log.

Every server applying that entry reads the chunks *at the entry's own revision*: etcd's MVCC gives
every reader, now or replaying after a restart, the same bytes, whatever was written or deleted
since. So a missing or corrupt set fails the command the same way on every server (the hash is
checked before anything is applied; nothing applies partially). If that revision was compacted
away, a snapshot of the state machine at or after the compaction already contains the restore: the
server loads it instead (:class:`EtcdCompacted`, as for a compacted watch).

Chunk sets are deleted by the leader after an etcd-log snapshot (and the compaction at its
revision) covers the restore that used them; a set no applied command names (its proposer failed
before the log entry committed) is deleted once it is ``ORPHAN_AGE`` old, far past any hold timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
import zlib
from typing import Any

from beacon.server import commands as cmd
from beacon.server.durable import decode_state, encode_large
from beacon.server.etcd_client import EtcdClient, EtcdCompacted, EtcdError, prefix_end

log = logging.getLogger("beacon.etcd")

CHUNK = 1024 * 1024
ORPHAN_AGE = 3600.0


class RestoreChunksInvalid(Exception):
    """The chunk set at the command's revision is missing, incomplete or does not match its hash."""


def set_prefix(prefix: bytes, name: str) -> bytes:
    return prefix + b"restore/" + name.encode() + b"/"


def _compress(snapshot: dict[str, Any]) -> bytes:
    # An archive's state comes with its own verified encoding (beacon.server.archive.ArchivedState):
    # the same JSON, so not encoded again (0.5 s of CPU at 172,000 instances).
    encoded = getattr(snapshot, "encoded", None)
    return zlib.compress(encoded if isinstance(encoded, bytes) and encoded else encode_large(snapshot), 3)


def _decompress(data: bytes) -> Any:
    return decode_state(zlib.decompress(data))


async def stage(client: EtcdClient, prefix: bytes, snapshot: dict[str, Any], now: float) -> cmd.SnapshotRestoreChunks:
    """Write the state into a fresh chunk set; return the log command that names it."""
    data = await asyncio.to_thread(_compress, snapshot)
    name = f"{int(time.time() * 1000):015d}-{uuid.uuid4().hex}"
    base = set_prefix(prefix, name)
    n = max(1, (len(data) + CHUNK - 1) // CHUNK)
    for i in range(n):
        await client.put(base + f"{i:06d}".encode(), data[i * CHUNK:(i + 1) * CHUNK], timeout=30)
    return cmd.SnapshotRestoreChunks(name=name, chunks=n, size=len(data),
                                     sha256=hashlib.sha256(data).hexdigest(), now=now)


def verify(ref: cmd.SnapshotRestoreChunks, chunks: list[bytes]) -> dict[str, Any]:
    """The state the chunks hold, or RestoreChunksInvalid; a pure function of its arguments."""
    data = b"".join(chunks)
    if len(chunks) != ref.chunks or len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise RestoreChunksInvalid(f"restore {ref.name}: {len(chunks)}/{ref.chunks} chunks, {len(data)}/{ref.size} "
                                   "bytes or the SHA-256 does not match")
    try:
        doc = _decompress(data)
    except (zlib.error, ValueError) as exc:
        raise RestoreChunksInvalid(f"restore {ref.name}: undecodable state ({exc})") from None
    if not isinstance(doc, dict):
        raise RestoreChunksInvalid(f"restore {ref.name}: the state is not an object")
    return doc


async def fetch(client: EtcdClient, prefix: bytes, ref: cmd.SnapshotRestoreChunks, revision: int) -> dict[str, Any]:
    """Read and verify the set as it was at ``revision`` (the log entry's). Raises RestoreChunksInvalid
    (the same on every server), EtcdCompacted (load the snapshot), or a transient etcd error (retry)."""
    base = set_prefix(prefix, ref.name)
    chunks: list[bytes] = []
    # One chunk per request: a response stays near the chunk size whatever the state's size.
    for i in range(min(ref.chunks, 1 << 16)):
        try:
            _, kvs = await client.range(base + f"{i:06d}".encode(), revision=revision, timeout=30)
        except EtcdError as exc:
            if "compacted" in str(exc):
                raise EtcdCompacted(revision) from None
            raise
        if not kvs:
            break
        chunks.append(kvs[0].value)
    _, extra = await client.range(base + f"{ref.chunks:06d}".encode(), prefix_end(base), revision=revision,
                                  keys_only=True, limit=1, timeout=30)
    if extra:
        chunks.append(b"")  # more chunks than named: refused by verify
    return await asyncio.to_thread(verify, ref, chunks)


def references(env: dict[str, Any]) -> list[tuple[int, cmd.SnapshotRestoreChunks]]:
    """(position, command) of each chunked restore in a log envelope."""
    out = []
    for pos, e in enumerate(env.get("b", ())):
        c = e.get("c") if isinstance(e, dict) else None
        if isinstance(c, list) and len(c) == 2 and c[0] == cmd.MessageType.SNAPSHOT_RESTORE_CHUNKS:
            try:
                record = cmd.decode(int(c[0]), c[1])
            except (TypeError, ValueError):
                continue  # malformed: the state machine fails it as for any bad payload
            if isinstance(record, cmd.SnapshotRestoreChunks):
                out.append((pos, record))
    return out


async def resolve(client: EtcdClient, prefix: bytes, env: dict[str, Any],
                  revision: int) -> dict[int, cmd.Record]:
    """position -> the SnapshotRestore to apply there instead of the reference. A position left out
    applies the reference itself, which the state machine fails (missing or corrupt chunks)."""
    out: dict[int, cmd.Record] = {}
    for pos, ref in references(env):
        try:
            doc = await fetch(client, prefix, ref, revision)
        except RestoreChunksInvalid as exc:
            log.error("restore at revision %d fails: %s", revision, exc)
            continue
        out[pos] = cmd.SnapshotRestore(snapshot=doc, now=ref.now)
    return out


async def collect(client: EtcdClient, prefix: bytes, snapshot_rev: int, applied: dict[str, int]) -> list[str]:
    """After a snapshot at ``snapshot_rev`` (and the compaction there): delete the chunk sets no
    server needs any more; return their names. ``applied`` maps set names to the revision that
    applied them (on this server, since it started)."""
    base = prefix + b"restore/"
    _, kvs = await client.range(base, prefix_end(base), keys_only=True, timeout=30)
    sets: dict[str, int] = {}
    for kv in kvs:
        name = kv.key[len(base):].split(b"/", 1)[0].decode(errors="replace")
        sets[name] = max(sets.get(name, 0), kv.mod_revision)
    gone = []
    for name, rev in sets.items():
        try:
            age = time.time() - int(name.split("-", 1)[0]) / 1000
        except ValueError:
            age = float("inf")
        done = name in applied and applied[name] <= snapshot_rev
        orphan = name not in applied and rev <= snapshot_rev and age > ORPHAN_AGE
        if done or orphan:
            p = set_prefix(prefix, name)
            await client.delete(p, prefix_end(p))
            gone.append(name)
    return gone
