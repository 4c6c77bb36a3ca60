"""KV writes (Consul's KVS.Apply): one record per verb."""

from __future__ import annotations

from beacon.endpoints import Submit, apply
from beacon.server import commands as cmd


async def put(submit: Submit, key: str, value: bytes | None, flags: int = 0, *, cas: int | None = None,
              acquire: str | None = None, release: str | None = None, now: float = 0.0) -> bool:
    """Set ``key``; with ``cas``, only if its ModifyIndex still is ``cas`` (0: only if absent); with
    ``acquire``/``release``, lock or unlock it for a session. False when the condition fails."""
    record: cmd.Record
    if cas is not None:
        record = cmd.KVCas(key=key, value=value, flags=flags, index=cas)
    elif acquire is not None:
        record = cmd.KVLock(key=key, value=value, flags=flags, session=acquire, now=now)
    elif release is not None:
        record = cmd.KVUnlock(key=key, value=value, flags=flags, session=release)
    else:
        record = cmd.KVSet(key=key, value=value, flags=flags)
    return bool(await apply(submit, record))


async def delete(submit: Submit, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
    """Delete ``key`` (or every key under it); with ``cas``, only if its ModifyIndex still matches."""
    if recurse:
        await apply(submit, cmd.KVDeleteTree(key=key))
        return True
    if cas is not None:
        return bool(await apply(submit, cmd.KVDeleteCas(key=key, index=cas)))
    await apply(submit, cmd.KVDelete(key=key))
    return True
