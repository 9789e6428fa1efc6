"""Calibration: workspace box and home pose from jogged arm poses, camera crops, hand-eye samples.

Saving writes the daemon's YAML config file (comments kept, validated first, atomic, `.bak`
kept); the running daemon keeps its settings until its next start. The page is
/static/calibration.html.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import Field

from calibration.config_file import (
    TAKES_EFFECT,
    ConfigEditError,
    backup_path,
    edit_config,
    read_document,
    to_plain,
)
from calibration.crop import aspect_note, check_crop, crop_edits
from calibration.handeye import pose_matrix, pose_parts
from calibration.intrinsics import camera_intrinsics
from calibration.samples import load_samples, save_sample
from calibration.workspace import PointLog, home_edits, inside, propose_box, workspace_edits
from replay.location import is_s3_url
from robot_server.api.auth import read_access, require_token
from robot_server.api.deps import daemon_of, jsonable
from robot_server.api.models import (
    ArmPose,
    CalibrationOverview,
    Cleared,
    CropSaved,
    HandeyeSamples,
    HandeyeSampleSaved,
    HomeSaved,
    PointMarked,
    WorkspaceProposal,
    WorkspaceSaved,
    problem,
)
from robot_server.json_body import JsonBody
from spec.clock import now

router = APIRouter(prefix="/calibration", tags=["calibration"])
_STATE_LOCK = threading.Lock()
CAMERA_NAME = r"^[a-z][a-z0-9_]{0,31}$"  # as spec.camera_config.CameraConfig.name (also a directory name)
MAX_FRAME_AGE_S = 1.0  # a hand-eye sample needs a live frame, not one from before the arm moved
NO_ARM_STATE = problem("no arm state yet: is the control loop running?")
# Refusals that depend on what the server holds (marked points, the arm's pose, the camera's
# configured frame, the config file), never on the request alone: a conflict, not a 422.
REFUSED = problem("the marked points, the arm's state, the camera's frame or the config file do not allow it")
SAVE_REFUSED = {409: REFUSED, 500: problem("the config file could not be written")}


class WorkspaceSave(JsonBody):
    margin_m: float = Field(0.0, ge=0, le=0.25, description="grow the points' bounding box by this much")


class CropBody(JsonBody):
    """A rectangle in the camera's full-resolution pixels."""

    x: int = Field(..., ge=0)
    y: int = Field(..., ge=0)
    w: int = Field(..., gt=0)
    h: int = Field(..., gt=0)


class SampleBody(JsonBody):
    camera: str = Field(..., pattern=CAMERA_NAME)


def _points(request: Request) -> PointLog:
    state = request.app.state
    with _STATE_LOCK:
        log = getattr(state, "calibration_points", None)
        if log is None:
            log = state.calibration_points = PointLog()
    return log


def _config_path(request: Request) -> Path:
    path = getattr(daemon_of(request), "config_path", None)
    if path is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "this daemon was started without a config file (robot-server run --config FILE): nothing to save to",
        )
    return Path(path)


def _refused(exc: ConfigEditError) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, f"{exc.field}: {exc.message}")


def _save(request: Request, edits: dict[str, Any]) -> dict[str, Any]:
    path = _config_path(request)
    try:
        edit_config(path, edits)
    except ConfigEditError as exc:
        raise _refused(exc) from None
    except OSError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"cannot write {path}: {exc}") from None
    return {"saved": True, "config_path": str(path), "backup": str(backup_path(path)), "note": TAKES_EFFECT,
            "values": edits}


def _arm_snapshot(request: Request) -> dict[str, Any]:
    arm = (daemon_of(request).loop.snapshot or {}).get("arm")
    if not arm or arm.get("position") is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "no arm state yet: is the control loop running?")
    return arm


def _arm_state(request: Request):
    state = daemon_of(request).loop.last_state  # immutable ArmState, replaced whole every tick
    if state is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "no arm state yet: is the control loop running?")
    return state


def _saved_document(request: Request) -> dict[str, Any] | None:
    path = getattr(daemon_of(request), "config_path", None)
    if path is None:
        return None
    try:
        return to_plain(read_document(path))
    except ConfigEditError:
        return None


def _handeye_dir(request: Request, camera: str) -> Path:
    """Local files next to the store's directory; with the store on an object store (s3://), next to
    the checkpoint directory instead (both are under data/ by default: data/handeye either way)."""
    cfg = daemon_of(request).cfg
    base = cfg.server.checkpoint_dir if is_s3_url(cfg.store.path) else Path(cfg.store.path)
    return base.parent / "handeye" / camera


