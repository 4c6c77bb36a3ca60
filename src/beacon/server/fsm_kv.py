"""The state machine's KV table: writes (set, CAS, delete, trees, session locks) and reads.

A mixin of :class:`beacon.server.fsm.StateStore`, which owns the tables it works on (``kv``,
``kv_keys`` sorted for prefix reads, ``tombstones``, the session lock maps) and the change
reporting (``touch``, ``bump_table``). The rules are the store's: a write that changes nothing keeps
the old ``modify_index`` and wakes nobody; a delete leaves a tombstone with its index, so a prefix
read's index never goes backwards (nor below ``tombstone_floor`` once tombstones are reaped).
"""

from __future__ import annotations

import bisect
import threading

from beacon.errors import Failed
from beacon.model import KVEntry, Session
from beacon.server import commands as cmd


class KVState:
    lock: threading.RLock
    tables: dict[str, int]
    kv: dict[str, KVEntry]
    kv_keys: list[str]
    tombstones: dict[str, int]
    tombstone_floor: int
    sessions: dict[str, Session]
    lock_delays: dict[str, float]
    session_keys: dict[str, set[str]]

    def touch(self, *keys: str) -> None:
        raise NotImplementedError

    def bump_table(self, name: str, idx: int) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ writes
    def _apply_kv_set(self, idx: int, c: cmd.KVSet) -> bool:
        self.kv_set(idx, c.key, c.value, c.flags)
        return True

    def _apply_kv_delete(self, idx: int, c: cmd.KVDelete) -> bool:
        self.kv_delete(idx, c.key)
        return True

    def _apply_kv_delete_tree(self, idx: int, c: cmd.KVDeleteTree) -> bool:
        self.kv_delete_tree(idx, c.key)
        return True

    def _kv_touch(self, key: str) -> None:
        self.touch("kv:" + key)

    def kv_set(self, idx: int, key: str, value: bytes | None, flags: int = 0,
               session: str | None = None, lock_index: int | None = None) -> KVEntry:
        old = self.kv.get(key)
        entry = KVEntry(key=key, value=value, flags=flags)
        if old is not None:
            entry.create_index = old.create_index
            entry.lock_index = old.lock_index if lock_index is None else lock_index
            entry.session = old.session if session is None else session
            if old == entry:
                return old
        else:
            entry.create_index = idx
            entry.lock_index = lock_index or 0
            entry.session = session or ""
            bisect.insort(self.kv_keys, key)
            self.tombstones.pop(key, None)
        entry.modify_index = idx
        self.kv[key] = entry
        if (old.session if old is not None else "") != entry.session:
            self.reindex_lock(key, old.session if old is not None else "", entry.session)
        self.bump_table("kvs", idx)
        self._kv_touch(key)
        return entry

    def reindex_lock(self, key: str, old_session: str, new_session: str) -> None:
        if old_session:
            held = self.session_keys.get(old_session)
            if held is not None:
                held.discard(key)
                if not held:
                    del self.session_keys[old_session]
        if new_session:
            self.session_keys.setdefault(new_session, set()).add(key)

    def kv_cas(self, idx: int, key: str, value: bytes | None, flags: int, cas_index: int) -> bool:
        old = self.kv.get(key)
        if cas_index == 0 and old is not None:
            return False
        if cas_index != 0 and (old is None or old.modify_index != cas_index):
            return False
        self.kv_set(idx, key, value, flags)
        return True

    def kv_delete(self, idx: int, key: str) -> bool:
        old = self.kv.pop(key, None)
        if old is None:
            return False
        if old.session:
            self.reindex_lock(key, old.session, "")
        pos = bisect.bisect_left(self.kv_keys, key)
        del self.kv_keys[pos]
        self.tombstones[key] = idx
        self.bump_table("kvs", idx)
        self._kv_touch(key)
        return True

    def _apply_tombstone_reap(self, idx: int, c: cmd.TombstoneReap) -> int:
        """Forget tombstones up to ``index`` (the leader proposes it once they are older than the
        tombstone TTL). Wakes nobody; list indexes stay at least ``index``, so none goes backwards."""
        upto = int(c.index)
        dead = [k for k, i in self.tombstones.items() if i <= upto]
        for k in dead:
            del self.tombstones[k]
        self.tombstone_floor = max(self.tombstone_floor, upto)
        return len(dead)

    def kv_delete_cas(self, idx: int, key: str, cas_index: int) -> bool:
        old = self.kv.get(key)
        if old is None or old.modify_index != cas_index:
            return False
        return self.kv_delete(idx, key)

    def kv_delete_tree(self, idx: int, prefix: str) -> None:
        for key in self.keys_with_prefix(prefix):
            self.kv_delete(idx, key)

    def kv_lock(self, idx: int, key: str, value: bytes | None, flags: int, session: str,
                now: float) -> bool:
        sess = self.sessions.get(session)
        if sess is None:
            raise Failed(f"Invalid session \"{session}\"")
        old = self.kv.get(key)
        if old is not None and old.session:
            if old.session != session:
                return False
            self.kv_set(idx, key, value, flags)
            return True
        delay = self.lock_delays.get(key)
        if delay is not None:
            if delay < 0:
                # Invalidated by a command that carried no time: the window starts at this attempt.
                self.lock_delays[key] = (now or 0.0) - delay
                return False
            if now < delay:
                return False
            del self.lock_delays[key]
        lock_index = (old.lock_index if old else 0) + 1
        self.kv_set(idx, key, value, flags, session=session, lock_index=lock_index)
        return True

    def kv_unlock(self, idx: int, key: str, value: bytes | None, flags: int, session: str) -> bool:
        old = self.kv.get(key)
        if old is None or old.session != session:
            return False
        self.kv_set(idx, key, value, flags, session="")
        return True


    # ------------------------------------------------------------------ reads
    def keys_with_prefix(self, prefix: str) -> list[str]:
        keys = self.kv_keys
        lo = bisect.bisect_left(keys, prefix)
        if not prefix:
            return keys[lo:]
        hi = bisect.bisect_left(keys, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        return keys[lo:hi]

    def kv_get(self, key: str) -> tuple[int, KVEntry | None]:
        with self.lock:
            entry = self.kv.get(key)
            if entry is not None:
                return entry.modify_index, entry
            return self.tombstones.get(key, 0) or self.tables["kvs"], None

    def kv_list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        with self.lock:
            entries = [self.kv[k] for k in self.keys_with_prefix(prefix)]
            idx = max((e.modify_index for e in entries), default=0)
            if self.tombstones:
                idx = max([idx] + [i for k, i in self.tombstones.items() if k.startswith(prefix)])
            if idx == 0:
                idx = self.tables["kvs"]
            return max(idx, self.tombstone_floor), entries

    def kv_list_keys(self, prefix: str, separator: str = "") -> tuple[int, list[str]]:
        idx, entries = self.kv_list(prefix)
        if not separator:
            return idx, [e.key for e in entries]
        out: list[str] = []
        seen: set[str] = set()
        plen = len(prefix)
        for e in entries:
            pos = e.key.find(separator, plen)
            k = e.key if pos < 0 else e.key[:pos + len(separator)]
            if k not in seen:
                seen.add(k)
                out.append(k)
        return idx, out

