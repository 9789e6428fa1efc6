"""Eval sessions: the forward policy's mean action for K episodes from the initial state
distribution, each episode's success stored; success per policy version from the store."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status

from replay.eval_results import success_by_version
from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, ended, jsonable, still_running, store_reader
from robot_server.api.models import VerdictBody
from robot_server.evaluation import EvalParams

router = APIRouter(prefix="/evals", tags=["evals"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)])
async def start_eval(request: Request, params: EvalParams) -> dict:
    """Start an eval session of `episodes` episodes of at most `horizon` steps each; 409 if the
    daemon is busy or no forward policy has been pushed."""
    return jsonable(await command(request, lambda s: s.start_eval(params)))


@router.get("/current", dependencies=[Depends(read_access)])
async def current_eval(request: Request) -> dict:
    st = daemon_of(request).status()
    if not st.get("eval"):
        raise still_running(daemon_of(request).supervisor.last_eval, "eval session")
    return jsonable(st["eval"])


@router.get("/last", dependencies=[Depends(read_access)])
async def last_eval(request: Request) -> dict:
    return ended(daemon_of(request).supervisor.last_eval, "eval session")


@router.post("/current/reset-done", dependencies=[Depends(require_token)])
async def reset_done(request: Request) -> dict:
    """The robot: the scene is back in its initial state; the next episode starts."""
    await command(request, lambda s: s.confirm_reset())
    return {"stage": "acting"}


@router.post("/current/verdict", dependencies=[Depends(require_token)])
async def verdict(request: Request, body: VerdictBody) -> dict:
    """The robot: the operator's verdict on the episode that just reached its horizon (409 in sim,
    where the task judges, or when no episode awaits one)."""
    return jsonable(await command(request, lambda s: s.eval_verdict(body.success)))


@router.post("/current/stop", dependencies=[Depends(require_token)])
async def stop(request: Request) -> dict:
    """End the eval session; an episode without a verdict is dropped."""
    return jsonable(await command(request, lambda s: s.stop_eval()))


@router.get("/results", dependencies=[Depends(read_access)])
async def results(request: Request) -> dict:
    """Forward success per policy version, aggregated from every eval episode in the store."""
    return jsonable({"direction": "forward", "versions": success_by_version(store_reader(request).episodes())})
