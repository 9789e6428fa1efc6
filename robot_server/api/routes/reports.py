"""The operator's morning report (`replay report STORE -o DIR`), read-only, from server.reports_dir:
the newest report there, whether DIR is reports_dir itself or one folder per report inside it."""

from __future__ import annotations

from pathlib import Path as FsPath

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.responses import FileResponse, RedirectResponse

from robot_server.api.auth import read_access
from robot_server.api.deps import daemon_of
from robot_server.api.models import problem

router = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(read_access)])

INDEX = "index.html"  # written last by `replay report`: its presence marks a complete report
NO_CACHE = {"Cache-Control": "no-store"}  # a new report replaces the files under the same names


def latest_report(root: FsPath) -> FsPath | None:
    """The folder of the newest index.html in `root` or its subfolders (one level), if any."""
    found = []
    for index in [root / INDEX, *root.glob(f"*/{INDEX}")]:
        try:
            found.append((index.stat().st_mtime, index.parent))
        except OSError:  # not there, or replaced while we looked
            continue
    return max(found)[1] if found else None


def _latest(request: Request) -> FsPath:
    root = daemon_of(request).cfg.server.reports_dir
    folder = latest_report(root)
    if folder is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no report yet in {root}: make one with `replay report STORE -o {root}/<name>`")
    return folder


@router.get("/latest", include_in_schema=False)
def latest_redirect() -> RedirectResponse:
    # The page links report.json and its PNGs relatively: they resolve under /reports/latest/ only.
    return RedirectResponse("/reports/latest/")


@router.get("/latest/", response_class=FileResponse,
            responses={200: {"content": {"text/html": {}}, "description": "the report page"},
                       404: problem("no report yet in server.reports_dir")})
def latest(request: Request) -> FileResponse:
    """The newest morning report's page (self-contained HTML: its plots are embedded); 404 if none."""
    return FileResponse(_latest(request) / INDEX, media_type="text/html", headers=NO_CACHE)


@router.get("/latest/{name}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "application/json": {}}, "description": "a plot or report.json"},
                       404: problem("no report yet, or the latest has no such file")})
def latest_file(request: Request, name: str = Path(..., pattern=r"^[a-z0-9_]{1,64}\.(png|json)$")) -> FileResponse:
    """One of the newest report's files: a plot (`<section>.png`) or `report.json`."""
    folder = _latest(request)
    if not (folder / name).is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"the latest report ({folder}) has no {name}")
    return FileResponse(folder / name, headers=NO_CACHE)
