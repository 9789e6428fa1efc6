"""Hand-eye calibration: where a camera sits, from arm poses and views of a fixed board.

Two mounts:
- eye-in-hand (the wrist camera): the board lies still in the workspace, the camera moves with
  the gripper; the result is the camera pose in the gripper (TCP) frame, `cam2gripper`.
- eye-to-hand (the front camera): the board is fixed to the gripper, the camera stands still;
  the result is the camera pose in the robot base frame, `cam2base`.

Poses are 4x4 homogeneous matrices, `a2b` mapping frame-a coordinates to frame-b coordinates.
Camera frames use OpenCV's axes (x right, y down, z forward). The solve is OpenCV's
`calibrateHandEye`; every method it offers is tried and the one whose result is most consistent
(the fixed board lands in the same place from every view) is kept. When the board corners' image
points are given, that result is refined by least squares on the reprojection error of every
corner through the whole chain (camera pose and board pose together), which weighs each view by
what the camera actually measured instead of by its noisy per-view board pose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

Mount = Literal["eye_in_hand", "eye_to_hand"]
METHODS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
MIN_SAMPLES = 3


# --- poses -------------------------------------------------------------------------------------
def pose_matrix(position: Sequence[float], quaternion_wxyz: Sequence[float]) -> np.ndarray:
    q = np.asarray(quaternion_wxyz, dtype=np.float64)
    n = np.linalg.norm(q)
    if q.shape != (4,) or not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion must be 4 finite numbers (w x y z), got {q.tolist()}")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q / n, scalar_first=True).as_matrix()
    T[:3, 3] = np.asarray(position, dtype=np.float64).reshape(3)
    return T


def pose_parts(T: np.ndarray) -> tuple[list[float], list[float]]:
    """(position, quaternion w x y z with w >= 0) of a 4x4 pose."""
    q = Rotation.from_matrix(T[:3, :3]).as_quat(scalar_first=True)
    if q[0] < 0:
        q = -q
    return [float(v) for v in T[:3, 3]], [float(v) for v in q]


def invert(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def rotation_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix, degrees."""
    c = (np.trace(R[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(c, -1.0, 1.0))))


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation error in mm, rotation error in degrees) between two poses."""
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3]) * 1e3), rotation_deg(a[:3, :3].T @ b[:3, :3])


def mean_pose(poses: Sequence[np.ndarray]) -> np.ndarray:
    """Mean translation and chordal-L2 mean rotation (the rotation nearest the mean matrix)."""
    M = np.mean([p[:3, :3] for p in poses], axis=0)
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = np.mean([p[:3, 3] for p in poses], axis=0)
    return out


# --- the solve ---------------------------------------------------------------------------------
@dataclass
class HandEyeResult:
    mount: Mount
    camera_pose: np.ndarray  # cam2gripper (eye-in-hand) or cam2base (eye-to-hand)
    method: str
    samples: int
    # The fixed board seen through every sample: in the base frame (eye-in-hand) or in the
    # gripper frame (eye-to-hand). Its spread is the consistency error of the calibration.
    board_pose: np.ndarray
    board_spread_mm: float  # RMS distance of the per-sample board positions from their mean
    board_spread_deg: float  # RMS angle of the per-sample board rotations from their mean
    board_max_mm: float
    board_max_deg: float
    reprojection_px: float | None = None  # RMS through the chain, when image points were given
    per_method: dict[str, dict[str, float]] = field(default_factory=dict)
    reprojection_px_linear: float | None = None  # before the refinement, when it ran

    @property
    def frame(self) -> str:
        return "gripper" if self.mount == "eye_in_hand" else "base"

    def as_dict(self) -> dict:
        pos, quat = pose_parts(self.camera_pose)
        bpos, bquat = pose_parts(self.board_pose)
        return {
            "mount": self.mount,
            "frame": self.frame,
            "position": pos,
            "quaternion": quat,
            "matrix": self.camera_pose.tolist(),
            "method": self.method,
            "samples": self.samples,
            "board_pose": {"position": bpos, "quaternion": bquat},
            "consistency": {
                "board_spread_mm": self.board_spread_mm,
                "board_spread_deg": self.board_spread_deg,
                "board_max_mm": self.board_max_mm,
                "board_max_deg": self.board_max_deg,
                "reprojection_px": self.reprojection_px,
                "reprojection_px_before_refinement": self.reprojection_px_linear,
            },
            "per_method": self.per_method,
        }


def _board_poses(mount: Mount, X: np.ndarray, g2b: Sequence[np.ndarray], t2c: Sequence[np.ndarray]) -> list[np.ndarray]:
    if mount == "eye_in_hand":
        return [g @ X @ t for g, t in zip(g2b, t2c, strict=True)]  # board in base
    return [invert(g) @ X @ t for g, t in zip(g2b, t2c, strict=True)]  # board in gripper


def _spread(poses: Sequence[np.ndarray]) -> tuple[np.ndarray, float, float, float, float]:
    m = mean_pose(poses)
    errs = np.array([pose_error(p, m) for p in poses])
    return (
        m,
        float(np.sqrt(np.mean(errs[:, 0] ** 2))),
        float(np.sqrt(np.mean(errs[:, 1] ** 2))),
        float(errs[:, 0].max()),
        float(errs[:, 1].max()),
    )


def _chain_target2cam(mount: Mount, X: np.ndarray, board: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Board -> camera through the calibrated chain instead of the per-view PnP pose."""
    return invert(X) @ invert(g) @ board if mount == "eye_in_hand" else invert(X) @ g @ board


