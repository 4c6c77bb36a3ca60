"""A write-ahead command log plus snapshots for a single server.

Record format: ``<u32 length><u32 crc32><payload>`` where the payload is compact JSON of
``[index, type, payload]`` (bytes are encoded as ``{"$b": base64}``). Every batch of records is
fsync'd before any of its commands is applied or acknowledged (group commit), so an acknowledged
write survives ``kill -9`` and a power loss.

Recovery reads the snapshot, then replays log records whose index is above the snapshot's. A torn
record at the very end (a crash mid-write: never acknowledged) is cut off with a warning; a bad record
followed by good ones means the file was damaged and start-up fails with a message that says where.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import struct
import zlib
from typing import Any

import msgspec
import orjson

from beacon.model import HealthCheck, Node, Service
from beacon.server import gcpause

log = logging.getLogger("beacon.server.durable")

_HEADER = struct.Struct("<II")
SNAPSHOT_NAME = "snapshot.json"
LOG_NAME = "commands.log"


class DataDirError(Exception):
    """The data dir cannot be used as it is (corrupt, truncated, or unreadable)."""


class NotDurableError(Exception):
    """A write could not be made durable (disk full, I/O error): it was not applied or acknowledged."""


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written; a short write on a full disk raises ENOSPC here
    instead of being mistaken for success."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # not expected from a regular file, but never loop forever
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # a record (orjson writes them itself)
        return obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    if isinstance(obj, bytes | bytearray):
        return {"$b": base64.b64encode(obj).decode()}
    if isinstance(obj, set | tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$b" in obj:
        return base64.b64decode(obj["$b"])
    return obj


def encode(obj: Any) -> bytes:
    """Compact JSON. orjson (C, ~10x the standard library: a snapshot of a 172,000-instance catalog
    held the GIL for seconds in ``json.dumps``); the standard library for what orjson refuses
    (integers beyond 64 bits, non-finite floats), with the same meaning."""
    try:
        return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(obj, default=_default, separators=(",", ":")).encode()


SLICE = 2048  # list items per orjson call in encode_large


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


def _sliced(obj: Any, depth: int) -> bytes:
    if type(obj) is dict and depth < 3 and all(type(k) is str for k in obj):
        return b"{" + b",".join(_dumps(k) + b":" + _sliced(v, depth + 1) for k, v in obj.items()) + b"}"
    if type(obj) is list and len(obj) > SLICE:
        return b"[" + b",".join(_dumps(obj[i:i + SLICE])[1:-1] for i in range(0, len(obj), SLICE)) + b"]"
    return _dumps(obj)


def encode_large(obj: Any) -> bytes:
    """:func:`encode` of a whole state (a snapshot), byte for byte, in many short orjson calls.

    One orjson call holds the GIL throughout: over a 172,000-instance snapshot that is ~0.5 s in
    which a worker thread encoding it keeps the event loop's thread from running. Long lists (the
    catalog's rows) are encoded ``SLICE`` items at a time, so the interpreter can hand the GIL to
    the loop between slices (every few milliseconds)."""
    try:
        return _sliced(obj, 0)
    except (orjson.JSONEncodeError, TypeError):
        return encode(obj)


def decode(data: bytes) -> Any:
    if len(data) > 1 << 20:  # a snapshot: millions of objects in a row (see beacon.server.gcpause)
        with gcpause.paused():
            return _decode(data)
    return _decode(data)


def _decode(data: bytes) -> Any:
    if b'"$b"' not in data:  # no encoded bytes inside: nothing for the hook to do
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # e.g. NaN or a > 64-bit integer, which the standard library reads
    return json.loads(data, object_hook=_hook)


class DecodedRows(list):  # type: ignore[type-arg]
    """Records decoded for one restore, referenced by nothing else: the store takes them as they are."""


class _State(msgspec.Struct):
    """A :meth:`StateStore.snapshot` with its catalog rows typed (every other field as JSON).
    The fields are the snapshot's keys; a test checks they stay so."""

    version: Any = None
    index: Any = 0
    tables: Any = msgspec.field(default_factory=dict)
    service_index: Any = msgspec.field(default_factory=dict)
    node_index: Any = msgspec.field(default_factory=dict)
    nodes: list[Node] = msgspec.field(default_factory=list)
    services: list[Service] = msgspec.field(default_factory=list)
    checks: list[HealthCheck] = msgspec.field(default_factory=list)
    kv: Any = msgspec.field(default_factory=list)
    tombstones: Any = msgspec.field(default_factory=dict)
    tombstone_floor: Any = 0
    sessions: Any = msgspec.field(default_factory=list)
    lock_delays: Any = msgspec.field(default_factory=dict)
    session_expires: Any = msgspec.field(default_factory=dict)
    extra: Any = msgspec.field(default_factory=dict)


