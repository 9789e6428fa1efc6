"""Eval sessions: the forward policy's mean action for K episodes from the initial state
distribution, each episode's success stored; success per policy version from the store."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status

from replay.eval_results import success_by_version
from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import command, daemon_of, ended, jsonable, still_running, store_reader
from robot_server.api.models import (
    COMMAND_REFUSED,
    EvalResults,
    EvalSummary,
    StageReply,
    VerdictBody,
    problem,
)
from robot_server.evaluation import EvalParams
from robot_server.modes import Stage

router = APIRouter(prefix="/evals", tags=["evals"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)],
             responses=COMMAND_REFUSED)
async def start_eval(request: Request, params: EvalParams) -> EvalSummary:
    """Start an eval session of `episodes` episodes of at most `horizon` steps each; 409 if the
    daemon is busy or no forward policy has been pushed."""
    return EvalSummary.model_validate(jsonable(await command(request, lambda s: s.start_eval(params))))


@router.get("/current", dependencies=[Depends(read_access)], responses={404: problem("no eval session is running")})
async def current_eval(request: Request) -> EvalSummary:
    st = daemon_of(request).status()
    if not st.get("eval"):
        raise still_running(daemon_of(request).supervisor.last_eval, "eval session")
    return EvalSummary.model_validate(jsonable(st["eval"]))


@router.get("/last", dependencies=[Depends(read_access)], responses={404: problem("no eval session has ended yet")})
async def last_eval(request: Request) -> EvalSummary:
    return EvalSummary.model_validate(ended(daemon_of(request).supervisor.last_eval, "eval session"))


@router.post("/current/reset-done", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def reset_done(request: Request) -> StageReply:
    """The robot: the scene is back in its initial state; the next episode starts."""
    await command(request, lambda s: s.confirm_reset())
    return StageReply(stage=Stage.ACTING)


@router.post("/current/verdict", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def verdict(request: Request, body: VerdictBody) -> EvalSummary:
    """The robot: the operator's verdict on the episode that just reached its horizon (409 in sim,
    where the task judges, or when no episode awaits one)."""
    return EvalSummary.model_validate(jsonable(await command(request, lambda s: s.eval_verdict(body.success))))


@router.post("/current/stop", dependencies=[Depends(require_token)], responses=COMMAND_REFUSED)
async def stop(request: Request) -> EvalSummary:
    """End the eval session; an episode without a verdict is dropped."""
    return EvalSummary.model_validate(jsonable(await command(request, lambda s: s.stop_eval())))


@router.get("/results", dependencies=[Depends(read_access)])
async def results(request: Request) -> EvalResults:
    """Forward success per policy version, aggregated from every eval episode in the store."""
    return EvalResults.model_validate(
        jsonable({"direction": "forward", "versions": success_by_version(store_reader(request).episodes())})
    )
