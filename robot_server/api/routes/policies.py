"""Checkpoint intake from the learner: validated off the control thread, swapped in between ticks."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import daemon_of, jsonable
from robot_server.api.models import InvalidRequest, PolicyAccepted, PolicySummary, problem
from robot_server.api.upload import read_checkpoint_body
from spec.direction import Direction

router = APIRouter(prefix="/policies", tags=["policies"])

CHECKPOINT_BODY = {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "a policy checkpoint: safetensors with its metadata (policies.checkpoint)",
}


@router.get("", dependencies=[Depends(read_access)])
async def list_policies(request: Request) -> PolicySummary:
    return PolicySummary.model_validate(jsonable(daemon_of(request).policies.summary()))


@router.put(
    "/{direction}",
    dependencies=[Depends(require_token)],
    openapi_extra={"requestBody": CHECKPOINT_BODY},
    responses={
        400: problem("not a checkpoint, an empty body, or the upload broke off"),
        408: problem("the upload stalled for server.body_timeout_s"),
        409: problem("its version is not newer than the running one"),
        413: problem("larger than server.max_checkpoint_mb"),
        422: {"model": InvalidRequest, "description": "its observation or action spec, or its direction, "
              "does not match this robot's (or the path's direction is not one)"},
    },
)
async def put_policy(request: Request, direction: Direction) -> PolicyAccepted:
    """Accept a new policy for one direction; the running policy stays if anything is wrong."""
    from policies.intake import CheckpointRejected

    d = daemon_of(request)
    body = await read_checkpoint_body(request, int(d.cfg.server.max_checkpoint_mb * 1e6), d.cfg.server.body_timeout_s)
    try:
        accepted = await run_in_threadpool(d.accept_checkpoint, direction, body)
    except CheckpointRejected as exc:
        d.policies.rejected += 1
        raise HTTPException(exc.status_code, exc.message) from None
    return PolicyAccepted.model_validate(jsonable(accepted))
