"""Session writes (Consul's Session.Apply and Session.Renew)."""

from __future__ import annotations

from beacon.endpoints import Submit, applied
from beacon.model import Session
from beacon.server import commands as cmd
from beacon.server.fsm import ApplyResult


async def create(submit: Submit, session: Session, now: float) -> str:
    """Create ``session`` (its ID already picked); the state machine checks node and checks."""
    return str((await applied(submit, cmd.SessionCreate(session=session.to_dict(), now=now))).value)


async def destroy(submit: Submit, session_id: str, now: float) -> None:
    await applied(submit, cmd.SessionDestroy(id=session_id, now=now))


async def renew(submit: Submit, session_id: str, now: float) -> ApplyResult:
    """Renew; the result's value is the session, its index the renewal's."""
    return await applied(submit, cmd.SessionRenew(id=session_id, now=now))