# --- overview ----------------------------------------------------------------------------------
@router.get("", dependencies=[Depends(read_access)])
def overview(request: Request) -> CalibrationOverview:
    """Settings in effect (running) and as saved in the config file (used from the next start)."""
    d = daemon_of(request)
    saved = _saved_document(request) or {}
    saved_cams = {c.get("name"): c for c in saved.get("cameras") or [] if isinstance(c, dict)}
    cams = []
    for c in d.cfg.cameras:
        r = c.crop_rect
        cams.append({
            "name": c.name,
            "width": c.width,
            "height": c.height,
            "output": c.output.model_dump(),
            "crop": {"x": r.x, "y": r.y, "w": r.w, "h": r.h},
            "crop_saved": (saved_cams.get(c.name) or {}).get("crop"),
            "extrinsics": None if c.extrinsics is None else c.extrinsics.model_dump(),
            "handeye_samples": _count_samples(_handeye_dir(request, c.name)),
        })
    return CalibrationOverview.model_validate(jsonable({
        "config_path": None if d.config_path is None else str(d.config_path),
        "workspace": d.cfg.workspace.model_dump(),
        "workspace_saved": saved.get("workspace"),
        "home_joints": list(d.cfg.arm.home_joints),
        "home_joints_saved": (saved.get("arm") or {}).get("home_joints"),
        "cameras": cams,
        "points": _points(request).listing(),
        "note": "saved values take effect at the next daemon start",
    }))


def _count_samples(d: Path) -> int:
    try:
        return len(load_samples(d))
    except ValueError:
        return 0


@router.get("/arm", dependencies=[Depends(read_access)], responses={409: NO_ARM_STATE})
def arm_pose(request: Request) -> ArmPose:
    """The arm's current end-effector pose and joints (what a point, a home pose or a sample records)."""
    s = _arm_state(request)
    return ArmPose.model_validate(jsonable({
        "mode": s.mode.value,
        "position": [float(v) for v in s.position],
        "quaternion": [float(v) for v in s.quaternion],
        "yaw": float(s.yaw),
        "joints": [float(v) for v in s.joints],
        "timestamp": s.timestamp,
    }))


# --- workspace box -----------------------------------------------------------------------------
@router.post("/workspace/points", dependencies=[Depends(require_token)], responses={409: REFUSED})
def mark_point(request: Request) -> PointMarked:
    """Record the end-effector's current position (jog the arm there first) as a corner point."""
    arm = _arm_snapshot(request)
    try:
        entry = _points(request).add(arm["position"])
    except ConfigEditError as exc:
        raise _refused(exc) from None
    return PointMarked.model_validate(jsonable({"point": entry, "count": len(_points(request).positions())}))


@router.get("/workspace", dependencies=[Depends(read_access)])
def workspace(request: Request, margin: float = Query(0.0, ge=0, le=0.25, description="m")) -> WorkspaceProposal:
    """The marked points and the box they propose (min/max plus `margin`), or why there is none."""
    d = daemon_of(request)
    pts = _points(request).positions()
    box, problem = None, None
    try:
        box = propose_box(pts, margin).as_dict()
    except ConfigEditError as exc:
        problem = f"{exc.field}: {exc.message}"
    return WorkspaceProposal.model_validate(jsonable({
        "points": _points(request).listing(), "margin_m": margin, "box": box, "problem": problem,
        "current": d.cfg.workspace.model_dump()}))


@router.delete("/workspace/points", dependencies=[Depends(require_token)])
def clear_points(request: Request) -> Cleared:
    return Cleared(cleared=_points(request).clear())


@router.post("/workspace/save", dependencies=[Depends(require_token)], responses=SAVE_REFUSED)
def save_workspace(request: Request, body: WorkspaceSave | None = None) -> WorkspaceSaved:
    """Write the proposed box as `workspace.low/high` into the config file."""
    margin = body.margin_m if body else 0.0
    try:
        box = propose_box(_points(request).positions(), margin)
    except ConfigEditError as exc:
        raise _refused(exc) from None
    out = _save(request, workspace_edits(box))
    out["box"] = box.as_dict()
    return WorkspaceSaved.model_validate(jsonable(out))


