"""The engine's exception tree; the API layer maps each class to Docker's status code.

::

    EngineError (500)
    ├── InvalidParameter (400)   bad port spec, bad JSON, command not found
    ├── NotFound (404)           no such container / exec instance
    ├── NotModified (304)        start of a running container, stop of a stopped one
    ├── Unauthorized (401)       a registry refused the credentials
    ├── Conflict (409)           name in use, container not running, remove while running
    └── NotImplementedByEngine (501)   anything that needs an image registry
"""

from __future__ import annotations


class EngineError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(EngineError):
    status = 400


class NotFound(EngineError):
    status = 404


class NotModified(EngineError):
    status = 304


class Unauthorized(EngineError):
    status = 401


class Conflict(EngineError):
    status = 409


class NotImplementedByEngine(EngineError):
    status = 501


def no_such_container(ref: str) -> NotFound:
    return NotFound(f"No such container: {ref}")
