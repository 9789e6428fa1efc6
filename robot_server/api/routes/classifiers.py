"""Classifier intake from the learner (`PUT /classifiers/{direction}`) and what is loaded (`GET`).

The daemon scores recorded frames with them for the review page; they never act on the robot.
Validated off the control thread; a bad checkpoint is refused with the same 400/409/413/422 as a
policy, and the loaded classifier stays.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import daemon_of
from robot_server.api.models import AcceptedClassifier, Classifiers, InvalidRequest, problem
from robot_server.api.upload import read_checkpoint_body
from spec.direction import Direction

router = APIRouter(prefix="/classifiers", tags=["classifiers"])

CHECKPOINT_BODY = {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "a classifier checkpoint: safetensors with its metadata (policies.classifier_checkpoint)",
}


@router.get("", response_model=Classifiers, dependencies=[Depends(read_access)])
async def list_classifiers(request: Request) -> dict:
    return daemon_of(request).classifiers.summary()


@router.put(
    "/{direction}",
    response_model=AcceptedClassifier,
    dependencies=[Depends(require_token)],
    openapi_extra={"requestBody": CHECKPOINT_BODY},
    responses={
        400: problem("not a classifier checkpoint, an empty body, or the upload broke off"),
        408: problem("the upload stalled for server.body_timeout_s"),
        409: problem("its version is not newer than the loaded one"),
        413: problem("larger than server.max_checkpoint_mb"),
        422: {"model": InvalidRequest, "description": "its observation spec or direction does not match this robot's"},
    },
)
async def put_classifier(request: Request, direction: Direction) -> dict:
    """Load a new classifier for one direction; the loaded one stays if anything is wrong."""
    from policies.intake import CheckpointRejected

    d = daemon_of(request)
    raw = await read_checkpoint_body(request, int(d.cfg.server.max_checkpoint_mb * 1e6), d.cfg.server.body_timeout_s)
    try:
        return await run_in_threadpool(d.classifiers.accept, direction, raw)
    except CheckpointRejected as exc:
        raise HTTPException(exc.status_code, exc.message) from None
