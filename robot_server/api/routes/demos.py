"""Demonstrations: start recording by direction, finish with success or failure, discard."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, jsonable
from robot_server.api.models import (
    COMMAND_REFUSED,
    CurrentDemo,
    DemoDiscarded,
    DemoFinish,
    DemoFinished,
    DemoStart,
    DemoStarted,
)

router = APIRouter(prefix="/demos", tags=["demos"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)],
             responses=COMMAND_REFUSED)
async def start_demo(request: Request, body: DemoStart) -> DemoStarted:
    """Start recording a demonstration (teleop: SpaceMouse or keyboard; expert: sim only)."""
    await command(request, lambda s: s.start_demo(body.direction, body.source, body.max_steps))
    return DemoStarted(recording=True, direction=body.direction, source=body.source, max_steps=body.max_steps)


@router.get("/current", dependencies=[Depends(read_access)])
async def current_demo(request: Request) -> CurrentDemo:
    st = daemon_of(request).status()
    return CurrentDemo.model_validate(jsonable({"demo": st.get("demo"), "last": daemon_of(request).supervisor.last_demo}))


@router.post("/current/finish", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def finish_demo(request: Request, body: DemoFinish) -> DemoFinished:
    """End the demo. `success: true` closes it only once the goal has been held GOAL_HOLD_STEPS
    steps (spec.goal); until then the arm holds and recording goes on (`closed: false`,
    `hold_steps_left`). In sim, 409 if the task's success test says the goal is not reached."""
    return DemoFinished.model_validate(jsonable(await command(request, lambda s: s.finish_demo(body.success))))


@router.post("/current/discard", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def discard_demo(request: Request) -> DemoDiscarded:
    return DemoDiscarded.model_validate(jsonable(await command(request, lambda s: s.discard_demo())))
