"""Health, status, metrics, emergency stop, arm commands, keyboard teleop, learner reports."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, jsonable
from robot_server.api.metrics import render_metrics
from robot_server.api.models import (
    COMMAND_REFUSED,
    EstopReply,
    FaultRecord,
    Health,
    HomingReply,
    KeyboardInput,
    KeyboardStatus,
    LearnerReport,
    Ok,
    ReasonBody,
    ResumedReply,
    Status,
    problem,
)

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "the control loop is not running"}})
async def health(request: Request) -> JSONResponse:
    """Liveness, open to anyone (no token): whether the control loop runs."""
    d = daemon_of(request)
    alive = d.loop.running
    body = Health(ok=alive, control_loop_alive=alive, uptime_s=round(time.time() - d.started_at, 1))
    return JSONResponse(body.model_dump(), status_code=200 if alive else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/status", dependencies=[Depends(read_access)],
            responses={503: problem("the control loop has not published its first status yet")})
async def get_status(request: Request) -> Status:
    d = daemon_of(request)
    if not d.loop.snapshot:  # the first tick is at most a period away
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the control loop has not published its status yet")
    return Status.model_validate(jsonable(d.status()))


@router.get(
    "/faults",
    response_model=list[FaultRecord],
    dependencies=[Depends(read_access)],
)
async def get_faults(request: Request) -> list[dict]:
    """Every injected device fault, oldest first; /status counts faults by kind."""
    return daemon_of(request).faults.records()


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(read_access)],
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text exposition format"}},
)
async def metrics(request: Request) -> Response:
    body, ctype = render_metrics(daemon_of(request))
    return Response(body, media_type=ctype)


@router.post("/estop", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def estop(request: Request, body: ReasonBody | None = None) -> EstopReply:
    """Emergency stop: motion halts at the next tick and stays halted until released."""
    reason = (body.reason if body else "") or "operator"
    await command(request, lambda s: s.estop(reason))
    return EstopReply(estop=True)


@router.post("/estop/release", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def release_estop(request: Request) -> EstopReply:
    await command(request, lambda s: s.release_estop())
    return EstopReply(estop=False)


@router.post("/arm/home", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def arm_home(request: Request) -> HomingReply:
    await command(request, lambda s: s.go_home())
    return HomingReply(homing=True)


@router.post("/arm/resume", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def arm_resume(request: Request) -> ResumedReply:
    """After the arm paused itself (repeated reflexes), let it move again."""
    await command(request, lambda s: s.resume_arm())
    return ResumedReply(resumed=True)


@router.post("/teleop/keyboard", dependencies=[Depends(require_token)])
async def keyboard(request: Request, body: KeyboardInput) -> KeyboardStatus:
    """The page's keyboard fallback: held keys as axes, expiring after `hold_s`."""
    kb = daemon_of(request).keyboard
    kb.set(x=body.x, y=body.y, z=body.z, yaw=body.yaw, gripper=body.gripper, hold_s=body.hold_s)
    return KeyboardStatus.model_validate(jsonable(kb.status()))


@router.put("/learner/status", dependencies=[Depends(require_token)])
async def learner_status(request: Request, body: LearnerReport) -> Ok:
    """The learner's progress and classifier diagnostics, shown to the operator."""
    d = daemon_of(request)
    d.learner_report = {"received_at": time.time(), "step": body.step, "metrics": body.metrics,
                        "classifier": {k: v for k, v in body.metrics.items() if k.startswith("clf")},
                        "behind_steps": body.behind_steps, "dropped": body.dropped, "buffered": body.buffered,
                        "capacity": body.capacity}
    return Ok(ok=True)
