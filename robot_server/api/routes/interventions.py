"""Interventions: the operator records when they had to step in; the robot's own help requests."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, jsonable
from robot_server.api.models import InterventionBody

router = APIRouter(tags=["interventions"])


@router.post("/interventions", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)])
async def record_intervention(request: Request, body: InterventionBody) -> dict:
    """Count an intervention now; during a session it is stored with the current segment."""
    return jsonable(await command(request, lambda s: s.record_intervention(body.reason)))


@router.get("/interventions", dependencies=[Depends(read_access)])
async def list_interventions(request: Request) -> dict:
    sup = daemon_of(request).supervisor
    sched = sup.schedule
    current = [iv.as_dict() for iv in sched.interventions] if sched is not None else []
    return jsonable({"counters": sup.counters.as_dict(), "session": current})


@router.get("/help", dependencies=[Depends(read_access)])
async def help_requests(request: Request) -> dict:
    """What the robot is asking the operator for (empty when all is well)."""
    return jsonable({"help_requests": daemon_of(request).status().get("help_requests", [])})
