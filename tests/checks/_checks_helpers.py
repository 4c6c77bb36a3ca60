"""Helpers shared by the check tests (imported by conftest and by test modules)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Update:
    check_id: str
    status: str
    output: str
    at: float


class Recorder:
    """A CheckNotifier that records every call and lets tests await a condition on the record."""

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self._changed = asyncio.Event()

    def update_check(self, check_id: str, status: str, output: str) -> None:
        self.updates.append(Update(check_id, status, output, asyncio.get_running_loop().time()))
        self._changed.set()

    def of(self, check_id: str) -> list[Update]:
        return [u for u in self.updates if u.check_id == check_id]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_status(self, check_id: str, status: str, *, after: int = 0,
                          timeout: float = 5.0) -> Update:
        """The first update of ``check_id`` with ``status`` among its updates from index ``after``."""
        found: list[Update] = []

        def seen() -> bool:
            found[:] = [u for u in self.of(check_id)[after:] if u.status == status]
            return bool(found)

        await self.wait_until(seen, timeout)
        return found[0]


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def wait_for_file(path: str, timeout: float = 5.0) -> str:
    """Bounded wait for a file a child process writes (there is no event to await across processes)."""
    async with asyncio.timeout(timeout):
        while True:
            if os.path.exists(path):
                with open(path) as f:
                    text = f.read()
                if text.strip():
                    return text
            await asyncio.sleep(0.01)


async def wait_gone(pid: int, timeout: float = 2.0) -> bool:
    """True once ``pid`` is dead. SIGKILL is delivered asynchronously, so a killed grandchild can
    take a moment to die after killpg returns; bounded poll, since a foreign PID has no event."""
    try:
        async with asyncio.timeout(timeout):
            while process_alive(pid):
                await asyncio.sleep(0.01)
    except TimeoutError:
        return False
    return True


def self_signed_cert(directory, name: str):  # type: ignore[no-untyped-def]
    """(cert, key) paths of a one-day self-signed certificate for DNS name ``name`` (skips without openssl)."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a self-signed certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True, timeout=30)
    return cert, key