class _Wrapped(msgspec.Struct):
    """The etcd log's snapshot document around a state."""

    state: _State
    log_clock: Any = 0.0
    rev: Any = 0
    recent: Any = msgspec.field(default_factory=dict)


_STATE_DECODER = msgspec.json.Decoder(_State)
_WRAPPED_DECODER = msgspec.json.Decoder(_Wrapped)


def _state_dict(state: _State) -> dict[str, Any]:
    doc = msgspec.structs.asdict(state)
    for name in ("nodes", "services", "checks"):
        doc[name] = DecodedRows(doc[name])
    return doc


def decode_state(data: bytes, wrapped: bool = False) -> Any:
    """:func:`decode` of an encoded :meth:`StateStore.snapshot` (``wrapped``: of ``{"state": ...,
    "log_clock", "rev", "recent"}``), with the nodes, services and checks decoded straight into model
    records (msgspec) rather than into dicts that a restore then turns into records.

    At 172,000 instances the dicts were ~450 MiB more at the peak, left behind as fragmented heap
    (the restored server's RSS roughly tripled), and building records from them was most of the
    restore's time. Anything the typed decoder refuses (a row of another shape, encoded bytes) is
    decoded by :func:`decode` as before, and restored from dicts."""
    if b'"$b"' not in data:
        try:
            with gcpause.paused():
                if wrapped:
                    w = _WRAPPED_DECODER.decode(data)
                    return {"state": _state_dict(w.state), "log_clock": w.log_clock, "rev": w.rev,
                            "recent": w.recent}
                return _state_dict(_STATE_DECODER.decode(data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return decode(data)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # give the space back; the old file is untouched
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


class CommandLog:
    """The on-disk half of a single server: snapshot + append-only command log."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.snapshot_path = os.path.join(directory, SNAPSHOT_NAME)
        self.log_path = os.path.join(directory, LOG_NAME)
        self._fd: int | None = None
        self._size = 0  # bytes of whole, fsync'd records in the log
        self._torn = False  # a failed append may have left bytes past _size
        self.records_since_snapshot = 0

    # ------------------------------------------------------------------ recovery
    def load(self) -> tuple[dict[str, Any] | None, list[tuple[int, int, dict[str, Any]]]]:
        """Return (snapshot or None, [(index, type, payload)] to replay after it)."""
        snap = None
        if os.path.exists(self.snapshot_path):
            snap = self._read_snapshot()
        snap_index = snap["index"] if snap else 0
        records: list[tuple[int, int, dict[str, Any]]] = []
        if os.path.exists(self.log_path):
            for index, mtype, payload in self._read_log():
                if index > snap_index:
                    records.append((index, mtype, payload))
        self.records_since_snapshot = len(records)
        return snap, records

    def _read_snapshot(self) -> dict[str, Any]:
        with open(self.snapshot_path, "rb") as f:
            raw = f.read()
        head, _, body = raw.partition(b"\n")
        if not head.startswith(b"sha256:") or hashlib.sha256(body).hexdigest().encode() != head[7:]:
            raise DataDirError(
                f"snapshot {self.snapshot_path} is corrupt (checksum mismatch or truncated); "
                "restore it from a backup or remove the data dir to start empty")
        try:
            return decode_state(body)
        except ValueError as exc:
            raise DataDirError(f"snapshot {self.snapshot_path} cannot be decoded: {exc}") from exc

    def _read_log(self) -> list[tuple[int, int, dict[str, Any]]]:
        with open(self.log_path, "rb") as f:
            data = f.read()
        out: list[tuple[int, int, dict[str, Any]]] = []
        pos = 0
        size = len(data)
        while pos < size:
            bad = None
            if size - pos < _HEADER.size:
                bad = "truncated record header"
            else:
                length, crc = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + length
                if end > size:
                    bad = "truncated record"
                elif zlib.crc32(data[pos + _HEADER.size:end]) != crc:
                    bad = "checksum mismatch"
            if bad is not None:
                if self._only_garbage_after(data, pos):
                    log.warning("command log %s: %s at byte %d (a write cut short by a crash); "
                                "dropping the unacknowledged tail", self.log_path, bad, pos)
                    with open(self.log_path, "r+b") as f:
                        f.truncate(pos)
                        os.fsync(f.fileno())
                    break
                raise DataDirError(
                    f"command log {self.log_path} is corrupt: {bad} at byte {pos} with valid records "
                    "after it; refusing to start rather than lose acknowledged writes")
            record = decode(data[pos + _HEADER.size:end])
            out.append((record[0], record[1], record[2]))
            pos = end
        return out

    @staticmethod
    def _only_garbage_after(data: bytes, pos: int) -> bool:
        """True when no well-formed record starts anywhere after ``pos`` (i.e. a torn tail)."""
        size = len(data)
        for start in range(pos + 1, size - _HEADER.size):
            length, crc = _HEADER.unpack_from(data, start)
            end = start + _HEADER.size + length
            if 2 < length and end <= size and zlib.crc32(data[start + _HEADER.size:end]) == crc:
                return False
        return True

    # ------------------------------------------------------------------ writing
    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                if self._torn:
                    os.ftruncate(fd, self._size)
                    os.fsync(fd)
                    self._torn = False
                else:
                    self._size = os.fstat(fd).st_size
                fsync_dir(self.directory)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def append(self, records: list[tuple[int, int, dict[str, Any]]]) -> None:
        """Write and fsync a batch. Blocking: call it from a worker thread.

        All or nothing: if any byte of the batch cannot be written or synced (a full disk, an I/O
        error), the log is cut back to the end of the last durable batch and NotDurableError is
        raised, so no torn record is left behind to be acknowledged now or to block start-up later.
        """
        buf = bytearray()
        for rec in records:
            body = encode(list(rec))
            buf += _HEADER.pack(len(body), zlib.crc32(body))
            buf += body
        try:
            fd = self._open()
        except OSError as exc:  # nothing written
            raise NotDurableError(f"command log {self.log_path}: {exc.strerror or exc}") from exc
        try:
            write_all(fd, bytes(buf))
            os.fsync(fd)
        except OSError as exc:
            self._rollback()
            raise NotDurableError(f"command log {self.log_path}: {exc.strerror or exc}") from exc
        self._size += len(buf)
        self.records_since_snapshot += len(records)

    def _rollback(self) -> None:
        """Cut the log back to its last durable size. After a failed fsync the kernel may already
        have dropped the dirty pages, so the file is reopened rather than trusted."""
        fd, self._fd = self._fd, None
        self._torn = True
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            with open(self.log_path, "r+b") as f:
                f.truncate(self._size)
                os.fsync(f.fileno())
            self._torn = False
        except OSError as exc:
            # Still in the file, unacknowledged; recovery drops a torn tail, and the next append
            # retries the cut before writing anything after it.
            log.error("command log %s: cannot cut back to %d bytes after a failed write: %s",
                      self.log_path, self._size, exc)

    def write_snapshot(self, snap: dict[str, Any]) -> None:
        """Persist a snapshot, then start a new empty log (records up to it are in the snapshot).
        A snapshot that cannot be written leaves the old snapshot and the whole log in place."""
        body = encode_large(snap)
        atomic_write(self.snapshot_path, b"sha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        self.close()
        atomic_write(self.log_path, b"")
        self._size = 0
        self.records_since_snapshot = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
