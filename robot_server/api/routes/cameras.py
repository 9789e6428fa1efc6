"""Camera views: JPEG snapshots and MJPEG streams of the full and the cropped (policy) view."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from robot_server.api.auth import read_access, stream_access
from robot_server.api.deps import daemon_of, jsonable
from robot_server.api.frame_jpegs import FrameJpegs, View
from robot_server.api.models import CameraList, problem

router = APIRouter(prefix="/cameras", tags=["cameras"])
NO_CAMERA = problem("no camera of this name")
BOUNDARY = "frame"


def _camera(request: Request, name: str):
    d = daemon_of(request)
    cam = d.cameras.get(name)
    if cam is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no camera {name!r}; cameras: {sorted(d.cameras)}")
    return cam, d.cfg.camera(name)


def _jpegs(request: Request) -> FrameJpegs:
    """The app's shared encodings: every viewer of a camera gets the same bytes for a frame."""
    return request.app.state.frame_jpegs


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
    jpeg = _jpegs(request).latest(cam, cfg, view)
    if jpeg is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"camera {name!r} has no frame yet")
    return Response(jpeg.data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


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
    jpegs = _jpegs(request)

    # No `request.is_disconnected()` poll per frame: StreamingResponse already cancels this generator
    # when the client goes, and each poll cost a cancel scope and a task repr on the event loop
    # (py-spy, 20 viewers: a fifth of the event loop's GIL time once the encodes were shared).
    async def frames():
        sent, last_index = 0, -1
        while max_frames is None or sent < max_frames:
            jpeg = jpegs.latest(cam, cfg, view)
            if jpeg is not None and jpeg.index != last_index:
                last_index, jpg = jpeg.index, jpeg.data
                yield b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
                    BOUNDARY.encode(), len(jpg), jpg)
                sent += 1
                if max_frames is not None and sent >= max_frames:
                    return  # no wait after the last frame
            await asyncio.sleep(1.0 / fps)

    return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")
