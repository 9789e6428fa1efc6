"""The operator API (FastAPI): sessions, demos, evals, interventions, policies, classifiers, episodes,
labels, episode review, cameras, telemetry, metrics, e-stop, the latest morning report, and the page at `/`.
OpenAPI at /docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from robot_server.api import openapi
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
from robot_server.daemon import Daemon
from spec.config import ServerConfig

STATIC = Path(__file__).parent / "static"


def create_app(daemon: Daemon | None, server: ServerConfig | None = None) -> FastAPI:
    """The API of `daemon`. Who may read depends on its server config, and so does the OpenAPI
    document: an app built only for its document (`daemon` None) describes `server`, by default
    the default config (loopback, reads open)."""
    server = server or (daemon.cfg.server if daemon is not None else ServerConfig())
    reads_need_token = server.reads_need_token
    reads = "Reads need it too." if reads_need_token else "Reads are open (the server binds to loopback)."
    app = FastAPI(
        title="Franka practice robot server",
        version="0.1.0",
        description="Operate a self-practising Franka arm: sessions, demonstrations, interventions, "
        "policies, cameras and telemetry. State-changing calls need `Authorization: Bearer <token>`. "
        f"{reads} The browser's MJPEG stream may carry the token as `?token=`; live telemetry is a "
        "WebSocket at `/telemetry?interval=0.25&token=...` (not part of this document).",
    )
    app.state.daemon = daemon
    app.state.reads_need_token = reads_need_token
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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on this path (/interventions has
            # a GET and a POST route): list every method the path has.
            allowed = _allowed_methods(app, request.url.path)
            if allowed:
                exc = StarletteHTTPException(405, exc.detail, headers={**(exc.headers or {}), "Allow": allowed})
        return await http_exception_handler(request, exc)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    openapi.install(app, reads_need_token)
    return app


def _allowed_methods(app: FastAPI, path: str) -> str:
    """The methods the OpenAPI document gives `path` (HEAD with GET, as Starlette answers it)."""
    methods: set[str] = set()
    for template, item in app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods.update(m.upper() for m in item)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _safe(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's error entries as InvalidRequest.errors: loc as a list, msg and type as text."""
    return [
        {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
         "type": str(e.get("type", ""))}
        for e in errors
    ]
