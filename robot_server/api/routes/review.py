"""Episode review: per-step data with both classifiers' scores, and the stored camera views as JPEG.

Both read committed steps only and run off the event loop (robot_server/episode_review.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from robot_server.api.auth import read_access
from robot_server.api.deps import daemon_of
from robot_server.api.models import EpisodeSteps, problem
from robot_server.episode_review import EpisodeReview, ReviewNotFound

router = APIRouter(prefix="/episodes", tags=["review"], dependencies=[Depends(read_access)])
EpisodeId = Path(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
NOT_FOUND = {404: problem("no such episode, step or camera (the message says which)")}
# Not cached by the browser: a store wiped and recorded afresh reuses episode ids (the page keeps
# the frames it plays in memory instead).
FRAME_CACHE = "no-cache"


def review_of(request: Request) -> EpisodeReview:
    """The review data of the daemon's store, kept on the app (its score cache stays warm)."""
    app = request.app
    if getattr(app.state, "review", None) is None:
        d = daemon_of(request)
        app.state.review = EpisodeReview(d.writer.location, d.classifiers)
    return app.state.review


@router.get("/{episode_id}/steps", response_model=EpisodeSteps, responses=NOT_FOUND)
async def episode_steps(request: Request, episode_id: str = EpisodeId) -> EpisodeSteps:
    """Every committed step: what happened, and each loaded classifier's probability on its frame."""
    try:
        return await run_in_threadpool(review_of(request).steps, episode_id)
    except ReviewNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.message) from None


@router.get(
    "/{episode_id}/frames/{step}.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the stored view"}, **NOT_FOUND},
)
async def episode_frame(
    request: Request,
    episode_id: str = EpisodeId,
    step: int = Path(..., ge=0, le=2**31),
    camera: str | None = Query(None, max_length=64, description="default: the first camera"),
) -> Response:
    """One committed step's stored camera view (what the policy saw), as JPEG."""
    try:
        jpeg = await run_in_threadpool(review_of(request).frame_jpeg, episode_id, step, camera)
    except ReviewNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.message) from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": FRAME_CACHE})
