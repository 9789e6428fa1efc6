"""`robot-server calibrate ...`: workspace box, home pose, camera crops and hand-eye calibration.

Every command that saves writes the YAML config file given with --config (comments kept,
validated first, atomic, previous version kept as `<file>.bak`); a running daemon picks the
change up at its next start.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Calibrate the workspace box, home pose, crops and cameras."
)


class MountChoice(StrEnum):
    eye_in_hand = "eye-in-hand"
    eye_to_hand = "eye-to-hand"

    @property
    def mount(self) -> str:
        return self.value.replace("-", "_")


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _load(config: Path):
    from spec.config import ConfigError, load_config

    try:
        return load_config(config, env={})
    except ConfigError as exc:
        _fail(str(exc), 2)


def _client(server: str, config: Path | None, token: str | None):
    import httpx

    if token is None and config is not None and config.is_file():
        token = _load(config).server.token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=10.0)


def _get_json(client, path: str) -> dict[str, Any]:
    import httpx

    try:
        r = client.get(path)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {client.base_url}{path}: {exc}")
    if r.status_code != 200:
        _fail(f"GET {path}: {r.status_code} {r.text[:300]}")
    return r.json()


def _save(config: Path, edits: dict[str, Any]) -> None:
    from calibration.config_file import TAKES_EFFECT, ConfigEditError, backup_path, edit_config

    try:
        edit_config(config, edits)
    except ConfigEditError as exc:
        _fail(str(exc), 2)
    for key, value in edits.items():
        typer.echo(f"  {key}: {value}")
    typer.echo(f"{config}: {TAKES_EFFECT}; previous version in {backup_path(config)}")


def _parse_points(text: str) -> list[list[float]]:
    pts = []
    for i, chunk in enumerate(c for c in text.split(";") if c.strip()):
        try:
            p = [float(v) for v in chunk.split(",")]
        except ValueError:
            _fail(f"--points: point {i + 1} {chunk.strip()!r} is not x,y,z numbers", 2)
        if len(p) != 3:
            _fail(f"--points: point {i + 1} {chunk.strip()!r} has {len(p)} values, needs x,y,z", 2)
        pts.append(p)
    return pts


SERVER_HELP = "robot server URL, e.g. http://127.0.0.1:8000"
TOKEN_OPT = typer.Option(None, envvar="ROBOT_TOKEN", help="bearer token (default: server.token from --config)")


@app.command()
def workspace(
    config: Path = typer.Option(..., "--config", "-c", help="the robot's YAML config to write"),
    server: str | None = typer.Option(None, help=SERVER_HELP + "; marks read GET /status"),
    points: str | None = typer.Option(None, help='non-interactive: "x,y,z;x,y,z;..." in m, base frame'),
    margin: float = typer.Option(0.0, min=0.0, max=0.25, help="grow the box by this much on every side, m"),
    token: str | None = TOKEN_OPT,
) -> None:
    """Set `workspace.low/high` from end-effector positions: jog the arm to each corner of the
    task's region and press Enter to mark it (u undoes, s saves, q quits); or give --points."""
    from calibration.config_file import ConfigEditError
    from calibration.workspace import propose_box, workspace_edits

    _load(config)  # a broken file is reported before any jogging
    if points is not None:
        try:
            box = propose_box(_parse_points(points), margin)
        except ConfigEditError as exc:
            _fail(str(exc), 2)
        _save(config, workspace_edits(box))
        return
    if server is None:
        _fail("give --server URL to mark points from the arm, or --points", 2)
    marked: list[list[float]] = []
    with _client(server, config, token) as client:
        typer.echo("Jog the arm (SpaceMouse or the page's keyboard teleop) to a corner, then:")
        while True:
            try:
                cmd = input("[Enter] mark  [u] undo  [s] save  [q] quit > ").strip().lower()
            except EOFError:
                cmd = "q"
            if cmd == "":
                arm = _get_json(client, "/status").get("arm") or {}
                if arm.get("position") is None:
                    typer.echo("  no arm position in /status yet")
                    continue
                marked.append([float(v) for v in arm["position"]])
                typer.echo(f"  point {len(marked)}: {marked[-1]}")
            elif cmd == "u" and marked:
                typer.echo(f"  removed {marked.pop()}")
            elif cmd == "s":
                try:
                    box = propose_box(marked, margin)
                except ConfigEditError as exc:
                    typer.echo(f"  not saved: {exc}")
                    continue
                _save(config, workspace_edits(box))
                return
            elif cmd == "q":
                typer.echo("quit without saving")
                raise typer.Exit(1)
            if marked:
                try:
                    b = propose_box(marked, margin)
                    typer.echo(f"  box so far: low {b.low} high {b.high}")
                except ConfigEditError as exc:
                    typer.echo(f"  ({exc.message})")


