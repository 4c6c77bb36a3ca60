"""The embedded container engine: runs containers without a Docker daemon and serves the Docker
Engine API on a unix socket, so the docker CLI, the docker SDK and the registrator work against it.

Public names::

    Engine(data_dir, socket_path=None, isolation="auto")   # await start() / await stop()
    EngineError and its subclasses (see ``beacon.runtime._errors`` for the tree)
"""

from beacon.runtime._engine import Engine
from beacon.runtime._errors import (
    Conflict,
    EngineError,
    InvalidParameter,
    NotFound,
    NotImplementedByEngine,
    NotModified,
)

__all__ = [
    "Conflict",
    "Engine",
    "EngineError",
    "InvalidParameter",
    "NotFound",
    "NotImplementedByEngine",
    "NotModified",
]
