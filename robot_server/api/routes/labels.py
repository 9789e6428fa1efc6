"""Operator labels on recorded episodes: success / failure verdicts and goal / not-goal frames.

Labels are events in the store's event log (replay/labels.py): recorded data is never rewritten,
and the learner reads them from the store to train its goal classifier.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from starlette.concurrency import run_in_threadpool

from replay.labels import Label, LabelSet
from replay.store import StoreFullError
from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import daemon_of, jsonable, store_reader
from robot_server.api.models import EpisodeLabels, InvalidRequest, LabelAdded, LabelBody, problem

router = APIRouter(prefix="/episodes", tags=["labels"])
EpisodeId = Path(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")


def _episode(request: Request, episode_id: str):
    for e in store_reader(request).episodes(include_open=True):
        if e.id == episode_id:
            return e
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"no episode {episode_id!r}")


def _summary(labels: LabelSet, episode_id: str) -> dict:
    return {
        "episode": episode_id,
        "verdict": labels.episode_verdicts.get(episode_id),
        "goal_frames": labels.goal_frames(episode_id),
        "not_goal_frames": labels.not_goal_frames(episode_id),
        "labels": [lb.to_dict() for lb in labels.for_episode(episode_id)],
    }


@router.get("/{episode_id}/labels", dependencies=[Depends(read_access)], responses={404: problem("no such episode")})
async def episode_labels(request: Request, episode_id: str = EpisodeId) -> EpisodeLabels:
    """The episode's current labels (a later label overrides an earlier one) and their history."""
    _episode(request, episode_id)
    return EpisodeLabels.model_validate(jsonable(_summary(LabelSet.from_events(store_reader(request).events()), episode_id)))


@router.post(
    "/{episode_id}/labels",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_token)],
    responses={
        404: problem("no such episode"),
        422: {"model": InvalidRequest, "description": "a bad frame range, or frames given with a whole-episode verdict"},
        503: problem("the store's disk is full: the label was not stored"),
    },
)
async def add_label(request: Request, body: LabelBody, episode_id: str = EpisodeId) -> LabelAdded:
    """Label the episode (success / failure) or a frame range of it (goal / not_goal); answers once
    the label is durable in the store."""
    ep = _episode(request, episode_id)
    try:
        label = Label(episode_id, body.verdict, body.start, body.stop, body.who)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if label.stop is not None and label.stop > ep.length:
        raise HTTPException(
            422,
            f"frames [{label.start}, {label.stop}) lie beyond episode {episode_id!r}'s {ep.length} recorded steps",
        )
    try:
        stored = await run_in_threadpool(daemon_of(request).recorder.append_event_now, label.event())
    except StoreFullError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the label was not stored: {exc}") from None
    labels = LabelSet.from_events(store_reader(request).events())
    return LabelAdded.model_validate(
        jsonable({"label": Label.from_event(stored).to_dict()} | _summary(labels, episode_id))
    )
