"""Domain errors: what went wrong, in the domain's words, with no transport attached.

The state machine, the endpoints and the agent raise these; only the HTTP layer
(:func:`beacon.agent.http.core.error_response`) turns a kind into a status code, so the same error
can travel the server RPC (as ``{"kind", "message"}``, never pickled) and be rendered on the agent
the client talked to exactly as the server would have.

The message is Consul's text, shown to the user as-is.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BeaconError(Exception):
    """Base of every domain error. ``kind`` names the class on the wire."""

    kind: ClassVar[str] = "failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message}


class Failed(BeaconError):
    """The request was well-formed but the command could not be carried out (Consul answers 500)."""

    kind = "failed"


class Invalid(BeaconError):
    """The request itself is wrong: a bad argument, a malformed body."""

    kind = "invalid"


class NotFound(BeaconError):
    kind = "not_found"


class PermissionDenied(BeaconError):
    kind = "permission_denied"


class Conflict(BeaconError):
    kind = "conflict"


class TooLarge(BeaconError):
    """A request over a size or count limit."""

    kind = "too_large"


class Unavailable(BeaconError):
    """No leader, shutting down, not durable: try again later."""

    kind = "unavailable"


# Kinds in wire order; a kind this version does not know decodes as Failed.
KINDS: dict[str, type[BeaconError]] = {
    cls.kind: cls for cls in (Failed, Invalid, NotFound, PermissionDenied, Conflict, TooLarge, Unavailable)
}

# Servers before this module sent an HTTP status instead of a kind; a client agent may talk to one
# during a rolling upgrade.
_LEGACY_STATUS = {400: Invalid, 403: PermissionDenied, 404: NotFound, 409: Conflict, 413: TooLarge}


def from_wire(err: dict[str, Any]) -> BeaconError:
    """The error a server RPC answer carries (``{"kind", "message"}``, or a legacy ``status``)."""
    message = str(err.get("message", ""))
    kind = err.get("kind")
    if isinstance(kind, str):
        return KINDS.get(kind, Failed)(message)
    status = err.get("status")
    return _LEGACY_STATUS.get(status if isinstance(status, int) else 500, Failed)(message)
