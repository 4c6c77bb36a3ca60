"""Exceptions raised by :mod:`beacon.checks`.

::

    CheckError                       base of everything below
    +-- CheckDefinitionError         bad check body or invalid check (agent: 400 "Invalid check: ...")
    +-- UnknownCheckError            no check with that ID (agent: 404 "Unknown check ID ...")
    +-- NotTTLCheckError             TTL update for a non-TTL check (agent: 500, Consul's wording)
    +-- InvalidStatusError           TTL update with a status other than passing/warning/critical
"""

from __future__ import annotations

__all__ = ["CheckDefinitionError", "CheckError", "InvalidStatusError", "NotTTLCheckError",
           "UnknownCheckError"]


class CheckError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CheckDefinitionError(CheckError, ValueError):
    """A check body that cannot be decoded or is not a valid check."""


class UnknownCheckError(CheckError, LookupError):
    def __init__(self, check_id: str) -> None:
        super().__init__(f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.')
        self.check_id = check_id


class NotTTLCheckError(CheckError):
    def __init__(self, check_id: str) -> None:
        super().__init__(f'CheckID "{check_id}" does not have associated TTL')
        self.check_id = check_id


class InvalidStatusError(CheckError, ValueError):
    def __init__(self, status: str) -> None:
        super().__init__(f"Invalid check status: '{status}'")
        self.status = status
