"""Camera views: JPEG snapshots and MJPEG streams of the full and the cropped (policy) view."""

from __future__ import annotations

import asyncio
from typing import Literal

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from camera.crop import view_of
from robot_server.api.auth import read_access
from robot_server.api.deps import daemon_of, jsonable

router = APIRouter(prefix="/cameras", tags=["cameras"], dependencies=[Depends(read_access)])
View = Literal["full", "cropped"]


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


@router.get("")
async def list_cameras(request: Request) -> dict:
    d = daemon_of(request)
    return jsonable(
        {
            "cameras": [
                {**c.model_dump(mode="json"), "stats": d.cameras[c.name].stats.as_dict()}
                for c in d.cfg.cameras
                if c.name in d.cameras
            ]
        }
    )


@router.get("/{name}/snapshot", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def snapshot(request: Request, name: str, view: View = "cropped") -> Response:
    cam, cfg = _camera(request, name)
    frame = cam.read()
    if frame is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"camera {name!r} has no frame yet")
    return Response(_jpeg(frame.image, cfg, view), media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/{name}/stream", responses={200: {"content": {"multipart/x-mixed-replace": {}}}})
async def stream(
    request: Request,
    name: str,
    view: View = "cropped",
    fps: float = Query(10.0, gt=0, le=30),
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
                yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpg), jpg)
                sent += 1
            await asyncio.sleep(1.0 / fps)

    return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame")