@app.command()
def home(
    config: Path = typer.Option(..., "--config", "-c", help="the robot's YAML config to write"),
    server: str | None = typer.Option(None, help=SERVER_HELP + "; joints from GET /calibration/arm"),
    joints: str | None = typer.Option(None, help="non-interactive: 7 comma-separated joint angles, rad"),
    token: str | None = TOKEN_OPT,
) -> None:
    """Set `arm.home_joints` to the arm's current joint positions (or to --joints)."""
    from calibration.config_file import ConfigEditError
    from calibration.workspace import home_edits, inside

    cfg = _load(config)
    tcp = None
    if joints is not None:
        try:
            q = [float(v) for v in joints.split(",")]
        except ValueError:
            _fail(f"--joints: {joints!r} is not 7 comma-separated numbers", 2)
    elif server is not None:
        with _client(server, config, token) as client:
            pose = _get_json(client, "/calibration/arm")
        q, tcp = pose["joints"], pose["position"]
    else:
        _fail("give --server URL (reads the arm) or --joints", 2)
    try:
        edits = home_edits(q)
    except ConfigEditError as exc:
        _fail(str(exc), 2)
    _save(config, edits)
    if tcp is not None and not inside(cfg.workspace.low, cfg.workspace.high, tcp):
        typer.echo(f"warning: the home end-effector position {tcp} is outside the workspace box", err=True)


@app.command()
def crop(
    config: Path = typer.Option(..., "--config", "-c", help="the robot's YAML config to write"),
    camera: str = typer.Option(..., help="camera name in the config"),
    rect: str = typer.Option(..., help="x,y,w,h in full-resolution pixels"),
    image: Path | None = typer.Option(None, help="a full-resolution snapshot (PNG/JPEG) for the preview"),
    server: str | None = typer.Option(None, help=SERVER_HELP + "; fetches a full snapshot for the preview"),
    preview: Path | None = typer.Option(None, help="write the frame with the rectangle drawn (and the policy view)"),
    token: str | None = TOKEN_OPT,
) -> None:
    """Check a crop rectangle against the camera's full resolution and save `cameras[NAME].crop`."""
    from calibration.config_file import ConfigEditError
    from calibration.crop import (
        aspect_note,
        check_crop,
        crop_edits,
        decode_jpeg,
        load_image,
        parse_rect,
        save_png,
    )
    from calibration.crop import preview as draw_preview

    cfg = _load(config)
    try:
        cam = cfg.camera(camera)
    except KeyError:
        _fail(f"--camera: no camera {camera!r} in {config} (have {[c.name for c in cfg.cameras]})", 2)
    try:
        r = check_crop(cam, parse_rect(rect))
    except ConfigEditError as exc:
        _fail(str(exc), 2)
    frame = None
    if image is not None:
        try:
            frame = load_image(str(image))
        except ValueError as exc:
            _fail(f"--image: {exc}", 2)
    elif server is not None:
        with _client(server, config, token) as client:
            resp = client.get(f"/cameras/{camera}/snapshot", params={"view": "full"})
            if resp.status_code != 200:
                _fail(f"snapshot of {camera!r}: {resp.status_code} {resp.text[:300]}")
            frame = decode_jpeg(resp.content)
    if preview is not None:
        if frame is None:
            _fail("--preview needs a frame: give --image or --server", 2)
        try:
            save_png(str(preview), draw_preview(frame, cam, r))
        except ValueError as exc:
            _fail(str(exc), 2)
        typer.echo(f"preview written to {preview}")
    note = aspect_note(cam, r)
    if note:
        typer.echo(f"warning: {note}", err=True)
    _save(config, crop_edits(cam, r))


