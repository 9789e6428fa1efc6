"""Practice sessions: start, pause, resume, stop, manual-reset requests."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, ended, jsonable, still_running
from robot_server.api.models import (
    COMMAND_REFUSED,
    CurrentSession,
    ReasonBody,
    ResetRequested,
    SessionSummary,
    StageReply,
    SuccessBody,
    SuccessConfirmed,
    problem,
)
from robot_server.modes import Stage
from robot_server.session import SessionParams

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)],
             responses=COMMAND_REFUSED)
async def start_session(request: Request, params: SessionParams) -> SessionSummary:
    """Start a practice (or evaluation) session; 409 if one is running or a demo is recording."""
    return SessionSummary.model_validate(jsonable(await command(request, lambda s: s.start_session(params))))


@router.get("/current", dependencies=[Depends(read_access)], responses={404: problem("no session is running")})
async def current_session(request: Request) -> CurrentSession:
    st = daemon_of(request).status()
    if not st.get("session"):
        raise still_running(daemon_of(request).supervisor.last_session, "session")
    return CurrentSession.model_validate(
        jsonable({"session": st["session"], "stage": st["stage"], "help_requests": st["help_requests"]})
    )


@router.get("/last", dependencies=[Depends(read_access)], responses={404: problem("no session has ended yet")})
async def last_session(request: Request) -> SessionSummary:
    return SessionSummary.model_validate(ended(daemon_of(request).supervisor.last_session, "session"))


@router.post("/current/pause", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def pause(request: Request) -> StageReply:
    await command(request, lambda s: s.pause_session())
    return StageReply(stage=Stage.PAUSED)


@router.post("/current/resume", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def resume(request: Request) -> StageReply:
    await command(request, lambda s: s.resume_session())
    return StageReply(stage=Stage.ACTING)


@router.post("/current/stop", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def stop(request: Request) -> SessionSummary:
    return SessionSummary.model_validate(jsonable(await command(request, lambda s: s.stop_session())))


@router.post("/current/reset-request", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def request_reset(request: Request, body: ReasonBody | None = None) -> ResetRequested:
    """Ask for a manual scene reset at the next switch to forward (counted as an intervention)."""
    reason = (body.reason if body else "") or "operator requested a reset"
    await command(request, lambda s: s.request_reset(reason))
    return ResetRequested(reset_requested=reason)


@router.post("/current/reset-done", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def reset_done(request: Request) -> StageReply:
    """The scene has been put back by hand: continue with the forward phase."""
    await command(request, lambda s: s.confirm_reset())
    return StageReply(stage=Stage.ACTING)


@router.post("/current/success", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def confirm_success(request: Request, body: SuccessBody | None = None) -> SuccessConfirmed:
    """The operator saw the task done. On the robot this is the only success signal: it resets the
    count of steps without progress after which the robot asks for help (session.help_after_steps)."""
    direction = body.direction if body else None
    return SuccessConfirmed.model_validate(jsonable(await command(request, lambda s: s.confirm_success(direction))))
