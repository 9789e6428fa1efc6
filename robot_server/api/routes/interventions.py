"""Interventions: the operator records when they had to step in; the robot's own help requests;
the store's event log (interventions, resets, pauses, camera resets, help requests, e-stops), which
outlives restarts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, jsonable, store_reader
from robot_server.api.models import InterventionBody
from robot_server.events import DURABLE, Event

router = APIRouter(tags=["interventions"])


@router.post("/interventions", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)])
async def record_intervention(request: Request, body: InterventionBody) -> dict:
    """Count an intervention now; it is stored in the store's event log (and with the current
    segment during a session)."""
    return jsonable(await command(request, lambda s: s.record_intervention(body.reason)))


@router.get("/interventions", dependencies=[Depends(read_access)])
async def list_interventions(request: Request, limit: int = Query(100, ge=1, le=5000)) -> dict:
    """Counters since the daemon started, the running session's interventions, and the store's
    record of every intervention (`stored`, oldest first, the last `limit`; survives restarts)."""
    sup = daemon_of(request).supervisor
    sched = sup.schedule
    current = [iv.as_dict() for iv in sched.interventions] if sched is not None else []
    stored = [e for e in store_reader(request).events() if e.get("type") == Event.INTERVENTION]
    return jsonable({"counters": sup.counters.as_dict(), "session": current, "stored_total": len(stored),
                     "stored": stored[-limit:]})


@router.get("/events", dependencies=[Depends(read_access)])
async def list_events(
    request: Request,
    event_type: Event | None = Query(None, alias="type", description="only events of this type"),
    since_seq: int = Query(0, ge=0, description="only events numbered this or later"),
    limit: int = Query(100, ge=1, le=5000),
) -> dict:
    """The store's event log, oldest first (the last `limit` that match)."""
    if event_type is not None and event_type not in DURABLE:
        stored = ", ".join(sorted(e.value for e in DURABLE))
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            f"type: {event_type.value} events are not stored; stored types: {stored}")
    events = store_reader(request).events(since_seq)
    if event_type is not None:
        events = [e for e in events if e.get("type") == event_type]
    return jsonable({"total": len(events), "events": events[-limit:]})


@router.get("/help", dependencies=[Depends(read_access)])
async def help_requests(request: Request) -> dict:
    """What the robot is asking the operator for (empty when all is well)."""
    return jsonable({"help_requests": daemon_of(request).status().get("help_requests", [])})
