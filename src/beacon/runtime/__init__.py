"""The embedded container engine: runs containers without a Docker daemon and serves the Docker
Engine API on a unix socket, so the docker CLI, the docker SDK and the registrator work against it.

Public names::

    Engine(data_dir, socket_path=None, isolation="auto")   # await start() / await stop()
    EngineError and its subclasses (see ``beacon.runtime._errors`` for the tree)

``Engine`` is imported on first use: the CLI's container commands only need the small client and
should not pay for asyncio and the engine at every invocation.
"""

import typing as _typing

from beacon.runtime._errors import (
    Conflict,
    EngineError,
    InvalidParameter,
    NotFound,
    NotImplementedByEngine,
    NotModified,
)

if _typing.TYPE_CHECKING:
    from beacon.runtime._engine import Engine

__all__ = [
    "Conflict",
    "Engine",
    "EngineError",
    "InvalidParameter",
    "NotFound",
    "NotImplementedByEngine",
    "NotModified",
]


def __getattr__(name: str) -> _typing.Any:
    if name == "Engine":
        from beacon.runtime._engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
