"""Hand-eye calibration: the solve on synthetic poses (exact), ChArUco detection, and the whole
procedure in the sim world against MuJoCo's true camera pose (rendered at a small resolution)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.board import BoardSpec, detect_board
from calibration.handeye import invert, pose_error, pose_matrix, pose_parts, solve_hand_eye
from calibration.handeye_sim import run_handeye_sim, tolerance
from calibration.intrinsics import Intrinsics
from calibration.samples import load_samples, save_sample
from robot_server.cli import app as cli_app
from spec.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TOL_MM, TOL_DEG = tolerance()


def _random_pose(rng: np.random.Generator, t_scale: float, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(axis * rng.uniform(0.2, 1.0) * max_angle)[0]
    T[:3, 3] = rng.uniform(-1, 1, 3) * t_scale
    return T


def _synthetic(mount: str, n: int = 10, seed: int = 0):
    """Gripper poses, exact board poses in the camera, and the true camera pose."""
    rng = np.random.default_rng(seed)
    X = _random_pose(rng, 0.08, 1.0)  # the unknown camera pose
    fixed = _random_pose(rng, 0.3, 1.0)  # board in base (eye-in-hand) or in gripper (eye-to-hand)
    fixed[:3, 3] += [0.5, 0.0, 0.0] if mount == "eye_in_hand" else [0.0, 0.0, 0.1]
    g2b, t2c = [], []
    for _ in range(n):
        g = _random_pose(rng, 0.1, 0.6)
        g[:3, 3] += [0.45, 0.0, 0.3]
        g2b.append(g)
        t2c.append(invert(X) @ invert(g) @ fixed if mount == "eye_in_hand" else invert(X) @ g @ fixed)
    return g2b, t2c, X


@pytest.mark.parametrize("mount", ["eye_in_hand", "eye_to_hand"])
def test_solve_recovers_the_exact_pose_from_exact_data(mount: str) -> None:
    g2b, t2c, X = _synthetic(mount)
    res = solve_hand_eye(g2b, t2c, mount)
    err_mm, err_deg = pose_error(res.camera_pose, X)
    assert err_mm < 1e-4 and err_deg < 1e-4
    assert res.board_spread_mm < 1e-4 and res.board_spread_deg < 1e-4
    assert res.frame == ("gripper" if mount == "eye_in_hand" else "base")
    d = res.as_dict()
    assert d["samples"] == 10 and len(d["quaternion"]) == 4
    assert np.allclose(pose_matrix(d["position"], d["quaternion"]), X, atol=1e-6)


def test_refinement_through_the_chain_beats_the_noisy_per_view_poses() -> None:
    """Corners projected through the true chain plus 0.3 px noise: the refined result is closer
    to the truth than the per-view PnP poses alone allow, and well inside the tolerance."""
    rng = np.random.default_rng(3)
    mount = "eye_in_hand"
    g2b, _, X = _synthetic(mount, n=10, seed=4)
    intr = Intrinsics.from_fovy(60.0, 640, 480)
    K, dist = intr.matrix, intr.dist
    spec = BoardSpec()
    obj = spec.board().getChessboardCorners().astype(np.float64)
    # A board 0.3 m in front of the camera of the first pose, so every view sees it.
    board = g2b[0] @ X @ pose_matrix([-0.1, -0.08, 0.3], [1, 0, 0, 0])
    t2c, pts = [], []
    for g in g2b:
        T = invert(X) @ invert(g) @ board
        img = cv2.projectPoints(obj, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], K, dist)[0].reshape(-1, 2)
        img = img + rng.normal(0, 0.3, img.shape)
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
        assert ok
        P = np.eye(4)
        P[:3, :3], P[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
        t2c.append(P)
        pts.append((obj, img))
    linear = solve_hand_eye(g2b, t2c, mount)
    refined = solve_hand_eye(g2b, t2c, mount, image_points=pts, intrinsics=(K, dist))
    lin_mm, _ = pose_error(linear.camera_pose, X)
    ref_mm, ref_deg = pose_error(refined.camera_pose, X)
    assert refined.method.endswith("+refined")
    assert ref_mm < lin_mm
    assert ref_mm < TOL_MM and ref_deg < TOL_DEG
    assert refined.reprojection_px < refined.reprojection_px_linear
    assert 0.2 < refined.reprojection_px < 0.45  # about the noise put in


def test_solve_refuses_bad_inputs() -> None:
    g2b, t2c, _ = _synthetic("eye_in_hand")
    with pytest.raises(ValueError, match="at least 3 samples"):
        solve_hand_eye(g2b[:2], t2c[:2])
    with pytest.raises(ValueError, match="10 gripper poses but 9"):
        solve_hand_eye(g2b, t2c[:9])
    with pytest.raises(ValueError, match="mount"):
        solve_hand_eye(g2b, t2c, "on_the_table")  # type: ignore[arg-type]
    # Turning about one axis only (yaw): the camera offset along it cannot be observed.
    yaw_only = [pose_matrix([0.4 + 0.01 * i, 0, 0.3], [math.cos(0.1 * i), 0, 0, math.sin(0.1 * i)]) for i in range(6)]
    with pytest.raises(ValueError, match="two different axes"):
        solve_hand_eye(yaw_only, t2c[:6])


def test_pose_helpers_round_trip() -> None:
    q = np.array([0.3, -0.5, 0.7, 0.2])
    q /= np.linalg.norm(q)
    T = pose_matrix([1, 2, 3], q)
    pos, quat = pose_parts(T)
    assert np.allclose(pos, [1, 2, 3]) and np.allclose(quat, q)
    assert np.allclose(invert(T) @ T, np.eye(4))
    with pytest.raises(ValueError, match="quaternion"):
        pose_matrix([0, 0, 0], [0, 0, 0, 0])


def test_board_detected_in_a_synthetic_view_with_its_pose() -> None:
    spec = BoardSpec()
    intr = Intrinsics.from_fovy(50.0, 640, 480)
    board_img = spec.image(px_per_square=80, margin_squares=0.5)
    # Warp the printed board into the camera at a known pose with the board's own homography.
    T = pose_matrix([-0.12, -0.09, 0.45], [math.cos(0.2), math.sin(0.2), 0, 0])
    m = 0.5 * spec.square_m
    corners_m = np.array([[-m, -m, 0], [spec.width_m + m, -m, 0], [spec.width_m + m, spec.height_m + m, 0],
                          [-m, spec.height_m + m, 0]])
    img_pts = cv2.projectPoints(corners_m, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], intr.matrix, intr.dist)[0]
    h, w = board_img.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32) - 0.5
    H = cv2.getPerspectiveTransform(src, img_pts.reshape(4, 2).astype(np.float32))
    view = cv2.warpPerspective(board_img, H, (640, 480), flags=cv2.INTER_AREA, borderValue=128)
    det = detect_board(cv2.cvtColor(view, cv2.COLOR_GRAY2RGB), spec, intr)
    assert det is not None and det.corners == (spec.squares_x - 1) * (spec.squares_y - 1)
    # One view's pose is only as good as its corners (a few tenths of a pixel in a resampled
    # image); a wrong axis convention or a mirrored board would be off by tens of degrees.
    err_mm, err_deg = pose_error(det.target2cam, T)
    assert err_mm < 3.0 and err_deg < 1.0
    true_px = cv2.projectPoints(det.object_points, cv2.Rodrigues(T[:3, :3])[0], T[:3, 3], intr.matrix, intr.dist)[0]
    assert np.sqrt(np.mean(np.sum((det.image_points - true_px.reshape(-1, 2)) ** 2, axis=1))) < 0.6
    assert detect_board(np.full((480, 640, 3), 128, np.uint8), spec, intr) is None
    with pytest.raises(ValueError, match="intrinsics are for 640x480"):
        detect_board(np.zeros((240, 320, 3), np.uint8), spec, intr)


def test_intrinsics_from_json_in_either_naming(tmp_path: Path) -> None:
    p = tmp_path / "rs.json"
    p.write_text(json.dumps({"width": 640, "height": 480, "fx": 600.0, "fy": 601.0, "ppx": 321.0, "ppy": 239.0,
                             "coeffs": [0.1, 0, 0, 0, 0]}))
    intr = Intrinsics.load(p)
    assert intr.cx == 321.0 and intr.dist_coeffs[0] == 0.1
    p.write_text(json.dumps({"width": 640, "height": 480, "fx": 600.0, "fy": -1, "cx": 320, "cy": 240}))
    with pytest.raises(ValueError, match="fy must be a positive"):
        Intrinsics.load(p)
    p.write_text(json.dumps({"width": 640, "fx": 600.0}))
    with pytest.raises(ValueError, match="missing height"):
        Intrinsics.load(p)


def test_samples_are_added_never_overwritten(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    a = save_sample(tmp_path, img, [0.4, 0, 0.3], [1, 0, 0, 0], {"camera": "wrist"})
    b = save_sample(tmp_path, img, [0.5, 0, 0.3], [1, 0, 0, 0], {"camera": "wrist"})
    assert (a.index, b.index) == (0, 1)
    (tmp_path / "0001.json").unlink()  # a half-saved sample (image without its JSON) is not one
    c = save_sample(tmp_path, img, [0.6, 0, 0.3], [1, 0, 0, 0])
    assert c.index == 2
    assert [s.position[0] for s in load_samples(tmp_path)] == [0.4, 0.6]
    with pytest.raises(ValueError, match="finite position"):
        save_sample(tmp_path, img, [0.4, 0], [1, 0, 0, 0])


# --- in the sim, against MuJoCo's ground truth -------------------------------------------------
@pytest.fixture(scope="module")
def sim_cfg():
    return load_config(ROOT / "spec" / "configs" / "sim.yaml", env={})


@pytest.fixture(scope="module")
def wrist_run(sim_cfg, tmp_path_factory):
    samples = tmp_path_factory.mktemp("handeye") / "wrist"
    res = run_handeye_sim(sim_cfg, "wrist", poses=8, width=320, height=240, seed=0, save_dir=samples)
    return res, samples


def test_sim_wrist_camera_eye_in_hand_within_tolerance(wrist_run) -> None:
    res, _ = wrist_run
    assert res.mount == "eye_in_hand" and res.poses_used == 8
    assert res.error_mm <= TOL_MM and res.error_deg <= TOL_DEG, (res.error_mm, res.error_deg)
    # The truth is the wrist camera's pose on the hand (about 5 cm beside and 3.7 cm above the TCP).
    assert 0.03 < np.linalg.norm(res.truth[:3, 3]) < 0.1


def test_sim_front_camera_eye_to_hand_within_tolerance(sim_cfg) -> None:
    res = run_handeye_sim(sim_cfg, "front", poses=8, width=480, height=360, seed=0)
    assert res.mount == "eye_to_hand"
    assert res.error_mm <= TOL_MM and res.error_deg <= TOL_DEG, (res.error_mm, res.error_deg)
    assert np.linalg.norm(res.truth[:3, 3] - [1.0, 0.0, 0.45]) < 1e-6  # the front camera, in the base frame


def test_cli_solves_saved_samples_and_saves_extrinsics(wrist_run, tmp_path: Path) -> None:
    res, samples = wrist_run
    config = tmp_path / "robot.yaml"
    config.write_text((ROOT / "spec" / "configs" / "sim.yaml").read_text())
    out = tmp_path / "wrist.json"
    r = CliRunner().invoke(cli_app, ["calibrate", "handeye", "--samples", str(samples), "--camera", "wrist",
                                     "--mount", "eye-in-hand", "--out", str(out), "--config", str(config)])
    assert r.exit_code == 0, r.output
    body = json.loads(out.read_text())
    got = pose_matrix(body["position"], body["quaternion"])
    err_mm, err_deg = pose_error(got, res.truth)
    assert err_mm <= TOL_MM and err_deg <= TOL_DEG
    ext = load_config(config, env={}).camera("wrist").extrinsics
    assert ext is not None and ext.frame == "gripper" and ext.samples == 8
    assert np.allclose(ext.position, body["position"], atol=1e-5)
    # Too few samples is refused with the reason.
    r = CliRunner().invoke(cli_app, ["calibrate", "handeye", "--samples", str(samples), "--camera", "front",
                                     "--mount", "eye-to-hand", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 1 and "at least 3 samples" in r.output