# --- home pose ---------------------------------------------------------------------------------
@router.post("/home/save", dependencies=[Depends(require_token)], responses=SAVE_REFUSED)
def save_home(request: Request) -> HomeSaved:
    """Write the arm's current joint positions as `arm.home_joints`."""
    s = _arm_state(request)
    try:
        edits = home_edits(s.joints)
    except ConfigEditError as exc:
        raise _refused(exc) from None
    out = _save(request, edits)
    ws = daemon_of(request).cfg.workspace
    pos = [float(v) for v in s.position]
    out["tcp_position"] = pos
    if not inside(ws.low, ws.high, pos):
        out["warning"] = (
            f"the home pose's end-effector {pos} is outside the workspace box {ws.low}..{ws.high}: "
            "the first action after homing will jump to the box"
        )
    return HomeSaved.model_validate(jsonable(out))


# --- crop --------------------------------------------------------------------------------------
@router.put("/crop/{camera}", dependencies=[Depends(require_token)],
            responses={404: problem("no camera of this name"), **SAVE_REFUSED})
def save_crop(request: Request, camera: str, body: CropBody) -> CropSaved:
    """Save `cameras[camera].crop` (full-resolution pixels) into the config file; 409 if the
    rectangle does not fit the camera's configured full frame."""
    d = daemon_of(request)
    try:
        cam = d.cfg.camera(camera)
    except KeyError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no camera {camera!r}; cameras: {[c.name for c in d.cfg.cameras]}"
        ) from None
    try:
        crop = check_crop(cam, body.model_dump())
    except ConfigEditError as exc:
        raise _refused(exc) from None
    out = _save(request, crop_edits(cam, crop))
    out["crop"] = crop.model_dump()
    out["warning"] = aspect_note(cam, crop)
    return CropSaved.model_validate(jsonable(out))


# --- hand-eye samples --------------------------------------------------------------------------
@router.post(
    "/handeye/samples",
    dependencies=[Depends(require_token)],
    responses={404: problem("no camera of this name"), 409: NO_ARM_STATE,
               500: problem("the sample could not be written"), 503: problem("the camera has no fresh frame")},
)
def add_handeye_sample(request: Request, body: SampleBody) -> HandeyeSampleSaved:
    """Save the camera's current full-resolution frame with the arm's pose (hold the arm still)."""
    d = daemon_of(request)
    cam = d.cameras.get(body.camera)
    if cam is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {body.camera!r}; cameras: {sorted(d.cameras)}")
    state = _arm_state(request)
    frame = cam.read()
    if frame is None or now() - frame.timestamp > MAX_FRAME_AGE_S:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"camera {body.camera!r} has no fresh frame")
    intr = None
    try:
        intr = camera_intrinsics(cam)
    except ValueError:
        intr = None  # the sample is still useful with intrinsics given to the solver
    pos, quat = pose_parts(pose_matrix(state.position, state.quaternion))
    meta = {
        "camera": body.camera,
        "joints": [float(v) for v in state.joints],
        "arm_mode": state.mode.value,
        "arm_timestamp": state.timestamp,
        "frame_timestamp": frame.timestamp,
        "frame_index": frame.index,
        "frame_minus_arm_s": round(frame.timestamp - state.timestamp, 4),
        "saved_wall_time": time.time(),
    }
    directory = _handeye_dir(request, body.camera)
    try:
        sample = save_sample(directory, frame.image, pos, quat, meta, intrinsics=intr)
    except OSError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"cannot write to {directory}: {exc}") from None
    return HandeyeSampleSaved.model_validate(jsonable({
        "sample": sample.index,
        "image": str(sample.image_path),
        "directory": str(directory),
        "count": _count_samples(directory),
        "position": pos,
        "quaternion": quat,
        "intrinsics": None if intr is None else intr.as_dict(),
    }))


@router.get("/handeye/samples", dependencies=[Depends(read_access)],
            responses={500: problem("the samples on disk are inconsistent")})
def list_handeye_samples(request: Request, camera: str = Query(..., pattern=CAMERA_NAME)) -> HandeyeSamples:
    directory = _handeye_dir(request, camera)
    try:
        samples = load_samples(directory) if directory.is_dir() else []
    except ValueError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc)) from None
    return HandeyeSamples.model_validate(jsonable({
        "directory": str(directory), "count": len(samples),
        "samples": [{"index": s.index, "position": s.position, "quaternion": s.quaternion} for s in samples]}))

