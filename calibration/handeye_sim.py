"""Hand-eye calibration checked in the sim world, where the true camera pose is known.

A ChArUco board is generated with OpenCV at run time (a temporary PNG, no committed image) and
added to the scene: on the table for the eye-in-hand wrist camera, on the hand for the eye-to-hand
front camera. The arm is put through varied joint poses (stepping the world synchronously), the
camera is rendered on this thread, the board detected, the calibration solved, and the result
compared with MuJoCo's own camera pose.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from calibration.board import BoardSpec, Detection, detect_board
from calibration.handeye import HandEyeResult, Mount, invert, pose_error, pose_matrix, solve_hand_eye
from calibration.intrinsics import Intrinsics
from calibration.samples import save_sample
from spec.config import Config

# Camera frames: MuJoCo looks along -z with y up; OpenCV along +z with y down.
MJ_TO_CV = np.diag([1.0, -1.0, -1.0])
MARGIN_SQUARES = 0.5
BOARD_TOP_Z = 0.0015  # just above the coloured zones (their top is at 1 mm)
# Joint offsets (rad) sampled around home: wide enough for varied views, small enough to keep
# the board in sight. Joints 5 and 6 tilt the hand about two different axes, 7 turns it.
_SPREAD = np.array([0.25, 0.2, 0.2, 0.25, 0.35, 0.3, 0.6])
# The hand-mounted board: its centre (hand frame, m) and the direction it faces (hand frame),
# towards the front camera when the arm is at home.
_HAND_BOARD_POS = np.array([0.08, 0.0, 0.14])
_HAND_BOARD_NORMAL = np.array([0.9, 0.0, -0.45])


def default_mount(camera: str) -> Mount:
    return "eye_in_hand" if camera == "wrist" else "eye_to_hand"


def _quat_z_to(normal: np.ndarray, up_hint: np.ndarray) -> str:
    """MJCF `quat` turning a geom's +z towards `normal` (its +y as close to `up_hint` as can be)."""
    import mujoco

    z = normal / np.linalg.norm(normal)
    y = up_hint - z * (up_hint @ z)
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.column_stack([x, y, z]).reshape(9))
    return " ".join(f"{v:.8g}" for v in q)


def board_extras(spec: BoardSpec, mount: Mount, png_path: Path, table_center: tuple[float, float]):
    """The board as MJCF fragments (sim.model.SceneExtras), its image in `png_path`."""
    from sim.model import SceneExtras

    img = spec.image(px_per_square=120, margin_squares=MARGIN_SQUARES)
    if not cv2.imwrite(str(png_path), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)):
        raise RuntimeError(f"cannot write the board image {png_path}")
    hx = (spec.squares_x + 2 * MARGIN_SQUARES) * spec.square_m / 2
    hy = (spec.squares_y + 2 * MARGIN_SQUARES) * spec.square_m / 2
    assets = (
        f'<texture name="calib_board" type="2d" file="{png_path}"/>'
        '<material name="calib_board" texture="calib_board" texrepeat="1 1" texuniform="false" '
        'specular="0" shininess="0"/>'
    )
    if mount == "eye_in_hand":
        cx, cy = table_center
        geom = (
            f'<geom name="calib_board" class="decor" type="box" pos="{cx:.5f} {cy:.5f} {BOARD_TOP_Z - 0.0005}" '
            f'size="{hx:.5f} {hy:.5f} 0.0005" material="calib_board"/>'
        )
        return SceneExtras(assets=assets, worldbody=geom)
    quat = _quat_z_to(_HAND_BOARD_NORMAL, np.array([0.0, 1.0, 0.0]))
    pos = " ".join(f"{v:.5f}" for v in _HAND_BOARD_POS)
    geom = (
        f'<geom name="calib_board" class="decor" type="box" pos="{pos}" quat="{quat}" '
        f'size="{hx:.5f} {hy:.5f} 0.0005" material="calib_board"/>'
    )
    return SceneExtras(assets=assets, hand=geom)


def camera_pose(world, camera: str) -> np.ndarray:
    """The camera's pose in the base frame, OpenCV axes (MuJoCo's ground truth)."""
    cid = world.model.camera(camera).id
    T = np.eye(4)
    T[:3, :3] = world.data.cam_xmat[cid].reshape(3, 3) @ MJ_TO_CV
    T[:3, 3] = world.data.cam_xpos[cid]
    return T


def gripper_pose(world) -> np.ndarray:
    """What the arm reports: the TCP pose (position + quaternion) in the base frame."""
    snap = world.snapshot()
    return pose_matrix(snap.position, snap.quaternion)


def _view_center(cfg: Config, camera: str) -> tuple[float, float]:
    """Where a hand camera's optical axis meets the table with the arm at home."""
    from sim import SimWorld

    world = SimWorld(cfg)
    try:
        names = [world.model.camera(i).name for i in range(world.model.ncam)]
        if camera not in names:
            raise ValueError(f"no sim camera {camera!r}; the sim world has {names}")
        T = camera_pose(world, camera)
    finally:
        world.close()
    origin, axis = T[:3, 3], T[:3, 2]
    if axis[2] > -0.1:
        raise ValueError(f"the {camera} camera does not look down at the table from the home pose")
    s = (BOARD_TOP_Z - origin[2]) / axis[2]
    p = origin + s * axis
    return float(p[0]), float(p[1])


