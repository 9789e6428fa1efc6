"""Classifier intake from the learner (`PUT /classifiers/{direction}`) and what is loaded (`GET`).

The daemon scores recorded frames with them for the review page; they never act on the robot.
Validated off the control thread; a bad checkpoint is refused with the same 400/409/413/422 as a
policy, and the loaded classifier stays.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import daemon_of
from robot_server.api.upload import read_checkpoint_body
from spec.direction import Direction

router = APIRouter(prefix="/classifiers", tags=["classifiers"])
# Reads answer 401/403 only when server.protect_reads.
AUTH = {401: {"description": "no bearer token"}, 403: {"description": "wrong bearer token"}}

CHECKPOINT_BODY = {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "a classifier checkpoint: safetensors with its metadata (policies.classifier_checkpoint)",
}


class LoadedClassifier(BaseModel):
    version: int = Field(..., description="the learner's classifier step count (above any earlier learner's)")
    training_step: int
    mode: str = Field(..., description="pixels | state: what the classifier reads")
    cameras: list[str] = Field(..., description="the views it looks at")
    size_bytes: int
    sha256: str
    received_at: float | None = Field(None, description="unix time of the upload")


class Classifiers(BaseModel):
    forward: LoadedClassifier | None = Field(None, description="the goal classifier C_f")
    backward: LoadedClassifier | None = Field(None, description="the state-matching classifier C_b")
    rejected: int = Field(..., description="uploads refused since the daemon started")


class AcceptedClassifier(LoadedClassifier):
    direction: Direction


@router.get("", response_model=Classifiers, dependencies=[Depends(read_access)], responses=AUTH)
async def list_classifiers(request: Request) -> dict:
    return daemon_of(request).classifiers.summary()


@router.put(
    "/{direction}",
    response_model=AcceptedClassifier,
    dependencies=[Depends(require_token)],
    openapi_extra={"requestBody": CHECKPOINT_BODY},
    responses={400: {"description": "not a valid classifier checkpoint"}, **AUTH, 408: {"description": "upload stalled"},
               409: {"description": "version not newer"},
               413: {"description": "too large"}, 422: {"description": "spec or direction mismatch"}},
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
