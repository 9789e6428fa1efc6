"""Interventions: the operator records when they had to step in; the robot's own help requests;
the store's event log (interventions, resets, pauses, camera resets, help requests, e-stops), which
outlives restarts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, status

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, jsonable, store_reader
from robot_server.api.models import (
    COMMAND_REFUSED,
    Events,
    HelpRequests,
    InterventionBody,
    InterventionRecord,
    Interventions,
)
from robot_server.events import DurableEvent, Event

router = APIRouter(tags=["interventions"])


@router.post("/interventions", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)],
             responses=COMMAND_REFUSED)
async def record_intervention(request: Request, body: InterventionBody) -> InterventionRecord:
    """Count an intervention now; it is stored in the store's event log (and with the current
    segment during a session)."""
    return InterventionRecord.model_validate(
        jsonable(await command(request, lambda s: s.record_intervention(body.reason)))
    )


@router.get("/interventions", dependencies=[Depends(read_access)])
async def list_interventions(request: Request, limit: int = Query(100, ge=1, le=5000)) -> Interventions:
    """Counters since the daemon started, the running session's interventions, and the store's
    record of every intervention (`stored`, oldest first, the last `limit`; survives restarts)."""
    sup = daemon_of(request).supervisor
    sched = sup.schedule
    current = [iv.as_dict() for iv in sched.interventions] if sched is not None else []
    stored = [e for e in store_reader(request).events() if e.get("type") == Event.INTERVENTION]
    return Interventions.model_validate(jsonable({"counters": sup.counters.as_dict(), "session": current,
                                                  "stored_total": len(stored), "stored": stored[-limit:]}))


@router.get("/events", dependencies=[Depends(read_access)])
async def list_events(
    request: Request,
    # Only the kinds the store keeps: any other filter could match nothing, so the schema refuses it.
    event_type: DurableEvent | None = Query(None, alias="type", description="only events of this type"),
    since_seq: int = Query(0, ge=0, description="only events numbered this or later"),
    limit: int = Query(100, ge=1, le=5000),
) -> Events:
    """The store's event log, oldest first (the last `limit` that match). The loop's timing windows
    (`tick_stats`, one a minute) would bury the operator's events: they are listed only with
    `type=tick_stats`."""
    events = store_reader(request).events(since_seq)
    if event_type is not None:
        events = [e for e in events if e.get("type") == event_type]
    else:
        events = [e for e in events if e.get("type") != Event.TICK_STATS]
    return Events.model_validate(jsonable({"total": len(events), "events": events[-limit:]}))


@router.get("/help", dependencies=[Depends(read_access)])
async def help_requests(request: Request) -> HelpRequests:
    """What the robot is asking the operator for (empty when all is well)."""
    return HelpRequests.model_validate(jsonable({"help_requests": daemon_of(request).status().get("help_requests", [])}))
