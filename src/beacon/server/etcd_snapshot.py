"""State machine snapshots stored in etcd, so the log can be compacted.

``snap/meta`` names the newest snapshot (``{"rev", "chunks", "sha256", "size"}``); its body, zlib'd
JSON of ``{"state", "log_clock", "rev", "recent"}``, lives under ``snap/<rev>/<n>`` in 1 MiB chunks
(etcd refuses requests above 1.5 MiB). A writer puts the chunks first and the meta last, then deletes
the previous snapshot's chunks; a reader reads the meta and then the chunks at the meta's revision,
so it never mixes two snapshots (and retries if compaction removed that revision meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from typing import Any

from beacon.server.durable import decode_state, encode_large
from beacon.server.etcd_client import EtcdClient, EtcdError, EtcdUnavailable, prefix_end

CHUNK = 1024 * 1024


def _chunk_prefix(prefix: bytes, rev: int) -> bytes:
    return prefix + f"snap/{rev:020d}/".encode()


async def newest_revision(client: EtcdClient, prefix: bytes) -> int:
    _, meta_kv = await client.get(prefix + b"snap/meta")
    return int(json.loads(meta_kv.value)["rev"]) if meta_kv is not None else 0


async def read(client: EtcdClient, prefix: bytes, newer_than: int) -> tuple[int, dict[str, Any], int] | None:
    """The newest snapshot if its revision is above ``newer_than``: (rev, document, size) or None."""
    for _ in range(5):
        rev, meta_kv = await client.get(prefix + b"snap/meta")
        if meta_kv is None:
            return None
        meta = json.loads(meta_kv.value)
        if int(meta["rev"]) <= newer_than:
            return None
        chunk_prefix = _chunk_prefix(prefix, int(meta["rev"]))
        try:
            _, chunks = await client.range(chunk_prefix, prefix_end(chunk_prefix), revision=rev, timeout=30)
        except EtcdError as exc:
            if "compacted" in str(exc):
                continue  # a newer snapshot replaced it meanwhile
            raise
        data = b"".join(c.value for c in sorted(chunks, key=lambda c: c.key))
        if len(chunks) != int(meta["chunks"]) or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise EtcdError(f"snapshot at {meta['rev']} is incomplete or corrupt")
        doc = await asyncio.to_thread(_decompress, data)
        return int(meta["rev"]), doc, len(data)
    raise EtcdUnavailable("the snapshot kept changing while it was read")


async def write(client: EtcdClient, prefix: bytes, rev: int, doc: dict[str, Any], previous: int) -> tuple[int, int]:
    """Store ``doc`` as the snapshot at ``rev``, drop the one at ``previous``; returns (bytes, chunks)."""
    data = await asyncio.to_thread(_compress, doc)
    chunk_prefix = _chunk_prefix(prefix, rev)
    n = (len(data) + CHUNK - 1) // CHUNK
    for i in range(n):
        await client.put(chunk_prefix + f"{i:06d}".encode(), data[i * CHUNK:(i + 1) * CHUNK], timeout=30)
    meta = {"rev": rev, "chunks": n, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    await client.put(prefix + b"snap/meta", json.dumps(meta).encode(), timeout=10)
    if previous and previous != rev:
        old_prefix = _chunk_prefix(prefix, previous)
        await client.delete(old_prefix, prefix_end(old_prefix))
    return len(data), n


def _compress(doc: dict[str, Any]) -> bytes:
    return zlib.compress(encode_large(doc), 3)


def _decompress(data: bytes) -> Any:
    return decode_state(zlib.decompress(data), wrapped=True)
