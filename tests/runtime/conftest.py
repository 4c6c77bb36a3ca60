"""Fixtures for the engine tests: a real `beacon engine` process per test, in each isolation mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import NETNS, NETNS_REASON, EngineProc, start_engine, stop_engine

ISOLATIONS = [
    pytest.param("netns", marks=pytest.mark.skipif(not NETNS, reason=NETNS_REASON)),
    "process",
]


@pytest.fixture(params=ISOLATIONS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EngineProc]:
    e = start_engine(tmp_path, request.param)
    yield e
    stop_engine(e.proc)


@pytest.fixture
def netns_engine(tmp_path: Path) -> Iterator[EngineProc]:
    if not NETNS:
        pytest.skip(NETNS_REASON)
    e = start_engine(tmp_path, "netns")
    yield e
    stop_engine(e.proc)