def _residuals(
    mount: Mount,
    X: np.ndarray,
    board: np.ndarray,
    g2b: Sequence[np.ndarray],
    points: Sequence[tuple[np.ndarray, np.ndarray]],
    K: np.ndarray,
    dist: np.ndarray,
) -> np.ndarray:
    out = []
    for g, (obj, img) in zip(g2b, points, strict=True):
        t2c = _chain_target2cam(mount, X, board, g)
        rvec = cv2.Rodrigues(t2c[:3, :3])[0]
        proj, _ = cv2.projectPoints(np.asarray(obj, np.float64), rvec, t2c[:3, 3], K, dist)
        out.append((proj.reshape(-1, 2) - np.asarray(img, np.float64).reshape(-1, 2)).ravel())
    return np.concatenate(out)


def _rms(r: np.ndarray) -> float:
    return math.sqrt(float(np.mean(r.reshape(-1, 2) ** 2)) * 2) if r.size else 0.0


def _pose_from(v: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(v[:3]).as_matrix()
    T[:3, 3] = v[3:6]
    return T


def _vec_of(T: np.ndarray) -> np.ndarray:
    return np.concatenate([Rotation.from_matrix(T[:3, :3]).as_rotvec(), T[:3, 3]])


def refine(
    mount: Mount,
    X: np.ndarray,
    board: np.ndarray,
    g2b: Sequence[np.ndarray],
    points: Sequence[tuple[np.ndarray, np.ndarray]],
    K: np.ndarray,
    dist: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera and board pose minimising the corners' reprojection error over all samples
    (robust Huber loss at 1 px, so one bad detection cannot pull the result far)."""

    def fun(v: np.ndarray) -> np.ndarray:
        return _residuals(mount, _pose_from(v[:6]), _pose_from(v[6:]), g2b, points, K, dist)

    sol = least_squares(fun, np.concatenate([_vec_of(X), _vec_of(board)]), method="trf", loss="huber",
                        f_scale=1.0, x_scale="jac", max_nfev=200)
    Xr, Br = _pose_from(sol.x[:6]), _pose_from(sol.x[6:])
    return Xr, Br, _rms(fun(sol.x))


def _check_inputs(g2b: Sequence[np.ndarray], t2c: Sequence[np.ndarray]) -> None:
    if len(g2b) != len(t2c):
        raise ValueError(f"{len(g2b)} gripper poses but {len(t2c)} board detections")
    if len(g2b) < MIN_SAMPLES:
        raise ValueError(f"hand-eye calibration needs at least {MIN_SAMPLES} samples, got {len(g2b)}")
    for i, T in enumerate([*g2b, *t2c]):
        if np.asarray(T).shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"pose {i} is not a finite 4x4 matrix")
    # Rotations about one axis only leave the camera's offset along that axis unobservable.
    rel = [invert(g2b[0]) @ g for g in g2b[1:]]
    axes = []
    for T in rel:
        rvec = cv2.Rodrigues(T[:3, :3])[0].ravel()
        if np.linalg.norm(rvec) > math.radians(2):
            axes.append(rvec / np.linalg.norm(rvec))
    if len(axes) < 2 or max(np.linalg.norm(np.cross(axes[0], a)) for a in axes[1:]) < math.sin(math.radians(10)):
        raise ValueError(
            "the gripper poses do not rotate about two different axes (by > 2 deg, > 10 deg apart): "
            "tilt the gripper in several directions, not only about one axis"
        )


def solve_hand_eye(
    gripper2base: Sequence[np.ndarray],
    target2cam: Sequence[np.ndarray],
    mount: Mount = "eye_in_hand",
    methods: Sequence[str] | None = None,
    image_points: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    intrinsics: tuple[np.ndarray, np.ndarray] | None = None,
    do_refine: bool = True,
) -> HandEyeResult:
    """Solve AX = XB for the camera pose. `image_points` (object, image points) per sample with
    `intrinsics` (K, dist) add the reprojection error and the least-squares refinement."""
    if mount not in ("eye_in_hand", "eye_to_hand"):
        raise ValueError(f"mount must be eye_in_hand or eye_to_hand, got {mount!r}")
    g2b = [np.asarray(T, dtype=np.float64) for T in gripper2base]
    t2c = [np.asarray(T, dtype=np.float64) for T in target2cam]
    _check_inputs(g2b, t2c)
    chosen = list(methods or METHODS)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown hand-eye method(s) {unknown}; choose from {sorted(METHODS)}")
    # Eye-to-hand is the same problem with the base and gripper roles swapped: feed base2gripper.
    moving = g2b if mount == "eye_in_hand" else [invert(T) for T in g2b]
    R_g = [T[:3, :3] for T in moving]
    t_g = [T[:3, 3].reshape(3, 1) for T in moving]
    R_t = [T[:3, :3] for T in t2c]
    t_t = [T[:3, 3].reshape(3, 1) for T in t2c]
    best: HandEyeResult | None = None
    per_method: dict[str, dict[str, float]] = {}
    for name in chosen:
        R, t = cv2.calibrateHandEye(R_g, t_g, R_t, t_t, method=METHODS[name])
        X = np.eye(4)
        X[:3, :3] = R
        X[:3, 3] = np.asarray(t).ravel()
        if not np.all(np.isfinite(X)):
            continue
        board, rms_mm, rms_deg, max_mm, max_deg = _spread(_board_poses(mount, X, g2b, t2c))
        per_method[name] = {"board_spread_mm": rms_mm, "board_spread_deg": rms_deg}
        res = HandEyeResult(mount, X, name, len(g2b), board, rms_mm, rms_deg, max_mm, max_deg)
        # Millimetres and degrees weighted alike: 1 mm of spread costs as much as 0.1 deg.
        if best is None or rms_mm + 10 * rms_deg < best.board_spread_mm + 10 * best.board_spread_deg:
            best = res
    if best is None:
        raise ValueError("no hand-eye method gave a finite result: check the poses and detections")
    best.per_method = per_method
    if image_points is not None and intrinsics is not None:
        K, dist = intrinsics
        best.reprojection_px = _rms(_residuals(mount, best.camera_pose, best.board_pose, g2b, image_points, K, dist))
        if do_refine:
            X, _board, rms = refine(mount, best.camera_pose, best.board_pose, g2b, image_points, K, dist)
            if rms < best.reprojection_px:
                board, rms_mm, rms_deg, max_mm, max_deg = _spread(_board_poses(mount, X, g2b, t2c))
                best = HandEyeResult(mount, X, f"{best.method}+refined", len(g2b), board, rms_mm, rms_deg,
                                     max_mm, max_deg, rms, per_method, best.reprojection_px)
    return best
