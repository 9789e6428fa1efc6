"""The operator API (FastAPI): sessions, demos, evals, interventions, policies, classifiers, episodes,
labels, episode review, cameras, telemetry, metrics, e-stop, the latest morning report, and the page at `/`.
OpenAPI at /docs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from robot_server.api.frame_jpegs import FrameJpegs
from robot_server.api.routes import (
    calibration,
    cameras,
    classifiers,
    demos,
    episodes,
    evals,
    interventions,
    labels,
    policies,
    reports,
    review,
    sessions,
    system,
    telemetry,
)

STATIC = Path(__file__).parent / "static"


def create_app(daemon) -> FastAPI:
    app = FastAPI(
        title="Franka practice robot server",
        version="0.1.0",
        description="Operate a self-practising Franka arm: sessions, demonstrations, interventions, "
        "policies, cameras and telemetry. State-changing calls need `Authorization: Bearer <token>`.",
    )
    app.state.daemon = daemon
    app.state.frame_jpegs = FrameJpegs()
    app.state.telemetry = telemetry.TelemetryText(daemon)
    for module in (system, sessions, demos, evals, interventions, policies, classifiers, episodes, labels, review,
                   cameras, telemetry, calibration, reports):
        app.include_router(module.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line per bad field, plus FastAPI's usual structured detail.
        msgs = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            msgs.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"detail": "; ".join(msgs), "errors": _safe(exc.errors())}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _safe(errors) -> list:
    out = []
    for e in errors:
        out.append({k: (v if isinstance(v, str | int | float | list | type(None)) else str(v))
                    for k, v in e.items() if k in ("loc", "msg", "type")})
    return out
