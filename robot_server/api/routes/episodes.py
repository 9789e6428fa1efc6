"""Recorded episodes (segments) in the replay store: list and detail."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status

from robot_server.api.auth import read_access
from robot_server.api.deps import jsonable, store_reader
from robot_server.api.models import EpisodeDetail, EpisodeList, problem
from spec.direction import Direction

router = APIRouter(prefix="/episodes", tags=["episodes"], dependencies=[Depends(read_access)])


def _info(e) -> dict:
    return {
        "id": e.id,
        "kind": e.kind,
        "direction": e.direction,
        "length": e.length,
        "closed": e.closed,
        "success": e.success,
        "started_at": e.started_at,
        "ended_at": e.ended_at,
        "duration_s": None if not (e.started_at and e.ended_at) else round(e.ended_at - e.started_at, 3),
        "session": e.attrs.get("session"),
        "end_reason": e.attrs.get("end_reason"),
    }


@router.get("")
async def list_episodes(
    request: Request,
    kind: Literal["demo", "practice", "eval"] | None = None,
    direction: Direction | None = None,
    include_open: bool = False,
    limit: int = Query(100, ge=1, le=5000),
    offset: int = Query(0, ge=0),
) -> EpisodeList:
    eps = store_reader(request).episodes(include_open=include_open)
    eps = [e for e in eps if (kind is None or e.kind == kind) and (direction is None or e.direction == direction)]
    totals: dict[str, int] = {}
    for e in eps:
        key = f"{e.kind}/{e.direction}"
        totals[key] = totals.get(key, 0) + 1
    page = eps[::-1][offset : offset + limit]  # newest first
    return EpisodeList.model_validate(jsonable({"total": len(eps), "by_kind": totals, "episodes": [_info(e) for e in page]}))


@router.get("/{episode_id}", responses={404: problem("no episode with this id")})
async def episode_detail(
    request: Request, episode_id: str = Path(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
) -> EpisodeDetail:
    reader = store_reader(request)
    match = [e for e in reader.episodes(include_open=True) if e.id == episode_id]
    if not match:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no episode {episode_id!r}")
    e = match[0]
    detail = _info(e)
    if e.length:
        data = reader.read(e.id, keys=["timestamp", "policy_version", "intervention"])
        ts = data["timestamp"]
        versions = np.unique(data["policy_version"])
        detail.update(
            steps=int(e.length),
            step_duration_s=round(float(ts[-1] - ts[0]), 3) if len(ts) > 1 else 0.0,
            intervention_steps=int(np.count_nonzero(data["intervention"])),
            policy_versions=[int(v) for v in versions],
        )
    detail["attrs"] = e.attrs
    return EpisodeDetail.model_validate(jsonable(detail))
