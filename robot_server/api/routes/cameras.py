"""Camera views: JPEG snapshots and MJPEG streams of the full and the cropped (policy) view."""

from __future__ import annotations

import asyncio
from typing import Literal

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from camera.crop import view_of
from robot_server.api.auth import read_access, stream_access
from robot_server.api.deps import daemon_of, jsonable
from robot_server.api.models import CameraList, problem

router = APIRouter(prefix="/cameras", tags=["cameras"])
View = Literal["full", "cropped"]
NO_CAMERA = problem("no camera of this name")
BOUNDARY = "frame"


def _camera(request: Request, name: str):
    d = daemon_of(request)
    cam = d.cameras.get(name)
    if cam is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {name!r}; cameras: {sorted(d.cameras)}")
    return cam, d.cfg.camera(name)


def _jpeg(frame_image: np.ndarray, cfg, view: View, quality: int = 80) -> bytes:
    img = view_of(frame_image, cfg) if view == "cropped" else frame_image
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


@router.get("", dependencies=[Depends(read_access)])
async def list_cameras(request: Request) -> CameraList:
    d = daemon_of(request)
    return CameraList.model_validate(jsonable(
        {
            "cameras": [
                {**c.model_dump(mode="json"), "stats": d.cameras[c.name].stats.as_dict()}
                for c in d.cfg.cameras
                if c.name in d.cameras
            ]
        }
    ))


@router.get(
    "/{name}/snapshot",
    response_class=Response,
    dependencies=[Depends(read_access)],
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
              "description": "the newest frame as a JPEG"},
        404: NO_CAMERA,
        503: problem("the camera has no frame yet"),
    },
)
async def snapshot(request: Request, name: str, view: View = "cropped") -> Response:
    cam, cfg = _camera(request, name)
    frame = cam.read()
    if frame is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"camera {name!r} has no frame yet")
    return Response(_jpeg(frame.image, cfg, view), media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/{name}/stream",
    response_class=StreamingResponse,
    dependencies=[Depends(stream_access)],
    responses={
        200: {"content": {"multipart/x-mixed-replace": {"schema": {"type": "string"}}},
              "description": f"MJPEG: JPEG frames, one per part (boundary={BOUNDARY}), until the client "
              "leaves or `max_frames` were sent"},
        404: NO_CAMERA,
    },
)
async def stream(
    request: Request,
    name: str,
    view: View = "cropped",
    # At least 1 fps: the stream sleeps 1/fps between frames, and a client that leaves is noticed
    # only between two of them.
    fps: float = Query(10.0, ge=1, le=30),
    max_frames: int | None = Query(None, ge=1, le=1_000_000, description="end the stream after N frames"),
) -> StreamingResponse:
    cam, cfg = _camera(request, name)

    async def frames():
        sent, last_index = 0, -1
        while max_frames is None or sent < max_frames:
            if await request.is_disconnected():
                return
            frame = cam.read()
            if frame is not None and frame.index != last_index:
                last_index = frame.index
                jpg = _jpeg(frame.image, cfg, view)
                yield b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
                    BOUNDARY.encode(), len(jpg), jpg)
                sent += 1
                if max_frames is not None and sent >= max_frames:
                    return  # no wait after the last frame
            await asyncio.sleep(1.0 / fps)

    return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")