def _board(squares: str, square_mm: float, marker_mm: float, dictionary: str):
    from calibration.board import BoardSpec

    try:
        sx, sy = (int(v) for v in squares.lower().split("x"))
    except ValueError:
        _fail(f"--squares {squares!r}: expected squares across x down, e.g. 6x5", 2)
    try:
        return BoardSpec(sx, sy, square_mm / 1e3, marker_mm / 1e3, dictionary)
    except ValueError as exc:
        _fail(f"board: {exc}", 2)


SQUARES = typer.Option("6x5", help="ChArUco squares across x down")
SQUARE_MM = typer.Option(40.0, help="chessboard square side, mm")
MARKER_MM = typer.Option(30.0, help="ArUco marker side, mm")
DICTIONARY = typer.Option("DICT_4X4_50", help="ArUco dictionary (cv2.aruco name)")


def _print_pose(label: str, pos: list[float], quat: list[float]) -> None:
    p = ", ".join(f"{v:+.5f}" for v in pos)
    q = ", ".join(f"{v:+.5f}" for v in quat)
    typer.echo(f"{label:>10}: position [{p}] m  quaternion (w x y z) [{q}]")


@app.command("handeye-sim")
def handeye_sim(
    config: Path = typer.Option(..., "--config", "-c", help="a sim config, e.g. configs/sim.yaml"),
    camera: str = typer.Option("wrist", help="wrist (eye-in-hand) or front (eye-to-hand)"),
    poses: int = typer.Option(10, min=3, max=200, help="arm poses with the board detected"),
    width: int = typer.Option(640, min=64, max=2048, help="render width (intrinsics follow)"),
    height: int = typer.Option(480, min=48, max=2048),
    seed: int = typer.Option(0),
    save_samples: Path | None = typer.Option(None, help="also write the samples here (as the robot API does)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the full result as JSON"),
    squares: str = SQUARES,
    square_mm: float = SQUARE_MM,
    marker_mm: float = MARKER_MM,
    dictionary: str = DICTIONARY,
) -> None:
    """Check hand-eye calibration in the sim, where the camera's true pose is known."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from calibration.handeye import pose_parts
    from calibration.handeye_sim import run_handeye_sim, tolerance

    cfg = _load(config)
    spec = _board(squares, square_mm, marker_mm, dictionary)
    try:
        res = run_handeye_sim(cfg, camera, poses, width, height, seed, spec, save_dir=save_samples)
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc))
    frame = "gripper (TCP)" if res.mount == "eye_in_hand" else "robot base"
    typer.echo(f"camera {camera!r}, {res.mount}: pose in the {frame} frame, OpenCV camera axes")
    typer.echo(f"{res.poses_used} poses used ({res.poses_tried} tried), {width}x{height}, "
               f"{res.mean_corners:.1f} corners per view, method {res.result.method}")
    _print_pose("recovered", *pose_parts(res.result.camera_pose))
    _print_pose("truth", *pose_parts(res.truth))
    tol_mm, tol_deg = tolerance()
    ok = res.error_mm <= tol_mm and res.error_deg <= tol_deg
    typer.echo(f"error: {res.error_mm:.3f} mm, {res.error_deg:.4f} deg (tolerance {tol_mm} mm, {tol_deg} deg): "
               f"{'OK' if ok else 'FAILED'}")
    typer.echo(f"reprojection RMS {res.result.reprojection_px:.3f} px; board spread "
               f"{res.result.board_spread_mm:.3f} mm / {res.result.board_spread_deg:.3f} deg")
    if save_samples is not None:
        typer.echo(f"samples written to {save_samples}")
    if json_out is not None:
        json_out.write_text(json.dumps(res.as_dict(), indent=2) + "\n")
    if not ok:
        raise typer.Exit(1)


@app.command()
def handeye(
    samples: Path = typer.Option(..., help="sample directory (POST /calibration/handeye/samples writes them)"),
    camera: str = typer.Option(..., help="camera name (only its samples are used)"),
    mount: MountChoice = typer.Option(..., help="eye-in-hand: camera on the hand; eye-to-hand: fixed camera"),
    intrinsics: Path | None = typer.Option(None, help="intrinsics JSON (default: intrinsics.json in --samples)"),
    out: Path = typer.Option(Path("handeye.json"), help="where to write the result"),
    config: Path | None = typer.Option(None, "--config", "-c", help="also save cameras[NAME].extrinsics here"),
    min_corners: int = typer.Option(8, min=4, help="ignore views with fewer board corners"),
    squares: str = SQUARES,
    square_mm: float = SQUARE_MM,
    marker_mm: float = MARKER_MM,
    dictionary: str = DICTIONARY,
) -> None:
    """Solve hand-eye calibration from saved samples and write the camera pose as JSON."""
    import time

    from calibration.board import detect_board
    from calibration.handeye import pose_matrix, solve_hand_eye
    from calibration.intrinsics import Intrinsics
    from calibration.samples import load_samples, sample_intrinsics

    spec = _board(squares, square_mm, marker_mm, dictionary)
    try:
        all_samples = load_samples(samples)
        intr = Intrinsics.load(intrinsics) if intrinsics is not None else sample_intrinsics(samples)
    except ValueError as exc:
        _fail(str(exc), 2)
    if intr is None:
        _fail(f"no intrinsics: give --intrinsics FILE.json (none saved in {samples})", 2)
    mine = [s for s in all_samples if s.meta.get("camera", camera) == camera]
    g2b, dets, used = [], [], []
    for s in mine:
        try:
            det = detect_board(s.image(), spec, intr, min_corners=min_corners)
        except ValueError as exc:
            _fail(f"sample {s.index}: {exc}", 2)
        if det is None:
            typer.echo(f"  sample {s.index}: board not found (or fewer than {min_corners} corners), skipped")
            continue
        g2b.append(pose_matrix(s.position, s.quaternion))
        dets.append(det)
        used.append(s.index)
    try:
        res = solve_hand_eye(
            g2b, [d.target2cam for d in dets], mount.mount,
            image_points=[(d.object_points, d.image_points) for d in dets], intrinsics=(intr.matrix, intr.dist),
        )
    except ValueError as exc:
        _fail(f"{len(dets)} usable samples of {len(mine)}: {exc}")
    body = {**res.as_dict(), "camera": camera, "samples_used": used, "board": spec.as_dict(),
            "intrinsics": intr.as_dict(), "solved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out.write_text(json.dumps(body, indent=2) + "\n")
    _print_pose("camera", body["position"], body["quaternion"])
    typer.echo(f"in the {res.frame} frame; {res.samples} samples, method {res.method}, reprojection RMS "
               f"{res.reprojection_px:.3f} px, board spread {res.board_spread_mm:.2f} mm / "
               f"{res.board_spread_deg:.3f} deg; written to {out}")
    if config is not None:
        ext = {
            "frame": res.frame,
            "position": [round(v, 6) for v in body["position"]],
            "quaternion": [round(v, 7) for v in body["quaternion"]],
            "reprojection_px": round(float(res.reprojection_px or 0.0), 4),
            "samples": res.samples,
            "calibrated_at": body["solved_at"],
        }
        _save(config, {f"cameras.{camera}.extrinsics": ext})