@dataclass
class SimCalibration:
    camera: str
    mount: Mount
    result: HandEyeResult
    truth: np.ndarray
    error_mm: float
    error_deg: float
    poses_used: int
    poses_tried: int
    width: int
    height: int
    mean_corners: float

    def as_dict(self) -> dict:
        from calibration.handeye import pose_parts

        tpos, tquat = pose_parts(self.truth)
        return {
            "camera": self.camera,
            "mount": self.mount,
            "resolution": [self.width, self.height],
            "poses_used": self.poses_used,
            "poses_tried": self.poses_tried,
            "mean_corners": self.mean_corners,
            "recovered": self.result.as_dict(),
            "truth": {"position": tpos, "quaternion": tquat},
            "error_mm": self.error_mm,
            "error_deg": self.error_deg,
        }


def run_handeye_sim(
    cfg: Config,
    camera: str = "wrist",
    poses: int = 10,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    spec: BoardSpec | None = None,
    mount: Mount | None = None,
    save_dir: str | Path | None = None,
    min_corners: int = 12,
) -> SimCalibration:
    """Calibrate `camera` in the sim world and compare with the truth (see the module doc)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    from sim import SimWorld
    from sim.model import JOINT_LOWER, JOINT_UPPER

    if poses < 3:
        raise ValueError(f"poses must be at least 3 (8 or more recommended), got {poses}")
    spec = spec or BoardSpec()
    mount = mount or default_mount(camera)
    with tempfile.TemporaryDirectory(prefix="charuco-") as tmp:
        center = _view_center(cfg, camera) if mount == "eye_in_hand" else (0.0, 0.0)
        world = SimWorld(cfg, extras=board_extras(spec, mount, Path(tmp) / "board.png", center))
    try:
        names = [world.model.camera(i).name for i in range(world.model.ncam)]
        if camera not in names:
            raise ValueError(f"no sim camera {camera!r}; the sim world has {names}")
        vis = world.model.vis.global_
        vis.offwidth, vis.offheight = max(vis.offwidth, width), max(vis.offheight, height)
        fovy = float(world.model.camera(camera).fovy[0])
        intr = Intrinsics.from_fovy(fovy, width, height)
        renderer = mujoco.Renderer(world.model, height, width)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            renderer.scene.flags[flag] = 0
        rng = np.random.default_rng(seed)
        home = np.asarray(cfg.arm.home_joints, dtype=np.float64)
        g2b: list[np.ndarray] = []
        dets: list[Detection] = []
        truths: list[np.ndarray] = []
        tried = 0
        try:
            while len(dets) < poses and tried < 8 * poses:
                tried += 1
                q = np.clip(home + rng.uniform(-1, 1, 7) * _SPREAD, JOINT_LOWER + 0.05, JOINT_UPPER - 0.05)
                world.mirror_joints(q)
                world.advance(0.05)  # a few physics periods: the arm stays put, the rest settles
                if world.snapshot().position[2] < 0.08:
                    continue  # the hand would be in the table
                with world.lock:
                    renderer.update_scene(world.data, camera=camera)
                    T_g = gripper_pose(world)
                    T_c = camera_pose(world, camera)
                image = renderer.render()
                det = detect_board(image, spec, intr, min_corners=min_corners)
                if det is None:
                    continue
                g2b.append(T_g)
                dets.append(det)
                truths.append(invert(T_g) @ T_c if mount == "eye_in_hand" else T_c)
                if save_dir is not None:
                    snap = world.snapshot()
                    save_sample(
                        save_dir, image, snap.position, snap.quaternion,
                        {"camera": camera, "joints": [float(v) for v in snap.joints], "source": "sim"},
                        intrinsics=intr,
                    )
        finally:
            renderer.close()
    finally:
        world.close()
    if len(dets) < poses:
        raise RuntimeError(f"the board was detected in only {len(dets)} of {tried} sim poses (wanted {poses})")
    result = solve_hand_eye(
        g2b, [d.target2cam for d in dets], mount,
        image_points=[(d.object_points, d.image_points) for d in dets], intrinsics=(intr.matrix, intr.dist),
    )
    truth = truths[0]
    # The camera is rigid on the hand (or the base), so every sample has the same truth.
    if max(pose_error(t, truth)[0] for t in truths) > 1e-6:
        raise RuntimeError(f"the sim camera {camera!r} moved relative to its {mount} mount")
    err_mm, err_deg = pose_error(result.camera_pose, truth)
    return SimCalibration(
        camera=camera, mount=mount, result=result, truth=truth, error_mm=err_mm, error_deg=err_deg,
        poses_used=len(dets), poses_tried=tried, width=width, height=height,
        mean_corners=float(np.mean([d.corners for d in dets])),
    )


def tolerance() -> tuple[float, float]:
    """The accuracy the sim check must reach: 2 mm and 0.5 degrees."""
    return 2.0, 0.5


__all__ = ["SimCalibration", "board_extras", "camera_pose", "default_mount", "run_handeye_sim", "tolerance"]
