"""How writes reach the state machine.

``Consensus`` is the one seam between the agent and replication: ``submit(command)`` returns the
command's :class:`ApplyResult` once it is durable and applied. The single-server implementation here
backs ``-dev`` and one-server clusters; the etcd implementation (``beacon.server.etcd_log``)
replicates the same commands to 3 or 5 servers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Protocol

from beacon.server.durable import CommandLog, NotDurableError
from beacon.server.fsm import ApplyResult, Command, StateStore

log = logging.getLogger("beacon.server")


class NoLeaderError(Exception):
    """No cluster leader is known: writes and default reads fail with 500 'No cluster leader'."""

    def __init__(self, message: str = "No cluster leader") -> None:
        super().__init__(message)


class Consensus(Protocol):
    store: StateStore

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, command: Command) -> ApplyResult: ...

    def is_leader(self) -> bool: ...

    def known_leader(self) -> bool: ...

    def leader_address(self) -> str: ...

    def peers(self) -> list[str]: ...

    def last_contact_ms(self) -> int: ...

    def configuration(self) -> list[dict[str, Any]]: ...


class SingleServer:
    """A one-server cluster: the leader is always itself.

    Without a data dir, commands apply in memory at once. With one, commands are batched, written
    and fsync'd to the command log by a worker thread, and only then applied and acknowledged (group
    commit: while one fsync runs, the next batch gathers).
    """

    SNAPSHOT_EVERY = 20_000

    def __init__(self, store: StateStore, address: str, node_id: str, node_name: str,
                 data_dir: str | None = None) -> None:
        self.store = store
        self.address = address
        self.node_id = node_id
        self.node_name = node_name
        self._log = CommandLog(os.path.join(data_dir, "server")) if data_dir else None
        self._pending: list[tuple[Command, asyncio.Future[ApplyResult]]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._snapshot_retry_at = 0.0

    async def start(self) -> None:
        if self._log is None:
            return
        t0 = time.monotonic()
        snap, records = self._log.load()
        if snap is not None:
            self.store.restore(snap)
        for index, mtype, payload in records:
            result = self.store.apply((mtype, payload))
            if result.index != index:
                raise RuntimeError(f"command log replay produced index {result.index}, expected {index}")
        log.info("restored state to index %d (%d log records replayed) in %.0f ms",
                 self.store.index, len(records), (time.monotonic() - t0) * 1000)
        self._wakeup = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="command-log")

    async def stop(self) -> None:
        self._closing = True
        if self._writer is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await self._writer
            self._writer = None
        if self._log is not None:
            self._log.close()

    async def submit(self, command: Command) -> ApplyResult:
        if self._log is None:
            return self.store.apply(command)
        if self._closing:
            raise NoLeaderError("server is shutting down")
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._pending.append((command, fut))
        assert self._wakeup is not None
        self._wakeup.set()
        return await fut

    async def _write_loop(self) -> None:
        assert self._wakeup is not None and self._log is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                base = self.store.index
                records = [(base + i + 1, int(cmd[0]), cmd[1]) for i, (cmd, _) in enumerate(batch)]
                try:
                    await loop.run_in_executor(None, self._log.append, records)
                except Exception as exc:  # disk full, I/O error: nothing in the batch is acknowledged
                    log.error("command log write failed, %d write(s) refused: %s", len(batch), exc)
                    err = exc if isinstance(exc, NotDurableError) else NotDurableError(str(exc))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for cmd, fut in batch:
                    result = self.store.apply(cmd)
                    if not fut.done():
                        fut.set_result(result)
                if (self._log.records_since_snapshot >= self.SNAPSHOT_EVERY
                        and time.monotonic() >= self._snapshot_retry_at):
                    try:
                        self._log.write_snapshot(self.store.snapshot())
                    except OSError as exc:
                        # The log still holds every record; try again later rather than on each batch.
                        self._snapshot_retry_at = time.monotonic() + 30.0
                        log.error("snapshot failed, keeping the whole command log: %s", exc)
            if self._closing and not self._pending:
                return

    def is_leader(self) -> bool:
        return True

    def known_leader(self) -> bool:
        return True

    def leader_address(self) -> str:
        return self.address

    def peers(self) -> list[str]:
        return [self.address]

    def last_contact_ms(self) -> int:
        return 0

    def configuration(self) -> list[dict[str, Any]]:
        return [{"ID": self.node_id, "Node": self.node_name, "Address": self.address,
                 "Leader": True, "Voter": True, "ProtocolVersion": "3"}]
